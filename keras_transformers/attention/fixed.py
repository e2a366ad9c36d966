"""Sparse Transformer fixed attention (Child et al., 2019, "Generating Long Sequences with
Sparse Transformers").

The sequence is cut into blocks of ``ℓ``; the last ``c`` positions of every block act as
*summary* cells that carry its content to all later positions:

``A(1)_i = {j : ⌊j/ℓ⌋ = ⌊i/ℓ⌋}`` (the own block),
``A(2)_i = {j : j mod ℓ ∈ {ℓ - c, ..., ℓ - 1}}`` (all summary cells),

both with ``j <= i`` when causal (the paper's autoregressive form); without ``causal`` both
patterns are used as written (every summary cell, on both sides). The paper used
``c ∈ {8, 16, 32}`` for ``ℓ ∈ {128, 256}``. Each query then attends with
``a(x_i, S_i) = softmax((x_i W^q)(x_j W^k)ᵀ_{j ∈ S_i} / sqrt(dh)) (x_j W^v)_{j ∈ S_i}`` where ``S_i``
depends on ``mode``, the survey's three ways to use the two patterns:

* ``"interleave"``: ``attn(X) = Attend(X, A(n mod 2))``: the layer's ``layer_index`` n picks
  ``A(1)`` (even) or ``A(2)`` (odd); stack layers with alternating ``layer_index``.
* ``"merged"`` (default): one softmax over ``A(1) ∪ A(2)`` (the own block's summary cells
  counted once).
* ``"multihead"``: the first ``ceil(h/2)`` heads use ``A(1)``, the others ``A(2)``.

Computed in blocks, never ``L x L``: ``A(1)`` as block-diagonal scores ``(B, h, L/ℓ, ℓ, ℓ)`` and
``A(2)`` by gathering the ``c·L/ℓ`` summary keys once (scores ``(B, h, L, c·L/ℓ)``); both feed
one joint softmax per query.

Shapes: ``q (B, L, h, dh)``, ``k, v (B, L, h_kv, dh)`` -> ``(B, L, h, dh)``.
Cost: ``O(L·(ℓ + c·L/ℓ))`` time and memory; for a fixed ``ℓ`` the summary part grows as
``c·L²/ℓ``.

Example:
    >>> import numpy as np, keras_transformers as kt
    >>> mha = kt.attention.MultiHeadAttention(
    ...     num_heads=2, key_dim=8, causal=True,
    ...     attention={"name": "fixed", "stride": 4, "summary_size": 1})
    >>> tuple(mha(np.zeros((1, 16, 16), "float32")).shape)
    (1, 16, 16)
"""

import numpy as np
from keras import ops

from keras_transformers.attention.registry import register
from keras_transformers.attention.sparse_core import FactorizedPatternCore
from keras_transformers.ops import sparse_patterns as sp
from keras_transformers.ops.blocks import split_blocks


def fixed_parts(q, k, v, length, lp, stride, summary_size, causal, mode, layer_index):
    """The :class:`SparsePart` list of the fixed pattern on heads-first ``(B, h, Lp, ·)``."""
    n = lp // stride
    c = summary_size
    num_heads = q.shape[1]

    def own_block(heads, dedupe):
        pattern = sp.block_pattern(causal)
        return sp.window_part(q, k, v, length, lp, stride, 0, causal, pattern, heads)

    def summary(heads, dedupe):
        def cells(x):  # (B, h, Lp, c') -> (B, h, 1, n·c, c'): the last c of every block
            blocks = split_blocks(x, stride)[:, :, :, stride - c :]  # (B, h, n, c, c')
            return ops.reshape(blocks, (-1, x.shape[1], 1, n * c, x.shape[3]))

        qs = ops.reshape(q, (-1, q.shape[1], 1, lp, q.shape[3]))  # (B, h, 1, Lp, dh)
        kpos = np.arange(n)[:, None] * stride + np.arange(stride - c, stride)[None, :]
        kpos = kpos.reshape(1, n * c)  # (1, n·c)
        qpos = np.arange(lp).reshape(1, lp)  # (1, Lp)
        pattern = np.ones((1, lp, n * c), bool)
        if causal:
            pattern &= kpos[:, None, :] <= qpos[:, :, None]
        if dedupe:  # the own block is in A(1)
            pattern &= (kpos[:, None, :] // stride) != (qpos[:, :, None] // stride)
        return sp.SparsePart(qs, cells(k), cells(v), qpos, kpos, sp.with_heads(pattern, heads))

    return sp.factorized_parts(own_block, summary, mode, layer_index, num_heads)


@register("fixed")
class FixedAttention(FactorizedPatternCore):
    """Sparse Transformer fixed pattern (own block + the summary cells of every block).

    Args:
        stride: block length ``ℓ >= 1``.
        summary_size: summary cells per block ``c``, ``1 <= c <= ℓ``.
        mode: ``"merged"``, ``"interleave"`` or ``"multihead"`` (see the module docstring).
        layer_index: the layer's index ``n`` for ``mode="interleave"`` (even: ``A(1)``,
            odd: ``A(2)``).
    """

    example_config = {"stride": 4, "summary_size": 1, "mode": "merged"}

    def __init__(self, stride=128, summary_size=8, mode="merged", layer_index=0, **kwargs):
        super().__init__(mode=mode, layer_index=layer_index, **kwargs)
        self.stride = sp.check_int("stride", stride, 1)
        self.summary_size = sp.check_int("summary_size", summary_size, 1)
        if self.summary_size > self.stride:
            raise ValueError(
                f"summary_size={summary_size}: must be <= stride={self.stride} (the summary "
                "cells are the last summary_size positions of each block)."
            )

    def _padded_length(self, length):
        return sp.ceil_div(length, self.stride) * self.stride

    def _parts(self, q, k, v, length, lp, causal):
        return fixed_parts(
            q, k, v, length, lp, self.stride, self.summary_size, causal, self.mode, self.layer_index
        )

    def get_config(self):
        return {**super().get_config(), "stride": self.stride, "summary_size": self.summary_size}
