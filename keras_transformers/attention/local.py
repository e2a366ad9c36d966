"""Image Transformer 1D local attention (Parmar et al., 2018, "Image Transformer").

The (raster-flattened) sequence is cut into non-overlapping query blocks of ``l_q = block_size``
positions. Every query of block ``i`` attends to the keys of its own block and of the
``memory_blocks`` blocks before it (``l_m = memory_blocks · l_q`` memory positions). With
``causal=True`` the keys after the query are masked, so a query sees only already generated
positions (the paper's decoder). Without ``causal`` the memory is symmetric: block ``i`` also looks
``memory_blocks`` blocks ahead (our choice for encoders; the paper only uses the causal form).

``S_i = {j : ⌊i/l_q⌋ - M <= ⌊j/l_q⌋ <= ⌊i/l_q⌋ (+ M when not causal)}`` (``∩ {j <= i}`` if causal),
``a(x_i, S_i) = softmax((x_i W^q)(x_j W^k)ᵀ_{j ∈ S_i} / sqrt(dh)) (x_j W^v)_{j ∈ S_i}``.

Computed per block: ``(l_q, (M + 1)·l_q)`` scores (``(2M + 1)·l_q`` keys when not causal); a length
that is not a multiple of ``l_q`` is padded and the padding masked / removed.

Shapes: ``q (B, L, h, dh)``, ``k, v (B, L, h_kv, dh)`` -> ``(B, L, h, dh)``; blocked scores
``(B, h, L/l_q, l_q, (M+1)·l_q)``.
Cost: ``O(L·(M+1)·l_q)`` time and memory, linear in ``L`` (keys per query ``<= l_q + l_m``).

Example:
    >>> import numpy as np, keras_transformers as kt
    >>> mha = kt.attention.MultiHeadAttention(
    ...     num_heads=2, key_dim=8, causal=True,
    ...     attention={"name": "local", "block_size": 4, "memory_blocks": 1})
    >>> tuple(mha(np.zeros((1, 10, 16), "float32")).shape)
    (1, 10, 16)
"""

from keras_transformers.attention.registry import register
from keras_transformers.attention.sparse_core import SparsePatternCore
from keras_transformers.ops import sparse_patterns as sp


@register("local")
class LocalAttention(SparsePatternCore):
    """1D local (block) attention of the Image Transformer.

    Args:
        block_size: query block length ``l_q >= 1``.
        memory_blocks: ``M >= 0`` blocks of memory before the query block (and after it when
            not causal).
    """

    example_config = {"block_size": 4, "memory_blocks": 1}

    def __init__(self, block_size=128, memory_blocks=1, **kwargs):
        super().__init__(**kwargs)
        self.block_size = sp.check_int("block_size", block_size, 1)
        self.memory_blocks = sp.check_int("memory_blocks", memory_blocks, 0)

    def _block(self, length):
        return max(1, min(self.block_size, int(length)))

    def _padded_length(self, length):
        block = self._block(length)
        return sp.ceil_div(length, block) * block

    def _parts(self, q, k, v, length, lp, causal):
        # query block i with key blocks i - M .. i (.. i + M when not causal)
        block, pattern = self._block(length), sp.block_pattern(causal)
        return [sp.window_part(q, k, v, length, lp, block, self.memory_blocks, causal, pattern)]

    def get_config(self):
        return {
            **super().get_config(),
            "block_size": self.block_size,
            "memory_blocks": self.memory_blocks,
        }
