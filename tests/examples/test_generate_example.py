"""examples/generate.py: samples from a saved tiny LM, explains how to get one without a model."""

import os
import runpy
import subprocess
import sys
from pathlib import Path

import keras
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "generate.py"


def _env():
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _main():
    return runpy.run_path(str(SCRIPT), run_name="generate_example")["main"]


def test_without_model_says_how_to_make_one(capsys):
    assert _main()([]) == 2
    err = capsys.readouterr().err
    assert "python examples/train_lm.py" in err and "--train-tiny" in err
    assert _main()(["--model", "missing.keras"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_samples_from_a_saved_model(tmp_path):
    import keras_transformers as kt
    from keras_transformers.data.tokenizers import ByteTokenizer

    tokenizer = ByteTokenizer()
    tokenizer.save(tmp_path / "tokenizer.json")
    keras.utils.set_random_seed(0)
    model = kt.models.build_decoder_lm(
        tokenizer.vocabulary_size,
        24,
        d_model=16,
        num_heads=2,
        num_layers=1,
        attention={"name": "sliding_window", "window": 4},
        position="rope",
    )
    model.save(tmp_path / "best.keras")
    args = ["--model", str(tmp_path / "best.keras"), "--prompt", "ab", "--max-length", "12"]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--sampler", "top_k", "--top-k", "5", "--seed", "3"],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "cached decoding" in proc.stdout
    assert "10 new tokens" in proc.stdout  # 12 tokens, 2 of them the prompt
    sample = proc.stdout.split("-" * 72)[1].strip("\n")
    assert sample.startswith("ab")


@pytest.mark.slow
def test_train_tiny_then_sample(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--train-tiny", "--logdir", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=900,
        env=_env(),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "run" / "best.keras").is_file()
    assert "new tokens" in proc.stdout
