"""examples/pretrain_bert.py: --help answers at once; a tiny run of the three phases (slow)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "pretrain_bert.py"


def _env():
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def test_help_and_argument_errors():
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, env=_env()
    )
    assert out.returncode == 0
    assert "--pretrain-epochs" in out.stdout and "--finetune-epochs" in out.stdout
    bad = subprocess.run(
        [sys.executable, str(SCRIPT), "--mask-rate", "1.5"], capture_output=True, text=True,
        env=_env(),
    )  # fmt: skip
    assert bad.returncode == 2 and "--mask-rate" in bad.stderr


@pytest.mark.slow
def test_tiny_run_pretrains_finetunes_and_logs(tmp_path):
    logdir = tmp_path / "run"
    args = [
        "--max-chars", "20000", "--num-examples", "80", "--d-model", "16", "--heads", "2",
        "--layers", "1", "--seq-len", "16", "--vocab-size", "300", "--pretrain-epochs", "1",
        "--finetune-epochs", "1", "--steps-per-epoch", "2", "--batch-size", "8", "--no-jit",
        "--mask-rate", "0.3", "--num-labelled", "24", "--freeze-embedding",
        "--verbose", "1", "--logdir", str(logdir),
    ]  # fmt: skip
    out = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=_env(),
        timeout=400,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Masked-token accuracy on held-out sequences:" in out.stdout
    assert "fine-tuned from the MLM checkpoint:" in out.stdout
    assert "loaded token_embedding, position_embedding, encoder_block_0" in out.stdout
    assert "token embedding frozen" in out.stdout
    assert "on 24 labelled examples" in out.stdout
    assert f"tensorboard --logdir {logdir}" in out.stdout
    assert (logdir / "pretrain" / "pretrainer.keras").exists()
    for phase in ("pretrain", "finetune", "scratch"):
        assert list((logdir / phase / "train").glob("events.out.tfevents.*")), phase
    results = json.loads((logdir / "results.json").read_text())
    assert 0 <= results["finetune"]["val_accuracy"] <= 1
    # a second start with the same --logdir finds every phase finished and only reports
    again = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=_env(),
        timeout=400,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming: finished phases ['finetune', 'pretrain', 'scratch']" in again.stdout
    assert "Phase 1" not in again.stdout
