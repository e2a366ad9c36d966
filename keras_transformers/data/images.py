"""Images: the built-in 8x8 digits set and a loader for the user's class folders.

* :func:`load_digits` -- scikit-learn's bundled handwritten digits (1,797 grayscale 8x8 images of
  the digits 0-9, from the UCI "Optical Recognition of Handwritten Digits" set). The file ships
  inside the scikit-learn wheel: nothing is downloaded.
* :func:`load_image_folder` -- ``root/<class_name>/*.png|jpg|...`` read with
  ``keras.utils.image_dataset_from_directory`` into numpy arrays.

Both return float32 images in ``[0, 1]`` with shape ``(N, H, W, C)`` and int32 labels, which
``model.fit()`` accepts on every Keras backend.
"""

import os

import numpy as np

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
DIGITS_CLASSES = [str(i) for i in range(10)]


def _split(x, y, test_fraction, seed):
    """Stratified-free seeded random split: ``((x_train, y_train), (x_test, y_test))``."""
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction={test_fraction}: must be in (0, 1).")
    order = np.random.default_rng(seed).permutation(len(x))
    num_test = max(1, int(round(len(x) * float(test_fraction))))
    test, train = order[:num_test], order[num_test:]
    return (x[train], y[train]), (x[test], y[test])


def load_digits(test_fraction=0.2, seed=0):
    """The 8x8 handwritten digits bundled with scikit-learn, split into train and test.

    Pixel values 0..16 are scaled to ``[0, 1]``.

    Args:
        test_fraction: fraction of the 1,797 images held out (seeded random split).
        seed: seed of the split.

    Returns:
        ``(x_train, y_train), (x_test, y_test), class_names`` with ``x (N, 8, 8, 1)`` float32,
        ``y (N,)`` int32 in ``0..9`` and ``class_names = ["0", ..., "9"]``.
    """
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "The built-in digits images need scikit-learn: pip install scikit-learn"
        ) from error
    bunch = sklearn_digits()
    x = (np.asarray(bunch.images, "float32") / 16.0)[..., None]  # (1797, 8, 8, 1)
    y = np.asarray(bunch.target, "int32")  # (1797,)
    train, test = _split(x, y, test_fraction, seed)
    return train, test, list(DIGITS_CLASSES)


def _first_unreadable(directory, classes):
    """The path of the first image file under ``directory`` that TensorFlow cannot decode."""
    import tensorflow as tf

    for name in classes:
        for root, _, files in sorted(os.walk(os.path.join(directory, name))):
            for file in sorted(files):
                if not file.lower().endswith(IMAGE_EXTENSIONS):
                    continue
                path = os.path.join(root, file)
                try:
                    tf.io.decode_image(tf.io.read_file(path), expand_animations=False)
                except Exception:  # noqa: BLE001 (any decoder error means unreadable)
                    return path
    return "an image file"


def load_image_folder(
    directory, image_size, color_mode="rgb", test_fraction=0.2, seed=0, batch_size=64
):
    """Read ``directory/<class_name>/<image files>`` into numpy arrays.

    Classes are the subfolder names in sorted order; images are resized to ``image_size``
    (bilinear) and scaled to ``[0, 1]``.

    Args:
        directory: the root folder.
        image_size: ``(height, width)`` or one int for square images.
        color_mode: ``"rgb"`` (3 channels), ``"grayscale"`` (1) or ``"rgba"`` (4).
        test_fraction: fraction of the images held out (seeded random split).
        seed: seed of the split.
        batch_size: images read per batch (memory only, does not change the result).

    Returns:
        ``(x_train, y_train), (x_test, y_test), class_names``: ``x (N, H, W, C)`` float32,
        ``y (N,)`` int32.

    Raises:
        FileNotFoundError: ``directory`` does not exist or is not a folder.
        ValueError: no class subfolders, fewer than two classes, a class without image files,
            or an image that cannot be decoded (the message names the file).
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"image folder {directory!r} does not exist (or is not a folder); expected "
            "<folder>/<class_name>/<image files>."
        )
    classes = sorted(
        name
        for name in os.listdir(directory)
        if os.path.isdir(os.path.join(directory, name)) and not name.startswith(".")
    )
    if not classes:
        raise ValueError(
            f"image folder {directory!r} has no class subfolders; expected "
            "<folder>/<class_name>/<image files>."
        )
    counts = {
        name: sum(
            1
            for _, _, files in os.walk(os.path.join(directory, name))
            for f in files
            if f.lower().endswith(IMAGE_EXTENSIONS)
        )
        for name in classes
    }
    if sum(counts.values()) == 0:
        raise ValueError(
            f"image folder {directory!r} has class subfolders {classes} but no image files "
            f"({', '.join(IMAGE_EXTENSIONS)})."
        )
    if len(classes) < 2:
        raise ValueError(
            f"image folder {directory!r} has one class subfolder {classes}; a classifier needs "
            "at least two."
        )
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    channels = {"rgb": 3, "grayscale": 1, "rgba": 4}
    if color_mode not in channels:
        raise ValueError(f"color_mode={color_mode!r}: allowed values are {', '.join(channels)}.")
    empty = [name for name in classes if counts[name] == 0]
    if empty:
        raise ValueError(
            f"image folder {directory!r}: class subfolder(s) {empty} hold no image files "
            f"({', '.join(IMAGE_EXTENSIONS)}); every class needs at least one image (remove "
            "the empty folders or add images)."
        )
    import keras

    dataset = keras.utils.image_dataset_from_directory(
        directory,
        labels="inferred",
        label_mode="int",
        class_names=classes,
        color_mode=color_mode,
        batch_size=batch_size,
        image_size=tuple(int(s) for s in image_size),
        shuffle=False,
        verbose=False,
    )
    xs, ys = [], []
    try:
        for images, labels in dataset:
            xs.append(np.asarray(images, "float32") / 255.0)
            ys.append(np.asarray(labels, "int32"))
    except Exception as error:  # tf.errors.OpError of the decoder: name the file
        raise ValueError(
            f"image folder {directory!r}: {_first_unreadable(directory, classes)} is not a "
            "readable image (corrupt or not an image); fix or remove it."
        ) from error
    x, y = np.concatenate(xs), np.concatenate(ys)  # (N, H, W, C), (N,)
    train, test = _split(x, y, test_fraction, seed)
    return train, test, classes
