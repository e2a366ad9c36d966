"""The three default example runs, trained once per test session on user-format files.

``lm`` (a folder of text files, BPE tokenizer), ``classifier`` (JSONL text/label, WordPiece,
started through the ``keras-transformers train`` console command) and ``seq2seq`` (TSV pairs)
each train for two steps at tiny sizes in a fresh subprocess on TensorFlow. The session fixture
``trained_runs`` (tests/conftest.py) hands the finished runs to

* tests/examples/test_examples.py: each script's TensorBoard events, checkpoints, config and
  printed report;
* tests/journeys/test_example_journeys.py: later steps in fresh processes (load every
  checkpoint after ``import keras_transformers`` only, generate, evaluate, load on JAX/PyTorch).

Both modules are one xdist group (tests/conftest.py), so the runs train once per CI run, not
once per module. The three runs start together: their start-up (imports, tokenizer training)
overlaps with the others' training.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = REPO / "examples"
TIMEOUT_S = 400
D_MODEL = 16

TINY = ["--d-model", str(D_MODEL), "--heads", "2", "--layers", "1", "--batch-size", "8"]
TINY += ["--epochs", "1", "--steps-per-epoch", "2", "--no-jit", "--verbose", "2"]
COMMANDS = {
    "lm": [sys.executable, str(EXAMPLES_DIR / "train_lm.py"), *TINY, "--seq-len", "16",
           "--data", "{root}/corpus", "--sample-length", "4", "--tokenizer", "bpe",
           "--vocab-size", "40"],
    # The console command (`keras-transformers train classifier`) runs the example script.
    "classifier": [sys.executable, "-m", "keras_transformers.cli", "train", "classifier", *TINY,
                   "--seq-len", "12", "--data", "{root}/labelled.jsonl", "--tokenizer",
                   "wordpiece", "--vocab-size", "60"],
    "seq2seq": [sys.executable, str(EXAMPLES_DIR / "train_seq2seq.py"), *TINY, "--seq-len", "10",
                "--data", "{root}/pairs.tsv", "--eval-examples", "4"],
}  # fmt: skip


def env(**extra):
    """The environment of every subprocess: quiet TensorFlow, this checkout importable."""
    result = dict(os.environ)
    result["TF_CPP_MIN_LOG_LEVEL"] = "3"
    result["KERAS_BACKEND"] = "tensorflow"  # trained and first loaded on TensorFlow
    result["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), result.get("PYTHONPATH")]))
    result.update(extra)
    return result


def start(cmd, cwd, **extra_env):
    """Start ``cmd`` (paths allowed) with :func:`env`; stdout and stderr are captured."""
    return subprocess.Popen(
        [str(c) for c in cmd],
        cwd=cwd,
        env=env(**extra_env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait(procs, timeout=TIMEOUT_S):
    """``{name: {"returncode", "stdout", "stderr"}}`` of the started processes."""
    results = {}
    for name, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        results[name] = dict(returncode=proc.returncode, stdout=out, stderr=err)
    return results


def check_ok(result):
    """Assert a finished process exited 0 (showing the tail of its output otherwise)."""
    assert result["returncode"] == 0, (
        f"stdout:\n{result['stdout'][-3000:]}\nstderr:\n{result['stderr'][-3000:]}"
    )
    return result


def write_user_files(root):
    """A folder of text files, a JSONL of labelled texts and a TSV of pairs under ``root``."""
    rng = np.random.default_rng(0)
    (root / "corpus").mkdir()
    vocabulary = "the a model learns to predict next byte of text from its context".split()
    for name in ("part1.txt", "part2.md"):
        text = " ".join(rng.choice(vocabulary, size=400)) + ".\n"
        (root / "corpus" / name).write_text(text, encoding="utf-8")
    words = {"sport": ["ball", "goal", "team", "match"], "food": ["bread", "soup", "salt", "rice"]}
    with open(root / "labelled.jsonl", "w", encoding="utf-8") as handle:
        for i in range(64):
            label = ("sport", "food")[i % 2]
            text = " ".join(rng.choice(words[label], size=5))
            handle.write(json.dumps({"text": f"the {text}.", "label": label}) + "\n")
    with open(root / "pairs.tsv", "w", encoding="utf-8") as handle:
        for _ in range(64):
            source = "".join(rng.choice(list("abcdef"), size=int(rng.integers(2, 7))))
            handle.write(f"{source}\t{source.upper()}\n")


def train(root):
    """Write the user files under ``root`` and train the three runs at once.

    Returns ``{"root": root, "runs": {name: {"logdir", "returncode", "stdout", "stderr"}}}``;
    a failed run is reported by the tests that use it (:func:`check_ok`), not here.
    """
    write_user_files(root)
    logdirs = {name: root / name for name in COMMANDS}
    procs = {
        name: start([a.format(root=root) for a in cmd] + ["--logdir", logdirs[name]], root)
        for name, cmd in COMMANDS.items()
    }
    runs = wait(procs)
    for name, result in runs.items():
        result["logdir"] = logdirs[name]
    return {"root": root, "runs": runs}
