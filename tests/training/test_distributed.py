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
    import runpy
    script = os.path.join(os.environ["PYTHONPATH"], "examples", "train_classifier.py")
    out, sys.argv = sys.argv[1], [script, *sys.argv[2:]]
    history = runpy.run_path(script, run_name="__main__")["history"]
    with open(out, "w") as f:
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


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend, strategy",
    [("tensorflow", "mirrored"), ("jax", "data_parallel")],
)
def test_two_device_loss_matches_single_device(tmp_path, backend, strategy):
    pytest.importorskip(backend)
    single, _ = run(tmp_path, backend, "none", "single")
    multi, stdout = run(tmp_path, backend, strategy, "multi")
    assert ("2 replicas" in stdout) or ("over 2 devices" in stdout), stdout[-1000:]
    assert abs(single[-1] - multi[-1]) < 1e-3 * max(1.0, abs(single[-1])), (single, multi)


CLIP_RUNNER = textwrap.dedent("""
    import os
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from keras_transformers.optimizers import AdamW

    def one_step(strategy):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
            # Large targets make the gradient norm >> clipnorm, so clipping is active.
            model.compile(AdamW(learning_rate=0.1, global_clipnorm=0.5), "mse")
        x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
        y = 100 * np.random.default_rng(1).normal(size=(8, 3)).astype("float32")
        model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        return model.get_weights()

    single = one_step(tf.distribute.get_strategy())
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert mirrored.num_replicas_in_sync == 2
    multi = one_step(mirrored)
    for a, b in zip(single, multi):
        np.testing.assert_allclose(a, b, atol=1e-6)
    print("same update")
""")


def test_mirrored_clipping_sees_the_all_reduced_gradient(tmp_path):
    """One clipped AdamW step on 2 replicas equals the single-device step (fast check)."""
    pytest.importorskip("tensorflow")
    script = tmp_path / "clip.py"
    script.write_text(CLIP_RUNNER)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow",
           "PYTHONPATH": ROOT}  # fmt: skip
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0 and "same update" in proc.stdout, proc.stderr[-3000:]
