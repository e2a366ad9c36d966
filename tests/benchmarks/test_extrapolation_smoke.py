"""Smoke test of benchmarks/extrapolation.py: ``--quick`` runs every row end to end and writes a
complete JSON report and a PNG. The losses are not judged (a few training steps), only that each
row was trained and evaluated at every length, and that the learned table reports its error."""

import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "benchmarks", "extrapolation.py")


def load_script():
    spec = importlib.util.spec_from_file_location("extrapolation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_arguments_are_validated():
    bench = load_script()
    args = bench.parse_args(["--quick"])
    assert args.eager and args.seq_len == bench.QUICK["seq_len"]
    assert bench.parse_args([]).seq_len == bench.DEFAULTS["seq_len"]
    with pytest.raises(SystemExit):
        bench.parse_args(["--seq-len", "0"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--quick", "--eval-tokens", "4"])  # fewer than one 2L window


@pytest.mark.slow  # ~40 s of training; the argument checks stay in the default run
def test_quick_run_writes_report_and_plot(tmp_path):
    out, png = tmp_path / "extrapolation.json", tmp_path / "extrapolation.png"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, SCRIPT, "--quick", "--out", str(out), "--plot", str(png)]
    # ~20-30 s on a quiet 2-core machine; the timeout leaves room for a shared one.
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "cannot extrapolate" in proc.stdout
    report = json.loads(out.read_text())
    bench = load_script()
    assert [r["row"] for r in report["rows"]] == list(bench.ROWS)
    train_len = report["config"]["seq_len"]
    lengths = [str(train_len * f) for f in report["config"]["factors"]]
    for row in report["rows"]:
        assert math.isfinite(row["train_loss"])
        assert set(row["eval"]) == set(lengths)
        for n in lengths:
            entry = row["eval"][n]
            if row["row"] == "learned" and int(n) > train_len:
                assert "max_length=" in entry["error"] and "extrapolate" in entry["error"]
                continue
            # a barely trained byte model: loss near ln(260) = 5.56, perplexity = exp(loss)
            assert abs(entry["loss"] - math.log(260)) < 1.0
            assert entry["perplexity"] == pytest.approx(math.exp(entry["loss"]))
            assert entry["tokens"] == (report["config"]["eval_tokens"] // int(n)) * int(n)
    assert png.stat().st_size > 1000


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
