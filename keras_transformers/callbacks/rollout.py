"""Attention rollout (Abnar & Zuidema, 2020) of a Vision Transformer as a TensorBoard image.

:class:`RolloutLogger` writes, every ``every`` epochs, a figure with each image above its rollout
map (``attention_rollout`` in the Images tab) and the raw per-head maps
(``attention/<layer>/head_<i>``). Used by ``examples/train_vit.py``.
"""

import keras
import numpy as np

from keras_transformers.callbacks.attention_maps import AttentionMapLogger, attention_rollout
from keras_transformers.callbacks.summaries import figure_pixels, summary_writer


def rollout_grid(model, images, pooling, grid):
    """``(K, gh, gw)`` rollout of each image: class-token row, or mean row with mean pooling."""
    helper = AttentionMapLogger(images[:1], logdir=None)
    helper.set_model(model)
    grids = []
    for image in images:
        maps = list(helper.collect(image[None]).values())  # per layer (h, L, L), in layer order
        if not maps:
            return None  # the attention core cannot materialise its weights
        rollout = attention_rollout(maps)  # (L, L)
        if pooling == "cls":
            weights = rollout[0, 1:]  # what the class token reads from each patch
        else:
            weights = rollout.mean(axis=0)  # what the mean-pooled output reads
        grids.append(weights.reshape(grid))  # (gh, gw)
    return np.stack(grids)


def rollout_figure(images, grids):
    """PNG (as ``(H, W, 4)`` uint8) with each image above its rollout map."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    k = len(images)
    fig, axes = plt.subplots(2, k, figsize=(1.6 * k, 3.4), dpi=80, squeeze=False)
    for i in range(k):
        image = images[i]
        axes[0, i].imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray")
        axes[1, i].imshow(grids[i], cmap="inferno")
        for ax in axes[:, i]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("image", fontsize=8)
    axes[1, 0].set_ylabel("rollout", fontsize=8)
    return figure_pixels(fig)


class RolloutLogger(keras.callbacks.Callback):
    """Every ``every`` epochs: the rollout figure (``attention_rollout``) and per-head maps."""

    def __init__(self, images, logdir, every, pooling, grid):
        super().__init__()
        self.images, self.logdir, self.every = images, logdir, every
        self.pooling, self.grid = pooling, grid
        self.heads = AttentionMapLogger(images[:1], logdir, every_n_epochs=every, max_heads=2)
        self._writer = None

    def set_model(self, model):
        super().set_model(model)
        self.heads.set_model(model)

    def log(self, step):
        import tensorflow as tf

        grids = rollout_grid(self.model, self.images, self.pooling, self.grid)
        if grids is None:
            return None
        figure = rollout_figure(self.images, grids)
        if self._writer is None:
            self._writer = summary_writer(self.logdir)
        with self._writer.as_default(step=step):
            tf.summary.image("attention_rollout", figure[None])
        self._writer.flush()
        return figure

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0:
            self.log(epoch)
        self.heads.on_epoch_end(epoch, logs)

    def on_train_end(self, logs=None):
        self.heads.on_train_end(logs)
        if self._writer is not None:
            self._writer.close()
            self._writer = None
