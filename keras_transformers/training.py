"""Shared plumbing of the example scripts and of ``keras-transformers train``.

Three trainers, each driven by an ``argparse`` namespace and returning the ``keras`` History:

* :func:`train_lm` -- a byte/character decoder language model (``build_decoder_lm``) on the
  standard library's docstrings or the user's text file/folder; prints a greedy sample.
* :func:`train_classifier` -- an encoder classifier (``build_encoder_classifier``) on the built-in
  4-class docstring task or the user's CSV/JSONL/TSV file or class folders; prints validation
  accuracy.
* :func:`train_seq2seq` -- an encoder-decoder (``build_seq2seq``) on a generated task (reverse,
  copy, sort, arithmetic) or the user's tab-separated pairs; prints the exact-match accuracy of
  greedy decoding.

Every run writes into one log folder (default ``runs/<example>/<timestamp>-<attention>-<position>``):
TensorBoard event files (``train/``, ``validation/``), ``best.keras`` (lowest validation loss) and
``last.keras`` checkpoints, ``config.json`` (the arguments), ``tokenizer.json`` when there is one,
and ``backup/`` while training runs: start the same command again with ``--logdir <that folder>``
and an interrupted run resumes from its last finished epoch.

This module sits at the top of the package: it imports ``models``, ``data``, ``attention`` and
``positional``; only ``cli`` and the ``examples/`` scripts import it.

Usage from Python::

    from keras_transformers import training
    history = training.run("lm", ["--epochs", "1", "--steps-per-epoch", "20"])
"""

import argparse
import contextlib
import datetime
import json
import os
import re
import time

import keras
import numpy as np

from keras_transformers import attention, callbacks, data, models, positional
from keras_transformers.optimizers import AdamW
from keras_transformers.data import BOS_ID, EOS_ID, NUM_SPECIAL_TOKENS, PAD_ID

EXAMPLES = ("lm", "classifier", "seq2seq")

# Per-example defaults: small enough for a few minutes on 2 CPU cores, large enough that the loss
# visibly goes down.
DEFAULTS = {
    "lm": dict(
        attention="full",
        position="rope",
        d_model=128,
        heads=4,
        layers=2,
        ff_dim=None,
        seq_len=128,
        batch_size=32,
        epochs=5,
        lr=5e-3,
        dropout=0.0,
    ),
    "classifier": dict(
        attention="full",
        position="learned",
        d_model=64,
        heads=4,
        layers=2,
        ff_dim=None,
        seq_len=None,
        batch_size=32,
        epochs=5,
        lr=1e-3,
        dropout=0.2,
    ),
    "seq2seq": dict(
        attention="full",
        position="learned",
        d_model=64,
        heads=4,
        layers=2,
        ff_dim=None,
        seq_len=16,
        batch_size=64,
        epochs=4,
        lr=2e-3,
        dropout=0.0,
    ),
}

DESCRIPTIONS = {
    "lm": (
        "Train a byte- (or character-) level decoder-only language model. With no --data it "
        "trains on the docstrings of the Python standard library (nothing is downloaded), "
        "then prints a short greedy sample."
    ),
    "classifier": (
        "Train an encoder-only text classifier. With no --data it learns to tell which "
        "standard-library package family (asyncio, email, http, unittest) a docstring sentence "
        "comes from; prints the validation accuracy."
    ),
    "seq2seq": (
        "Train an encoder-decoder Transformer. With no --data it learns a generated task "
        "(--task reverse|copy|sort|arithmetic); prints the exact-match accuracy of greedy "
        "decoding on validation examples."
    ),
}


# ---------------------------------------------------------------------------------------------
# Argument parsing
# ---------------------------------------------------------------------------------------------


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an integer >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be >= 1")
    return value


def _non_negative_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value}: must be >= 0")
    return value


def _fraction(text):
    value = _non_negative_float(text)
    if not value < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be in [0, 1)")
    return value


def _open_fraction(text):
    value = _fraction(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"{value}: must be in (0, 1)")
    return value


def _layer_spec(text):
    """``--attention``/``--position`` value: a registered name, a JSON config dict or ``none``."""
    text = text.strip()
    if text.startswith("{"):
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as error:
            raise argparse.ArgumentTypeError(f"{text!r}: invalid JSON ({error})") from None
        if not isinstance(spec, dict) or "name" not in spec:
            raise argparse.ArgumentTypeError(
                f"{text!r}: a JSON config needs a 'name' key, e.g. "
                '\'{"name": "sliding_window", "window": 16}\''
            )
        return spec
    if text.lower() in ("none", ""):
        return None
    return text


