"""examples/finetune_pretrained.py as a user runs it, each step in a fresh interpreter: the
example with tiny flags (offline random GPT-2 preset, sliding-window swap, LoRA) -> load the
``finetuned.keras`` it wrote with nothing but the package import -> generate from it; and the
saved preset loads again through ``kt.models.from_keras_hub`` with keras-hub's logits."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "finetune_pretrained.py"
TIMEOUT_S = 600

pytestmark = pytest.mark.slow


def run(*argv):
    result = subprocess.run(
        [sys.executable, *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def python(code, *argv):
    return run("-c", textwrap.dedent(code), *argv)


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("finetune_pretrained")
    out = run(
        EXAMPLE,
        "--steps", "4", "--max-chars", "4000", "--seq-len", "16", "--batch-size", "4",
        "--sample-length", "4", "--attention", "sliding_window:4", "--verbose", "0",
        "--logdir", folder,
    )  # fmt: skip
    assert "loaded gpt2: 28 weights copied, 0 new" in out
    assert "held-out loss:" in out and "before:" in out and "after:" in out
    return folder


def test_example_writes_a_preset_logs_and_a_model(run_folder):
    assert (run_folder / "random_gpt2" / "config.json").exists()
    assert (run_folder / "finetuned.keras").exists()
    assert any((run_folder / "logs").rglob("*tfevents*"))


def test_saved_model_loads_and_generates_in_a_fresh_process(run_folder):
    out = python(
        """
        import json, sys
        import keras, numpy as np
        import keras_transformers as kt
        model = keras.saving.load_model(sys.argv[1])
        config = model.get_config()
        tokens = model.generate(np.array([[40, 41, 42]]), max_length=10, sampler="greedy")
        print(json.dumps({"class": type(model).__name__, "attention": config["attention"],
                          "lora": any("lora" in w.path for w in model.weights),
                          "shape": list(tokens.shape)}))
        """,
        run_folder / "finetuned.keras",
    )
    result = json.loads(out.strip().splitlines()[-1])
    assert result == {
        "class": "DecoderLM",
        "attention": {"name": "sliding_window", "window": 4},
        "lora": False,
        "shape": [1, 10],
    }


def test_saved_preset_converts_with_keras_hub_logits_in_a_fresh_process(run_folder):
    out = python(
        """
        import sys
        import keras, keras_hub, numpy as np
        import keras_transformers as kt
        backbone = keras_hub.models.Backbone.from_preset(sys.argv[1])
        model = kt.models.from_keras_hub(sys.argv[1])
        x = np.arange(4, 20, dtype="int32")[None]
        hidden = backbone({"token_ids": x, "padding_mask": np.ones_like(x)})
        ref = keras.ops.convert_to_numpy(backbone.token_embedding(hidden, reverse=True))
        print("max_abs_diff", float(np.abs(keras.ops.convert_to_numpy(model(x)) - ref).max()))
        """,
        run_folder / "random_gpt2",
    )
    assert float(out.split("max_abs_diff")[-1]) < 1e-4
