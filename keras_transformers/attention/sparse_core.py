"""Shared bases of the cores computed by the one blocked engine
(:mod:`keras_transformers.ops.sparse_patterns`).

* :class:`BlockedCore`: the capabilities every blocked core shares (static-length
  self-attention, score-side position biases, grouped KV heads handled by the engine); the
  global-local cores (longformer, etc, bigbird) derive from it directly.
* :class:`SparsePatternCore`: the fixed-pattern cores (local, local2d, sliding_window, strided,
  fixed, blockwise). Each subclass describes its pattern as
  :class:`~keras_transformers.ops.sparse_patterns.SparsePart` groups through
  ``_parts(q, k, v, length, padded_length, causal)`` and ``_padded_length(length)``; this class
  runs them with :func:`~keras_transformers.ops.sparse_patterns.sparse_compute` (padding to the
  block size, grouped KV heads, masks, positions, the dense debug path) and exposes the static
  pattern.
* :class:`FactorizedPatternCore`: the Sparse Transformer's two-pattern cores (strided, fixed)
  and their ``mode`` / ``layer_index``.
"""

from keras_transformers.attention.base import AttentionCore
from keras_transformers.ops import sparse_patterns as sp


class BlockedCore(AttentionCore):
    """Capabilities of every core computed by the blocked engine."""

    supports_position_bias = True
    supports_attention_mask = False
    supports_cross_attention = False
    supports_cache = False
    supports_causal = True
    handles_grouped_kv = True


class SparsePatternCore(BlockedCore):
    """Base class: subclasses define ``_parts`` and ``_padded_length``."""

    def compute(self, query, key, value, context):
        return sp.sparse_compute(self, query, key, value, context, self._parts, self._padded_length)

    def static_pattern(self, length, causal=False, num_heads=1):
        """Numpy bool ``(h, L, L)``: which keys each query may attend (no padding)."""
        return sp.dense_pattern(self._parts, length, self._padded_length, causal, num_heads)


class FactorizedPatternCore(SparsePatternCore):
    """Base of the factorized cores: two patterns ``A(1)``, ``A(2)`` combined by ``mode``.

    Args:
        mode: ``"merged"``, ``"interleave"`` or ``"multihead"`` (see
            :func:`~keras_transformers.ops.sparse_patterns.factorized_parts`).
        layer_index: the layer's index ``n`` for ``mode="interleave"`` (even: ``A(1)``,
            odd: ``A(2)``).
    """

    def __init__(self, mode="merged", layer_index=0, **kwargs):
        super().__init__(**kwargs)
        self.mode, self.layer_index = sp.check_mode(mode, layer_index)

    def build(self, query_shape, key_shape=None):
        if self.mode == "multihead" and query_shape[2] is not None and query_shape[2] < 2:
            sp.factorized_parts(None, None, self.mode, self.layer_index, int(query_shape[2]))
        super().build(query_shape, key_shape)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "layer_index": self.layer_index}
