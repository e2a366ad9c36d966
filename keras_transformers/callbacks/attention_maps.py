"""Log each attention layer's and head's weights for a fixed sample as TensorBoard images."""

import keras
import numpy as np

from keras_transformers.attention import MultiHeadAttention
from keras_transformers.callbacks.summaries import heatmap_png, summary_writer


class AttentionMapLogger(keras.callbacks.Callback):
    """Every ``every_n_epochs``, run ``sample`` through the model and log attention heatmaps.

    Each :class:`~keras_transformers.attention.MultiHeadAttention` in the model keeps the
    ``(B, h, Lq, Lk)`` weights of that one forward pass: its core runs once, asked for the output
    and the weights together (the core's dense path), so the maps are those of the output. Layers
    whose core has ``supports_attention_scores = False`` are skipped. One image per layer and
    head is written under the tag ``attention/<layer>/head_<i>`` for the first example of
    ``sample``.

    Args:
        sample: model input for one or a few examples (array or dict of arrays).
        logdir: TensorBoard log directory (images go to ``logdir/train``).
        every_n_epochs: logging period.
        max_heads: heads per layer to log.
        token_labels: optional list of strings to label the axes (used when <= 48 tokens).
    """

    def __init__(self, sample, logdir, every_n_epochs=1, max_heads=4, token_labels=None):
        super().__init__()
        self.sample = sample
        self.logdir = logdir
        self.every_n_epochs = int(every_n_epochs)
        self.max_heads = int(max_heads)
        self.token_labels = token_labels
        self._writer = None

    def attention_layers(self):
        return [
            layer
            for layer in self.model._flatten_layers(include_self=False)
            if isinstance(layer, MultiHeadAttention)
        ]

    def collect(self, sample=None):
        """Run ``sample`` (default: the logger's own) once; ``{layer_path: (h, Lq, Lk) weights}``
        of its first example."""
        layers = [
            layer
            for layer in self.attention_layers()
            if layer.attention_core.supports_attention_scores
        ]
        for layer in layers:
            layer.record_attention_scores = True
            layer.last_attention_scores = None
        try:
            self.model(self.sample if sample is None else sample, training=False)
        finally:
            for layer in layers:
                layer.record_attention_scores = False
        maps = {}
        for layer in layers:
            if layer.last_attention_scores is not None:
                scores = keras.ops.convert_to_numpy(
                    keras.ops.cast(layer.last_attention_scores, "float32")
                )
                maps[layer.path] = scores[0]
            layer.last_attention_scores = None
        return maps

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs:
            return
        import tensorflow as tf

        if self._writer is None:
            self._writer = summary_writer(self.logdir)
        labels = self.token_labels
        with self._writer.as_default(step=epoch):
            for path, weights in self.collect().items():
                for head in range(min(self.max_heads, weights.shape[0])):
                    show = labels if labels is not None and len(labels) <= 48 else None
                    image = heatmap_png(weights[head], f"{path} head {head}", show, show)
                    tf.summary.image(f"attention/{path}/head_{head}", image[None])
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def attention_rollout(maps):
    """Attention rollout (Abnar & Zuidema, 2020): product of head-averaged, residual-mixed maps.

    Args:
        maps: list of per-layer ``(h, L, L)`` weights, in layer order.

    Returns:
        ``(L, L)`` rollout matrix.
    """
    result = None
    for weights in maps:
        avg = np.asarray(weights).mean(0)
        avg = 0.5 * avg + 0.5 * np.eye(avg.shape[-1])
        avg = avg / avg.sum(-1, keepdims=True)
        result = avg if result is None else avg @ result
    return result
