"""Smoke test of benchmarks/attention_scaling.py: --quick on two variants, in subprocesses."""

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "attention_scaling.py"


@pytest.mark.slow  # the whole --quick run in subprocesses; the helpers are tested below
def test_quick_run_writes_table_json_and_plot(tmp_path):
    out, png, md = tmp_path / "scaling.json", tmp_path / "scaling.png", tmp_path / "scaling.md"
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--quick",
            "--variants",
            "full",
            "sliding_window",
            "--lengths",
            "64",
            "--jobs",
            "2",
            "--output",
            str(out),
            "--plot",
            str(png),
            "--markdown",
            str(md),
        ],
        capture_output=True,
        text=True,
        timeout=170,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "speed-up vs full" in proc.stdout and "log-log slopes" in proc.stdout
    payload = json.loads(out.read_text())
    results = {(r["variant"], r["length"]): r for r in payload["results"]}
    assert set(results) == {("full", 64), ("sliding_window", 64)}
    for r in results.values():
        assert r["status"] == "ok", r
        assert r["time_ms"] > 0 and r["peak_mib"] is not None
    assert results[("sliding_window", 64)]["config"] == {"window": 16}
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "| sliding_window | 64 |" in md.read_text()


def test_helpers_without_subprocesses():
    sys.path.insert(0, str(SCRIPT.parent))
    import attention_scaling as bench

    assert abs(bench.loglog_slope([(512, 1.0), (1024, 2.0), (2048, 4.0)]) - 1.0) < 1e-9
    assert bench.loglog_slope([(512, 1.0)]) is None
    results = [
        {"variant": "full", "length": 512, "status": "ok", "time_ms": 40.0, "peak_mib": 8.0},
        {"variant": "x", "length": 512, "status": "ok", "time_ms": 10.0, "peak_mib": 2.0},
        {"variant": "full", "length": 1024, "status": "OOM"},
        {"variant": "x", "length": 1024, "status": "ok", "time_ms": 20.0, "peak_mib": 4.0},
    ]
    slopes = bench.summarise(results, ["full", "x"], [512, 1024], slope_from=512)
    assert results[1]["speedup_vs_full"] == 4.0 and results[1]["memory_ratio_vs_full"] == 4.0
    assert abs(slopes["x"]["memory"] - 1.0) < 1e-9 and slopes["full"]["memory"] is None
    table = bench.format_table(bench.table_rows(results, ["full", "x"], [512, 1024]))
    assert "OOM" in table


@pytest.mark.slow  # one --quick --interleave process (TensorFlow and PyTorch imported)
def test_quick_interleaved_run_gives_ratios_in_one_process(tmp_path):
    out = tmp_path / "interleaved.json"
    argv = ["--quick", "--interleave", "--causal", "--variants", "full", "full@t5", "sdpa"]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *argv, "--lengths", "64", "--output", str(out)],
        capture_output=True, text=True, timeout=170, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())["results"]
    assert [r["variant"] for r in results] == ["full", "full@t5", "sdpa"]
    for r in results:
        assert r["status"] == "ok" and r["time_ms"] > 0 and r["cpu_ms"] > 0, r
    assert results[0]["ratio_vs_first"] == 1.0
    assert results[2]["backend"] == "torch"
