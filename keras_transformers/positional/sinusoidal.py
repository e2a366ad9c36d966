"""Sinusoidal absolute positional encoding (Vaswani et al., 2017, "Attention is all you need").

``PE[pos, 2j] = sin(pos / 10000^(2j/d))``, ``PE[pos, 2j+1] = cos(pos / 10000^(2j/d))``
(0-indexed positions). Wavelengths run from ``2π`` to ``10000·2π``; the table has no parameters
and extends to any length.

Shapes: ``x (B, L, d) -> x + PE[start:start+L] (B, L, d)``. Cost ``O(L·d)``.

Example:
    >>> import numpy as np, keras_transformers as kt
    >>> layer = kt.positional.get("sinusoidal")
    >>> layer(np.zeros((2, 5, 8), "float32")).shape
    (2, 5, 8)
"""

from keras import ops

from keras_transformers.positional.base import PositionalEncoding
from keras_transformers.positional.registry import register


def sinusoid_table(positions, dim, max_wavelength=10000.0, dtype="float32"):
    """``(L,) positions -> (L, dim)`` table with interleaved sin (even) / cos (odd) columns."""
    positions = ops.cast(positions, "float32")[:, None]  # (L, 1)
    pair = ops.arange(dim // 2, dtype="float32")  # (d/2,)
    inv_freq = ops.power(max_wavelength, -2.0 * pair / dim)  # (d/2,)
    angles = positions * inv_freq[None, :]  # (L, d/2)
    table = ops.stack([ops.sin(angles), ops.cos(angles)], axis=-1)  # (L, d/2, 2)
    table = ops.reshape(table, (-1, (dim // 2) * 2))
    if dim % 2:
        table = ops.pad(table, ((0, 0), (0, 1)))
    return ops.cast(table, dtype)


@register("sinusoidal")
class SinusoidalPositionEmbedding(PositionalEncoding):
    """Adds the fixed sinusoid table to token embeddings.

    Args:
        max_wavelength: base of the geometric wavelength progression (10000 in the paper).
    """

    kind = "embedding"

    def __init__(self, max_wavelength=10000.0, **kwargs):
        super().__init__(**kwargs)
        self.max_wavelength = float(max_wavelength)

    def call(self, inputs, start_index=0):
        length, dim = ops.shape(inputs)[1], inputs.shape[-1]
        positions = ops.arange(length) + start_index  # (L,)
        table = sinusoid_table(positions, dim, self.max_wavelength, self.compute_dtype)
        return inputs + table[None]  # (B, L, d)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "max_wavelength": self.max_wavelength}
