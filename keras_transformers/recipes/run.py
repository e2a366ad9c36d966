"""A training run's plumbing: run folder, callbacks, learning rate, resumable batches, report.

Every run writes into one folder (default ``runs/<example>/<timestamp>-<attention>-<position>``):
TensorBoard event files (``train/``, ``validation/``), ``best.keras`` (lowest validation loss)
and ``last.keras`` checkpoints, ``config.json`` (the arguments) and ``backup/`` while training
runs: start the same command again with ``--logdir <that folder>`` and an interrupted run resumes
from its last finished epoch, on exactly the batches an uninterrupted run would have seen
(:func:`epoch_batches`), so it ends bit-identical.

The example scripts call these around their own ``build -> compile -> fit``::

    args = flags.parse_args("lm")
    run.setup(args)
    ...
    with run.distribution_scope(args):
        model = kt.models.build_decoder_lm(...)
        model.compile(optimizer=kt.optimizers.adamw(run.learning_rate(args, total)), ...)
        x, y = run.epoch_batches(args, (x_train, y_train), steps)
        history = model.fit(x, y, ..., callbacks=run.callbacks(args, x))
    run.finish(history, args)
"""

import contextlib
import json
import os
import time

import keras
import numpy as np

from keras_transformers import attention, callbacks, optimizers, positional
from keras_transformers.recipes import distribute, resume
from keras_transformers.recipes.flags import default_logdir

_clock = {"started": time.time()}


@contextlib.contextmanager
def user_errors(what):
    """Turn a bad file, flag or size (OSError/ValueError/TypeError) into a one-line exit."""
    try:
        yield
    except (OSError, ValueError, TypeError) as error:
        raise SystemExit(f"error: {what}: {error}") from error


def check_specs(args, known_positions=()):
    """Fail fast (before any data is read) on an unknown or misconfigured --attention/--position.

    ``known_positions``: names the model builder handles itself (not in the registry).
    """
    with user_errors("--attention"):
        attention.get(args.attention)
    if getattr(args, "position", None) not in (None, *known_positions):
        with user_errors("--position"):
            positional.get(args.position)


def write_config(args, finished=False):
    """Write the run's arguments to ``<logdir>/config.json`` (``"finished": true`` at the end)."""
    config = {k: v for k, v in vars(args).items() if not callable(v)}
    if finished:
        config["finished"] = True
    with open(os.path.join(args.logdir, "config.json"), "w", encoding="utf-8") as handle:
        json.dump(config, handle, indent=1, default=str)


def prepare_logdir(args):
    """Create the log folder (``args.logdir``, defaulted here) and write ``config.json``.

    Before anything is written, :func:`resume.check_run_folder` refuses a folder holding a
    finished run (unless ``--overwrite``), an interrupted run started with other flags, damaged
    backup files and a folder that cannot be written, each with a one-line error.
    """
    if args.logdir is None:
        args.logdir = default_logdir(args.example, args.attention, getattr(args, "position", None))
    try:
        state = resume.check_run_folder(args)
        os.makedirs(args.logdir, exist_ok=True)
        write_config(args)
    except OSError as error:
        raise SystemExit(
            f"error: --logdir {args.logdir}: cannot write there ({error.strerror or error}); "
            "give a folder you can write to"
        ) from None
    if state == "resume":
        print(f"Resuming the interrupted run in {args.logdir}")
    elif state == "overwrite":
        print(f"--overwrite: the earlier run in {args.logdir} was removed")
    return args.logdir


def setup(args, known_positions=()):
    """Check the layer names, seed everything, create the log folder and print the run header."""
    _clock["started"] = time.time()
    check_specs(args, known_positions)
    keras.config.set_dtype_policy(getattr(args, "precision", "float32"))
    keras.utils.set_random_seed(args.seed)
    logdir = prepare_logdir(args)
    print(f"keras {keras.__version__} (backend: {keras.backend.backend()}); logdir: {logdir}")
    return logdir


