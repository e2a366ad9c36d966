"""examples/lra.py trains a variant and compares several."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "examples", "lra.py")
TINY = [
    "--examples",
    "48",
    "--seq-len",
    "48",
    "--epochs",
    "1",
    "--d-model",
    "16",
    "--layers",
    "1",
    "--heads",
    "2",
    "--batch-size",
    "16",
]


def run(args, tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, SCRIPT, *args, "--logdir", str(tmp_path / "tb")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=tmp_path,
    )


def test_lra_listops_one_variant(tmp_path):
    out = tmp_path / "r.json"
    proc = run(["--task", "listops", *TINY, "--json", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert 0.0 <= result["val_accuracy"] <= 1.0 and result["steps_per_second"] > 0
    assert "tensorboard --logdir" in proc.stdout


@pytest.mark.slow
def test_lra_comparison_table(tmp_path):
    proc = run(["--task", "text", "--attention", "full,linear", *TINY], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((tmp_path / "tb" / "comparison.json").read_text())
    assert [r["attention"] for r in rows] == ["full", "linear"]
    assert "| full |" in proc.stdout


def test_help():
    proc = subprocess.run([sys.executable, SCRIPT, "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "--attention" in proc.stdout
