"""Subprocess plumbing of tests/distribution: the worker script, free ports, example runs."""

import json
import os
import socket
import subprocess
import sys
import textwrap

from _scripts import write_once

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
FOUR_DEVICES = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}


def env(backend, **extra):
    variables = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": backend}
    variables["PYTHONPATH"] = ROOT
    for name in ("XLA_FLAGS", "TF_CONFIG", "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES"):
        variables.pop(name, None)
    variables.pop("JAX_PROCESS_ID", None)
    return {**variables, **extra}


def free_ports(count):
    """``count`` distinct free TCP ports on localhost."""
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("localhost", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def start_worker(tmp_path, mode, backend, name, *extra, **variables):
    """Popen of ``worker.py <mode> <tmp>/<name>.json``; returns ``(process, out_path)``."""
    out = tmp_path / f"{name}.json"
    process = subprocess.Popen(
        [sys.executable, WORKER, mode, str(out), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(backend, **variables),
        cwd=tmp_path,
    )
    return process, out


def finish(process, out, timeout=600):
    """Wait; the worker's JSON result (an assertion with the stderr tail on failure)."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
    assert process.returncode == 0, stdout[-2000:] + stderr[-4000:]
    result = json.loads(out.read_text())
    result["stdout"] = stdout
    return result


# Runs an example script; with KILL_AT=<epoch>,<batch> the process SIGKILLs itself there.
RUNNER = textwrap.dedent("""
    import json, os, runpy, signal, sys
    import keras
    from keras_transformers.recipes import run

    make_callbacks = run.make_callbacks

    class Kill(keras.callbacks.Callback):
        at = tuple(map(int, os.environ["KILL_AT"].split(","))) if "KILL_AT" in os.environ else None

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if (self.epoch, batch) == self.at:
                os.kill(os.getpid(), signal.SIGKILL)

    run.make_callbacks = lambda *a, **k: make_callbacks(*a, **k) + [Kill()]
    out, script = sys.argv[1], os.path.join(os.environ["PYTHONPATH"], "examples", sys.argv[2])
    sys.argv = [script, *sys.argv[3:]]
    scope = runpy.run_path(script, run_name="__main__")
    history = scope["history"]
    weights = [keras.ops.convert_to_numpy(w.value) for w in scope["model"].weights]
    import numpy as np

    np.savez(out + ".npz", *weights)  # the final weights, in model.weights order
    np.savez(out + ".val.npz", x=scope["x_val"], y=scope["y_val"])
    with open(out, "w") as handle:
        json.dump({"history": history.history, "loss": history.history["loss"],
                   "logdir": history.logdir}, handle)
""")


# The recipe tests' run: a tiny LM (1 block of width 16, windows of 16 tokens, 2 epochs of 2
# steps, batch 8 -> 23 validation windows) and no greedy sample, a few seconds per process.
RECIPE_ARGS = [
    "--d-model", "16", "--heads", "2", "--layers", "1", "--seq-len", "16",
    "--batch-size", "8", "--epochs", "2", "--steps-per-epoch", "2", "--dropout", "0",
    "--verbose", "0", "--seed", "4", "--lr", "3e-3", "--max-chars", "4000",
    "--sample-length", "0",
]  # fmt: skip


def final_weights(out):
    """The final weights a :data:`RUNNER` run saved beside its JSON ``out``."""
    import numpy as np

    with np.load(str(out) + ".npz") as saved:
        return [saved[f"arr_{i}"] for i in range(len(saved.files))]


def start_example(tmp_path, script, name, args, backend, kill_at=None, **variables):
    """Popen of ``examples/<script> args`` through :data:`RUNNER`; ``(process, out_path)``."""
    runner = write_once(tmp_path / "runner.py", RUNNER)
    out = tmp_path / f"{name}.json"
    if kill_at:
        variables["KILL_AT"] = kill_at
    process = subprocess.Popen(
        [sys.executable, str(runner), str(out), script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(backend, **variables),
        cwd=tmp_path,
    )
    return process, out