def spec_name(spec):
    """Short name of an ``--attention``/``--position`` value, for the log folder name."""
    if spec is None:
        return "none"
    if isinstance(spec, dict):
        spec = spec["name"]
    return re.sub(r"[^A-Za-z0-9_.]+", "_", str(spec))


def add_common_arguments(parser, example):
    """Add the flags the three examples share, with ``example``'s defaults."""
    d = DEFAULTS[example]
    model = parser.add_argument_group("model")
    model.add_argument(
        "--attention",
        type=_layer_spec,
        default=d["attention"],
        help="attention core: a name from `keras-transformers list` or a JSON config such as "
        '\'{"name": "sliding_window", "window": 16}\' (default: %(default)s)',
    )
    model.add_argument(
        "--position",
        type=_layer_spec,
        default=d["position"],
        help="positional encoding: a name from `keras-transformers list`, a JSON config, or "
        "'none' (default: %(default)s)",
    )
    model.add_argument(
        "--d-model",
        type=_positive_int,
        default=d["d_model"],
        help="model width d (default: %(default)s)",
    )
    model.add_argument(
        "--heads",
        type=_positive_int,
        default=d["heads"],
        help="attention heads h; must divide --d-model (default: %(default)s)",
    )
    model.add_argument(
        "--layers",
        type=_positive_int,
        default=d["layers"],
        help="blocks (per stack for seq2seq) (default: %(default)s)",
    )
    model.add_argument(
        "--ff-dim",
        type=_positive_int,
        default=d["ff_dim"],
        help="feed-forward width (default: 4 * d-model)",
    )
    model.add_argument(
        "--dropout",
        type=_fraction,
        default=d["dropout"],
        help="dropout rate (default: %(default)s)",
    )
    seq_default = d["seq_len"] if d["seq_len"] is not None else "depends on --tokenizer"
    model.add_argument(
        "--seq-len",
        type=_positive_int,
        default=d["seq_len"],
        help=f"sequence length L (default: {seq_default})",
    )

    train = parser.add_argument_group("training")
    train.add_argument(
        "--data",
        default=None,
        help="your own data (see the description above); default: built-in data",
    )
    train.add_argument(
        "--batch-size",
        type=_positive_int,
        default=d["batch_size"],
        help="batch size B (default: %(default)s)",
    )
    train.add_argument(
        "--epochs", type=_positive_int, default=d["epochs"], help="epochs (default: %(default)s)"
    )
    train.add_argument(
        "--steps-per-epoch",
        type=_positive_int,
        default=None,
        help="batches per epoch (default: one pass over the training data)",
    )
    train.add_argument(
        "--lr",
        type=_non_negative_float,
        default=d["lr"],
        help="peak learning rate of AdamW (default: %(default)s)",
    )
    train.add_argument(
        "--schedule",
        choices=("cosine", "constant"),
        default="cosine",
        help="learning-rate schedule: linear warm-up then cosine decay to 10%% "
        "of --lr, or constant (default: %(default)s)",
    )
    train.add_argument(
        "--warmup-steps",
        type=int,
        default=None,
        help="warm-up steps of the cosine schedule (default: 5%% of all steps, at most 100)",
    )
    train.add_argument(
        "--weight-decay",
        type=_non_negative_float,
        default=0.01,
        help="AdamW weight decay; norms, biases and embeddings are excluded (default: %(default)s)",
    )
    train.add_argument(
        "--val-fraction",
        type=_open_fraction,
        default=0.1,
        help="fraction of the data held out for validation (default: %(default)s)",
    )
    train.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed for data, initialisation and dropout (default: %(default)s)",
    )
    train.add_argument(
        "--jit",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="compile the train step with XLA (default: Keras decides, 'auto')",
    )
    train.add_argument(
        "--logdir",
        default=None,
        help="folder for TensorBoard logs and checkpoints (default: "
        f"runs/{example}/<timestamp>-<attention>-<position>); pass the folder of "
        "an interrupted run to resume it",
    )
    train.add_argument(
        "--distribute",
        choices=("none", "mirrored", "data_parallel"),
        default="none",
        help="data-parallel training: 'mirrored' (tf.distribute.MirroredStrategy, TensorFlow "
        "backend) or 'data_parallel' (keras.distribution.DataParallel, JAX backend) over all "
        "local devices (default: %(default)s)",
    )
    train.add_argument(
        "--precision",
        choices=("float32", "mixed_float16", "mixed_bfloat16"),
        default="float32",
        help="dtype policy; mixed_float16 trains with dynamic loss scaling (Keras wraps the "
        "optimizer in a LossScaleOptimizer) (default: %(default)s)",
    )
    train.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=1,
        help="fit() verbosity: 0 silent, 1 progress bar, 2 one line per epoch "
        "(default: %(default)s)",
    )
    return parser


