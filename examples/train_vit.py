"""Train a small Vision Transformer and log attention-rollout maps to TensorBoard.

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

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from keras_transformers.recipes.argtypes import (
    fraction,
    layer_spec_or_none,
    non_negative,
    open_fraction,
    positive_int,
)


def build_parser(prog=None):
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Train a Vision Transformer. With no --data it classifies the 8x8 handwritten digits "
            "bundled with scikit-learn (nothing is downloaded) and prints the test accuracy; "
            "attention-rollout maps go to TensorBoard."
        ),
        epilog="--data: a folder with one subfolder of images per class.",
    )
    model = parser.add_argument_group("model")
    model.add_argument(
        "--attention",
        type=layer_spec_or_none,
        default="full",
        help="attention core: a name from `keras-transformers list` (local2d fits images; it "
        'needs --pooling mean) or a JSON config such as \'{"name": "local2d", '
        '"query_height": 2, "query_width": 2}\' (default: %(default)s)',
    )
    model.add_argument(
        "--position",
        type=layer_spec_or_none,
        default="learned",
        help="position encoding: learned, sinusoid2d, none, or another name from "
        "`keras-transformers list` (default: %(default)s)",
    )
    model.add_argument(
        "--patch-size",
        type=positive_int,
        default=2,
        help="patch side p (default: %(default)s)",
    )
    model.add_argument(
        "--d-model",
        type=positive_int,
        default=64,
        help="model width d (default: %(default)s)",
    )
    model.add_argument(
        "--heads",
        type=positive_int,
        default=4,
        help="attention heads; must divide --d-model (default: %(default)s)",
    )
    model.add_argument(
        "--layers",
        type=positive_int,
        default=4,
        help="encoder blocks (default: %(default)s)",
    )
    model.add_argument(
        "--ff-dim",
        type=positive_int,
        default=None,
        help="feed-forward width (default: 2 * d-model)",
    )
    model.add_argument(
        "--dropout",
        type=fraction,
        default=0.0,
        help="dropout rate (default: %(default)s)",
    )
    model.add_argument(
        "--pooling",
        choices=("cls", "mean"),
        default="cls",
        help="class token or mean of the patch tokens (default: %(default)s)",
    )
    model.add_argument(
        "--patch-embedding",
        choices=("conv", "reshape"),
        default="conv",
        help="strided convolution or reshape + dense; same result (default: %(default)s)",
    )

    data = parser.add_argument_group("data")
    data.add_argument(
        "--data",
        default=None,
        help="folder of class subfolders with images (default: built-in digits)",
    )
    data.add_argument(
        "--image-size",
        type=positive_int,
        default=32,
        help="side images of --data are resized to (default: %(default)s)",
    )
    data.add_argument(
        "--color-mode",
        choices=("rgb", "grayscale"),
        default="rgb",
        help="channels of --data images (default: %(default)s)",
    )
    data.add_argument(
        "--test-fraction",
        type=open_fraction,
        default=0.2,
        help="fraction held out for the final test (default: %(default)s)",
    )
    data.add_argument(
        "--val-fraction",
        type=open_fraction,
        default=0.1,
        help="fraction of the rest used for validation (default: %(default)s)",
    )
    data.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="random translation, rotation and zoom while training (default: %(default)s)",
    )

    train = parser.add_argument_group("training")
    train.add_argument(
        "--batch-size",
        type=positive_int,
        default=64,
        help="batch size (default: %(default)s)",
    )
    train.add_argument(
        "--epochs", type=positive_int, default=30, help="epochs (default: %(default)s)"
    )
    train.add_argument(
        "--steps-per-epoch",
        type=positive_int,
        default=None,
        help="batches per epoch (default: one pass over the training data)",
    )
    train.add_argument(
        "--lr",
        type=non_negative,
        default=2e-3,
        help="peak learning rate of AdamW (default: %(default)s)",
    )
    train.add_argument(
        "--schedule",
        choices=("cosine", "constant"),
        default="cosine",
        help="warm-up + cosine decay, or constant (default: %(default)s)",
    )
    train.add_argument(
        "--warmup-steps",
        type=int,
        default=None,
        help="warm-up steps (default: 5%% of all steps, at most 100)",
    )
    train.add_argument(
        "--weight-decay",
        type=non_negative,
        default=0.05,
        help="AdamW weight decay (default: %(default)s)",
    )
    train.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    train.add_argument(
        "--jit",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="compile the train step with XLA (default: Keras decides)",
    )
    train.add_argument(
        "--precision",
        choices=("float32", "mixed_float16", "mixed_bfloat16"),
        default="float32",
        help="dtype policy (default: %(default)s)",
    )
    train.add_argument(
        "--distribute",
        choices=("none", "mirrored", "data_parallel"),
        default="none",
        help="data-parallel training, as in the other examples (default: %(default)s)",
    )
    train.add_argument(
        "--log-attention-every",
        type=int,
        default=10,
        help="epochs between attention-map logs; 0 disables (default: %(default)s)",
    )
    train.add_argument(
        "--rollout-images",
        type=positive_int,
        default=6,
        help="test images shown in the rollout figure (default: %(default)s)",
    )
    train.add_argument(
        "--logdir",
        default=None,
        help="folder for logs and checkpoints (default: runs/vit/<timestamp>-"
        "<attention>-<position>); pass an interrupted run's folder to resume",
    )
    train.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=1,
        help="fit() verbosity (default: %(default)s)",
    )
    return parser


def parse_args(argv=None, prog=None):
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.d_model % args.heads:
        parser.error(f"--d-model={args.d_model} must be divisible by --heads={args.heads}")
    if args.position == "sinusoid2d" and args.d_model % 4:
        parser.error(f"--d-model={args.d_model}: --position sinusoid2d needs a multiple of 4")
    args.example = "vit"
    return args


def augmenter(seed):
    """Random translation (±10%), rotation (±10°) and zoom (±10%) with a black fill."""
    import keras

    return keras.Sequential(
        [
            keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=seed),
            keras.layers.RandomRotation(10 / 360, fill_mode="constant", seed=seed + 1),
            keras.layers.RandomZoom(0.1, fill_mode="constant", seed=seed + 2),
        ],
        name="augmentation",
    )


def training_dataset(x, y, args, steps, first_epoch):
    """The batches of epochs ``first_epoch..epochs-1`` (``run.epoch_stream``), augmented."""
    import tensorflow as tf

    from keras_transformers.recipes import run

    x_stream, y_stream = run.epoch_stream(
        (x, y), args.batch_size, steps, args.seed, first_epoch, args.epochs
    )
    dataset = tf.data.Dataset.from_tensor_slices((x_stream, y_stream)).batch(args.batch_size)
    if args.augment:
        augment = augmenter(args.seed)
        dataset = dataset.map(
            lambda images, labels: (augment(images, training=True), labels),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return dataset.prefetch(tf.data.AUTOTUNE)


def load_data(args):
    """``(x_train, y_train), (x_val, y_val), (x_test, y_test), class_names, description``."""
    import numpy as np

    from keras_transformers.data.images import load_digits, load_image_folder

    if args.data is None:
        (x, y), test, classes = load_digits(args.test_fraction, seed=args.seed)
        source = "built-in 8x8 digits (scikit-learn)"
    else:
        (x, y), test, classes = load_image_folder(
            args.data,
            args.image_size,
            color_mode=args.color_mode,
            test_fraction=args.test_fraction,
            seed=args.seed,
        )
        source = args.data
    num_val = max(1, int(round(len(x) * args.val_fraction)))
    order = np.random.default_rng(args.seed + 1).permutation(len(x))
    val, train = order[:num_val], order[num_val:]
    return (x[train], y[train]), (x[val], y[val]), test, classes, source


def train(args):
    # Imported after parsing so that --help and argument errors answer at once.
    import keras

    from keras_transformers import attention, positional
    from keras_transformers.callbacks.rollout import RolloutLogger
    from keras_transformers.models.vit import build_vit
    from keras_transformers.recipes import run

    started = time.time()
    with run.user_errors("--attention"):
        attention.get(args.attention)
    if args.position not in (None, "sinusoid2d"):
        with run.user_errors("--position"):
            positional.get(args.position)
    keras.config.set_dtype_policy(args.precision)
    keras.utils.set_random_seed(args.seed)
    logdir = run.prepare_logdir(args)
    print(f"keras {keras.__version__} (backend: {keras.backend.backend()}); logdir: {logdir}")
    with run.user_errors("--data"):
        (x_train, y_train), (x_val, y_val), (x_test, y_test), classes, source = load_data(args)
    print(
        f"data: {source}: {len(x_train)} train / {len(x_val)} validation / {len(x_test)} test "
        f"images of shape {x_train.shape[1:]}, {len(classes)} classes"
    )
    height, width, channels = x_train.shape[1:]
    steps = run.steps_per_epoch(args, len(x_train))
    with run.distribution_scope(args):
        with run.user_errors("model"):
            model = build_vit(
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
        run.compile_model(
            model,
            args,
            steps * args.epochs,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )
    print(f"{steps} steps per epoch, {model.count_params():,} parameters")
    first_epoch = run.resume_epoch(args)
    rollout_images = x_test[: args.rollout_images]
    callbacks = run.make_callbacks(logdir) + run.run_callbacks(args, x_train)
    rollout = None
    if args.log_attention_every > 0:
        grid = (height // args.patch_size, width // args.patch_size)
        rollout = RolloutLogger(
            rollout_images, logdir, args.log_attention_every, args.pooling, grid
        )
        callbacks.append(rollout)
    history = model.fit(
        training_dataset(x_train, y_train, args, steps, first_epoch),
        steps_per_epoch=steps,
        shuffle=False,  # the stream is already in its seeded per-epoch order
        epochs=args.epochs,
        validation_data=(x_val, y_val),
        callbacks=callbacks,
        verbose=args.verbose,
    )
    results = model.evaluate(x_test, y_test, batch_size=256, verbose=0, return_dict=True)
    print(f"Test accuracy: {results['accuracy']:.4f} ({len(x_test)} test images)")
    if rollout is not None:
        rollout.set_model(model)
        figure = rollout.log(args.epochs)
        if figure is not None:
            import PIL.Image

            PIL.Image.fromarray(figure).save(os.path.join(logdir, "attention_rollout.png"))
            print(
                f"Attention rollout of {len(rollout_images)} test images: "
                f"{os.path.join(logdir, 'attention_rollout.png')}"
            )
        rollout.on_train_end()
    return run.finish(history, args, started=started, test_accuracy=float(results["accuracy"]))


def main(argv=None, prog=None):
    train(parse_args(argv, prog))
    return 0


if __name__ == "__main__":
    sys.exit(main(prog=os.path.basename(__file__)))
