"""examples/train_decision_transformer.py: --help answers at once; a tiny end-to-end run (slow)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "train_decision_transformer.py"


def _env():
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def test_help():
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, env=_env()
    )
    assert out.returncode == 0
    assert "--target-returns" in out.stdout and "--context-length" in out.stdout


@pytest.mark.slow
def test_tiny_run_trains_evaluates_and_logs(tmp_path):
    logdir = tmp_path / "run"
    args = [
        "--size", "4", "--max-steps", "8", "--episodes", "12", "--context-length", "3",
        "--d-model", "8", "--heads", "2", "--layers", "1", "--epochs", "1",
        "--steps-per-epoch", "2", "--batch-size", "8", "--eval-episodes", "2",
        "--target-returns", "0.5", "--no-jit", "--verbose", "1", "--logdir", str(logdir),
    ]  # fmt: skip
    out = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=240,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Decision Transformer, target +0.50:" in out.stdout
    assert "behaviour policy (dataset average)" in out.stdout
    assert f"tensorboard --logdir {logdir}" in out.stdout
    assert (logdir / "last.keras").exists() and (logdir / "config.json").exists()
    assert list((logdir / "train").glob("events.out.tfevents.*"))
