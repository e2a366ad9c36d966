"""The Vision Transformer recipe: flags, images, augmented resumable batches, rollout figure.

Used by ``examples/train_vit.py`` around its own ``build_vit -> compile -> fit``. The module
imports no Keras at load time (only inside its functions), so ``--help`` answers at once.
"""

import argparse
import os

from keras_transformers.recipes import distribute
from keras_transformers.recipes.argtypes import (
    add_run_arguments,
    fraction,
    integer,
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
    add_run_arguments(train, "vit")
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
        "--lr",
        type=non_negative,
        default=2e-3,
        help="peak learning rate of AdamW (default: %(default)s)",
    )
    train.add_argument(
        "--weight-decay",
        type=non_negative,
        default=0.05,
        help="AdamW weight decay (default: %(default)s)",
    )
    train.add_argument(
        "--precision",
        choices=("float32", "mixed_float16", "mixed_bfloat16"),
        default="float32",
        help="dtype policy (default: %(default)s)",
    )
    distribute.add_arguments(train)
    train.add_argument(
        "--log-attention-every",
        type=integer(0),
        default=10,
        help="epochs between attention-map logs; 0 disables (default: %(default)s)",
    )
    train.add_argument(
        "--rollout-images",
        type=positive_int,
        default=6,
        help="test images shown in the rollout figure (default: %(default)s)",
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


# Positions build_vit knows besides the registry's (no registry check for these).
VIT_POSITIONS = ("sinusoid2d",)


def augmenter(seed):
    """Random translation (±10%), rotation (±10°) and zoom (±10%) with a black fill.

    A function ``images (B, H, W, C) -> images`` for ``tf.data``: the layers are applied one by
    one (each Keras preprocessing layer switches to TensorFlow inside a ``tf.data`` graph on any
    backend; a ``keras.Sequential`` of them would run the backend's ops there and fail on JAX).
    """
    import keras

    layers = [
        keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=seed),
        keras.layers.RandomRotation(10 / 360, fill_mode="constant", seed=seed + 1),
        keras.layers.RandomZoom(0.1, fill_mode="constant", seed=seed + 2),
    ]

    def augment(images):
        for layer in layers:
            images = layer(images, training=True)
        return images

    return augment


def augmented_batches(args, x, y, steps):
    """The batches of the epochs still to train (:func:`run.epoch_batches`), augmented.

    A ``tf.data.Dataset`` of ``(images (B, H, W, C), labels (B,))``; pass it to ``fit`` with
    ``steps_per_epoch=steps, shuffle=False``.
    """
    import tensorflow as tf

    from keras_transformers.recipes import run

    x_stream, y_stream = run.epoch_batches(args, (x, y), steps)
    dataset = tf.data.Dataset.from_tensor_slices((x_stream, y_stream)).batch(args.batch_size)
    if args.augment:
        augment = augmenter(args.seed)
        dataset = dataset.map(
            lambda images, labels: (augment(images), labels),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return dataset.prefetch(tf.data.AUTOTUNE)


def load_data(args):
    """Images and labels split three ways; prints what was loaded.

    Returns:
        ``(x_train, y_train), (x_val, y_val), (x_test, y_test), class_names`` with images
        ``(N, H, W, C)`` in ``[0, 1]``.
    """
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
    x_test = test[0]
    print(
        f"data: {source}: {len(train)} train / {num_val} validation / {len(x_test)} test "
        f"images of shape {x.shape[1:]}, {len(classes)} classes"
    )
    return (x[train], y[train]), (x[val], y[val]), test, classes


def rollout_logger(args, x_test, image_shape):
    """A ``kt.callbacks.RolloutLogger`` over ``--rollout-images`` test images (None when
    ``--log-attention-every`` is 0)."""
    if args.log_attention_every <= 0:
        return None
    from keras_transformers.callbacks.rollout import RolloutLogger

    height, width = image_shape
    grid = (height // args.patch_size, width // args.patch_size)
    images = x_test[: args.rollout_images]
    return RolloutLogger(images, args.logdir, args.log_attention_every, args.pooling, grid)


def save_rollout(rollout, model, args):
    """Log the final rollout figure and write it to ``<logdir>/attention_rollout.png``."""
    if rollout is None:
        return
    rollout.set_model(model)
    figure = rollout.log(args.epochs)
    if figure is not None:
        import PIL.Image

        path = os.path.join(args.logdir, "attention_rollout.png")
        PIL.Image.fromarray(figure).save(path)
        print(f"Attention rollout of {len(rollout.images)} test images: {path}")
    rollout.on_train_end()
