"""Multi-head attention with a pluggable attention core and positional encoding.

``MultiHeadAttn(X_q, X_k, X_v) = [head_1; ...; head_h] W^o``,
``head_i = core(X_q W^q_i, X_k W^k_i, X_v W^v_i)`` (Vaswani et al., 2017).

Self-attention (``value`` omitted) uses one fused ``(d, (h + 2 h_kv)·dh)`` projection; cross-attention
projects the queries and a fused key/value pair. ``num_key_value_heads < num_heads`` gives
grouped-query attention (``= 1``: multi-query). The attention core (``attention=``) is any
registered name, a config dict or an instance; ``position=`` any score-side positional encoding.

The projections are public so other layers (memory blocks) reuse them: :meth:`project_qkv`
gives the per-head ``q, k, v`` and :meth:`project_output` merges the heads. The core's
capability attributes are enforced here (cross-attention, KV cache); decoding with ``cache=``
has one path for every caching core, its :meth:`~AttentionCore.decode_step`.

``qk_norm=True`` normalizes each query and key head over ``dh`` with an RMSNorm after the
projection and before the positional transform, ``q_i <- RMSNorm_q(q_i)``, ``k_j <- RMSNorm_k(k_j)``,
one learned ``dh`` scale for the queries (``query_norm``) and one for the keys (``key_norm``), shared
by the heads (Dehghani et al., 2023, "Scaling ViT to 22B"; OLMo-2, Qwen3, Gemma 3).
``key_dim`` need not be ``d / h``: the output projection maps ``h·dv -> d`` (Gemma's head size).

Shapes: ``query (B, Lq, d)``, ``value/key (B, Lk, d_kv)`` -> ``(B, Lq, output_dim or d)``;
``padding_mask (B, Lk)`` bool (True = keep); ``attention_mask (B, Lq, Lk)`` bool; scores
``(B, h, Lq, Lk)``.

Example:
    >>> import numpy as np, keras_transformers as kt
    >>> mha = kt.attention.MultiHeadAttention(num_heads=4, key_dim=8, causal=True,
    ...                                       position="rope")
    >>> mha(np.random.rand(2, 10, 32).astype("float32")).shape
    (2, 10, 32)
"""

import keras
from keras import ops

from keras_transformers import positional
from keras_transformers.attention import registry
from keras_transformers.attention.base import check_int
from keras_transformers.ops.masks import check_attention_mask, check_padding_mask


def _projection_weight(role, kind):
    """Read-only alias ``<role>_kernel`` / ``<role>_bias`` of the ``<role>_dense`` sublayer's
    weight (the names the layer's variables had before the projections became sublayers)."""

    def get(self):
        dense = getattr(self, f"{role}_dense", None)
        if dense is None:
            raise AttributeError(
                f"{type(self).__name__} {self.name!r} has no {role!r} projection (built: "
                f"{', '.join(self.projections()) or 'not yet'})."
            )
        return dense.kernel if kind == "kernel" else dense.bias

    return property(get, doc=f"The ``{role}`` projection's {kind} (``{role}_dense.{kind}``).")


def _check_rank(name, shape):
    if len(shape) != 3:
        raise ValueError(
            f"{name} must have rank 3 (batch, length, features); got shape {tuple(shape)}."
        )


