"""Sparse Transformer strided attention (Child et al., 2019, "Generating Long Sequences with
Sparse Transformers").

Full attention is factorized into two sparse patterns with stride ``ℓ`` (``ℓ ≈ sqrt(L)`` in the
paper; suits data with a period such as images):

``A(1)_i = {t, t+1, ..., i}, t = max(0, i - ℓ)`` (the previous ``ℓ`` positions),
``A(2)_i = {j : (i - j) mod ℓ = 0}`` (every ``ℓ``-th position),

both with ``j <= i`` when causal (the paper's autoregressive form). Without ``causal`` both
patterns are made symmetric (our choice): ``A(1)_i = {j : |i - j| <= ℓ}`` and ``A(2)_i`` takes
every ``j`` with ``(i - j) mod ℓ = 0`` on both sides. Each query then attends with
``a(x_i, S_i) = softmax((x_i W^q)(x_j W^k)ᵀ_{j ∈ S_i} / sqrt(dh)) (x_j W^v)_{j ∈ S_i}`` where ``S_i``
depends on ``mode``, the survey's three ways to use the two patterns:

* ``"interleave"``: ``attn(X) = Attend(X, A(n mod 2))``: the layer's ``layer_index`` n picks
  ``A(1)`` (even) or ``A(2)`` (odd); stack layers with alternating ``layer_index``.
* ``"merged"`` (default): one softmax over ``A(1) ∪ A(2)`` (the overlap ``{i, i - ℓ}`` counted once).
* ``"multihead"``: the first ``ceil(h/2)`` heads use ``A(1)``, the others ``A(2)``.

Computed in blocks of ``ℓ``, never ``L x L``: ``A(1)`` as a band over neighbour blocks (scores
``(B, h, L/ℓ, ℓ, 2ℓ)``, ``3ℓ`` when not causal) and ``A(2)`` by regrouping the sequence into its
``ℓ`` columns ``r, r + ℓ, r + 2ℓ, ...`` (scores ``(B, h, ℓ, L/ℓ, L/ℓ)``); both feed one joint
softmax per query.

Shapes: ``q (B, L, h, dh)``, ``k, v (B, L, h_kv, dh)`` -> ``(B, L, h, dh)``.
Cost: ``O(L·(ℓ + L/ℓ))`` time and memory (``O(L·sqrt(L))`` with ``ℓ = sqrt(L)``); for a fixed
``ℓ`` the ``A(2)`` part grows as ``L²/ℓ``.

Example:
    >>> import numpy as np, keras_transformers as kt
    >>> mha = kt.attention.MultiHeadAttention(
    ...     num_heads=2, key_dim=8, causal=True,
    ...     attention={"name": "strided", "stride": 4, "mode": "multihead"})
    >>> tuple(mha(np.zeros((1, 16, 16), "float32")).shape)
    (1, 16, 16)
"""

import numpy as np

from keras_transformers.attention.registry import register
from keras_transformers.attention.sparse_core import FactorizedPatternCore
from keras_transformers.ops import sparse_patterns as sp
from keras_transformers.ops.blocks import to_columns


def strided_parts(q, k, v, length, lp, stride, causal, mode, layer_index):
    """The :class:`SparsePart` list of the strided pattern on heads-first ``(B, h, Lp, ·)``."""
    n = lp // stride
    num_heads = q.shape[1]

    def local(heads, dedupe):
        pattern = sp.band_pattern(stride, causal)
        return sp.window_part(q, k, v, length, lp, stride, 1, causal, pattern, heads)

    def strided(heads, dedupe):
        qc = to_columns(q, stride)  # (B, h, ℓ, n, dh): column r = positions r, r + ℓ, ...
        kc = to_columns(k, stride)  # (B, h, ℓ, n, dh)
        vc = to_columns(v, stride)  # (B, h, ℓ, n, dv)
        pos = np.arange(lp).reshape(n, stride).T  # (ℓ, n)
        steps = np.arange(n)[None, :] - np.arange(n)[:, None]  # (n_q, n_k): (j - i) / ℓ
        pattern = np.ones((n, n), bool)
        if causal:
            pattern &= steps <= 0
        if dedupe:  # A(1) already has |i - j| <= ℓ
            pattern &= np.abs(steps) >= 2
        pattern = sp.with_heads(pattern[None], heads)  # (1, n, n) or (h, 1, n, n)
        return sp.SparsePart(qc, kc, vc, pos, pos, pattern, layout=sp.column_layout(lp, stride))

    return sp.factorized_parts(local, strided, mode, layer_index, num_heads)


@register("strided")
class StridedAttention(FactorizedPatternCore):
    """Sparse Transformer strided pattern (local band + every ``ℓ``-th position).

    Args:
        stride: ``ℓ >= 1``.
        mode: ``"merged"``, ``"interleave"`` or ``"multihead"`` (see the module docstring).
        layer_index: the layer's index ``n`` for ``mode="interleave"`` (even: ``A(1)``,
            odd: ``A(2)``).
    """

    example_config = {"stride": 4, "mode": "merged"}

    def __init__(self, stride=128, mode="merged", layer_index=0, **kwargs):
        super().__init__(mode=mode, layer_index=layer_index, **kwargs)
        self.stride = sp.check_int("stride", stride, 1)

    def _stride(self, length):
        return max(1, min(self.stride, int(length)))

    def _padded_length(self, length):
        stride = self._stride(length)
        return sp.ceil_div(length, stride) * stride

    def _parts(self, q, k, v, length, lp, causal):
        return strided_parts(
            q, k, v, length, lp, self._stride(length), causal, self.mode, self.layer_index
        )

    def get_config(self):
        return {**super().get_config(), "stride": self.stride}
