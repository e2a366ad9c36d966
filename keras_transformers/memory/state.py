"""One reset mechanism for every memory that persists from call to call.

Transformer-XL and Compressive blocks (segment memories), :class:`SegmentDocuments` (document ids
carried across segments) and the Memorizing Transformer's :class:`KNNMemory` keep non-trainable
Keras variables that each call reads and overwrites, so the memory flows from batch to batch in
``fit()``, ``evaluate()`` and ``predict()``. All of them subclass the :class:`StatefulMemory`
mixin and implement ``reset_memory()``, which empties the layer's *own* state (sublayers with
state are found and reset on their own). :func:`reset_memory` finds every such layer of a model,
at any depth, and resets it; the :class:`MemoryReset` callback does so at the start of every
epoch, evaluation and prediction (each flag can be switched off).

A kNN-LM datastore (:class:`keras_transformers.memory.knn_lm.KNNLM`) is *not* a
``StatefulMemory``: it is built once from the training data and must survive a reset.

Example:
    >>> import keras
    >>> from keras_transformers.memory.state import MemoryReset, reset_memory
    >>> callback = MemoryReset(on_predict=False)   # then: model.fit(..., callbacks=[callback])
"""

import keras


class StatefulMemory:
    """Mixin for layers whose non-trainable variables carry memory from one call to the next.

    Subclasses implement :meth:`reset_memory`; :func:`memory_layers` finds them in a model.
    """

    def reset_memory(self):
        """Forget everything this layer itself remembers (not its sublayers' state)."""
        raise NotImplementedError(f"{type(self).__name__} must implement reset_memory().")


def memory_layers(model):
    """Every :class:`StatefulMemory` layer inside ``model`` (itself included), at any depth."""
    return [
        layer
        for layer in model._flatten_layers(include_self=True, recursive=True)
        if isinstance(layer, StatefulMemory)
    ]


def reset_memory(model):
    """Reset every built memory of ``model`` (segment, compressed, document and kNN memories).

    Returns:
        The number of layers reset.
    """
    count = 0
    for layer in memory_layers(model):
        if layer.built:  # an unbuilt layer has no state yet
            layer.reset_memory()
            count += 1
    return count


class MemoryReset(keras.callbacks.Callback):
    """Reset all memories of the model (any kind, any depth) at the start of every epoch, and by
    default of every evaluation and prediction, so each pass reads its streams afresh.

    Args:
        on_epoch: reset at ``on_epoch_begin`` (the training streams start over).
        on_test: reset at ``on_test_begin`` (evaluation streams are separate text, and validation
            never sees training segments).
        on_predict: reset at ``on_predict_begin``.
    """

    def __init__(self, on_epoch=True, on_test=True, on_predict=True):
        super().__init__()
        self.on_epoch = bool(on_epoch)
        self.on_test = bool(on_test)
        self.on_predict = bool(on_predict)

    def on_epoch_begin(self, epoch, logs=None):
        if self.on_epoch:
            reset_memory(self.model)

    def on_test_begin(self, logs=None):
        if self.on_test:
            reset_memory(self.model)

    def on_predict_begin(self, logs=None):
        if self.on_predict:
            reset_memory(self.model)
