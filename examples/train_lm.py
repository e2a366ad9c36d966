"""
Title: A byte-level decoder language model
Description: Train a small decoder-only Transformer on text, then print a greedy sample.

With no arguments it trains on the docstrings of the Python standard library (real English text
that ships with every Python; nothing is downloaded) for a few minutes on a CPU, logs to
TensorBoard and prints the run folder::

    python examples/train_lm.py
    python examples/train_lm.py --data my_book.txt --epochs 10 --seq-len 256
    python examples/train_lm.py --attention sliding_window --position rope
    python examples/train_lm.py --help

The run folder holds ``best.keras``, ``last.keras`` and ``tokenizer.json``; sample from it with
``python examples/generate.py --model <run>/best.keras``. Same as ``keras-transformers train lm``.
Start the same command with ``--logdir <run>`` to resume an interrupted run.
Fine-tune a checkpoint with ``--init-from <run>/best.keras --lora 4`` and serve it with
``--export DIR`` (docs/guide/fine-tuning.md).
"""

"""
## Setup

The flags are parsed before Keras is imported, so ``--help`` answers at once.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from keras_transformers.recipes import flags

args = flags.parse_args("lm")

import keras

import keras_transformers as kt
from keras_transformers.recipes import lm, run

run.setup(args)  # checks --attention/--position, seeds, creates the run folder

"""
## Data

The text is tokenized (``--tokenizer byte`` by default: 256 byte ids + 4 reserved) and cut into
windows of ``--seq-len`` tokens; the target of each window is the same window shifted by one.
"""

with run.user_errors("--data"):
    tokenizer, (x_train, y_train), (x_val, y_val) = lm.load_data(args)

"""
## Model, compile, fit

A decoder-only Transformer: token embedding, ``--layers`` causal blocks, final norm, tied
output projection. AdamW with global-norm clipping and a warm-up + cosine learning rate.
"""

with run.distribution_scope(args):
    with run.user_errors("model"):
        model = kt.models.build_decoder_lm(
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
    run.start_from(model, args)  # --init-from, --lora
    steps = run.steps_per_epoch(args, len(x_train))
    model.compile(
        optimizer=kt.optimizers.adamw(
            run.learning_rate(args, steps * args.epochs), weight_decay=args.weight_decay
        ),
        loss=kt.losses.SparseSoftmaxCrossEntropy(ignore_class=0),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=run.jit_compile(args),
    )
    run.describe(model, args, len(x_train), len(x_val), steps)
    # The batches of the epochs still to train, in a seeded order: a resumed run sees the same.
    x, y = run.epoch_batches(args, (x_train, y_train), steps)
    history = model.fit(
        x,
        y,
        batch_size=args.batch_size,
        steps_per_epoch=steps,
        shuffle=False,
        epochs=args.epochs,
        validation_data=run.validation_data(args, (x_val, y_val)),
        callbacks=run.all_callbacks(args, x) + lm.loggers(args, tokenizer, x_val),
        verbose=args.verbose,
    )

"""
## Sample

Greedy continuation of ``--prompt`` by the trained model.
"""

sample = lm.print_sample(model, tokenizer, args)
run.save_finetuned(model, args)  # --lora adapters, --export
run.finish(history, args, sample=sample)
