"""Start the example scripts in subprocesses (in parallel) for the fault tests."""

import os
import subprocess
import sys
import textwrap

from _scripts import write_once

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "examples")

# Runs an example script; with KILL_AT=<epoch>,<batch> the process SIGKILLs itself there.
RUNNER = textwrap.dedent("""
    import os, runpy, signal, sys
    import keras
    from keras_transformers.recipes import run

    make_callbacks = run.make_callbacks

    class Probe(keras.callbacks.Callback):
        kill_at = tuple(map(int, os.environ["KILL_AT"].split(","))) if "KILL_AT" in os.environ else None

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            print(f"starting epoch {epoch}", flush=True)

        def on_train_batch_end(self, batch, logs=None):
            if (self.epoch, batch) == self.kill_at:
                print("killing myself", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)

    run.make_callbacks = lambda *a, **k: make_callbacks(*a, **k) + [Probe()]
    sys.argv = [os.environ["SCRIPT"], *sys.argv[1:]]
    runpy.run_path(os.environ["SCRIPT"], run_name="__main__")
""")


def env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT}


def start(tmp_path, script, args, kill_at=None, probe=True):
    """Popen of ``examples/<script>`` (through the probing runner when ``probe``)."""
    variables = {**env(), "SCRIPT": os.path.join(EXAMPLES, script)}
    if kill_at:
        variables["KILL_AT"] = kill_at
    if probe:
        runner = write_once(tmp_path / "runner.py", RUNNER)
        command = [sys.executable, str(runner), *args]
    else:
        command = [sys.executable, variables["SCRIPT"], *args]
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=variables,
        cwd=tmp_path,
    )


def wait(process, timeout=600):
    """``subprocess.CompletedProcess`` of a started process."""
    stdout, stderr = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def run_all(processes, timeout=600):
    """Wait for a dict of started processes; the same keys with their results."""
    return {key: wait(process, timeout) for key, process in processes.items()}


def one_line_error(result, *words):
    """The process exited non-zero with an ``error:`` line holding ``words``, no traceback."""
    assert result.returncode not in (0, None), result.stdout[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert lines, result.stderr[-2000:]
    for word in words:
        assert word in lines[-1], (word, lines[-1])
    return lines[-1]
