"""Full (dense) scaled dot-product attention (Vaswani et al., 2017, "Attention is all you need").

``attn(Q, K, V) = softmax(Q Kᵀ / sqrt(dh) + bias, mask) V``

Three paths, chosen per call from static shapes:

* long sequences (``Lq·Lk >= flash_min_pairs``): the blocked exact engine
  :func:`~keras_transformers.ops.flash_attention.flash_attention` (``O(L)`` memory forward and
  backward, causal tiles above the diagonal skipped), also with padding masks, an
  ``attention_mask`` and score-side positions (ALiBi, T5, Transformer-XL, Shaw with its value
  vectors), whose bias (and Shaw's value term) it asks per tile from the tile's relative
  positions; ALiBi and T5 once per tile offset. PyTorch keeps its fused
  ``scaled_dot_product_attention`` (already ``O(L)``) when no score bias is needed.
* otherwise ``keras.ops.dot_product_attention`` so each backend uses its fused kernel (with
  ``is_causal=True`` when the only mask is causality); a positions-only bias (ALiBi, T5) goes to
  the fused kernel as a float bias on PyTorch (and JAX off-CPU), see :attr:`fused_bias`;
* any other score-side position bias on short sequences, Shaw value vectors, attention-weight
  dropout or ``return_attention_scores`` take the explicit path, which forms the
  ``(B, h, Lq, Lk)`` weights.

Shapes: ``q (B, Lq, h, dh)``, ``k, v (B, Lk, h_kv, dh)`` -> ``(B, Lq, h, dh)``.
Cost: ``O(L²·d)`` time; ``O(L)`` memory on the blocked path and inside fused kernels that
support it, ``O(L²)`` on the explicit path.

Incremental decoding (``MultiHeadAttention(..., causal=True)`` with ``cache=``): the cache keeps
the keys and values of every position, ``(B, 2, L_max, h_kv, dh)``
(:class:`~keras_transformers.attention.base.KeyValueCache`); each step writes its keys at
``cache_index`` and attends over the ``L_max`` slots with the unwritten ones masked.

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
from keras.src.backend.common.stateless_scope import StatelessScope

from keras_transformers.attention.base import AttentionCore, KeyValueCache
from keras_transformers.attention.registry import register
from keras_transformers.ops.attention import (
    attend,
    heads_first,
    heads_last,
    zero_empty_rows,
)
from keras_transformers.ops.flash_attention import DEFAULT_BLOCK_SIZE, flash_attention
from keras_transformers.ops.masks import combine_masks


def relative_positions(query_length, key_length, query_offset=0):
    """``rel[i, j] = j - (i + query_offset)`` as int32 ``(Lq, Lk)``."""
    q_pos = ops.arange(query_length, dtype="int32") + query_offset
    k_pos = ops.arange(key_length, dtype="int32")
    return k_pos[None, :] - q_pos[:, None]


@register("full")
class FullAttention(KeyValueCache, AttentionCore):
    """Dense softmax attention on the backend's fused kernel.

    Caching: :class:`~keras_transformers.attention.base.KeyValueCache` keeps every key and value,
    ``(B, 2, L_max, h_kv, dh)``.
    """

    supports_cache = True
    needs_static_length = False
    #: Query-key pairs ``Lq·Lk`` from which the blocked ``O(L)``-memory engine replaces the
    #: dense paths (static lengths only; measured crossover on a 2-core CPU, TensorFlow).
    flash_min_pairs = 2048 * 2048
    #: Tile size of the blocked engine (queries and keys).
    flash_block_size = DEFAULT_BLOCK_SIZE
    #: Below ``flash_min_pairs``, a positions-only score bias (ALiBi, T5) goes to the backend's
    #: fused kernel as a float bias instead of the explicit path: PyTorch SDPA (forward+backward,
    #: B=1, d=256, h=4, causal, 2-core CPU: t5 L=512 0.51 s vs 0.99 s explicit, alibi L=1024
    #: 0.24 vs 0.43 s, t5 L=2048 4.5 vs 4.1 s under load) and JAX on an accelerator (on CPU its
    #: XLA path is the explicit one: t5 L=512 47 vs 41 ms, L=2048 561 vs 575 ms, so CPU keeps it).
    fused_bias = True

    def compute(self, query, key, value, context):
        """``query (B, Lq, h, dh)``, ``key/value (B, Lk, h, dh)`` -> ``(B, Lq, h, dv)``."""
        q_len, k_len = ops.shape(query)[1], ops.shape(key)[1]
        uses_bias = context.uses_position_bias
        offset = context.query_offset
        if self.uses_flash(query, key, context):
            return self.flash(query, key, value, context)
        if not (uses_bias or context.return_scores or context.dropout is not None):
            only_causal = context.padding_mask is None and context.attention_mask is None
            if (
                context.causal
                and only_causal
                and _static_zero(offset)
                and (query.shape[1] is not None and query.shape[1] == key.shape[1])
            ):
                return causal_attention(query, key, value)
            mask = combine_masks(
                context.padding_mask, context.attention_mask, context.causal, q_len, k_len, offset
            )
            out = ops.dot_product_attention(query, key, value, mask=mask)
            return zero_empty_rows(out, mask)

        mask = combine_masks(
            context.padding_mask, context.attention_mask, context.causal, q_len, k_len, offset
        )
        rel = relative_positions(q_len, k_len, offset)  # (Lq, Lk)
        position = context.position
        if self.uses_fused_bias(query, context):
            bias = position.score_bias(rel, None, None, context.causal)  # (h, Lq, Lk)
            return fused_biased_attention(query, key, value, bias[None], mask)
        q, k, v = heads_first(query), heads_first(key), heads_first(value)  # (B, h, L, dh)
        bias = position.score_bias(rel, q, k, context.causal) if uses_bias else None
        out, weights = attend(q, k, v, mask=mask, bias=bias, dropout=context.dropout)
        # out (B, h, Lq, dv), weights (B, h, Lq, Lk)
        if uses_bias and position.has_value_term:
            out = out + position.value_term(weights, rel)
        out = zero_empty_rows(heads_last(out), mask)  # (B, Lq, h, dv)
        if context.return_scores:
            return out, weights
        return out

    def uses_flash(self, query, key, context):
        """Whether this call takes the blocked engine (static, long, no weights wanted)."""
        q_len, k_len = query.shape[1], key.shape[1]
        # static ints only: JAX traces unknown lengths as symbolic dimensions, not None
        if not isinstance(q_len, int) or not isinstance(k_len, int):
            return False
        if q_len * k_len < self.flash_min_pairs:
            return False
        if context.return_scores or context.dropout is not None:
            return False
        if not isinstance(context.query_offset, (int, np.integer)):
            return False
        position = context.position if context.uses_position_bias else None
        if position is not None and position.has_value_term:
            if not getattr(position, "value_term_is_relative", False):
                return False  # a value term the engine cannot tile: explicit path
        if position is None and keras.backend.backend() == "torch":
            return False  # fused SDPA is already O(L) memory
        return True

    def uses_fused_bias(self, query, context):
        """Whether a short call with a positions-only bias (ALiBi, T5) takes the backend's fused
        kernel with a float bias (PyTorch SDPA ``attn_mask``, JAX ``dot_product_attention``)."""
        if not (self.fused_bias and context.uses_position_bias):
            return False
        backend = keras.backend.backend()
        if backend not in ("torch", "jax"):
            return False  # TensorFlow has no fused kernel: the explicit path is the same work
        if backend == "jax" and _jax_on_cpu():
            return False  # XLA's CPU "kernel" is the explicit path again (measured 0.85-1.0x)
        if context.return_scores or context.dropout is not None:
            return False
        position = context.position
        if position.has_value_term or getattr(position, "score_bias_reads_qk", True):
            return False
        return keras.backend.standardize_dtype(query.dtype) in ("float32", "bfloat16")

    def flash(self, query, key, value, context):
        """The blocked exact engine; score-side positions give their bias per tile."""
        position = context.position if context.uses_position_bias else None
        bias_fn, params, reads_qk, relative = None, (), False, False
        constant_beyond = None
        value_table = value_labels = None
        key_table = key_labels = None
        if position is not None:
            weights = list(position.weights)
            if position.has_value_term:  # Shaw's a^V: the engine's per-tile value term
                value_var = position.value_table
                weights = [w for w in weights if w is not value_var]
                value_table = ops.convert_to_tensor(value_var.value)  # (R, dv)
                value_labels = position.relative_value_labels
            if getattr(position, "key_term_is_relative", False):  # Shaw's a^K: per tile too
                key_var = position.key_table
                weights = [w for w in weights if w is not key_var]
                key_table = ops.convert_to_tensor(key_var.value)  # (R, dh)
                key_labels = position.relative_key_labels
            params = tuple(ops.convert_to_tensor(w.value) for w in weights)
            reads_qk = getattr(position, "score_bias_reads_qk", True)
            # positions-only biases (ALiBi, T5) are elementwise in rel: the engine asks them
            # for each tile's Tq + Tk - 1 distinct offsets and lays them along the diagonals
            relative = not reads_qk
            causal = context.causal
            # positions-only terms that stop changing past a distance (T5's last bucket,
            # Shaw's clipped labels): the engine treats tiles beyond it as one value
            constant_beyond = getattr(position, "relative_constant_beyond", None)

            def bias_fn(values, q_tile, k_tile, rel):
                # the tile's own parameter tensors stand in for the variables (gradients flow
                # through the engine's custom gradient, not through variable reads)
                with StatelessScope(list(zip(weights, values)), initialize_variables=False):
                    return position.score_bias(rel, q_tile, k_tile, causal)  # (..., Tq, Tk)

            if key_table is not None and not weights:
                bias_fn, reads_qk, relative = None, False, False  # the key term was all of it

        out = flash_attention(
            heads_first(query),
            heads_first(key),
            heads_first(value),
            causal=context.causal,
            query_offset=int(context.query_offset),
            padding_mask=context.padding_mask,
            attention_mask=context.attention_mask,
            bias_fn=bias_fn,
            bias_params=params,
            bias_reads_qk=reads_qk,
            bias_relative=relative,
            constant_beyond=constant_beyond,
            key_table=key_table,
            key_labels=key_labels,
            value_table=value_table,
            value_labels=value_labels,
            block_size=self.flash_block_size,
        )  # (B, h, Lq, dv)
        return heads_last(out)  # (B, Lq, h, dv)


def fused_biased_attention(query, key, value, bias, mask):
    """``softmax(q kᵀ / sqrt(dh) + bias, mask) v`` on the backend's fused kernel.

    PyTorch's ``scaled_dot_product_attention`` takes one additive float ``attn_mask``, so the
    boolean mask is folded into the bias (``-1e9`` where masked); JAX's ``dot_product_attention``
    takes both. Rows with no visible key are zeroed afterwards.

    Shapes: ``query (B, Lq, h, dh)``, ``key, value (B, Lk, h, dh)``, ``bias (1|B, h, Lq, Lk)``,
    ``mask`` bool ``(B|1, 1, Lq, Lk)`` or None -> ``(B, Lq, h, dh)``.
    """
    bias = ops.cast(bias, query.dtype)
    kernel_mask = mask
    if keras.backend.backend() == "torch" and mask is not None:
        bias = ops.where(mask, bias, ops.cast(-1e9, query.dtype))  # (B|1, h, Lq, Lk)
        kernel_mask = None
    out = ops.dot_product_attention(query, key, value, bias=bias, mask=kernel_mask)
    return zero_empty_rows(out, mask)  # (B, Lq, h, dh)


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


def _jax_on_cpu():
    import jax

    return jax.default_backend() == "cpu"


def _static_zero(value):
    return isinstance(value, int) and value == 0
