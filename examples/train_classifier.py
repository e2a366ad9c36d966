"""
Title: Text classification with an encoder-only Transformer
Description: Train a small Transformer encoder classifier and print its validation accuracy.

With no arguments it learns which standard-library package family (asyncio, email, http,
unittest) a docstring sentence comes from: a real 4-class text task built from the Python sources
(nothing is downloaded). Logs to TensorBoard and prints the run folder::

    python examples/train_classifier.py
    python examples/train_classifier.py --data reviews.csv --text-column review --label-column stars
    python examples/train_classifier.py --data my_folders/ --tokenizer byte --position rope
    python examples/train_classifier.py --help

``--data`` takes a CSV/TSV file with a header row, a JSONL file (text and label keys) or a folder
with one subfolder of .txt files per class. Same as ``keras-transformers train classifier``.
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

args = flags.parse_args("classifier")

import keras

import keras_transformers as kt
from keras_transformers.recipes import classifier, run

run.setup(args)  # checks --attention/--position, seeds, creates the run folder

"""
## Data

Texts and labels are split, a tokenizer is fitted on the training texts (``--tokenizer``) and
every text is encoded to ``--seq-len`` ids, padded with 0.
"""

with run.user_errors("--data"):
    tokenizer, class_names, (x_train, y_train), (x_val, y_val) = classifier.load_data(args)

"""
## Model, compile, fit

Token + position embedding, ``--layers`` encoder blocks (padding masked), ``--pooling`` over the
sequence, a dense head with one logit per class.
"""

with run.distribution_scope(args):
    with run.user_errors("model"):
        model = kt.models.build_encoder_classifier(
            tokenizer.vocabulary_size,
            len(class_names),
            args.seq_len,
            d_model=args.d_model,
            num_heads=args.heads,
            num_layers=args.layers,
            ff_dim=args.ff_dim,
            attention=args.attention,
            position=args.position,
            dropout=args.dropout,
            pooling=args.pooling,
        )
    run.start_from(model, args)  # --init-from, --lora
    steps = run.steps_per_epoch(args, len(x_train))
    model.compile(
        optimizer=kt.optimizers.adamw(
            run.learning_rate(args, steps * args.epochs), weight_decay=args.weight_decay
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=run.jit_compile(args),
    )
    attention_maps = run.attention_logger(args, tokenizer, x_val)
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
        callbacks=run.all_callbacks(args, x) + [attention_maps],
        verbose=args.verbose,
    )

"""
## Evaluate
"""

accuracy = classifier.print_accuracy(model, args, x_val, y_val, len(class_names))
run.save_finetuned(model, args)  # --lora adapters, --export
run.finish(history, args, val_accuracy=accuracy)
