"""What a user does across processes, each step in a fresh interpreter.

train with an example (tiny flags) -> ``keras.saving.load_model`` every ``.keras`` file the run
wrote, after ``import keras_transformers`` only -> ``examples/generate.py`` on the LM /
``evaluate`` on the classifier; and one LM checkpoint written on TensorFlow loads on JAX and on
PyTorch with the same logits.

The three default journeys (lm, classifier through ``keras-transformers train``, seq2seq) use the
session's shared runs (``trained_runs``, tests/_trained_runs.py: trained once, in parallel, also
checked by tests/examples/test_examples.py); then their checks start in parallel, each in a fresh
process: one TensorFlow process loads every checkpoint of the three runs after the package import
only and then evaluates the classifier, one runs ``generate.py``, one loads on JAX and one on
PyTorch. ViT, Decision Transformer and BERT journeys are ``slow``.
"""

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from _trained_runs import COMMANDS, check_ok, start, wait

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"

TINY = ["--d-model", "16", "--heads", "2", "--layers", "1", "--batch-size", "8", "--epochs", "1"]
TINY += ["--steps-per-epoch", "2", "--no-jit", "--verbose", "0"]
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

# Appended to LOAD_ALL (same process, after every load): evaluates the classifier checkpoint of
# the journeys' folder on its labelled file with the saved tokenizer; prints a second JSON line.
EVALUATE_CLASSIFIER = """
    import keras_transformers as kt

    run, data = folder / "classifier", folder / "labelled.jsonl"
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


def _python(code, *args):
    return [sys.executable, "-c", textwrap.dedent(code), *map(str, args)]


def _json_lines(result, count=1):
    """The last ``count`` stdout lines of a process that exited 0, parsed as JSON."""
    lines = check_ok(result)["stdout"].strip().splitlines()[-count:]
    return [json.loads(line) for line in lines]


def _report(result):
    return _json_lines(result)[0]


@pytest.fixture(scope="module")
def journeys(trained_runs):
    """The session's three trained runs; every later step starts at once, each in a fresh
    process: one TensorFlow process loads every checkpoint then evaluates the classifier,
    ``generate.py`` samples from the LM, and the LM's best checkpoint loads on JAX and PyTorch."""
    root = trained_runs["root"]
    runs = {name: run["logdir"] for name, run in trained_runs["runs"].items()}
    for run in trained_runs["runs"].values():
        check_ok(run)
    lm = runs["lm"] / "best.keras"
    # Loads under <root>/<run>/ (the runs' folders): names like "lm/best.keras".
    steps = {"load_and_evaluate": start(_python(LOAD_ALL + EVALUATE_CLASSIFIER, root), root)}
    steps["generate"] = start(
        [sys.executable, EXAMPLES / "generate.py", "--model", lm, "--prompt", "the ",
         "--max-length", "12", "--sampler", "greedy"],
        root,
    )  # fmt: skip
    for backend in ("jax", "torch"):
        steps[f"load_lm_{backend}"] = start(
            _python(LOAD_ALL, runs["lm"], "best.keras"), root, KERAS_BACKEND=backend
        )
    steps = wait(steps)
    loaded, evaluated = _json_lines(steps["load_and_evaluate"], count=2)
    return dict(runs=runs, steps=steps, loaded=loaded, evaluated=evaluated)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_checkpoint_loads_after_the_package_import_only(journeys, name):
    report = {
        key.split("/", 1)[1]: entry
        for key, entry in journeys["loaded"].items()
        if key.split("/", 1)[0] == name
    }
    assert {"best.keras", "last.keras"} <= set(report), journeys["loaded"]
    for entry in report.values():
        assert entry["optimizer"] == "keras_transformers.optimizers", entry  # kt AdamW restored
        assert entry["finite"], entry
    if name == "lm":
        assert report["best.keras"]["class"] == "DecoderLM"


def test_generate_samples_from_the_trained_lm(journeys):
    out = check_ok(journeys["steps"]["generate"])["stdout"]
    assert "sampler greedy, 12 tokens" in out
    assert "new tokens in" in out


def test_classifier_trained_by_the_cli_evaluates(journeys):
    results = journeys["evaluated"]
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
    check_ok(wait({name: start([*SLOW_TRAIN[name], "--logdir", run], tmp_path)})[name])
    report = _report(wait({"load": start(_python(LOAD_ALL, run), tmp_path)})["load"])
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
        result = wait({"eval": start(_python(evaluate, run / "best.keras"), tmp_path)})
        assert 0.0 <= float(check_ok(result["eval"])["stdout"].split()[-1]) <= 1.0
