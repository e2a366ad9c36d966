"""Linear attention with the ``elu + 1`` feature map (Katharopoulos et al., 2020, "Transformers are
RNNs: fast autoregressive transformers with linear attention").

Softmax similarity ``exp(q·k)`` is replaced by a kernel ``φ(q)·φ(k)`` with the positive feature map
``φ(x) = elu(x) + 1``. Because the kernel factorises, attention is computed right to left,
``φ(Q) (φ(K)ᵀ V)``, in time and memory linear in the length; the causal form keeps a running
state ``S_i = Σ_{j<=i} φ(k_j) v_jᵀ``, computed here with chunked prefix sums (quadratic only inside
chunks of ``chunk_size`` positions).

``out_i = φ(q_i)ᵀ Σ_j φ(k_j) v_jᵀ / φ(q_i)ᵀ Σ_j φ(k_j)``   (``j <= i`` when causal)

This module also holds :class:`KernelAttentionCore`, the shared base of the kernelised cores
(``linear``, ``rfa``, ``performer``): they differ only in their feature maps.

Shapes: ``q (B, Lq, h, dh)``, ``k (B, Lk, h_kv, dh)``, ``v (B, Lk, h_kv, dv)`` ->
``(B, Lq, h, dv)``; features ``(B, h, L, r)`` with ``r = dh`` here.
Cost: ``O(L·r·dv)`` time and memory (causal: ``O(L·c·r + L/c·r·dv)`` with ``c = chunk_size``).

Incremental decoding (``MultiHeadAttention(..., causal=True)`` with ``cache=``): the cache is the
recurrent state ``[S | z]`` ``(B, h, r, dv + 1)`` with ``S = Σ_j φ(k_j) v_jᵀ`` and
``z = Σ_j φ(k_j)``, so the cache size and the per-token cost do not grow with the length.

Kernelised cores never form per-pair scores, so score-side position biases (ALiBi, T5, Shaw) and
arbitrary ``(B, Lq, Lk)`` masks are not supported; RoPE works (it transforms q and k only).
``return_attention_scores=True`` builds the equivalent dense ``(B, h, Lq, Lk)`` weights
(debug path, ``O(L²)``). Attention-weight dropout does not apply (there are no weights to drop).

Example:
    >>> import numpy as np, keras_transformers as kt
    >>> mha = kt.attention.MultiHeadAttention(num_heads=2, key_dim=8, attention="linear",
    ...                                       causal=True)
    >>> tuple(mha(np.random.rand(1, 32, 16).astype("float32")).shape)
    (1, 32, 16)
"""

from keras import ops

from keras_transformers.attention.base import AttentionCore, check_int
from keras_transformers.attention.registry import register
from keras_transformers.ops.attention import heads_first, heads_last
from keras_transformers.ops.feature_maps import elu_plus_one
from keras_transformers.ops.linear_attention import (
    causal_kernel_attention,
    causal_log_kernel_attention,
    dense_kernel_weights,
    dense_log_kernel_weights,
    empty_log_kernel_state,
    kernel_attention,
    kernel_attention_step,
    kernel_state,
    log_kernel_attention,
    log_kernel_attention_step,
    log_kernel_state,
)


