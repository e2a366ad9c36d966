"""The example scripts, the recipes they share and the ``keras-transformers`` command.

Each example runs for a few steps at tiny sizes as a real subprocess on user-format files (the
session fixture ``trained_runs``, tests/_trained_runs.py: all started together, so the
Python/TensorFlow start-up overlaps; the classifier through ``keras-transformers train``), then
its TensorBoard event files are read back with tensorboard's own event reader and must hold the
``epoch_loss`` scalar.
"""

import json
import math
import os
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

import keras_transformers as kt
from keras_transformers import cli
from keras_transformers.recipes import EXAMPLES, flags, resume, run, seq2seq

REPO = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = REPO / "examples"
SCRIPTS = {name: EXAMPLES_DIR / f"train_{name}.py" for name in EXAMPLES}


@pytest.fixture(scope="module")
def runs(trained_runs):
    """The three tiny runs of tests/_trained_runs.py (one subprocess each, trained once per
    session and shared with tests/journeys/test_example_journeys.py)."""
    return trained_runs["runs"]


def _check_ok(run):
    assert run["returncode"] == 0, (
        f"stdout:\n{run['stdout'][-3000:]}\nstderr:\n{run['stderr'][-3000:]}"
    )


def _scalars(event_dir):
    """``{tag: [values]}`` of the tensor summaries in one TensorBoard run folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    accumulator = EventAccumulator(str(event_dir), size_guidance={"tensors": 0, "scalars": 0})
    accumulator.Reload()
    values = {}
    for tag in accumulator.Tags()["tensors"]:
        arrays = [tensor_util.make_ndarray(e.tensor_proto) for e in accumulator.Tensors(tag)]
        if all(a.dtype.kind == "f" and a.size == 1 for a in arrays):  # not the model graph text
            values[tag] = [float(a) for a in arrays]
    for tag in accumulator.Tags()["scalars"]:
        values.setdefault(tag, [event.value for event in accumulator.Scalars(tag)])
    return values


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs_and_logs_loss_to_tensorboard(runs, name):
    run = runs[name]
    _check_ok(run)
    logdir = run["logdir"]
    train_scalars = _scalars(logdir / "train")
    assert "epoch_loss" in train_scalars, sorted(train_scalars)
    assert len(train_scalars["epoch_loss"]) == 1
    assert math.isfinite(train_scalars["epoch_loss"][0])
    assert train_scalars["throughput/tokens_per_second"][0] > 0  # kt.callbacks.ThroughputLogger
    assert "epoch_loss" in _scalars(logdir / "validation")
    # Checkpoints and the run's record; the backup folder is removed after a finished run.
    assert (logdir / "best.keras").is_file() and (logdir / "last.keras").is_file()
    assert not (logdir / "backup").exists()
    config = json.loads((logdir / "config.json").read_text())
    assert config["example"] == name and config["d_model"] == 16
    # The script prints where the logs are and how to look at them.
    assert str(logdir) in run["stdout"]
    assert f"tensorboard --logdir {logdir}" in run["stdout"]
    assert "first epoch" in run["stdout"]


def _tensor_tags(event_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(event_dir), size_guidance={"tensors": 0})
    accumulator.Reload()
    return accumulator.Tags()["tensors"]


def test_example_specific_reports(runs):
    assert "Greedy sample" in runs["lm"]["stdout"]
    # The keras-hub tokenizer trained on the corpus is saved next to the model and reloads.
    tokenizer = kt.data.load_tokenizer(runs["lm"]["logdir"] / "tokenizer.json")
    assert isinstance(tokenizer, kt.data.BPETokenizer)
    assert isinstance(
        kt.data.load_tokenizer(runs["classifier"]["logdir"] / "tokenizer.json"),
        kt.data.WordPieceTokenizer,
    )
    # Attention maps (Images) and text samples (Text) of the LM; maps of the classifier.
    lm_tags = _tensor_tags(runs["lm"]["logdir"] / "train")
    assert "samples" in lm_tags
    assert "attention/decoder_block_0/self_attention/head_0" in lm_tags
    assert any(
        t.startswith("attention/") for t in _tensor_tags(runs["classifier"]["logdir"] / "train")
    )
    assert "Validation accuracy:" in runs["classifier"]["stdout"]
    assert "Exact-match accuracy of greedy decoding" in runs["seq2seq"]["stdout"]


def _listed_names(section):
    return [line.split()[0] for line in section.splitlines() if line.startswith("  ")]


def test_cli_list_prints_both_registries_with_first_docstring_lines(capsys):
    import keras_transformers as kt

    assert cli.main(["list"]) == 0
    text = capsys.readouterr().out
    attention_at = text.index("Attention cores")
    position_at = text.index("Positional encodings")
    assert attention_at < position_at
    assert _listed_names(text[attention_at:position_at]) == kt.attention.available()
    assert _listed_names(text[position_at:]) == kt.positional.available()
    for registry in (kt.attention.REGISTRY, kt.positional.REGISTRY):
        for name in registry.available():
            doc = registry.get_class(name).__doc__
            if doc and doc.strip():
                assert doc.strip().splitlines()[0].strip() in text, name


@pytest.mark.parametrize("name", EXAMPLES)
def test_script_help(name, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", [SCRIPTS[name].name, "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(SCRIPTS[name]), run_name="__main__")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in (
        "--attention",
        "--position",
        "--d-model",
        "--heads",
        "--layers",
        "--ff-dim",
        "--seq-len",
        "--batch-size",
        "--epochs",
        "--steps-per-epoch",
        "--lr",
        "--logdir",
        "--data",
        "--seed",
        "--jit",
        "--no-jit",
    ):
        assert flag in out, flag
    assert SCRIPTS[name].name in out  # prog name


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["train", "--help"],
        ["train", "lm", "--help"],
        ["list", "--help"],
        ["bench", "--help"],
    ],
)
def test_cli_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: keras-transformers" in out
    if argv[:2] == ["train", "lm"]:
        assert "--seq-len" in out and "keras-transformers train lm" in out


def test_cli_bench_and_no_command(capsys):
    assert cli.main(["bench"]) == 0
    assert "benchmarks/" in capsys.readouterr().out
    assert cli.main([]) == 0
    assert "usage: keras-transformers" in capsys.readouterr().out


def test_cli_train_outside_a_checkout_says_to_clone(capsys, monkeypatch):
    monkeypatch.setattr(cli, "_checkout_dir", lambda name: None)
    assert cli.main(["train", "lm", "--epochs", "1"]) == 2
    assert "clone the repository" in capsys.readouterr().err


def test_cli_rejects_unknown_example(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "nonsense"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_parse_args_defaults_and_specs():
    args = flags.parse_args("lm", [])
    assert (args.attention, args.position, args.jit, args.logdir) == ("full", "rope", None, None)
    args = flags.parse_args(
        "seq2seq",
        [
            "--attention",
            '{"name": "sliding_window", "window": 4}',
            "--position",
            "none",
            "--no-jit",
            "--task",
            "sort",
        ],
    )
    assert args.attention == {"name": "sliding_window", "window": 4}
    assert args.position is None and args.jit is False and args.task == "sort"
    logdir = flags.default_logdir("seq2seq", args.attention, args.position)
    parts = Path(logdir).parts
    assert parts[:2] == ("runs", "seq2seq") and parts[2].endswith("-sliding_window-none")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--d-model", "30", "--heads", "4"], "divisible"),
        (["--epochs", "0"], "must be >= 1"),
        (["--val-fraction", "0"], "(0, 1)"),
        (["--attention", '{"window": 3}'], "'name'"),
    ],
)
def test_parse_args_errors(argv, message, capsys):
    with pytest.raises(SystemExit):
        flags.parse_args("classifier", argv)
    assert message in capsys.readouterr().err


def test_make_callbacks(tmp_path):
    import keras

    callbacks = run.make_callbacks(str(tmp_path))
    kinds = [type(c) for c in callbacks]
    assert kinds == [
        keras.callbacks.TensorBoard,
        keras.callbacks.ModelCheckpoint,
        keras.callbacks.ModelCheckpoint,
        resume.ResumableBackup,  # a keras.callbacks.BackupAndRestore with the RNG and best value
    ]
    assert isinstance(callbacks[3], keras.callbacks.BackupAndRestore)
    assert callbacks[3].checkpoints == [callbacks[1]]
    assert callbacks[1].filepath.endswith("best.keras") and callbacks[1].save_best_only
    assert callbacks[2].filepath.endswith("last.keras")
    assert callbacks[3].backup_dir == os.path.join(str(tmp_path), "backup")


def _run_script(name, argv, monkeypatch):
    """Run ``examples/train_<name>.py`` in this process with ``argv``."""
    monkeypatch.setattr(sys, "argv", [str(SCRIPTS[name]), *argv])
    runpy.run_path(str(SCRIPTS[name]), run_name="__main__")


def test_missing_data_file_is_a_one_line_error(tmp_path, monkeypatch):
    argv = ["--data", str(tmp_path / "missing.csv"), "--logdir", str(tmp_path / "run")]
    with pytest.raises(SystemExit, match="--data.*missing.csv"):
        _run_script("classifier", argv, monkeypatch)


def test_greedy_decode_and_strip():
    class Echo:
        """Stand-in model: the logits at decoder position ``t`` pick ``src[:, t]``."""

        def predict_on_batch(self, inputs):
            src = inputs["encoder_token_ids"]
            logits = np.zeros((*src.shape, 10), dtype="float32")
            np.put_along_axis(logits, src[..., None], 1.0, axis=-1)
            return logits

    src = np.asarray([[5, 6, 2, 0], [7, 8, 9, 4]], dtype="int32")
    out = seq2seq.greedy_decode(Echo(), src, 4)
    # A pad at position 3 is banned: the best allowed id there is <eos> (2).
    assert out.tolist() == [[5, 6, 2, 2], [7, 8, 9, 4]]
    assert seq2seq.strip(out[0]) == [5, 6]
    assert seq2seq.strip(np.asarray([4, 5, 0, 6])) == [4, 5]


def test_epoch_stream_covers_every_pass_and_depends_only_on_the_epoch():
    x = {"a": np.arange(10), "b": -np.arange(10)}
    y = np.arange(10) * 10
    xs, ys = run.epoch_stream((x, y), batch_size=4, steps=4, seed=1, first_epoch=0, last_epoch=2)
    assert xs["a"].shape == (32,) and ys.shape == (32,)  # two epochs of 4 batches of 4
    np.testing.assert_array_equal(ys, xs["a"] * 10)
    np.testing.assert_array_equal(xs["b"], -xs["a"])
    seen = xs["a"].tolist()
    for p in range(3):  # every full pass is a permutation of the data
        assert sorted(seen[10 * p : 10 * (p + 1)]) == list(range(10))
    assert seen[:10] != seen[10:20]  # passes are reshuffled
    _, resumed = run.epoch_stream((x, y), 4, 4, seed=1, first_epoch=1, last_epoch=2)
    np.testing.assert_array_equal(resumed, ys[16:])  # epoch 1 is the same after a restart


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--attention", "no_such_core", "Unknown attention"),
        ("--position", "no_such_position", "Unknown positional"),
    ],
)
def test_unknown_layer_name_fails_before_any_work(tmp_path, flag, value, message, monkeypatch):
    logdir = tmp_path / "run"
    with pytest.raises(SystemExit, match=f"{flag}: {message}"):
        _run_script("seq2seq", [flag, value, "--logdir", str(logdir)], monkeypatch)
    assert not logdir.exists()


def test_seq2seq_tsv_with_one_pair_is_a_clear_error(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("abc\tcba\n")
    args = flags.parse_args("seq2seq", ["--data", str(path), "--logdir", str(tmp_path / "run")])
    with pytest.raises(ValueError, match="holds 1 pair; training needs at least 2"):
        seq2seq.load_data(args)
