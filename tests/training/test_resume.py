"""A training run killed mid-epoch (SIGKILL, a real subprocess) resumes from its backup and ends
with the same weights as an uninterrupted run with the same seed."""

import os
import signal
import subprocess
import sys
import textwrap

import keras
import numpy as np

import keras_transformers  # noqa: F401  (registers the layers for load_model)

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
    "3",
    "--steps-per-epoch",
    "6",
    "--dropout",
    "0",
    "--no-jit",
    "--verbose",
    "0",
    "--seed",
    "3",
]

# Runs examples/train_classifier.py; with KILL_AT=<epoch>,<batch> the process SIGKILLs itself there.
RUNNER = textwrap.dedent("""
    import os, runpy, signal, sys
    import keras
    from keras_transformers.recipes import run

    kill_at = os.environ.get("KILL_AT")
    if kill_at:
        epoch_to_kill, batch_to_kill = map(int, kill_at.split(","))
        make_callbacks = run.make_callbacks

        class Killer(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.epoch = epoch

            def on_train_batch_end(self, batch, logs=None):
                if self.epoch == epoch_to_kill and batch == batch_to_kill:
                    print("killing myself", flush=True)
                    os.kill(os.getpid(), signal.SIGKILL)

        run.make_callbacks = lambda *a, **k: make_callbacks(*a, **k) + [Killer()]

    class EpochPrinter(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            print(f"starting epoch {epoch}", flush=True)

    make_callbacks2 = run.make_callbacks
    run.make_callbacks = lambda *a, **k: make_callbacks2(*a, **k) + [EpochPrinter()]
    sys.argv = [os.environ["SCRIPT"], *sys.argv[1:]]
    runpy.run_path(os.environ["SCRIPT"], run_name="__main__")
""")


def run(tmp_path, logdir, data, kill_at=None):
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT}
    env["SCRIPT"] = os.path.join(ROOT, "examples", "train_classifier.py")
    if kill_at:
        env["KILL_AT"] = kill_at
    return subprocess.run(
        [sys.executable, str(script), *ARGS, "--data", str(data), "--logdir", str(logdir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=tmp_path,
    )


def make_data(tmp_path):
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma"]
    lines = ["text,label"]
    for i in range(120):
        label = i % 2
        pool = words[:3] if label else words[3:]
        lines.append(" ".join(rng.choice(pool, size=6)) + f",{label}")
    path = tmp_path / "data.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def weights(path):
    model = keras.saving.load_model(path)
    return [keras.ops.convert_to_numpy(w) for w in model.weights]


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path):
    data = make_data(tmp_path)
    reference = run(tmp_path, tmp_path / "uninterrupted", data)
    assert reference.returncode == 0, reference.stderr[-3000:]

    killed = run(tmp_path, tmp_path / "resumed", data, kill_at="1,3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert "killing myself" in killed.stdout
    assert (tmp_path / "resumed" / "backup").exists()

    resumed = run(tmp_path, tmp_path / "resumed", data)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "starting epoch 0" not in resumed.stdout  # resumed at the saved epoch (1)
    assert "starting epoch 1" in resumed.stdout

    for a, b in zip(
        weights(tmp_path / "uninterrupted" / "last.keras"),
        weights(tmp_path / "resumed" / "last.keras"),
    ):
        np.testing.assert_allclose(a, b, atol=1e-5)