def build_parser(example, prog=None):
    """The full ``argparse`` parser of one example (``"lm"``, ``"classifier"``, ``"seq2seq"``)."""
    if example not in EXAMPLES:
        raise ValueError(f"example={example!r}: allowed values are {', '.join(EXAMPLES)}")
    epilog = {
        "lm": "--data: a UTF-8 text file, or a folder whose *.txt, *.md and *.py files are read.",
        "classifier": "--data: a .csv/.tsv file with a header row, or a .jsonl file, holding "
        "text and label columns (see --text-column/--label-column); or a folder with one "
        "subfolder of .txt files per class.",
        "seq2seq": "--data: a UTF-8 file with one 'source<TAB>target' pair per line.",
    }[example]
    parser = argparse.ArgumentParser(
        prog=prog,
        description=DESCRIPTIONS[example],
        epilog=epilog,
    )
    add_common_arguments(parser, example)
    extra = parser.add_argument_group(f"{example} options")
    if example == "lm":
        extra.add_argument(
            "--tokenizer",
            choices=("byte", "char", "codepoint", "wordpiece", "bpe"),
            default="byte",
            help="byte (260 ids, no fitting), char (fitted on the text), codepoint (keras-hub), "
            "or wordpiece / bpe sub-words trained on the text with keras-hub's vocabulary tools "
            "(default: %(default)s)",
        )
        extra.add_argument(
            "--vocab-size",
            type=_positive_int,
            default=1000,
            help="vocabulary size of wordpiece / bpe (default: %(default)s)",
        )
        extra.add_argument(
            "--max-chars",
            type=_positive_int,
            default=300_000,
            help="characters of built-in text to use (default: %(default)s)",
        )
        extra.add_argument(
            "--stride",
            type=_positive_int,
            default=None,
            help="step between training windows (default: seq-len, no overlap)",
        )
        extra.add_argument(
            "--prompt", default="The ", help="prompt of the greedy sample (default: %(default)r)"
        )
        extra.add_argument(
            "--sample-length",
            type=int,
            default=200,
            help="tokens to generate after training; 0 skips (default: %(default)s)",
        )
    elif example == "classifier":
        extra.add_argument(
            "--tokenizer",
            choices=("word", "byte", "wordpiece", "bpe"),
            default="word",
            help="word (vocabulary fitted on the training texts), byte, or wordpiece / bpe "
            "sub-words trained with keras-hub's vocabulary tools (default: %(default)s)",
        )
        extra.add_argument(
            "--vocab-size",
            type=_positive_int,
            default=2000,
            help="vocabulary size of word / wordpiece / bpe, reserved ids included "
            "(default: %(default)s)",
        )
        extra.add_argument(
            "--num-examples",
            type=_positive_int,
            default=2400,
            help="examples of the built-in task, at most about 2,700 (default: %(default)s)",
        )
        extra.add_argument(
            "--pooling",
            choices=("mean", "max", "cls"),
            default="mean",
            help="sequence pooling before the classifier head (default: %(default)s)",
        )
        extra.add_argument(
            "--text-column",
            default="text",
            help="text column / JSON key of --data (default: %(default)s)",
        )
        extra.add_argument(
            "--label-column",
            default="label",
            help="label column / JSON key of --data (default: %(default)s)",
        )
    else:
        extra.add_argument(
            "--task",
            choices=("reverse", "copy", "sort", "arithmetic"),
            default="reverse",
            help="generated task when no --data is given (default: %(default)s)",
        )
        extra.add_argument(
            "--num-examples",
            type=_positive_int,
            default=10_000,
            help="generated examples (default: %(default)s)",
        )
        extra.add_argument(
            "--task-vocab",
            type=int,
            default=24,
            help="vocabulary of reverse/copy/sort, 4 reserved ids included (default: %(default)s)",
        )
        extra.add_argument(
            "--max-digits",
            type=int,
            default=3,
            help="operand digits of the arithmetic task (default: %(default)s)",
        )
        extra.add_argument(
            "--tokenizer",
            choices=("char", "byte"),
            default="char",
            help="tokenizer of --data pairs (default: %(default)s)",
        )
        extra.add_argument(
            "--eval-examples",
            type=_positive_int,
            default=200,
            help="validation examples decoded greedily at the end (default: %(default)s)",
        )
    return parser


def parse_args(example, argv=None, prog=None):
    """Parse ``argv`` (default ``sys.argv[1:]``) for ``example`` and check cross-flag rules."""
    parser = build_parser(example, prog=prog)
    args = parser.parse_args(argv)
    if args.d_model % args.heads:
        parser.error(f"--d-model={args.d_model} must be divisible by --heads={args.heads}")
    if args.warmup_steps is not None and args.warmup_steps < 0:
        parser.error(f"--warmup-steps={args.warmup_steps}: must be >= 0")
    args.example = example
    return args


