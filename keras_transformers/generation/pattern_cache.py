"""A KV cache for the fixed-pattern local cores of the Image Transformer (Parmar et al., 2018).

The ``local`` (1D) and ``local2d`` cores compute whole blocks at once and have no decoding state
of their own (``supports_cache = False``). Their key sets are static, though:
``S_i = {j : pattern[i, j]}`` (``AttentionCore.static_pattern``), at most ``K`` keys per query
(``K <= l_q + l_m`` for 1D, ``(h_q + h_m)(w_q + 2w_m)`` for 2D). :class:`PatternCache` turns
that into the cache protocol of :mod:`keras_transformers.attention.base`:

* ``init_cache``: every key and value so far, ``(B, 2, L_max, h_kv, dh)`` (as full attention);
* ``decode_step`` for the queries at positions ``t .. t + l``: write their keys/values, gather
  the ``K`` keys of each query from the table ``index (L, K)`` built once from the static
  pattern, and attend ``softmax(q k_Sᵀ / sqrt(dh)) v_S`` over them. Cost per token ``O(K·dh)``:
  independent of the position, where recomputing the image costs ``O(L·K·dh)`` per token.

The table is built for the model's full (static) length ``L``, the length the core was built
for, so a decoding step sees exactly the keys the block-computed forward pass gives that
position. Score-side position biases (ALiBi, T5, Shaw) are not applied while decoding: such a
core then raises; the Image Transformer uses learned position embeddings.

Example:
    >>> import numpy as np, keras_transformers as kt
    >>> core = kt.generation.CachedLocalAttention(block_size=4, memory_blocks=1)
    >>> mha = kt.attention.MultiHeadAttention(num_heads=2, key_dim=8, causal=True, attention=core)
    >>> _ = mha(np.zeros((1, 12, 16), "float32"))
    >>> cache = mha.init_cache(1, 12)
    >>> out, cache = mha(np.zeros((1, 1, 16), "float32"), cache=cache, cache_index=0)
    >>> tuple(out.shape), core.keys_per_query
    ((1, 1, 16), 8)
"""

import keras
import numpy as np
from keras import ops

from keras_transformers.attention.local import LocalAttention
from keras_transformers.attention.local2d import Local2DAttention


class PatternCache:
    """Cache protocol of a fixed-pattern core (mixed in before the core's class)."""

    supports_cache = True

    def build(self, query_shape, key_shape=None):
        if query_shape[1] is not None:
            self.pattern_length = int(query_shape[1])
        super().build(query_shape, key_shape)

    def key_table(self, length=None):
        """``(index (L, K) int32, valid (L, K) bool)``: the causal key set of every position."""
        length = int(length or getattr(self, "pattern_length", 0))
        if not length:
            raise ValueError(
                f"attention={self.variant!r}: the cache needs the sequence length; build the "
                "layer (call it once on the full length) before init_cache."
            )
        cached = self.__dict__.get("_key_table")
        if cached is not None and cached[0] == length:
            return cached[1], cached[2]
        pattern = self.static_pattern(length, causal=True)[0]  # (L, L) bool
        width = max(1, int(pattern.sum(axis=1).max()))
        index = np.zeros((length, width), "int32")
        valid = np.zeros((length, width), bool)
        for i in range(length):
            keys = np.flatnonzero(pattern[i])
            index[i, : len(keys)], valid[i, : len(keys)] = keys, True
        self.__dict__["_key_table"] = (length, index, valid)
        return index, valid

    @property
    def keys_per_query(self):
        """``K``: the most keys a query attends (the gather width of a decoding step)."""
        return self.key_table()[0].shape[1]

    def init_cache(
        self, batch_size, max_length, num_heads, num_key_value_heads, key_dim, value_dim, dtype
    ):
        """Zeros ``(B, 2, L_max, h_kv, dh)`` (needs ``dv == dh``)."""
        if value_dim is not None and value_dim != key_dim:
            raise ValueError(f"a KV cache needs value_dim == key_dim; got {value_dim}, {key_dim}.")
        self.key_table()  # built now, outside any traced function
        return ops.zeros((batch_size, 2, max_length, num_key_value_heads, key_dim), dtype=dtype)

    def decode_step(self, query, key, value, cache, cache_index, context):
        """Write ``key, value (B, l, h_kv, dh)`` at ``cache_index``; attend each query to its
        ``K`` pattern keys. Returns ``(output (B, l, h, dh), cache)``."""
        if context.uses_position_bias:
            raise ValueError(
                f"attention={self.variant!r}: cached decoding does not apply score-side position "
                "biases; use position='learned' or 'rope' (or use_cache=False)."
            )
        index, valid = self.key_table()
        q_len, l_max = query.shape[1], cache.shape[2]
        new_kv = ops.stack([key, ops.cast(value, key.dtype)], axis=1)  # (B, 2, l, h_kv, dh)
        cache = ops.slice_update(cache, (0, 0, cache_index, 0, 0), ops.cast(new_kv, cache.dtype))
        rows = ops.arange(q_len, dtype="int32") + ops.cast(cache_index, "int32")  # (l,)
        idx = ops.take(ops.convert_to_tensor(index), rows, axis=0)  # (l, K)
        ok = ops.take(ops.convert_to_tensor(valid), rows, axis=0)  # (l, K)
        idx = ops.minimum(idx, l_max - 1)
        width = index.shape[1]
        flat = ops.reshape(idx, (-1,))  # (l·K,)
        keys = ops.take(cache[:, 0], flat, axis=1)  # (B, l·K, h_kv, dh)
        values = ops.take(cache[:, 1], flat, axis=1)  # (B, l·K, h_kv, dh)
        batch = ops.shape(query)[0]
        keys = ops.reshape(keys, (batch, q_len, width) + tuple(keys.shape[2:]))  # (B,l,K,h_kv,dh)
        values = ops.reshape(values, (batch, q_len, width) + tuple(values.shape[2:]))
        heads, kv_heads = query.shape[2], keys.shape[3]
        if kv_heads != heads:
            keys = ops.repeat(keys, heads // kv_heads, axis=3)  # (B, l, K, h, dh)
            values = ops.repeat(values, heads // kv_heads, axis=3)
        mask = ok[None]  # (1, l, K)
        if context.padding_mask is not None:
            pad = ops.take(ops.cast(context.padding_mask, "bool"), flat, axis=1)  # (B, l·K)
            mask = ops.logical_and(mask, ops.reshape(pad, (batch, q_len, width)))
        scale = 1.0 / float(query.shape[-1]) ** 0.5
        scores = ops.einsum("blhd,blkhd->bhlk", query, keys)  # (B, h, l, K)
        scores = ops.cast(scores, "float32") * scale
        scores = ops.where(mask[:, None], scores, -1e9)
        weights = ops.softmax(scores, axis=-1)  # (B, h, l, K)
        out = ops.einsum("bhlk,blkhd->blhd", ops.cast(weights, values.dtype), values)
        return ops.cast(out, query.dtype), cache  # (B, l, h, dh)


@keras.saving.register_keras_serializable(package="keras_transformers")
class CachedLocalAttention(PatternCache, LocalAttention):
    """``local`` (1D block) attention with a decoding cache (:class:`PatternCache`)."""


@keras.saving.register_keras_serializable(package="keras_transformers")
class CachedLocal2DAttention(PatternCache, Local2DAttention):
    """``local2d`` attention (raster order) with a decoding cache (:class:`PatternCache`)."""
