"""What a user does across processes, each step in a fresh interpreter.

train with an example (tiny flags) -> ``keras.saving.load_model`` every ``.keras`` file the run
wrote, after ``import keras_transformers`` only -> ``examples/generate.py`` on the LM /
``evaluate`` on the classifier; and one LM checkpoint written on TensorFlow loads on JAX and on
PyTorch with the same logits.

The three default journeys (lm, classifier through ``keras-transformers train``, seq2seq) train
in parallel, then all their checks start in parallel. ViT, Decision Transformer and BERT journeys
are ``slow``.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
TIMEOUT_S = 400

TINY = ["--d-model", "16", "--heads", "2", "--layers", "1", "--batch-size", "8", "--epochs", "1"]
TINY += ["--steps-per-epoch", "2", "--no-jit", "--verbose", "0"]
TRAIN = {
    "lm": [sys.executable, str(EXAMPLES / "train_lm.py"), *TINY, "--seq-len", "16",
           "--data", "{root}/corpus.txt", "--sample-length", "0"],
    # The console command (`keras-transformers train classifier`) runs the example script.
    "classifier": [sys.executable, "-m", "keras_transformers.cli", "train", "classifier", *TINY,
                   "--seq-len", "12", "--data", "{root}/labelled.jsonl"],
    "seq2seq": [sys.executable, str(EXAMPLES / "train_seq2seq.py"), *TINY, "--seq-len", "8",
                "--data", "{root}/pairs.tsv", "--eval-examples", "2"],
}  # fmt: skip
SLOW_TRAIN = {
    "vit": [sys.executable, str(EXAMPLES / "train_vit.py"), *TINY, "--log-attention-every", "0"],
    "decision_transformer": [
        sys.executable, str(EXAMPLES / "train_decision_transformer.py"), "--size", "4",
        "--max-steps", "8", "--episodes", "12", "--context-length", "3", "--d-model", "8",
        "--heads", "2", "--layers", "1", "--epochs", "1", "--steps-per-epoch", "2",
        "--batch-size", "8", "--eval-episodes", "1", "--target-returns", "0.5", "--no-jit",
        "--verbose", "0",
    ],
    "bert": [
        sys.executable, str(EXAMPLES / "pretrain_bert.py"), "--max-chars", "20000",
        "--num-examples", "80", "--d-model", "16", "--heads", "2", "--layers", "1",
        "--seq-len", "16", "--vocab-size", "300", "--pretrain-epochs", "1",
        "--finetune-epochs", "1", "--steps-per-epoch", "2", "--batch-size", "8", "--no-jit",
        "--num-labelled", "24", "--verbose", "0",
    ],
}  # fmt: skip

# Loads every .keras under a run folder with nothing but the package import, predicts on a
# fixed input and prints one JSON line: {file: {"class", "optimizer", "outputs"}}. Fixed-input
# logits go to <folder>/<file>.<backend>.npy for the cross-backend comparison.
LOAD_ALL = """
    import json, pathlib, sys
    import keras_transformers  # the only package import: it must register everything
    import keras
    import numpy as np

    folder = pathlib.Path(sys.argv[1])
    only = sys.argv[2:]
    report = {}
    for path in sorted(folder.rglob("*.keras")):
        name = str(path.relative_to(folder))
        if only and name not in only:
            continue
        model = keras.saving.load_model(path)
        inputs = {}
        for tensor in model.inputs:
            shape = [2 if d is None else d for d in tensor.shape]
            if "int" in str(tensor.dtype):
                size = int(np.prod(shape))
                inputs[tensor.name] = (np.arange(size).reshape(shape) % 2).astype("int32")  # valid ids anywhere
            else:
                inputs[tensor.name] = np.full(shape, 0.5, "float32")
        feed = inputs if len(inputs) > 1 else next(iter(inputs.values()))
        out = model.predict(feed, verbose=0)
        first = out if not isinstance(out, (list, tuple, dict)) else keras.tree.flatten(out)[0]
        first = keras.ops.convert_to_numpy(first)
        np.save(f"{path}.{keras.backend.backend()}.npy", first)
        optimizer = model.optimizer
        report[name] = {
            "class": type(model).__name__,
            "optimizer": None if optimizer is None else type(optimizer).__module__,
            "finite": bool(np.isfinite(first).all()),
        }
    print(json.dumps(report))
"""

# Evaluates the classifier checkpoint on the journey's labelled file with the saved tokenizer.
EVALUATE_CLASSIFIER = """
    import json, pathlib, sys
    import keras_transformers as kt
    import keras

    run, data = pathlib.Path(sys.argv[1]), sys.argv[2]
    config = json.loads((run / "config.json").read_text())
    classes = json.loads((run / "classes.json").read_text())
    tokenizer = kt.data.load_tokenizer(run / "tokenizer.json")
    texts, labels, names = kt.data.load_classification_file(data)
    x = kt.data.encode_texts(tokenizer, texts, config["seq_len"])
    y = [classes.index(names[int(label)]) for label in labels]
    model = keras.saving.load_model(run / "best.keras")
    results = model.evaluate(x, keras.ops.convert_to_tensor(y), verbose=0, return_dict=True)
    print(json.dumps(results))
