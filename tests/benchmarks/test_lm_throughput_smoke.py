"""Smoke test of benchmarks/lm_throughput.py: it runs with tiny sizes and writes complete JSON.

A benchmark, not a test of speed: the figures are not checked, only that every model trained,
reported tokens/s, and that the helper formulas are right.
"""

import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "benchmarks", "lm_throughput.py")


def load_script():
    spec = importlib.util.spec_from_file_location("lm_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flops_per_token_formula():
    bench = load_script()
    sizes = dict(vocab=8192, length=256, d_model=256, heads=4, layers=4, ff=1024, batch=16)
    matmul_params = 4 * (4 * 256 * 256 + 2 * 256 * 1024) + 8192 * 256
    assert bench.flops_per_token(sizes) == 6 * matmul_params + 12 * 4 * 256 * 256


def test_step_losses_from_running_mean():
    bench = load_script()
    losses = [5.0, 3.0, 4.0, 1.0]
    means = np.cumsum(losses) / np.arange(1, 5)
    np.testing.assert_allclose(bench.step_losses_from_running_mean(list(means)), losses)


def test_tokens_are_deterministic_bigrams():
    bench = load_script()
    sizes = dict(vocab=50, length=20, batch=3)
    a = bench.make_tokens(sizes, 2, seed=7)
    assert a.shape == (6, 21) and a.dtype == np.int32
    np.testing.assert_array_equal(a, bench.make_tokens(sizes, 2, seed=7))
    assert a.min() >= 0 and a.max() < 50
    successors = {}
    for row in a:
        for prev, nxt in zip(row[:-1], row[1:], strict=True):
            successors.setdefault(int(prev), set()).add(int(nxt))
    assert max(len(s) for s in successors.values()) <= bench.SUCCESSORS


def test_models_with_dtype_policies_and_their_ratios():
    bench = load_script()
    assert bench.parse_models("ours,ours@mixed_bfloat16,ours@float32,keras_hub") == [
        "ours",
        "ours@mixed_bfloat16",
        "keras_hub",
    ]
    assert bench.split_label("keras_hub@mixed_float16") == ("keras_hub", "mixed_float16")
    for bad in ("ours@bf16", "torch@mixed_bfloat16", "hub", ""):
        with pytest.raises(SystemExit, match="--models"):
            bench.parse_models(bad)
    pairs = bench.interleaved_pairs(
        ["ours", "ours@mixed_bfloat16", "keras_hub", "keras_hub@mixed_bfloat16"]
    )
    assert set(pairs) == {
        ("ours", "keras_hub"),
        ("ours@mixed_bfloat16", "keras_hub@mixed_bfloat16"),
        ("ours@mixed_bfloat16", "ours"),
        ("keras_hub@mixed_bfloat16", "keras_hub"),
    }


@pytest.mark.slow  # the whole --quick run; one worker step stays in the default run
def test_quick_run_reports_every_model(tmp_path):
    out = tmp_path / "lm_throughput.json"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [
        sys.executable,
        SCRIPT,
        "--quick",
        "--jit",
        "auto",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--jobs",
        "4",
        "--out",
        str(out),
    ]
    # ~30-60 s on a quiet 2-core machine (three fresh interpreters import Keras); the timeout
    # leaves room for a machine shared with other jobs.
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "tokens/s" in proc.stdout
    report = json.loads(out.read_text())
    expected = {"ours", "keras_hub"}
    if importlib.util.find_spec("torch") is not None:
        expected.add("torch")
    runs = {run["model"]: run for run in report["runs"]}
    assert set(runs) == expected
    for name, run in runs.items():
        assert "error" not in run, (name, run.get("error"))
        assert run["tokens_per_s"] > 0 and run["tokens_per_s_median_step"] > 0
        assert len(run["losses"]) == 3  # warm-up + timed steps
        assert all(math.isfinite(x) for x in run["losses"])
        # Untrained model on 128 tokens: the first loss is near ln(128) = 4.85.
        assert abs(run["loss_first"] - math.log(128)) < 1.0, (name, run["loss_first"])
        assert run["params"] > 0 and run["mfu"] > 0
    assert report["peak_gflops"] > 0
    assert report["sizes"]["vocab"] == 128
    assert "ours_best/keras_hub" in report["ratios"]
    if "torch" in expected:
        assert "ours_best/torch" in report["ratios"]


def test_interleaved_worker_trains_both_models_with_unchanged_numerics():
    """ours and keras_hub alternate steps in one process; ours' losses equal a separate fit()."""
    bench = load_script()
    spec = {
        "sizes": dict(bench.QUICK_SIZES),
        "warmup": 1,
        "steps": 2,
        "seed": 0,
        "data_seed": 5,
        "untied": False,
        "jits": {"ours": "auto", "keras_hub": "auto"},
    }
    both = bench.worker_interleaved(spec)
    assert set(both) == {"ours", "keras_hub"}
    for name, run in both.items():
        assert len(run["losses"]) == 3 and all(math.isfinite(x) for x in run["losses"]), name
        assert run["tokens_per_s"] > 0 and run["tokens_per_cpu_s"] > 0
        assert abs(run["loss_first"] - math.log(128)) < 1.0, (name, run["loss_first"])
    alone = bench.worker_keras({**spec, "model": "ours", "jit": "auto"})
    np.testing.assert_allclose(both["ours"]["losses"], alone["losses"], rtol=1e-4)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
