"""Shared base of the fixed-pattern sparse cores (local, local2d, sliding_window, strided, fixed,
blockwise).

Each subclass describes its pattern as :class:`~keras_transformers.ops.sparse_patterns.SparsePart`
groups through ``_parts(q, k, v, length, padded_length, causal)`` and ``_padded_length(length)``;
this class runs them with :func:`~keras_transformers.ops.sparse_patterns.run_sparse_core` (padding
to the block size, grouped KV heads, masks, positions, the dense debug path) and exposes the
static pattern.
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

    def call(
        self,
        query,
        key,
        value,
        padding_mask=None,
        attention_mask=None,
        causal=False,
        position=None,
        query_offset=0,
        weights_dropout=None,
        training=None,
        return_attention_scores=False,
        global_mask=None,
    ):
        return sp.run_sparse_core(
            self,
            query,
            key,
            value,
            self._parts,
            self._padded_length,
            padding_mask,
            attention_mask,
            causal,
            position,
            query_offset,
            weights_dropout,
            training,
            return_attention_scores,
        )

    def static_pattern(self, length, causal=False, num_heads=1):
        """Numpy bool ``(h, L, L)``: which keys each query may attend (no padding)."""
        return sp.dense_pattern(self._parts, length, self._padded_length, causal, num_heads)