"""


def _env(**extra):
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env["KERAS_BACKEND"] = "tensorflow"  # trained and first loaded on TensorFlow
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def _start(cmd, cwd, **env):
    return subprocess.Popen(
        [str(c) for c in cmd],
        cwd=cwd,
        env=_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _python(code, *args):
    return [sys.executable, "-c", textwrap.dedent(code), *map(str, args)]


def _wait(procs):
    """``{name: {"returncode", "stdout", "stderr"}}`` of the started processes."""
    results = {}
    for name, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        results[name] = dict(returncode=proc.returncode, stdout=out, stderr=err)
    return results


def _ok(result):
    assert result["returncode"] == 0, (
        f"stdout:\n{result['stdout'][-3000:]}\nstderr:\n{result['stderr'][-3000:]}"
    )
    return result


def _report(result):
    return json.loads(_ok(result)["stdout"].strip().splitlines()[-1])


def _write_user_files(root):
    rng = np.random.default_rng(0)
    words = "the a model learns to predict next byte of text from its context".split()
    (root / "corpus.txt").write_text(" ".join(rng.choice(words, size=600)) + ".\n")
    topics = {"sport": ["ball", "goal", "team", "match"], "food": ["bread", "soup", "salt"]}
    with open(root / "labelled.jsonl", "w", encoding="utf-8") as handle:
        for i in range(48):
            label = ("sport", "food")[i % 2]
            text = " ".join(rng.choice(topics[label], size=5))
            handle.write(json.dumps({"text": f"the {text}.", "label": label}) + "\n")
    with open(root / "pairs.tsv", "w", encoding="utf-8") as handle:
        for _ in range(48):
            source = "".join(rng.choice(list("abcdef"), size=int(rng.integers(2, 6))))
            handle.write(f"{source}\t{source.upper()}\n")


@pytest.fixture(scope="module")
def journeys(tmp_path_factory):
    """Train the three examples at once; then run every later step at once, each fresh."""
    root = tmp_path_factory.mktemp("journeys")
    _write_user_files(root)
    runs = {name: root / name for name in TRAIN}
    trained = _wait(
        {
            name: _start([a.format(root=root) for a in cmd] + ["--logdir", runs[name]], root)
            for name, cmd in TRAIN.items()
        }
    )
    for result in trained.values():
        _ok(result)
    lm = runs["lm"] / "best.keras"
    steps = {f"load_{name}": _start(_python(LOAD_ALL, run), root) for name, run in runs.items()}
    steps["generate"] = _start(
        [sys.executable, EXAMPLES / "generate.py", "--model", lm, "--prompt", "the ",
         "--max-length", "12", "--sampler", "greedy"],
        root,
    )  # fmt: skip
    steps["evaluate"] = _start(
        _python(EVALUATE_CLASSIFIER, runs["classifier"], root / "labelled.jsonl"), root
    )
    for backend in ("jax", "torch"):
        steps[f"load_lm_{backend}"] = _start(
            _python(LOAD_ALL, runs["lm"], "best.keras"), root, KERAS_BACKEND=backend
        )
    return dict(runs=runs, trained=trained, steps=_wait(steps))


@pytest.mark.parametrize("name", sorted(TRAIN))
def test_every_checkpoint_loads_after_the_package_import_only(journeys, name):
    report = _report(journeys["steps"][f"load_{name}"])
    assert {"best.keras", "last.keras"} <= set(report), report
    for entry in report.values():
        assert entry["optimizer"] == "keras_transformers.optimizers", entry  # kt AdamW restored
        assert entry["finite"], entry
    if name == "lm":
        assert report["best.keras"]["class"] == "DecoderLM"


def test_generate_samples_from_the_trained_lm(journeys):
    out = _ok(journeys["steps"]["generate"])["stdout"]
    assert "sampler greedy, 12 tokens" in out
    assert "new tokens in" in out


def test_classifier_trained_by_the_cli_evaluates(journeys):
    results = _report(journeys["steps"]["evaluate"])
    assert 0.0 <= results["accuracy"] <= 1.0 and np.isfinite(results["loss"])


def test_checkpoint_written_on_tensorflow_loads_on_jax_and_torch_with_the_same_logits(journeys):
    best = journeys["runs"]["lm"] / "best.keras"
    reference = np.load(f"{best}.tensorflow.npy")  # (2, L, V)
    assert reference.ndim == 3
    for backend in ("jax", "torch"):
        report = _report(journeys["steps"][f"load_lm_{backend}"])
        assert report["best.keras"]["optimizer"] == "keras_transformers.optimizers"
        np.testing.assert_allclose(
            np.load(f"{best}.{backend}.npy"), reference, atol=1e-4, rtol=1e-4, err_msg=backend
        )


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SLOW_TRAIN))
def test_slow_example_journey(tmp_path, name):
    """Train -> load every .keras it wrote (fresh process, package import only) -> evaluate."""
    run = tmp_path / name
    _ok(_wait({name: _start([*SLOW_TRAIN[name], "--logdir", run], tmp_path)})[name])
    report = _report(_wait({"load": _start(_python(LOAD_ALL, run), tmp_path)})["load"])
    assert "last.keras" in report or any(k.endswith("last.keras") for k in report), report
    assert all(entry["finite"] for entry in report.values()), report
    if name == "vit":
        evaluate = """
            import sys
            import keras_transformers as kt
            import keras
            _, (x, y), _ = kt.data.load_digits(0.2, seed=0)
            model = keras.saving.load_model(sys.argv[1])
            print(model.evaluate(x, y, verbose=0, return_dict=True)["accuracy"])
        """
        result = _wait({"eval": _start(_python(evaluate, run / "best.keras"), tmp_path)})
        assert 0.0 <= float(_ok(result["eval"])["stdout"].split()[-1]) <= 1.0