@keras.saving.register_keras_serializable(package="keras_transformers")
class MultiHeadAttention(keras.layers.Layer):
    """Multi-head attention whose core and positional encoding are chosen by name.

    Args:
        num_heads: number of query heads ``h``.
        key_dim: per-head query/key size ``dh``.
        value_dim: per-head value size (defaults to ``key_dim``).
        output_dim: output features (defaults to the query's last axis).
        dropout: dropout rate on the attention weights.
        use_bias: biases on the projections.
        attention: attention core: name (``kt.attention.available()``), config dict or instance.
        position: None, a score-side positional name (``"rope"``, ``"alibi"``, ``"shaw"``,
            ``"t5"``), config dict or instance.
        causal: queries attend only to keys at or before their own position.
        num_key_value_heads: key/value heads for grouped-query attention (divides ``num_heads``).
        kernel_initializer, bias_initializer: projection initializers.
        qk_norm: RMS-normalize each query and key head (``query_norm``, ``key_norm``).
        qk_norm_epsilon: epsilon of those norms.
    """

    # Aliases of the projection sublayers' weights (``layer.qkv_dense.kernel`` etc.).
    qkv_kernel = _projection_weight("qkv", "kernel")
    qkv_bias = _projection_weight("qkv", "bias")
    query_kernel = _projection_weight("query", "kernel")
    query_bias = _projection_weight("query", "bias")
    key_kernel = _projection_weight("key", "kernel")
    key_bias = _projection_weight("key", "bias")
    value_kernel = _projection_weight("value", "kernel")
    value_bias = _projection_weight("value", "bias")
    kv_kernel = _projection_weight("kv", "kernel")
    kv_bias = _projection_weight("kv", "bias")
    output_kernel = _projection_weight("output", "kernel")
    output_bias = _projection_weight("output", "bias")

    def __init__(
        self,
        num_heads,
        key_dim,
        value_dim=None,
        output_dim=None,
        dropout=0.0,
        use_bias=True,
        attention="full",
        position=None,
        causal=False,
        num_key_value_heads=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        qk_norm=False,
        qk_norm_epsilon=1e-6,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = check_int("num_heads", num_heads)
        self.key_dim = check_int("key_dim", key_dim)
        self.value_dim = self.key_dim if value_dim is None else check_int("value_dim", value_dim)
        if output_dim is not None:
            check_int("output_dim", output_dim)
        self.output_dim = output_dim
        self.dropout = float(dropout)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={dropout}: must be in [0, 1).")
        self.use_bias = bool(use_bias)
        self.qk_norm = bool(qk_norm)
        self.qk_norm_epsilon = float(qk_norm_epsilon)
        self.query_norm = self.key_norm = None
        if self.qk_norm:
            from keras_transformers.blocks.norms import RMSNormalization  # (import cycle)

            self.query_norm = RMSNormalization(
                self.qk_norm_epsilon, dtype=self.dtype_policy, name="query_norm"
            )
            self.key_norm = RMSNormalization(
                self.qk_norm_epsilon, dtype=self.dtype_policy, name="key_norm"
            )
        self.causal = bool(causal)
        self.num_key_value_heads = (
            self.num_heads
            if num_key_value_heads is None
            else check_int("num_key_value_heads", num_key_value_heads)
        )
        if self.num_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_key_value_heads={num_key_value_heads} must divide num_heads={num_heads}."
            )
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.attention_core = registry.get(attention)
        self.position = None if position is None else positional.get(position)
        if self.position is not None and self.position.kind != "score":
            raise ValueError(
                f"position={self.position.registry_name!r} is an embedding-side encoding; add it "
                "to the token embeddings (the model builders do this for position=...). The "
                "attention layer takes score-side encodings: "
                + ", ".join(
                    n
                    for n in positional.available()
                    if positional.REGISTRY.get_class(n).kind == "score"
                )
                + "."
            )
        self.attention_core.check_position(self.position)
        self.weights_dropout = keras.layers.Dropout(self.dropout) if self.dropout else None
        # Set by kt.callbacks.AttentionMapLogger for one eager forward pass: the layer then keeps
        # its (B, h, Lq, Lk) weights (the core's dense debug path) in `last_attention_scores`.
        self.record_attention_scores = False
        self.last_attention_scores = None
        self.supports_masking = True

    # ------------------------------------------------------------------ build
    def _dense(self, name, width):
        """One projection ``(B, L, d_in) -> (B, L, width)``: a ``keras.layers.EinsumDense`` with a
        2-D ``(d_in, width)`` kernel, so ``quantize``, ``enable_lora`` and dtype policies reach it."""
        return keras.layers.EinsumDense(
            "abc,cd->abd",
            output_shape=(None, width),
            bias_axes="d" if self.use_bias else None,
            kernel_initializer=self.kernel_initializer,
            bias_initializer=self.bias_initializer,
            dtype=self.dtype_policy,
            name=name,
        )

    def build(self, query_shape, value_shape=None, key_shape=None):
        _check_rank("query", query_shape)
        d_model = int(query_shape[-1])
        h, h_kv, dh, dv = self.num_heads, self.num_key_value_heads, self.key_dim, self.value_dim
        self._self_attention = value_shape is None and key_shape is None
        if not self._self_attention:
            self._check_cross_attention()
        self._separate_key = key_shape is not None
        if self._self_attention:
            # One fused matmul for q, k and v: (d, (h + 2 h_kv)·dh).
            self.qkv_dense = self._dense("qkv", h * dh + h_kv * dh + h_kv * dv)
            self.qkv_dense.build(tuple(query_shape))
        else:
            self.query_dense = self._dense("query", h * dh)
            self.query_dense.build(tuple(query_shape))
            if self._separate_key:
                self.key_dense = self._dense("key", h_kv * dh)
                self.key_dense.build(tuple(key_shape))
                self.value_dense = self._dense("value", h_kv * dv)
                self.value_dense.build(tuple(value_shape))
            else:
                self.kv_dense = self._dense("kv", h_kv * (dh + dv))
                self.kv_dense.build(tuple(value_shape))
        if self.qk_norm:
            self.query_norm.build((None, None, h, dh))
            self.key_norm.build((None, None, h_kv, dh))
        out = int(self.output_dim or d_model)
        self.output_dense = self._dense("output", out)
        self.output_dense.build(tuple(query_shape[:2]) + (h * dv,))
        key_len = (value_shape or key_shape or query_shape)[1]
        head_query_shape = (query_shape[0], query_shape[1], h, dh)
        if self.position is not None and not self.position.built:
            self.position.build(head_query_shape)
        elif self.position is not None:
            self.position.set_head_shape(head_query_shape)
        if not self.attention_core.built:
            self.attention_core.build(head_query_shape, (query_shape[0], key_len, h_kv, dh))
        self.built = True

    # ------------------------------------------------------------------ call
    def projections(self):
        """The projection sublayers this layer built, by role: ``{"qkv": EinsumDense, ...,
        "output": EinsumDense}`` (roles ``qkv`` for self-attention; ``query`` and ``kv``, or
        ``query``, ``key`` and ``value``, for cross-attention)."""
        roles = ("qkv", "query", "key", "value", "kv", "output")
        found = {role: getattr(self, f"{role}_dense", None) for role in roles}
        return {role: dense for role, dense in found.items() if dense is not None}

    def _split_heads(self, x, heads, size):
        return ops.reshape(x, ops.shape(x)[:2] + (heads, size))  # (B, L, heads, size)

    def project_qkv(self, query, value=None, key=None):
        """The per-head projections the core attends with.

        Args:
            query: ``(B, Lq, d)``.
            value: ``(B, Lk, d_kv)`` for cross-attention, None for self-attention.
            key: ``(B, Lk, d_k)`` when the layer was built with a separate key, else None.

        Returns:
            ``(q (B, Lq, h, dh), k (B, Lk, h_kv, dh), v (B, Lk, h_kv, dv))``, with the QK-norm
            when ``qk_norm`` (no positional transform; RoPE is applied in :meth:`call`).
        """
        h, h_kv, dh, dv = self.num_heads, self.num_key_value_heads, self.key_dim, self.value_dim
        if self._self_attention:
            if value is not None or key is not None:
                raise ValueError(
                    "This MultiHeadAttention was built for self-attention (called without value); "
                    "use a separate layer instance for cross-attention."
                )
            qkv = self.qkv_dense(query)  # (B, L, (h+2h_kv)dh)
            q, k, v = ops.split(qkv, [h * dh, h * dh + h_kv * dh], axis=-1)
        else:
            if value is None:
                raise ValueError(
                    "This MultiHeadAttention was built for cross-attention: pass value=..."
                )
            q = self.query_dense(query)  # (B, Lq, h·dh)
            if self._separate_key:
                if key is None:
                    raise ValueError("This layer was built with a separate key: pass key=...")
                k = self.key_dense(key)  # (B, Lk, h_kv·dh)
                v = self.value_dense(value)  # (B, Lk, h_kv·dv)
            else:
                kv = self.kv_dense(value)  # (B, Lk, h_kv(dh+dv))
                k, v = ops.split(kv, [h_kv * dh], axis=-1)
        q = self._split_heads(q, h, dh)  # (B, Lq, h, dh)
        k = self._split_heads(k, h_kv, dh)  # (B, Lk, h_kv, dh)
        if self.qk_norm:
            q, k = self.query_norm(q), self.key_norm(k)
        return q, k, self._split_heads(v, h_kv, dv)  # ..., v (B, Lk, h_kv, dv)

    def project_output(self, out):
        """Merge the heads, then the output projection: ``(B, Lq, h, dv)`` -> ``(B, Lq, d_out)``."""
        out = ops.reshape(out, ops.shape(out)[:2] + (self.num_heads * self.value_dim,))
        return self.output_dense(out)  # (B, Lq, d_out)

    def call(
        self,
        query,
        value=None,
        key=None,
        padding_mask=None,
        attention_mask=None,
        cache=None,
        cache_index=None,
        training=None,
        return_attention_scores=False,
        global_mask=None,
        query_mask=None,
        value_mask=None,
        key_mask=None,
        mask=None,
    ):
        _check_rank("query", query.shape)
        if query_mask is None:
            query_mask = mask
        if padding_mask is None:
            padding_mask = key_mask if key_mask is not None else value_mask
            if padding_mask is None and value is None:
                padding_mask = query_mask
        if value is not None or key is not None:
            self._check_cross_attention()
        core = self.attention_core
        q, k, v = self.project_qkv(query, value, key)
        # q (B, Lq, h, dh), k (B, Lk, h_kv, dh), v (B, Lk, h_kv, dv)
        query_offset = 0
        if cache is not None:
            self._check_cache_call(cache_index, return_attention_scores)
            query_offset = cache_index
        if self.position is not None:
            positions = ops.arange(ops.shape(q)[1], dtype="int32") + query_offset  # (Lq,)
            key_positions = (
                positions if value is None else ops.arange(ops.shape(k)[1], dtype="int32")
            )  # (Lk,)
            q, k = self.position.transform_qk(q, k, positions, key_positions)
        dropout = None
        if self.weights_dropout is not None:

            def dropout(w):
                return self.weights_dropout(w, training=training)

        if global_mask is not None:
            global_mask = ops.cast(global_mask, "bool")  # (B, L)
        if cache is not None:
            context = core.context(
                padding_mask=padding_mask,
                attention_mask=attention_mask,
                causal=self.causal,
                position=self.position,
                query_offset=cache_index,
                weights_dropout=dropout,
                training=training,
                global_mask=global_mask,
            )
            out, cache = core.decode_step(q, k, v, cache, cache_index, context)
            # out (B, Lq, h, dv), cache: the core's updated decoding state
            return self._finish(out, query_mask), cache

        batch, k_len = query.shape[0], k.shape[1]
        padding_mask = check_padding_mask(padding_mask, batch, k_len)
        attention_mask = check_attention_mask(attention_mask, batch, query.shape[1], k_len)
        # Recording (kt.callbacks.AttentionMapLogger): the same forward pass also returns the
        # weights, so the maps are those of the output this call computes.
        record = (
            self.record_attention_scores
            and not return_attention_scores
            and core.supports_attention_scores
        )
        result = core(
            q,
            k,
            v,
            padding_mask=padding_mask,
            attention_mask=attention_mask,
            causal=self.causal,
            position=self.position,
            query_offset=query_offset,
            weights_dropout=dropout,
            training=training,
            return_attention_scores=return_attention_scores or record,
            global_mask=global_mask,
        )
        if return_attention_scores or record:
            out, scores = result  # (B, Lq, h, dv), (B, h, Lq, Lk)
        else:
            out, scores = result, None
        if self.record_attention_scores:
            self.last_attention_scores = scores
        out = self._finish(out, query_mask)  # (B, Lq, d_out)
        return (out, scores) if return_attention_scores else out

    def _finish(self, out, query_mask):
        """Output projection ``(B, Lq, h, dv) -> (B, Lq, d_out)``, padded queries zeroed."""
        out = self.project_output(out)  # (B, Lq, d_out)
        if query_mask is not None:
            out = out * ops.cast(query_mask, out.dtype)[..., None]
        return out

    def _check_cross_attention(self):
        core = self.attention_core
        if not core.supports_cross_attention:
            raise ValueError(
                f"attention={core.variant!r} does not support cross-attention (value= or key= "
                "given): it needs the keys to be the queries' own sequence. Use a core with "
                "supports_cross_attention, e.g. attention='full', for cross-attention."
            )

    def _check_cache_call(self, cache_index, return_attention_scores):
        core = self.attention_core
        if not self._self_attention:
            raise ValueError("cache= is supported for self-attention only.")
        if not core.supports_cache:
            raise ValueError(f"attention={core.variant!r} does not support a KV cache.")
        if cache_index is None:
            raise ValueError("cache_index is required with cache=.")
        if return_attention_scores:
            raise ValueError(
                f"attention={core.variant!r}: return_attention_scores is not available while "
                "decoding with a cache."
            )

    # ------------------------------------------------------------------ cache
    def init_cache(self, batch_size, max_length, dtype=None):
        """An empty decoding cache for ``cache=`` (self-attention, causal decoding).

        The core chooses the format (:meth:`AttentionCore.init_cache`): full attention keeps the
        keys and values of every position, ``(B, 2, L_max, h_kv, dh)``; a sliding window a ring
        buffer ``(B, 2, w + 1, h_kv, dh)``; kernelised cores the recurrent state
        ``(B, h, r, dv + 1)``.
        """
        core = self.attention_core
        if not core.supports_cache:
            raise ValueError(f"attention={core.variant!r} does not support a KV cache.")
        return core.init_cache(
            batch_size,
            max_length,
            num_heads=self.num_heads,
            num_key_value_heads=self.num_key_value_heads,
            key_dim=self.key_dim,
            value_dim=self.value_dim,
            dtype=dtype or self.compute_dtype,
        )

    def compute_mask(self, query, *args, query_mask=None, mask=None, **kwargs):
        return query_mask if query_mask is not None else mask

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            key_dim=self.key_dim,
            value_dim=self.value_dim,
            output_dim=self.output_dim,
            dropout=self.dropout,
            use_bias=self.use_bias,
            attention=keras.saving.serialize_keras_object(self.attention_core),
            position=(
                None
                if self.position is None
                else keras.saving.serialize_keras_object(self.position)
            ),
            causal=self.causal,
            num_key_value_heads=self.num_key_value_heads,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            qk_norm=self.qk_norm,
            qk_norm_epsilon=self.qk_norm_epsilon,
        )
        return config
