"""Full (dense) scaled dot-product attention (Vaswani et al., 2017, "Attention is all you need").

``attn(Q, K, V) = softmax(Q Kᵀ / sqrt(dh) + bias, mask) V``

The fast path calls ``keras.ops.dot_product_attention`` so each backend uses its fused kernel
(with ``is_causal=True`` when the only mask is causality). A score-side position bias, Shaw value
terms, attention-weight dropout or ``return_attention_scores`` take the explicit path, which forms
the ``(B, h, Lq, Lk)`` weights.

Shapes: ``q (B, Lq, h, dh)``, ``k, v (B, Lk, h_kv, dh)`` -> ``(B, Lq, h, dh)``.
Cost: ``O(L²·d)`` time, ``O(L²)`` memory (``O(L)`` inside fused kernels that support it).

Example:
    >>> import numpy as np, keras_transformers as kt
    >>> mha = kt.attention.MultiHeadAttention(num_heads=2, key_dim=8, attention="full")
    >>> mha(np.zeros((1, 6, 16), "float32")).shape
    (1, 6, 16)
"""

import functools

import keras
import numpy as np
from keras import ops

from keras_transformers.attention.base import AttentionCore
from keras_transformers.attention.registry import register
from keras_transformers.ops.attention import (
    attend,
    heads_first,
    heads_last,
    repeat_kv_heads,
    zero_empty_rows,
)
from keras_transformers.ops.masks import combine_masks


def relative_positions(query_length, key_length, query_offset=0):
    """``rel[i, j] = j - (i + query_offset)`` as int32 ``(Lq, Lk)``."""
    q_pos = ops.arange(query_length, dtype="int32") + query_offset
    k_pos = ops.arange(key_length, dtype="int32")
    return k_pos[None, :] - q_pos[:, None]


@register("full")
class FullAttention(AttentionCore):
    """Dense softmax attention on the backend's fused kernel."""

    supports_cache = True
    needs_static_length = False

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
        num_heads = query.shape[2]
        key = repeat_kv_heads(key, num_heads)  # (B, Lk, h, dh)
        value = repeat_kv_heads(value, num_heads)  # (B, Lk, h, dv)
        q_len, k_len = ops.shape(query)[1], ops.shape(key)[1]
        uses_bias = position is not None and (position.has_score_bias or position.has_value_term)
        explicit = (
            uses_bias or return_attention_scores or (weights_dropout is not None and training)
        )
        if not explicit:
            only_causal = padding_mask is None and attention_mask is None
            if (
                causal
                and only_causal
                and _static_zero(query_offset)
                and (query.shape[1] is not None and query.shape[1] == key.shape[1])
            ):
                return causal_attention(query, key, value)
            mask = combine_masks(padding_mask, attention_mask, causal, q_len, k_len, query_offset)
            out = ops.dot_product_attention(query, key, value, mask=mask)
            return zero_empty_rows(out, mask)

        mask = combine_masks(padding_mask, attention_mask, causal, q_len, k_len, query_offset)
        q, k, v = heads_first(query), heads_first(key), heads_first(value)  # (B, h, L, dh)
        rel = relative_positions(q_len, k_len, query_offset)  # (Lq, Lk)
        bias = position.score_bias(rel, q, k, causal) if uses_bias else None
        dropout = weights_dropout if training else None
        out, weights = attend(q, k, v, mask=mask, bias=bias, dropout=dropout)  # (B, h, Lq, dv)
        if uses_bias and position.has_value_term:
            out = out + position.value_term(weights, rel)
        out = zero_empty_rows(heads_last(out), mask)  # (B, Lq, h, dv)
        if return_attention_scores:
            return out, weights
        return out


def causal_attention(query, key, value):
    """Causal-only attention for ``Lq == Lk`` (training / full-sequence fast path).

    PyTorch and JAX use ``keras.ops.dot_product_attention(is_causal=True)`` (fused SDPA on torch,
    one XLA fusion on JAX). On TensorFlow that op materialises a ``(B, h, L, L)`` boolean mask
    (``ones_like`` + ``band_part`` + ``logical_and`` + ``where``) on every call; here the mask is a
    static additive ``(L, L)`` float32 bias (0 on and below the diagonal, -1e9 above, a graph
    constant), the ``1/sqrt(dh)`` scale is applied to ``q`` (``L·dh`` multiplies instead of
    ``L²``) and the softmax runs in float32. Same result to float32 rounding.

    Shapes: ``query, key, value (B, L, h, dh)`` -> ``(B, L, h, dh)``.
    """
    if keras.backend.backend() != "tensorflow" or query.shape[1] is None:
        return ops.dot_product_attention(query, key, value, is_causal=True)
    if query.shape[1] == 1:  # one query, one key: its weight is exactly 1
        return ops.cast(value, query.dtype)
    dtype = query.dtype
    scale = 1.0 / float(query.shape[-1]) ** 0.5
    q = heads_first(query) * ops.cast(scale, dtype)  # (B, h, L, dh)
    k, v = heads_first(key), heads_first(value)  # (B, h, L, dh)
    scores = ops.matmul(q, ops.swapaxes(k, -1, -2))  # (B, h, L, L)
    scores = ops.cast(scores, "float32") + _causal_bias(int(query.shape[1]))
    weights = ops.cast(ops.softmax(scores, axis=-1), dtype)  # (B, h, L, L)
    return heads_last(ops.matmul(weights, v))  # (B, L, h, dh)


@functools.lru_cache(maxsize=16)
def _causal_bias(length):
    """``(L, L)`` float32 numpy: 0 where key <= query, -1e9 above the diagonal."""
    return np.triu(np.full((length, length), -1e9, dtype="float32"), 1)


def _static_zero(value):
    return isinstance(value, int) and value == 0