def default_logdir(example, attention_spec, position_spec, root="runs"):
    """``runs/<example>/<YYYYmmdd-HHMMSS>-<attention>-<position>``."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    names = f"{spec_name(attention_spec)}-{spec_name(position_spec)}"
    return os.path.join(root, example, f"{stamp}-{names}")


# ---------------------------------------------------------------------------------------------
# Keras plumbing
# ---------------------------------------------------------------------------------------------


def write_config(args):
    """Write the run's arguments to ``<logdir>/config.json``."""
    config = {k: v for k, v in vars(args).items() if not callable(v)}
    with open(os.path.join(args.logdir, "config.json"), "w", encoding="utf-8") as handle:
        json.dump(config, handle, indent=1, default=str)


def prepare_logdir(args):
    """Create the log folder (``args.logdir``, defaulted here) and write ``config.json``."""
    if args.logdir is None:
        args.logdir = default_logdir(args.example, args.attention, args.position)
    os.makedirs(args.logdir, exist_ok=True)
    write_config(args)
    return args.logdir


def make_callbacks(logdir, monitor="val_loss"):
    """TensorBoard logs, best/last ``.keras`` checkpoints and backup-and-restore.

    Returns:
        ``[TensorBoard(logdir), ModelCheckpoint(logdir/best.keras, save_best_only on monitor),
        ModelCheckpoint(logdir/last.keras), BackupAndRestore(logdir/backup)]``.
    """
    return [
        keras.callbacks.TensorBoard(log_dir=logdir),
        keras.callbacks.ModelCheckpoint(
            os.path.join(logdir, "best.keras"), monitor=monitor, save_best_only=True
        ),
        keras.callbacks.ModelCheckpoint(os.path.join(logdir, "last.keras")),
        keras.callbacks.BackupAndRestore(os.path.join(logdir, "backup")),
    ]


