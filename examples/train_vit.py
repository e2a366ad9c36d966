"""
Title: A Vision Transformer with attention rollout
Description: Train a small ViT on images and log attention-rollout maps to TensorBoard.

With no arguments it classifies scikit-learn's bundled 8x8 handwritten digits (1,797 images,
nothing is downloaded) with 2x2 patches (16 patch tokens + a class token), random translation,
rotation and zoom augmentation (no flips: a flipped digit is another symbol), and prints the test
accuracy. Every ``--log-attention-every`` epochs it writes to TensorBoard (Images tab):

* ``attention_rollout``: for a few test images, the image next to its attention rollout (Abnar &
  Zuidema, 2020) -- how much the class token (or, with ``--pooling mean``, the average token)
  draws on each patch through all layers;
* ``attention/<layer>/head_<i>``: the raw attention weights of each layer and head.

Examples::

    python examples/train_vit.py
    python examples/train_vit.py --attention local2d --pooling mean --position sinusoid2d
    python examples/train_vit.py --data my_images/ --image-size 32 --patch-size 4
    python examples/train_vit.py --help

``--data`` takes a folder with one subfolder of images per class (png/jpg/bmp/gif). The run writes
TensorBoard logs, ``best.keras``/``last.keras`` and ``attention_rollout.png`` to its log folder;
start the same command with ``--logdir <that folder>`` to resume an interrupted run.
"""

"""
## Setup

The flags are parsed before Keras is imported, so ``--help`` answers at once.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from keras_transformers.recipes import vit

args = vit.parse_args()

import keras

import keras_transformers as kt
from keras_transformers.recipes import run

run.setup(args, known_positions=vit.VIT_POSITIONS)  # checks names, seeds, creates the run folder

"""
## Data

Images scaled to ``[0, 1]``, split into train / validation / test.
"""

with run.user_errors("--data"):
    (x_train, y_train), (x_val, y_val), (x_test, y_test), classes = vit.load_data(args)
height, width, channels = x_train.shape[1:]

"""
## Model, compile and fit

Patches of ``--patch-size`` pixels become tokens (a strided convolution), a class token is
prepended, ``--layers`` encoder blocks run over them and a dense head reads the class token
(or the mean token). The augmented batches come in a seeded per-epoch order, so a resumed run
sees the same ones.
"""

steps = run.steps_per_epoch(args, len(x_train))
batches = vit.augmented_batches(args, x_train, y_train, steps)  # a tf.data pipeline
with run.distribution_scope(args):
    with run.user_errors("model"):
        model = kt.models.build_vit(
            (height, width),
            args.patch_size,
            len(classes),
            channels=channels,
            d_model=args.d_model,
            num_heads=args.heads,
            num_layers=args.layers,
            ff_dim=args.ff_dim or 2 * args.d_model,
            attention=args.attention,
            position=args.position,
            pooling=args.pooling,
            patch_embedding=args.patch_embedding,
            dropout=args.dropout,
        )
    model.compile(
        optimizer=kt.optimizers.adamw(
            run.learning_rate(args, steps * args.epochs), weight_decay=args.weight_decay
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=run.jit_compile(args),
    )
    print(f"{steps} steps per epoch, {model.count_params():,} parameters")
    callbacks = run.all_callbacks(args, x_train)
    rollout = vit.rollout_logger(args, x_test, (height, width))  # None: --log-attention-every 0
    history = model.fit(
        batches,
        steps_per_epoch=steps,
        shuffle=False,
        epochs=args.epochs,
        validation_data=run.validation_data(args, (x_val, y_val)),
        callbacks=callbacks + ([rollout] if rollout else []),
        verbose=args.verbose,
    )

"""
## Evaluate
"""

results = model.evaluate(x_test, y_test, batch_size=256, verbose=0, return_dict=True)
print(f"Test accuracy: {results['accuracy']:.4f} ({len(x_test)} test images)")
vit.save_rollout(rollout, model, args)
run.finish(history, args, test_accuracy=float(results["accuracy"]))
