"""Transformer-XL relative positional encoding (Dai et al., 2019, "Transformer-XL: attentive
language models beyond a fixed-length context").

The absolute-position score ``(x_i + p_i) W^q ((x_j + p_j) W^k)ᵀ`` is re-parameterised so that
only the offset ``i - j`` enters, which keeps the encoding coherent when keys come from a memory
of earlier segments:

``a_ij = q_i k_jᵀ + q_i (W_R r_{i-j})ᵀ + u k_jᵀ + v (W_R r_{i-j})ᵀ``
``     = (q_i + u) k_jᵀ + (q_i + v) (W_R r_{i-j})ᵀ``

with ``q_i = x_i W^q``, ``k_j = x_j W_E^k`` (the attention layer's projections), ``r`` the fixed
sinusoid table (interleaved sin/cos, not learned), and learned ``W_R`` (the location key
projection ``W_R^k``), ``u`` (global content bias) and ``v`` (global position bias), one per head.
The whole score is scaled by ``1/sqrt(dh)`` like the content term.

How it is computed: the attention core forms ``q_i k_jᵀ / sqrt(dh)``; :meth:`score_bias` adds
the other three terms for any block of queries/keys from ``rel = key_pos - query_pos``. Because
``r`` is sinusoidal, ``(q_i + v) W_R r_{i-j}`` factors by the angle-addition formulas into a
product of a per-query and a per-key vector (like RoPE), so the bias of a block costs one
``(Lq, d_R) x (d_R, Lk)`` matmul and never builds an ``(Lq, Lk, d_R)`` table. This needs ``rel``
to be an outer difference ``key_pos[j] - query_pos[i]`` per block, which is what the cores pass.

Shapes: ``W_R (d_R, h, dh)``, ``u, v (h, dh)``; bias ``(B, h, ..., Lq, Lk)``. Extra cost
``O(Lq·Lk·d_R)`` per block on top of the scores. ``d_R`` (``relative_dim``) defaults to
``h·dh`` (the model size in the paper).

Example:
    >>> import numpy as np, keras_transformers as kt
    >>> import keras_transformers.positional.xl  # registers "xl"
    >>> mha = kt.attention.MultiHeadAttention(num_heads=2, key_dim=8, causal=True, position="xl")
    >>> tuple(mha(np.zeros((1, 6, 16), "float32")).shape)
    (1, 6, 16)
"""

import keras
from keras import ops

from keras_transformers.positional.base import PositionalEncoding
from keras_transformers.positional.registry import register