def steps_per_epoch(args, num_train):
    """Batches per epoch: ``--steps-per-epoch`` or one pass over ``num_train`` examples."""
    return args.steps_per_epoch or max(1, -(-num_train // args.batch_size))


def make_optimizer(args, total_steps):
    """AdamW with a warm-up + cosine (or constant) learning rate and global-norm clipping."""
    if args.schedule == "constant":
        learning_rate = args.lr
    else:
        warmup = args.warmup_steps
        if warmup is None:
            warmup = min(100, total_steps // 20)
        warmup = min(warmup, max(total_steps - 1, 0))
        learning_rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup else args.lr,
            decay_steps=max(total_steps - warmup, 1),
            alpha=0.1,
            warmup_target=args.lr if warmup else None,
            warmup_steps=warmup,
        )
    optimizer = AdamW(
        learning_rate=learning_rate, weight_decay=args.weight_decay, global_clipnorm=1.0
    )
    optimizer.exclude_from_weight_decay(
        var_names=["bias", "gamma", "beta", "embedding", "embeddings"]
    )
    return optimizer


def compile_model(model, args, total_steps, loss, metrics=None, weighted_metrics=None):
    model.compile(
        optimizer=make_optimizer(args, total_steps),
        loss=loss,
        metrics=metrics,
        weighted_metrics=weighted_metrics,
        jit_compile="auto" if args.jit is None else args.jit,
    )
    return model


@contextlib.contextmanager
def user_errors(what):
    """Turn a bad file, flag or size (OSError/ValueError/TypeError) into a one-line exit."""
    try:
        yield
    except (OSError, ValueError, TypeError) as error:
        raise SystemExit(f"error: {what}: {error}") from error


def check_specs(args):
    """Fail fast (before any data is read) on an unknown or misconfigured --attention/--position."""
    with user_errors("--attention"):
        attention.get(args.attention)
    if args.position is not None:
        with user_errors("--position"):
            positional.get(args.position)


@contextlib.contextmanager
def distribution_scope(args):
    """Build and compile the model under ``--distribute`` (see the README on scaling out).

    ``mirrored`` replicates the model on every local device of the TensorFlow backend and
    all-reduces the gradients; ``data_parallel`` shards each batch over the JAX devices with
    ``keras.distribution.DataParallel``. The global batch is ``--batch-size`` either way.
    """
    backend = keras.backend.backend()
    if args.distribute == "mirrored":
        if backend != "tensorflow":
            raise SystemExit(
                f"--distribute mirrored needs KERAS_BACKEND=tensorflow (not {backend})"
            )
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy()
        print(f"MirroredStrategy: {strategy.num_replicas_in_sync} replicas")
        with strategy.scope():
            yield
        return
    if args.distribute == "data_parallel":
        if backend != "jax":
            raise SystemExit(f"--distribute data_parallel needs KERAS_BACKEND=jax (not {backend})")
        distribution = keras.distribution.DataParallel()
        print(f"DataParallel over {len(keras.distribution.list_devices())} devices")
        with distribution.scope():
            yield
        return
    yield


def _setup(args):
    """Check the layer names, seed everything, create the log folder and print the run header."""
    check_specs(args)
    keras.config.set_dtype_policy(args.precision)
    keras.utils.set_random_seed(args.seed)
    logdir = prepare_logdir(args)
    print(f"keras {keras.__version__} (backend: {keras.backend.backend()}); logdir: {logdir}")
    return logdir


def _finish(history, args, started, **summary):
    """Attach the run's results to the History and print the log folder."""
    history.logdir = args.logdir
    history.summary = summary
    write_config(args)  # again: sizes resolved from the data (e.g. --seq-len) are now known
    losses = history.history.get("loss", [])
    if losses:
        print(f"loss: first epoch {losses[0]:.4f}, last epoch {losses[-1]:.4f}")
    print(f"Finished in {time.time() - started:.1f} s.")
    print(f"Logs and checkpoints (best.keras, last.keras): {args.logdir}")
    print(f"View the curves with:\n  tensorboard --logdir {args.logdir}")
    return history


def epoch_stream(arrays, batch_size, steps, seed, first_epoch, last_epoch):
    """The examples of epochs ``first_epoch .. last_epoch - 1``, in training order.

    Every epoch is ``steps`` full batches taken from a stream of passes over the data, each pass
    in its own seeded random order, so the batches of epoch ``e`` depend only on ``(seed, e)``.
    ``fit(stream, shuffle=False, steps_per_epoch=steps)`` reads it sequentially across epochs;
    a run resumed by ``BackupAndRestore`` at epoch ``k`` builds the stream from ``k`` and trains on
    exactly the batches an uninterrupted run would have seen.

    Args:
        arrays: ``(x, y)`` or ``(x, y, sample_weight)``; ``x`` may be a dict of arrays, all with
            ``N`` examples on axis 0.

    Returns:
        the arrays gathered to ``(last_epoch - first_epoch) · steps · batch_size`` examples.
    """
    num = len(arrays[1])
    per_epoch = steps * batch_size
    positions = np.arange(first_epoch * per_epoch, last_epoch * per_epoch)  # in the pass stream
    rows = np.empty(len(positions), dtype=np.int64)
    for pass_index in np.unique(positions // num):
        where = positions // num == pass_index
        order = np.random.default_rng([seed, int(pass_index)]).permutation(num)
        rows[where] = order[positions[where] % num]

    def take(array):
        if isinstance(array, dict):
            return {key: value[rows] for key, value in array.items()}
        return array[rows]

    return tuple(take(array) for array in arrays)


def _fit(model, args, x, y, validation_data, sample_weight=None, extra_callbacks=()):
    num_train = len(y)
    steps = steps_per_epoch(args, num_train)
    print(
        f"{num_train} training / {len(validation_data[1])} validation examples, "
        f"{steps} steps per epoch, {model.count_params():,} parameters"
    )
    # A restarted run resumes at the epoch BackupAndRestore saved (its metadata file); the
    # stream then starts at that epoch so the resumed run sees the same batches.
    first_epoch = 0
    metadata = os.path.join(args.logdir, "backup", "training_metadata.json")
    if os.path.exists(metadata):
        with open(metadata) as f:
            first_epoch = min(int(json.load(f).get("epoch", 0)), args.epochs)
    arrays = (x, y) if sample_weight is None else (x, y, sample_weight)
    stream = epoch_stream(arrays, args.batch_size, steps, args.seed, first_epoch, args.epochs)
    return model.fit(
        stream[0],
        stream[1],
        sample_weight=stream[2] if len(stream) == 3 else None,
        batch_size=args.batch_size,
        steps_per_epoch=steps,
        shuffle=False,
        epochs=args.epochs,
        validation_data=validation_data,
        callbacks=make_callbacks(args.logdir)
        + run_callbacks(args, stream[0])
        + list(extra_callbacks),
        verbose=args.verbose,
    )


def run_callbacks(args, x):
    """Hyper-parameters for the HParams dashboard and tokens/s scalars of this run."""
    first = next(iter(x.values())) if isinstance(x, dict) else x
    hparams = {
        key: value if isinstance(value, (int, float, str, bool)) else str(value)
        for key, value in vars(args).items()
        if key not in ("logdir", "data", "verbose") and value is not None
    }
    return [
        callbacks.HParamsLogger(hparams, args.logdir),
        callbacks.ThroughputLogger(args.batch_size, int(np.prod(first.shape[1:])), args.logdir),
    ]


# ---------------------------------------------------------------------------------------------
# Language model
# ---------------------------------------------------------------------------------------------


def token_labels(tokenizer, ids):
    """One printable label per token id (for the axes of attention heatmaps)."""
    special = {PAD_ID: "<pad>", BOS_ID: "<bos>", EOS_ID: "<eos>"}
    labels = []
    for token in (int(t) for t in ids):
        text = special.get(token) or repr(tokenizer.decode([token]))[1:-1]
        labels.append(text[:8] or " ")
    return labels


def attention_logger(args, tokenizer, x_val, max_tokens=32):
    """Attention heatmaps of the first validation example, with token labels when short."""
    sample = x_val[:1]  # (1, L)
    labels = token_labels(tokenizer, sample[0]) if sample.shape[1] <= max_tokens else None
    return callbacks.AttentionMapLogger(sample, args.logdir, token_labels=labels)


def lm_loggers(args, tokenizer, x_val):
    """Attention maps and a greedy text sample each epoch (TensorBoard Images and Text)."""
    loggers = [attention_logger(args, tokenizer, x_val)]
    if args.sample_length > 0:
        loggers.append(
            callbacks.TextSampleLogger(
                [args.prompt],
                tokenizer.encode,
                tokenizer.decode,
                args.logdir,
                num_tokens=min(args.sample_length, 64),
            )
        )
    return loggers


def greedy_sample(model, tokenizer, prompt, num_tokens, seq_len):
    """Greedy continuation of ``prompt`` by full recomputation (no KV cache).

    The running text is right-padded to the model's fixed length ``seq_len`` (causal attention
    keeps the padding invisible); past ``seq_len`` tokens the window slides. Reserved ids are
    never chosen.

    Returns:
        The prompt followed by ``num_tokens`` generated tokens, decoded.
    """
    ids = [int(i) for i in tokenizer.encode(prompt)] or [BOS_ID]
    window = np.zeros((1, seq_len), dtype="int32")  # (1, L)
    for _ in range(num_tokens):
        context = ids[-seq_len:]
        window[:] = 0
        window[0, : len(context)] = context
        logits = np.asarray(model.predict_on_batch(window))[0, len(context) - 1]  # (V,)
        logits[:NUM_SPECIAL_TOKENS] = -np.inf
        ids.append(int(np.argmax(logits)))
    return tokenizer.decode(np.asarray(ids, dtype="int32"))


def train_lm(args):
    """Train the decoder LM described by ``args`` (see ``build_parser("lm")``); return History."""
    started = time.time()
    logdir = _setup(args)
    with user_errors("--data"):
        if args.data:
            text = data.load_text(args.data)
            source = args.data
        else:
            text = data.builtin_text(max_chars=args.max_chars, seed=args.seed)
            source = "built-in text (standard-library docstrings)"
        tokenizer = data.train_tokenizer(
            args.tokenizer, text.split("\n"), vocabulary_size=args.vocab_size
        )
        tokenizer.save(os.path.join(logdir, "tokenizer.json"))
        ids = tokenizer.encode(text)  # (T,)
        print(
            f"data: {source}: {len(text):,} characters -> {ids.size:,} tokens "
            f"({type(tokenizer).__name__}, vocabulary {tokenizer.vocabulary_size})"
        )
        # Split the token stream (not the windows) so no validation text is seen in training.
        num_val = max(int(round(ids.size * args.val_fraction)), args.seq_len + 1)
        train_ids, val_ids = ids[: ids.size - num_val], ids[ids.size - num_val :]
        x, y = data.make_lm_windows(train_ids, args.seq_len, stride=args.stride)  # (N, L) each
        validation = data.make_lm_windows(val_ids, args.seq_len)

    with distribution_scope(args):
        with user_errors("model"):
            model = models.build_decoder_lm(
                tokenizer.vocabulary_size,
                args.seq_len,
                d_model=args.d_model,
                num_heads=args.heads,
                num_layers=args.layers,
                ff_dim=args.ff_dim,
                attention=args.attention,
                position=args.position,
                dropout=args.dropout,
            )
        total = steps_per_epoch(args, len(x)) * args.epochs
        compile_model(
            model,
            args,
            total,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )
        history = _fit(
            model,
            args,
            x,
            y,
            validation,
            extra_callbacks=lm_loggers(args, tokenizer, validation[0]),
        )
    sample = None
    if args.sample_length > 0:
        sample = greedy_sample(model, tokenizer, args.prompt, args.sample_length, args.seq_len)
        print(f"Greedy sample ({args.sample_length} tokens after {args.prompt!r}):")
        print("-" * 72)
        print(sample)
        print("-" * 72)
    return _finish(history, args, started, sample=sample)


# ---------------------------------------------------------------------------------------------
# Classifier
# ---------------------------------------------------------------------------------------------


def train_classifier(args):
    """Train the encoder classifier described by ``args``; return History.

    ``history.summary["val_accuracy"]`` holds the final validation accuracy.
    """
    started = time.time()
    logdir = _setup(args)
    with user_errors("--data"):
        if args.data is None:
            texts, labels, class_names = data.builtin_classification(
                args.num_examples, seed=args.seed
            )
            source = "built-in task (which stdlib package family a docstring sentence is from)"
        elif os.path.isdir(args.data):
            texts, labels, class_names = data.load_class_folders(args.data, seed=args.seed)
            source = args.data
        else:
            texts, labels, class_names = data.load_classification_file(
                args.data, text_column=args.text_column, label_column=args.label_column
            )
            source = args.data
        (train_texts, y_train), (val_texts, y_val) = data.train_val_split(
            np.asarray(texts, dtype=object),
            labels,
            val_fraction=args.val_fraction,
            seed=args.seed,
        )
    tokenizer = data.train_tokenizer(
        args.tokenizer, list(train_texts), vocabulary_size=args.vocab_size
    )
    seq_len = args.seq_len or (192 if args.tokenizer == "byte" else 64)
    args.seq_len = seq_len
    tokenizer.save(os.path.join(logdir, "tokenizer.json"))
    with open(os.path.join(logdir, "classes.json"), "w", encoding="utf-8") as handle:
        json.dump(class_names, handle)
    add_bos = args.pooling == "cls"
    x_train = data.encode_texts(tokenizer, list(train_texts), seq_len, add_bos=add_bos)
    x_val = data.encode_texts(tokenizer, list(val_texts), seq_len, add_bos=add_bos)
    print(
        f"data: {source}: {len(texts)} texts, {len(class_names)} classes {class_names}; "
        f"{type(tokenizer).__name__} vocabulary {tokenizer.vocabulary_size}, length {seq_len}"
    )

    with distribution_scope(args):
        with user_errors("model"):
            model = models.build_encoder_classifier(
                tokenizer.vocabulary_size,
                len(class_names),
                seq_len,
                d_model=args.d_model,
                num_heads=args.heads,
                num_layers=args.layers,
                ff_dim=args.ff_dim,
                attention=args.attention,
                position=args.position,
                dropout=args.dropout,
                pooling=args.pooling,
            )
        total = steps_per_epoch(args, len(x_train)) * args.epochs
        compile_model(
            model,
            args,
            total,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )
        loggers = [attention_logger(args, tokenizer, x_val)]
        history = _fit(model, args, x_train, y_train, (x_val, y_val), extra_callbacks=loggers)
    results = model.evaluate(x_val, y_val, batch_size=args.batch_size, verbose=0, return_dict=True)
    majority = float(np.max(np.bincount(y_val, minlength=len(class_names))) / len(y_val))
    print(
        f"Validation accuracy: {results['accuracy']:.3f} "
        f"(majority class: {majority:.3f}, {len(y_val)} examples)"
    )
    return _finish(history, args, started, val_accuracy=float(results["accuracy"]))


# ---------------------------------------------------------------------------------------------
# Sequence to sequence
# ---------------------------------------------------------------------------------------------


def greedy_decode(model, src, tgt_len):
    """Greedy decoding by full recomputation: ``src (N, Ls) -> ids (N, tgt_len)``.

    The decoder input starts as ``<bos>`` followed by padding; step ``t`` fills position
    ``t + 1`` with the argmax at position ``t`` (reserved ids other than ``<eos>`` excluded).
    """
    n = src.shape[0]
    dec = np.zeros((n, tgt_len), dtype="int32")  # (N, Lt)
    dec[:, 0] = BOS_ID
    out = np.zeros((n, tgt_len), dtype="int32")  # (N, Lt)
    banned = [i for i in range(NUM_SPECIAL_TOKENS) if i != EOS_ID]
    for t in range(tgt_len):
        logits = np.asarray(
            model.predict_on_batch({"encoder_token_ids": src, "decoder_token_ids": dec})
        )[:, t]  # (N, V)
        logits[:, banned] = -np.inf
        out[:, t] = np.argmax(logits, axis=-1)
        if t + 1 < tgt_len:
            dec[:, t + 1] = out[:, t]
    return out


def _strip(ids):
    """Token ids up to the first ``<eos>``/``<pad>``."""
    result = []
    for i in ids:
        if int(i) in (EOS_ID, PAD_ID):
            break
        result.append(int(i))
    return result


def _seq2seq_data(args):
    """Return ``(src, tgt_in, tgt_out, tokenizer or None, description)``."""
    if args.data:
        sources, targets = data.load_tsv_pairs(args.data)
        if args.tokenizer == "char":
            tokenizer = data.CharTokenizer.fit("".join(sources) + "".join(targets))
        else:
            tokenizer = data.ByteTokenizer()
        src_len = min(args.seq_len, max(len(tokenizer.encode(s)) for s in sources))
        tgt_len = min(args.seq_len, max(len(tokenizer.encode(t)) for t in targets) + 1)
        src, tgt_in, tgt_out = data.encode_pairs(
            tokenizer, tokenizer, sources, targets, src_len, tgt_len
        )
        return src, tgt_in, tgt_out, tokenizer, f"{args.data}: {len(sources)} pairs"
    if args.task == "arithmetic":
        task = data.arithmetic_task(args.num_examples, max_digits=args.max_digits, seed=args.seed)
        return (
            task.src,
            task.tgt_in,
            task.tgt_out,
            task.tokenizer,
            f"generated task 'arithmetic' (e.g. {task.questions[0]}={task.answers[0]})",
        )
    make = {"reverse": data.reverse_task, "copy": data.copy_task, "sort": data.sort_task}
    src, tgt_in, tgt_out = make[args.task](
        args.num_examples, length=args.seq_len, vocab_size=args.task_vocab, seed=args.seed
    )
    return (
        src,
        tgt_in,
        tgt_out,
        None,
        (f"generated task {args.task!r}: length {args.seq_len}, vocabulary {args.task_vocab}"),
    )


def train_seq2seq(args):
    """Train the encoder-decoder described by ``args``; return History.

    ``history.summary["exact_match"]`` holds the greedy exact-match accuracy on validation
    examples.
    """
    started = time.time()
    logdir = _setup(args)
    with user_errors("--data" if args.data else "--task"):
        src, tgt_in, tgt_out, tokenizer, source = _seq2seq_data(args)
    if tokenizer is not None:
        tokenizer.save(os.path.join(logdir, "tokenizer.json"))
        vocab = tokenizer.vocabulary_size
    else:
        vocab = args.task_vocab
    weights = (tgt_out != 0).astype("float32")  # (N, Lt): padding does not count
    (x_train, y_train), (x_val, y_val) = data.train_val_split(
        (src, tgt_in), (tgt_out, weights), val_fraction=args.val_fraction, seed=args.seed
    )
    print(f"data: {source}; source length {src.shape[1]}, target length {tgt_out.shape[1]}")

    with distribution_scope(args):
        with user_errors("model"):
            model = models.build_seq2seq(
                vocab,
                vocab,
                src.shape[1],
                tgt_out.shape[1],
                d_model=args.d_model,
                num_heads=args.heads,
                num_encoder_layers=args.layers,
                num_decoder_layers=args.layers,
                ff_dim=args.ff_dim,
                attention=args.attention,
                position=args.position,
                dropout=args.dropout,
            )
        total = steps_per_epoch(args, len(y_train[0])) * args.epochs
        compile_model(
            model,
            args,
            total,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0),
            weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="token_accuracy")],
        )

        def as_inputs(pair):
            return {"encoder_token_ids": pair[0], "decoder_token_ids": pair[1]}

        history = _fit(
            model,
            args,
            as_inputs(x_train),
            y_train[0],
            (as_inputs(x_val), y_val[0], y_val[1]),
            sample_weight=y_train[1],
        )
    n = min(args.eval_examples, len(y_val[0]))
    predicted = greedy_decode(model, x_val[0][:n], tgt_out.shape[1])
    hits = [_strip(p) == _strip(t) for p, t in zip(predicted, y_val[0][:n])]
    exact = float(np.mean(hits))

    def show(ids):
        ids = _strip(ids)
        if tokenizer is None:
            return " ".join(str(i) for i in ids)
        return tokenizer.decode(np.asarray(ids, dtype="int32"))

    print("Greedy decoding of validation examples (source -> predicted | target):")
    for i in range(min(3, n)):
        mark = "ok" if hits[i] else "--"
        print(f"  [{mark}] {show(x_val[0][i])} -> {show(predicted[i])} | {show(y_val[0][i])}")
    print(f"Exact-match accuracy of greedy decoding: {exact:.3f} ({n} validation examples)")
    return _finish(history, args, started, exact_match=exact)


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------

TRAINERS = {"lm": train_lm, "classifier": train_classifier, "seq2seq": train_seq2seq}


def run(example, argv=None, prog=None):
    """Parse ``argv`` for ``example`` and train; return the History.

    Used by ``examples/train_<example>.py`` and ``keras-transformers train <example>``.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = parse_args(example, argv, prog=prog)
    return TRAINERS[example](args)


def main(example, argv=None, prog=None):
    """Like :func:`run`, for scripts: returns the exit status 0 (errors exit with a message)."""
    run(example, argv, prog=prog)
    return 0