def distribution_scope(args):
    """Build, compile and fit under ``--distribute`` (:func:`distribute.scope`; README: scaling).

    ``mirrored`` / ``data_parallel``: data parallel over the local devices (TensorFlow / JAX);
    ``model_parallel``: weights sharded on a ``--mesh`` (JAX); ``multi_worker``: several
    processes or hosts (TensorFlow ``TF_CONFIG``, JAX ``jax.distributed``).
    """
    return distribute.scope(args)


def steps_per_epoch(args, num_train):
    """Batches per epoch: ``--steps-per-epoch`` or one pass over ``num_train`` examples."""
    return args.steps_per_epoch or max(1, -(-num_train // args.batch_size))


def learning_rate(args, total_steps, peak=None):
    """``--lr`` under ``--schedule``: linear warm-up then cosine decay to ``0.1 · lr``, or constant.

    The warm-up is ``--warmup-steps`` (default 5% of ``total_steps``, at most 100). ``peak``
    replaces ``--lr`` (scripts with one learning rate per phase).
    """
    lr = args.lr if peak is None else peak
    if args.schedule == "constant":
        return lr
    warmup = args.warmup_steps
    if warmup is None:
        warmup = min(100, total_steps // 20)
    warmup = min(warmup, max(total_steps - 1, 0))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else lr,
        decay_steps=max(total_steps - warmup, 1),
        alpha=0.1,
        warmup_target=lr if warmup else None,
        warmup_steps=warmup,
    )


def make_optimizer(args, total_steps):
    """``kt.optimizers.adamw`` at :func:`learning_rate` with ``--weight-decay``."""
    return optimizers.adamw(learning_rate(args, total_steps), weight_decay=args.weight_decay)


def compile_model(model, args, total_steps, loss, metrics=None, weighted_metrics=None):
    """``model.compile`` with :func:`make_optimizer` and ``--jit``."""
    model.compile(
        optimizer=make_optimizer(args, total_steps),
        loss=loss,
        metrics=metrics,
        weighted_metrics=weighted_metrics,
        jit_compile=jit_compile(args),
    )
    return model


def jit_compile(args):
    """``--jit`` / ``--no-jit`` for ``compile(jit_compile=...)``; neither: ``"auto"``."""
    return "auto" if args.jit is None else args.jit


def make_callbacks(logdir, monitor="val_loss"):
    """TensorBoard logs, best/last ``.keras`` checkpoints and backup-and-restore.

    Returns:
        ``[TensorBoard(logdir), ModelCheckpoint(logdir/best.keras, save_best_only on monitor),
        ModelCheckpoint(logdir/last.keras), ResumableBackup(logdir/backup)]``: the backup holds
        the weights, optimizer, epoch, dropout RNG state and the best ``monitor`` value so far, so a
        resumed run is bit-identical and ``best.keras`` only improves across a restart.
    """
    best = keras.callbacks.ModelCheckpoint(
        os.path.join(logdir, "best.keras"), monitor=monitor, save_best_only=True
    )
    return [
        keras.callbacks.TensorBoard(log_dir=logdir),
        best,
        keras.callbacks.ModelCheckpoint(os.path.join(logdir, "last.keras")),
        resume.ResumableBackup(os.path.join(logdir, "backup"), checkpoints=[best]),
    ]


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


def all_callbacks(args, x):
    """:func:`make_callbacks` of the run folder, then :func:`run_callbacks`."""
    return make_callbacks(args.logdir) + run_callbacks(args, x)


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
    return tuple(distribute.rows_of(array, rows) for array in arrays)


def resume_epoch(args):
    """The epoch ``BackupAndRestore`` will resume at (0 for a new run)."""
    metadata = os.path.join(args.logdir, "backup", "training_metadata.json")
    if not os.path.exists(metadata):
        return 0
    with open(metadata) as handle:
        return min(int(json.load(handle).get("epoch", 0)), args.epochs)


def epoch_batches(args, arrays, steps):
    """:func:`epoch_stream` of the epochs this run still has to train (all of them when new).

    Pass the result to ``fit(..., shuffle=False, steps_per_epoch=steps)``.
    """
    batch = distribute.stream_batch_size(args)  # x processes on JAX multi_worker
    stream = epoch_stream(arrays, batch, steps, args.seed, resume_epoch(args), args.epochs)
    return distribute.local_rows(args, stream)


def validation_data(args, arrays):
    """``fit(validation_data=...)`` under ``--distribute`` (:func:`distribute.validation_rows`):
    ``arrays`` unchanged unless a JAX batch axis cannot split the last batch."""
    return distribute.validation_rows(args, arrays)


def describe(model, args, num_train, num_val, steps):
    """Print the sizes of the run before ``fit``."""
    print(
        f"{num_train} training / {num_val} validation examples, "
        f"{steps} steps per epoch, {model.count_params():,} parameters"
    )


def start_from(model, args):
    """``--init-from`` (the checkpoint's weights) then ``--lora`` (adapters, the rest frozen) on
    a freshly built ``model``, before ``compile``. Returns ``model``."""
    from keras_transformers.models.lora import enable_lora

    if getattr(args, "init_from", None):
        try:
            model.load_weights(args.init_from)
        except (ValueError, KeyError, TypeError) as error:
            raise SystemExit(
                f"error: --init-from {args.init_from}: its weights do not fit the model these "
                f"flags build ({type(model).__name__}, {model.count_params():,} parameters); use "
                f"the model flags of the run that wrote it (its config.json). ({error})"
            ) from error
        print(f"init: weights from {args.init_from}")
    if getattr(args, "lora", None):
        enable_lora(model, args.lora)
        trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        total = sum(int(np.prod(w.shape)) for w in model.weights)
        print(
            f"LoRA rank {args.lora}: {trainable:,} of {total:,} parameters trainable "
            f"({100.0 * trainable / total:.1f} %)"
        )
    return model


def save_finetuned(model, args):
    """After ``fit``: with ``--lora``, the adapters beside the checkpoints (``lora_weights.npz``);
    with ``--export DIR``, ``best.keras`` exported by :func:`export_best`."""
    from keras_transformers.models.lora import save_lora_weights

    if getattr(args, "lora", None):
        path = os.path.join(args.logdir, "lora_weights.npz")
        save_lora_weights(model, path)
        print(f"LoRA weights: {path}")
    if getattr(args, "export", None):
        export_best(args)


def export_best(args):
    """``--export DIR``: ``best.keras`` (else the last model) served by ``model.export``.

    TensorFlow and JAX write a TensorFlow SavedModel (endpoint ``serve``); Keras' PyTorch path
    needs ``torch_xla``, so on PyTorch this stops with that reason.
    """
    path = os.path.join(args.logdir, "best.keras")
    if not os.path.exists(path):
        path = os.path.join(args.logdir, "last.keras")
    if keras.backend.backend() not in ("tensorflow", "jax"):
        raise SystemExit(
            f"error: --export: the {keras.backend.backend()} backend cannot write a SavedModel "
            "here (Keras needs torch_xla for it); export from KERAS_BACKEND=tensorflow or jax "
            f"with the checkpoint {path}"
        )
    model = keras.saving.load_model(path)
    with user_errors("--export"):
        model.export(args.export, format="tf_saved_model", verbose=False)
    print(f"Exported {os.path.basename(path)} as a SavedModel (endpoint 'serve'): {args.export}")


def finish(history, args, started=None, **summary):
    """Attach the run's results to the History, rewrite config.json and print the log folder.

    ``started``: the run's start time (default: when :func:`setup` ran).
    """
    started = _clock["started"] if started is None else started
    history.logdir = args.logdir
    history.summary = summary
    # again: sizes resolved from the data (e.g. --seq-len) are now known; marks the run finished
    write_config(args, finished=True)
    losses = history.history.get("loss", [])
    if losses:
        print(f"loss: first epoch {losses[0]:.4f}, last epoch {losses[-1]:.4f}")
    print(f"Finished in {time.time() - started:.1f} s.")
    print(f"Logs and checkpoints (best.keras, last.keras): {args.logdir}")
    print(f"View the curves with:\n  tensorboard --logdir {args.logdir}")
    return history


def token_labels(tokenizer, ids):
    """One printable label per token id (for the axes of attention heatmaps)."""
    from keras_transformers.data import BOS_ID, EOS_ID, PAD_ID

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
