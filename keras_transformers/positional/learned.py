"""Learned absolute positional embedding (Gehring et al., 2017, ConvS2S).

A trainable vector per absolute position, ``P = E_pos[start:start+L]`` with
``E_pos ∈ R^{L_max × d}``, added to the token embeddings. Positions ``>= max_length`` do not
exist: a longer input raises a clear error (learned positions cannot extrapolate).

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

    def call(self, inputs, start_index=0):
        length = inputs.shape[1]
        if length is not None and isinstance(start_index, int):
            if start_index + length > self.max_length:
                raise ValueError(
                    f"Sequence length {start_index + length} exceeds max_length="
                    f"{self.max_length} of the learned position table; learned positions cannot "
                    "extrapolate. Use position='rope', 'alibi', 't5' or 'sinusoidal' to run longer."
                )
        length = ops.shape(inputs)[1]
        table = ops.convert_to_tensor(self.table)  # (L_max, d)
        table = ops.slice(table, (start_index, 0), (length, table.shape[1]))
        return inputs + ops.cast(table, inputs.dtype)[None]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "max_length": self.max_length,
            "initializer": keras.initializers.serialize(self.initializer),
        }