def inverse_frequencies(dim, max_wavelength=10000.0):
    """``f_t = max_wavelength^(-2t/dim)`` for ``t < dim/2`` (float32 ``(dim/2,)``)."""
    pair = ops.arange(dim // 2, dtype="float32")
    return ops.power(max_wavelength, -2.0 * pair / dim)


@register("xl")
class XLRelativePosition(PositionalEncoding):
    """Transformer-XL relative encoding: ``(q + u) kᵀ + (q + v) (W_R r_{i-j})ᵀ``.

    Args:
        relative_dim: size ``d_R`` of the sinusoid table ``r`` (even); None uses ``h·dh``.
        max_wavelength: base of the sinusoid wavelengths (10000 in the paper).
        use_content_bias: learn ``u`` (the global content bias term).
        use_position_bias: learn ``v`` (the global position bias term).
    """

    kind = "score"
    has_score_bias = True

    @property
    def score_bias_reads_key(self):
        """The content term ``u·k_j`` reads the keys (``use_content_bias``)."""
        return self.use_content_bias

    def __init__(
        self,
        relative_dim=None,
        max_wavelength=10000.0,
        use_content_bias=True,
        use_position_bias=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if relative_dim is not None and (int(relative_dim) < 2 or int(relative_dim) % 2):
            raise ValueError(f"relative_dim={relative_dim}: must be an even integer >= 2 or None.")
        if float(max_wavelength) <= 1.0:
            raise ValueError(f"max_wavelength={max_wavelength}: must be > 1.")
        self.relative_dim = None if relative_dim is None else int(relative_dim)
        self.max_wavelength = float(max_wavelength)
        self.use_content_bias = bool(use_content_bias)
        self.use_position_bias = bool(use_position_bias)

    def build(self, input_shape):
        self.set_head_shape(input_shape)
        h, dh = self.num_heads, self.head_dim
        d_r = self.relative_dim or h * dh
        d_r += d_r % 2
        self._d_r = d_r
        init = keras.initializers.RandomNormal(stddev=0.02)
        self.position_kernel = self.add_weight(
            name="position_kernel",
            shape=(d_r, h, dh),
            initializer=keras.initializers.RandomNormal(stddev=d_r**-0.5),
        )
        self.content_bias = (
            self.add_weight(name="content_bias", shape=(h, dh), initializer=init)
            if self.use_content_bias
            else None
        )
        self.position_bias = (
            self.add_weight(name="position_bias", shape=(h, dh), initializer=init)
            if self.use_position_bias
            else None
        )
        self.built = True

    def _per_head(self, table, rank):
        """``(h, dh) -> (h, 1, ..., 1, dh)`` broadcastable to ``(B, h, ..., L, dh)``."""
        return ops.reshape(table, (self.num_heads,) + (1,) * (rank - 3) + (self.head_dim,))

    def score_bias(self, relative_positions, query=None, key=None, causal=False):
        # query (B, h, *A, Lq, dh); key (B|1, h, *A, Lk, dh); rel (*A', Lq, Lk) = key_pos - query_pos
        rank = len(query.shape)
        scale = 1.0 / float(self.head_dim) ** 0.5
        rel = ops.cast(relative_positions, "float32")
        # positions relative to the block's first key: query_pos - key_pos[0], key_pos - key_pos[0]
        q_pos = -rel[..., :, 0]  # (*A', Lq)
        k_pos = rel[..., 0, :] - rel[..., :1, 0]  # (*A', Lk)
        inv_freq = inverse_frequencies(self._d_r, self.max_wavelength)  # (d_R/2,)
        q_ang = q_pos[..., None] * inv_freq  # (*A', Lq, d_R/2)
        k_ang = k_pos[..., None] * inv_freq  # (*A', Lk, d_R/2)

        qv = ops.cast(query, "float32")
        if self.position_bias is not None:
            qv = qv + self._per_head(ops.cast(self.position_bias, "float32"), rank)
        # W_R rows 2t (sin columns of r) and 2t+1 (cos columns): (d_R/2, h, dh) each
        pairs = ops.reshape(
            ops.cast(self.position_kernel, "float32"),
            (self._d_r // 2, 2, self.num_heads, self.head_dim),
        )

        def project(rows):  # (d_R/2, h, dh) -> (B, h, *A, Lq, d_R/2)
            kernel = ops.transpose(rows, (1, 2, 0))  # (h, dh, d_R/2)
            kernel = ops.reshape(kernel, (self.num_heads,) + (1,) * (rank - 4) + kernel.shape[1:])
            return ops.matmul(qv, kernel)

        a_sin, a_cos = project(pairs[:, 0]), project(pairs[:, 1])  # (q + v) W_R per column
        # Σ_t a_sin sin((i-j) f_t) + a_cos cos((i-j) f_t), split with the angle-addition formulas
        sin_q, cos_q = ops.sin(q_ang), ops.cos(q_ang)
        q_feat = ops.concatenate(
            [a_sin * sin_q + a_cos * cos_q, a_cos * sin_q - a_sin * cos_q], axis=-1
        )  # (B, h, *A, Lq, d_R)
        k_feat = ops.concatenate([ops.cos(k_ang), ops.sin(k_ang)], axis=-1)  # (*A', Lk, d_R)
        bias = ops.matmul(q_feat, ops.swapaxes(k_feat, -1, -2))  # (B, h, *A, Lq, Lk)
        if self.content_bias is not None:
            u = self._per_head(ops.cast(self.content_bias, "float32"), rank)
            content = ops.sum(ops.cast(key, "float32") * u, axis=-1)  # (B|1, h, *A, Lk)
            bias = bias + content[..., None, :]
        return ops.cast(bias * scale, query.dtype)

    def get_config(self):
        return {
            **super().get_config(),
            "relative_dim": self.relative_dim,
            "max_wavelength": self.max_wavelength,
            "use_content_bias": self.use_content_bias,
            "use_position_bias": self.use_position_bias,
        }
