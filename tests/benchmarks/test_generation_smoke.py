"""benchmarks/generation.py runs end to end at tiny sizes (a smoke test, not a timing test)."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_generation_benchmark_quick(tmp_path):
    out = tmp_path / "gen.json"
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "benchmarks", "generation.py"),
            "--quick",
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