class KernelAttentionCore(AttentionCore):
    """Shared base of kernelised attention cores (subclasses define :meth:`feature_maps`).

    Args:
        chunk_size: chunk length ``c`` of the causal prefix-sum form.
    """

    supports_position_bias = False
    supports_attention_mask = False
    supports_cross_attention = True
    supports_causal = True
    supports_cache = False
    #: :meth:`feature_maps` returns log-features ``log φ`` (exponential feature maps such as
    #: FAVOR+); attention then runs in log space, stabilised per query row, so large query/key
    #: norms never underflow every term (ungated cores only).
    log_features = False

    def __init__(self, chunk_size=64, **kwargs):
        super().__init__(**kwargs)
        self.chunk_size = check_int("chunk_size", chunk_size)

    # -- subclass hooks ---------------------------------------------------------------------
    def feature_maps(self, query, key, key_mask=None, causal=False, training=None):
        """``query (B, h, Lq, dh)``, ``key (B, h, Lk, dh)`` -> ``(φ(q), φ(k))`` ``(B, h, L, r)``."""
        raise NotImplementedError

    def gates(self, key, causal=False):
        """Optional ``(B, h, L)`` forget gates of the causal recurrence (None = ungated)."""
        return None

    # -- shared computation -----------------------------------------------------------------
    def compute(self, query, key, value, context):
        """``query (B, Lq, h, dh)``, ``key/value (B, Lk, h, ·)`` -> ``(B, Lq, h, dv)``."""
        name = self.variant
        if not (isinstance(context.query_offset, int) and context.query_offset == 0):
            raise ValueError(
                f"attention={name!r}: query_offset={context.query_offset!r} is for cached "
                "decoding; decode with cache= (MultiHeadAttention), which calls decode_step."
            )
        if context.causal and query.shape[1] != key.shape[1]:
            raise ValueError(
                f"attention={name!r} with causal=True needs as many keys as queries; got "
                f"Lq={query.shape[1]}, Lk={key.shape[1]}."
            )
        q = heads_first(query)  # (B, h, Lq, dh)
        k = heads_first(key)  # (B, h, Lk, dh)
        v = heads_first(value)  # (B, h, Lk, dv)
        key_mask = None
        if context.padding_mask is not None:
            key_mask = ops.cast(context.padding_mask, "bool")[:, None, :]  # (B, 1, Lk)
        causal = context.causal
        phi_q, phi_k = self.feature_maps(
            q, k, key_mask=key_mask, causal=causal, training=context.training
        )  # (B, h, L, r)
        gates = self.gates(k, causal=causal)  # (B, h, L) or None
        if self.log_features:
            out, weights = self._log_space(phi_q, phi_k, v, key_mask, context)
        elif context.return_scores:
            weights = dense_kernel_weights(phi_q, phi_k, key_mask, causal, gates)  # (B,h,Lq,Lk)
            out = ops.matmul(weights, ops.cast(v, "float32"))  # (B, h, Lq, dv)
        elif causal:
            out = causal_kernel_attention(phi_q, phi_k, v, self.chunk_size, key_mask, gates)
        else:
            out = kernel_attention(phi_q, phi_k, v, key_mask)  # (B, h, Lq, dv)
        out = ops.cast(heads_last(out), query.dtype)  # (B, Lq, h, dv)
        if context.return_scores:
            return out, ops.cast(weights, query.dtype)
        return out

    def _log_space(self, log_q, log_k, v, key_mask, context):
        """Attention from log-features ``(B, h, L, r)``: ``(out (B, h, Lq, dv), weights)``."""
        if context.return_scores:
            weights = dense_log_kernel_weights(log_q, log_k, key_mask, context.causal)
            return ops.matmul(weights, ops.cast(v, "float32")), weights  # (B, h, Lq, dv)
        if context.causal:
            return causal_log_kernel_attention(log_q, log_k, v, self.chunk_size, key_mask), None
        return log_kernel_attention(log_q, log_k, v, key_mask), None

    # -- incremental decoding (ungated cores; subclasses set supports_cache = True) -----------
    def state_features(self, key_dim):
        """Feature count ``r`` of the recurrent state for head size ``key_dim``."""
        return int(getattr(self, "num_features", key_dim))

    def init_cache(
        self,
        batch_size,
        max_length=None,
        num_heads=1,
        num_key_value_heads=None,
        key_dim=1,
        value_dim=None,
        dtype=None,
    ):
        """Empty recurrent state, float32 ``(B, h, r, dv + 1)`` (any ``max_length``): ``[S | z]``
        zeros, or the log-space ``[μ | λ]`` of no keys for ``log_features`` cores."""
        value_dim = value_dim or key_dim
        r = self.state_features(key_dim)
        if self.log_features:  # [μ | λ] of no keys
            return empty_log_kernel_state(batch_size, num_heads, r, value_dim)
        return ops.zeros((batch_size, num_heads, r, value_dim + 1), dtype="float32")

    def decode_step(self, query, key, value, cache, cache_index, context):
        """Continue the recurrence with ``l`` new positions.

        ``query (B, l, h, dh)``, ``key/value (B, l, h_kv, ·)`` and the state ``[S | z]``
        ``(B, h, r, dv + 1)`` -> ``(out (B, l, h, dv), updated state)``.
        """
        name = self.variant
        if not self.supports_cache:
            raise ValueError(f"attention={name!r} does not support a KV cache.")
        if not context.causal:
            raise ValueError(f"attention={name!r} decodes with a cache only when causal.")
        key, value = self.expand_kv_heads(query, key, value)  # (B, l, h, ·)
        q = heads_first(query)  # (B, h, l, dh)
        k = heads_first(key)  # (B, h, l, dh)
        v = heads_first(value)  # (B, h, l, dv)
        key_mask = None
        if context.padding_mask is not None:
            key_mask = ops.cast(context.padding_mask, "bool")[:, None, :]  # (B, 1, l)
        phi_q, phi_k = self.feature_maps(
            q, k, key_mask=key_mask, causal=True, training=context.training
        )  # (B, h, l, r)
        if self.log_features:
            if isinstance(cache_index, int) and cache_index == 0:
                out = causal_log_kernel_attention(phi_q, phi_k, v, self.chunk_size, key_mask)
                state = log_kernel_state(phi_k, v, key_mask, cache)
            else:
                out, state = log_kernel_attention_step(phi_q, phi_k, v, cache, key_mask)
        elif isinstance(cache_index, int) and cache_index == 0:
            # pre-fill: the chunked prefix-sum form, then the state it ends with
            out = causal_kernel_attention(phi_q, phi_k, v, self.chunk_size, key_mask)
            state = cache + kernel_state(phi_k, v, key_mask)
        else:
            out, state = kernel_attention_step(phi_q, phi_k, v, cache, key_mask)
        return ops.cast(heads_last(out), query.dtype), state  # (B, l, h, dv)

    def get_config(self):
        return {**super().get_config(), "chunk_size": self.chunk_size}


@register("linear")
class LinearAttention(KernelAttentionCore):
    """Linear attention, ``φ(x) = elu(x) + 1`` (Katharopoulos et al., 2020).

    Args:
        chunk_size: chunk length ``c`` of the causal prefix-sum form (default 64).
    """

    supports_cache = True
    example_config = {"chunk_size": 8}
    benchmark_config = {"chunk_size": 64}
    quick_benchmark_config = {"chunk_size": 16}

    def feature_maps(self, query, key, key_mask=None, causal=False, training=None):
        q = elu_plus_one(ops.cast(query, "float32"))  # (B, h, Lq, dh)
        k = elu_plus_one(ops.cast(key, "float32"))  # (B, h, Lk, dh)
        return q, k
