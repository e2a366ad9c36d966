"""Rotary position embedding, RoPE (Su et al., 2021, "RoFormer").

Queries and keys are rotated by an angle proportional to their absolute position, so that their
dot product depends only on the offset:

``q_iᵀ k_j = (R_i q)ᵀ (R_j k) = qᵀ R_{j-i} k``, ``R_i = blockdiag(R(i θ_1), ..., R(i θ_{dh/2}))``,
``θ_t = 10000^(-2(t-1)/dh)``.

Values are not rotated (the survey's "key and value" wording is an erratum). RoPE has no
parameters and works with every attention core, efficient ones included, because it only
transforms ``q`` and ``k`` before attention.

Pairing: ``pairing="half"`` rotates dimension ``t`` with ``t + dh/2`` (contiguous slices, the
layout of most libraries); ``pairing="interleaved"`` rotates ``(2t, 2t+1)`` as in the paper. Both
satisfy the same relative-position property.

Shapes: ``q (B, Lq, h, dh)``, ``k (B, Lk, h_kv, dh)``; extra cost ``O(L·dh)`` per head.

Example:
    >>> import keras_transformers as kt
    >>> layer = kt.attention.MultiHeadAttention(num_heads=2, key_dim=8, position="rope")
"""

from keras import ops

from keras_transformers.positional.base import PositionalEncoding
from keras_transformers.positional.registry import register


def rotate(x, positions, max_wavelength=10000.0, pairing="half", scaling_factor=1.0):
    """Rotate ``x (B, L, h, dh)`` by the angles of ``positions (L,)``."""
    x = ops.convert_to_tensor(x)
    dim = x.shape[-1]
    if dim % 2:
        raise ValueError(f"RoPE needs an even head size; got key_dim={dim}.")
    inv_freq = ops.power(max_wavelength, -ops.arange(0, dim // 2, dtype="float32") * 2.0 / dim)
    pos = ops.cast(positions, "float32") / scaling_factor
    angles = pos[:, None] * inv_freq[None, :]  # (L, dh/2)
    cos = ops.cast(ops.cos(angles), x.dtype)[None, :, None, :]  # (1, L, 1, dh/2)
    sin = ops.cast(ops.sin(angles), x.dtype)[None, :, None, :]
    if pairing == "half":
        x1, x2 = x[..., : dim // 2], x[..., dim // 2 :]
        return ops.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    pairs = ops.reshape(x, ops.shape(x)[:-1] + (dim // 2, 2))  # (B, L, h, dh/2, 2)
    x1, x2 = pairs[..., 0], pairs[..., 1]
    rotated = ops.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return ops.reshape(rotated, ops.shape(x))


@register("rope")
class RotaryEmbedding(PositionalEncoding):
    """RoPE as a score-side encoding.

    Args:
        max_wavelength: the base ``10000`` of ``θ``.
        pairing: ``"half"`` or ``"interleaved"`` (see module docstring).
        scaling_factor: positions are divided by it (linear position interpolation).
    """

    kind = "score"

    def __init__(self, max_wavelength=10000.0, pairing="half", scaling_factor=1.0, **kwargs):
        super().__init__(**kwargs)
        if pairing not in ("half", "interleaved"):
            raise ValueError(f"pairing={pairing!r}: allowed values are 'half', 'interleaved'.")
        self.max_wavelength = float(max_wavelength)
        self.pairing = pairing
        self.scaling_factor = float(scaling_factor)

    def transform_qk(self, query, key, query_positions, key_positions):
        args = (self.max_wavelength, self.pairing, self.scaling_factor)
        return rotate(query, query_positions, *args), rotate(key, key_positions, *args)

    def get_config(self):
        return {
            **super().get_config(),
            "max_wavelength": self.max_wavelength,
            "pairing": self.pairing,
            "scaling_factor": self.scaling_factor,
        }
