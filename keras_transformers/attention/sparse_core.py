"""Shared base of the fixed-pattern sparse cores (local, local2d, sliding_window, strided, fixed,
blockwise).

Each subclass describes its pattern as :class:`~keras_transformers.ops.sparse_patterns.SparsePart`
groups through ``_parts(q, k, v, length, padded_length, causal)`` and ``_padded_length(length)``;
this class runs them through the one blocked engine,
:func:`~keras_transformers.ops.sparse_patterns.sparse_compute` (padding to the block size,
grouped KV heads, masks, positions, the dense debug path) and exposes the static pattern.
"""

from keras_transformers.attention.base import AttentionCore
from keras_transformers.ops import sparse_patterns as sp


class SparsePatternCore(AttentionCore):
    """Base class: subclasses define ``_parts`` and ``_padded_length``."""

    supports_position_bias = True
    supports_attention_mask = False
    supports_cross_attention = False
    supports_cache = False
    supports_causal = True
    handles_grouped_kv = True

    def compute(self, query, key, value, context):
        return sp.sparse_compute(self, query, key, value, context, self._parts, self._padded_length)

    def static_pattern(self, length, causal=False, num_heads=1):
        """Numpy bool ``(h, L, L)``: which keys each query may attend (no padding)."""
        return sp.dense_pattern(self._parts, length, self._padded_length, causal, num_heads)
