"""
Title: Sequence to sequence with an encoder-decoder Transformer
Description: Train a small encoder-decoder Transformer and report greedy exact-match accuracy.

With no arguments it learns to reverse random token sequences (a generated task; also
``--task copy``, ``sort`` or ``arithmetic``). Logs to TensorBoard and prints the run folder::

    python examples/train_seq2seq.py
    python examples/train_seq2seq.py --task arithmetic --epochs 8
    python examples/train_seq2seq.py --data pairs.tsv --seq-len 48
    python examples/train_seq2seq.py --help

``--data`` takes a UTF-8 file of ``source<TAB>target`` lines. Same as
``keras-transformers train seq2seq``.
"""

"""
## Setup

The flags are parsed before Keras is imported, so ``--help`` answers at once.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from keras_transformers.recipes import flags

args = flags.parse_args("seq2seq")

import keras

import keras_transformers as kt
from keras_transformers.recipes import run, seq2seq

run.setup(args)  # checks --attention/--position, seeds, creates the run folder

"""
## Data

Source and target ids; the decoder reads ``<bos> + target`` and predicts ``target + <eos>``
(teacher forcing). Padding positions get weight 0.
"""

with run.user_errors("--data" if args.data else "--task"):
    tokenizer, vocab, (x_train, y_train), (x_val, y_val) = seq2seq.load_data(args)
(targets, weights), (val_targets, val_weights) = y_train, y_val
tgt_len = targets.shape[1]

"""
## Model, compile, fit

``--layers`` encoder blocks, ``--layers`` decoder blocks with causal self-attention and
cross-attention to the encoder output; inputs ``encoder_token_ids`` and ``decoder_token_ids``.
"""

with run.distribution_scope(args):
    with run.user_errors("model"):
        model = kt.models.build_seq2seq(
            vocab,
            vocab,
            x_train["encoder_token_ids"].shape[1],
            tgt_len,
            d_model=args.d_model,
            num_heads=args.heads,
            num_encoder_layers=args.layers,
            num_decoder_layers=args.layers,
            ff_dim=args.ff_dim,
            attention=args.attention,
            position=args.position,
            dropout=args.dropout,
        )
    steps = run.steps_per_epoch(args, len(targets))
    model.compile(
        optimizer=kt.optimizers.adamw(
            run.learning_rate(args, steps * args.epochs), weight_decay=args.weight_decay
        ),
        loss=kt.losses.SparseSoftmaxCrossEntropy(ignore_class=0),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="token_accuracy")],
        jit_compile=run.jit_compile(args),
    )
    run.describe(model, args, len(targets), len(val_targets), steps)
    # The batches of the epochs still to train, in a seeded order: a resumed run sees the same.
    x, y, sample_weight = run.epoch_batches(args, (x_train, targets, weights), steps)
    history = model.fit(
        x,
        y,
        sample_weight=sample_weight,
        batch_size=args.batch_size,
        steps_per_epoch=steps,
        shuffle=False,
        epochs=args.epochs,
        validation_data=run.validation_data(args, (x_val, val_targets, val_weights)),
        callbacks=run.all_callbacks(args, x),
        verbose=args.verbose,
    )

"""
## Greedy decoding
"""

exact = seq2seq.print_exact_match(model, args, x_val, val_targets, tokenizer)
run.finish(history, args, exact_match=exact)
