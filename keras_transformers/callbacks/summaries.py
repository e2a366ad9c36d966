"""Writing TensorBoard summaries from any Keras backend.

TensorFlow is always installed with the package, so the summary writers here use ``tf.summary``
whatever ``KERAS_BACKEND`` says; values come in as numpy arrays.
"""

import io
import os

import numpy as np


def summary_writer(logdir, run="train"):
    """A ``tf.summary`` file writer for ``logdir/run`` (the layout Keras' TensorBoard uses)."""
    import tensorflow as tf

    return tf.summary.create_file_writer(os.path.join(str(logdir), run))


def heatmap_png(matrix, title="", x_labels=None, y_labels=None, size=4.0):
    """Render a 2-D array as a PNG heatmap; returns ``(H, W, 4)`` uint8 RGBA pixels."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(size, size), dpi=80)
    ax.imshow(np.asarray(matrix, np.float32), cmap="viridis", aspect="auto")
    ax.set_title(title, fontsize=8)
    for labels, setter, ticks in (
        (x_labels, ax.set_xticklabels, ax.set_xticks),
        (y_labels, ax.set_yticklabels, ax.set_yticks),
    ):
        if labels is not None:
            ticks(range(len(labels)))
            setter(labels, fontsize=6)
    return figure_pixels(fig)


def figure_pixels(fig):
    """A matplotlib figure as RGBA pixels ``(H, W, 4)`` uint8 (the figure is closed)."""
    import matplotlib.pyplot as plt
    import PIL.Image

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    buffer.seek(0)
    return np.asarray(PIL.Image.open(buffer).convert("RGBA"))
