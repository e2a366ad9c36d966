"""benchmarks/generation.py runs end to end at tiny sizes (a smoke test, not a timing test)."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow  # the whole --quick run: ~40 s of CPU (keras-hub and ours, 2 cores)
def test_generation_benchmark_quick(tmp_path):
    out = tmp_path / "gen.json"
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "benchmarks", "generation.py"),
            "--quick",
            "--cores",
            "sliding_window,linear",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["prompt_length"] for r in rows] == [8, 24]
    assert all(r["ours_ms_per_token"] > 0 and r["keras_hub_ms_per_token"] > 0 for r in rows)
    core_rows = json.loads(out.read_text())["core_rows"]
    assert {r["attention"] for r in core_rows} == {"sliding_window", "linear"}
    assert all(r["ms_per_token"] > 0 and r["decode_ms_per_token"] >= 0 for r in core_rows)
    shapes = {r["attention"]: r["cache_shape_per_layer"] for r in core_rows}
    assert shapes["sliding_window"] == [1, 2, 5, 2, 16]  # ring of w + 1 = 5 slots (--quick w=4)
    assert shapes["linear"] == [1, 2, 16, 17]  # state [S | z], independent of the length
