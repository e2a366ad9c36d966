"""Each bad flag of every example and each bad data file found by the probe: a one-line error that
names the argument and what is allowed, never a traceback. The scripts run in parallel."""

import runpy

import numpy as np
import pytest
from faults_helpers import EXAMPLES, one_line_error, run_all, start

# (script, flags, words the error line must hold); parsed before Keras is imported
BAD_FLAGS = {
    "lm_epochs": ("train_lm.py", ["--epochs", "0"], ["--epochs", ">= 1"]),
    "lm_sample_length": ("train_lm.py", ["--sample-length", "-1"], ["--sample-length", ">= 0"]),
    "classifier_dropout": ("train_classifier.py", ["--dropout", "1.5"], ["--dropout", "[0, 1)"]),
    "seq2seq_vocab": ("train_seq2seq.py", ["--task-vocab", "2"], ["--task-vocab", ">= 5"]),
    "seq2seq_digits": ("train_seq2seq.py", ["--max-digits", "0"], ["--max-digits", ">= 1"]),
    "vit_attention_every": (
        "train_vit.py",
        ["--log-attention-every", "-1"],
        ["--log-attention-every", ">= 0"],
    ),
    "dt_size": ("train_decision_transformer.py", ["--size", "2"], ["--size", ">= 3"]),
    "dt_max_steps": ("train_decision_transformer.py", ["--max-steps", "-4"], ["--max-steps"]),
    "bert_batch": ("pretrain_bert.py", ["--batch-size", "-1"], ["--batch-size", ">= 1"]),
    "lra_examples": ("lra.py", ["--examples", "-5"], ["--examples", ">= 1"]),
    "lra_lr": ("lra.py", ["--lr", "-1"], ["--lr", ">= 0"]),
    "generate_zero": ("generate.py", ["--max-length", "0"], ["--max-length", ">= 2"]),
    "generate_one": ("generate.py", ["--max-length", "1"], ["--max-length", ">= 2"]),
    "generate_negative": ("generate.py", ["--max-length", "-3"], ["--max-length", ">= 2"]),
}


def write_image(path, seed):
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, size=(8, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def bad_data(tmp_path):
    """(script, flags, words) of the data errors; they read the data after importing Keras."""
    pairs = tmp_path / "one_pair.tsv"
    pairs.write_text("abc\tcba\n")
    empty_class = tmp_path / "empty_class"
    corrupt = tmp_path / "corrupt"
    for root in (empty_class, corrupt):
        for name in ("cats", "dogs"):
            (root / name).mkdir(parents=True)
    for i in range(4):
        write_image(empty_class / "cats" / f"{i}.png", i)
        write_image(corrupt / "cats" / f"{i}.png", i)
        write_image(corrupt / "dogs" / f"{i}.png", 10 + i)
    (corrupt / "dogs" / "2.png").write_bytes(b"\x89PNG not really")
    long_lines = tmp_path / "long.txt"
    long_lines.write_text(("word " * 1000 + "\n") * 20)
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file")

    def tiny(name):
        sizes = ["--epochs", "1", "--steps-per-epoch", "1", "--d-model", "8", "--heads", "1"]
        return [*sizes, "--logdir", str(tmp_path / name)]

    return {
        "seq2seq_one_pair": (
            "train_seq2seq.py",
            ["--data", str(pairs), *tiny("seq2seq_one_pair")],
            ["--data", "1 pair", "at least 2"],
        ),
        "vit_empty_class": (
            "train_vit.py",
            ["--data", str(empty_class), *tiny("vit_empty_class")],
            ["--data", "['dogs']", "no image files"],
        ),
        "vit_corrupt_image": (
            "train_vit.py",
            ["--data", str(corrupt), *tiny("vit_corrupt_image")],
            ["--data", "2.png", "not a readable image"],
        ),
        "lm_bpe_long_lines": (
            "train_lm.py",
            ["--data", str(long_lines), "--tokenizer", "bpe", *tiny("lm_bpe_long_lines")],
            ["--data", "SentencePiece", "4192 bytes"],
        ),
        "unwritable_logdir": (
            "train_lm.py",
            ["--epochs", "1", "--logdir", str(blocker / "run")],
            ["--logdir", "cannot write there"],
        ),
    }


# One data error runs with the bad flags by default; the others (each a Keras start-up, covered
# in-process by tests/data) only with -m slow.
DEFAULT_DATA = ("vit_corrupt_image", "unwritable_logdir")
SLOW_DATA = ("seq2seq_one_pair", "vit_empty_class", "lm_bpe_long_lines")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    data = bad_data(tmp)
    cases = {**BAD_FLAGS, **{key: data[key] for key in DEFAULT_DATA}}
    processes = {
        key: start(tmp, script, flags, probe=False) for key, (script, flags, _) in cases.items()
    }
    return cases, run_all(processes)


@pytest.mark.parametrize("case", [*BAD_FLAGS, *DEFAULT_DATA])
def test_bad_input_is_one_line_naming_the_argument(results, case):
    cases, outcomes = results
    one_line_error(outcomes[case], *cases[case][2])


@pytest.mark.slow
def test_bad_data_is_one_line_naming_the_argument(tmp_path):
    data = bad_data(tmp_path)
    outcomes = run_all(
        {key: start(tmp_path, data[key][0], data[key][1], probe=False) for key in SLOW_DATA}
    )
    for key in SLOW_DATA:
        one_line_error(outcomes[key], *data[key][2])


def test_generate_max_length_above_the_model_length(tmp_path, capsys):
    import keras_transformers as kt
    from keras_transformers.data.tokenizers import ByteTokenizer

    tokenizer = ByteTokenizer()
    tokenizer.save(tmp_path / "tokenizer.json")
    model = kt.models.build_decoder_lm(
        tokenizer.vocabulary_size, 16, d_model=8, num_heads=1, num_layers=1, position="rope"
    )  # rope: the input length is dynamic, the model's length is its max_length (16)
    model.save(tmp_path / "best.keras")
    main = runpy.run_path(f"{EXAMPLES}/generate.py", run_name="generate_example")["main"]
    assert main(["--model", str(tmp_path / "best.keras"), "--max-length", "1020"]) == 2
    error = capsys.readouterr().err
    assert "--max-length 1020" in error and "2 .. 16" in error
