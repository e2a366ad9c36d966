"""Smoke test of benchmarks/matmul_ceiling.py: it runs at tiny sizes and writes complete JSON.

A benchmark, not a test of speed: only the FLOP count and the shape of the output are checked.
"""

import importlib.util
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "benchmarks", "matmul_ceiling.py")


def load_script():
    spec = importlib.util.spec_from_file_location("matmul_ceiling", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_attention_flops_count_the_seven_matmuls_of_the_causal_half():
    bench = load_script()
    args = bench.parse_args(["--length", "8192", "--heads", "4", "--head-dim", "64"])
    # per (query, key) pair and head: 7 matmuls of 2·dh FLOPs; causal keeps L²/2 pairs
    assert bench.attention_flops(args) == 7 * 2 * 64 * 8192**2 / 2 * 4
    assert sum(count for _, count, _, _ in bench.SHAPES) == 7


def test_quick_run_writes_rates_steps_and_floor(tmp_path):
    out = tmp_path / "ceiling.json"
    proc = subprocess.run(
        [sys.executable, SCRIPT, "--quick", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert len(result["matmul_gflops"]) == 2
    for rates in result["matmul_gflops"].values():
        assert rates["tensorflow"] > 0 and rates["torch"] > 0
    assert set(result["steps_wall_cpu_s"]) == {"engine_tensorflow", "sdpa"}
    assert result["engine_matmul_floor_s"] > 0
    assert "| engine matmul floor" in proc.stdout


def test_bad_sizes_name_the_flag():
    proc = subprocess.run(
        [sys.executable, SCRIPT, "--tile", "0"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and "--tile=0" in proc.stderr
