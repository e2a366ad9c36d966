"""Learned absolute positional embedding (Gehring et al., 2017, ConvS2S).

A trainable vector per absolute position, ``P = E_pos[start:start+L]`` with
``E_pos ∈ R^{L_max × d}``, added to the token embeddings. Positions ``>= max_length`` do not
exist: a longer input raises a ``ValueError`` naming ``max_length`` (learned positions cannot
extrapolate) instead of a backend slice error. In a TensorFlow graph traced with an unknown length
(``evaluate`` after several lengths) the same text arrives as an in-graph assertion error.

Shapes: ``x (B, L, d) -> x + E_pos[:L] (B, L, d)``. Cost ``O(L·d)``; ``L_max·d`` parameters.

Example:
    >>> import numpy as np, keras_transformers as kt
    >>> layer = kt.positional.get("learned", max_length=16)
    >>> layer(np.zeros((2, 5, 8), "float32")).shape
    (2, 5, 8)
"""

import keras
from keras import ops

from keras_transformers.positional.base import PositionalEncoding
from keras_transformers.positional.registry import register


@register("learned")
class LearnedPositionEmbedding(PositionalEncoding):
    """Adds a trainable ``(max_length, d)`` position table to token embeddings.

    Args:
        max_length: number of positions (``L_max``).
        initializer: table initializer.
    """

    kind = "embedding"
    extrapolates = False

    def __init__(self, max_length=512, initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        if int(max_length) < 1:
            raise ValueError(f"max_length={max_length}: must be >= 1.")
        self.max_length = int(max_length)
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape):
        self.table = self.add_weight(
            name="position_table",
            shape=(self.max_length, int(input_shape[-1])),
            initializer=self.initializer,
        )
        self.built = True

    def _too_long_message(self, length=None):
        given = "more" if length is None else str(length)
        return (
            f"max_length={self.max_length}: the input reaches {given} positions (start_index + "
            "sequence length), more than the learned position table holds. "
            "A learned table cannot extrapolate past the length it was built (and trained) for; "
            "build the model with a larger max_length, or use a position encoding that "
            "extrapolates: position='rope', 'alibi' or 't5' (or 'sinusoidal')."
        )

    def call(self, inputs, start_index=0):
        static_length = inputs.shape[1]  # int, None (TF graph) or a JAX symbolic dim (export)
        if isinstance(static_length, int) and isinstance(start_index, int):
            if start_index + static_length > self.max_length:
                raise ValueError(self._too_long_message(start_index + static_length))
            length = static_length
        elif keras.backend.backend() == "tensorflow":
            # A TensorFlow graph traced with an unknown length (e.g. ``evaluate`` retraced for a
            # new length): the check has to run inside the graph. JAX traces and PyTorch calls
            # always see static lengths, so they take the ValueError branch above.
            length = self._graph_length_check(inputs, start_index)
        else:
            # ``model.export`` on JAX traces a symbolic length ("a"): comparing it with max_length
            # is undecidable there, and so is a slice of that size; gather the rows instead.
            positions = ops.arange(ops.shape(inputs)[1]) + start_index  # (L,)
            table = ops.take(self.table, positions, axis=0)  # (L, d)
            return inputs + ops.cast(table, inputs.dtype)[None]
        table = ops.convert_to_tensor(self.table)  # (L_max, d)
        table = ops.slice(table, (start_index, 0), (length, table.shape[1]))
        return inputs + ops.cast(table, inputs.dtype)[None]

    def _graph_length_check(self, inputs, start_index):
        import tensorflow as tf

        length = tf.shape(inputs)[1]
        end = length + tf.cast(start_index, "int32")
        check = tf.debugging.assert_less_equal(
            end, self.max_length, message="ValueError: " + self._too_long_message()
        )
        with tf.control_dependencies([check]):
            return tf.identity(length)  # the slice below waits for the check

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "max_length": self.max_length,
            "initializer": keras.initializers.serialize(self.initializer),
        }
