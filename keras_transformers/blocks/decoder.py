"""Transformer decoder block: causal self-attention, optional cross-attention, feed-forward.

Pre-norm (default): ``x = x + SelfAttn(LN(x)); x = x + CrossAttn(LN(x), enc); x = x + FFN(LN(x))``;
post-norm puts each LN after its residual sum (Vaswani et al., 2017). The self-attention is causal:
the output at position ``i`` never depends on tokens after ``i``.

Shapes: ``x (B, Lt, d)``, ``encoder_outputs (B, Ls, d)`` -> ``(B, Lt, d)``. With
``cache`` (the self-attention's ``init_cache(B, L_max)``: ``(B, 2, L_max, h_kv, dh)`` for full
attention, a ring buffer for ``sliding_window``, a recurrent state for ``linear``/``performer``)
and ``cache_index`` the self-attention decodes incrementally and the block returns
``(x, cache)``. With ``cross_cache`` (:meth:`TransformerDecoderBlock.init_cross_cache`: the
cross-attention keys and values of the encoder output, computed once per source) the
cross-attention reads them instead of projecting ``encoder_outputs`` again.

Example:
    >>> import numpy as np, keras_transformers as kt
    >>> block = kt.blocks.TransformerDecoderBlock(num_heads=2, key_dim=8, ff_dim=32,
    ...                                           cross_attention=False)
    >>> block(np.zeros((2, 6, 16), "float32")).shape
    (2, 6, 16)
"""

import keras
from keras import ops

from keras_transformers.attention import MultiHeadAttention
from keras_transformers.blocks.residual import OPTION_DEFAULTS, SelfAttentionBlock


@keras.saving.register_keras_serializable(package="keras_transformers")
class TransformerDecoderBlock(SelfAttentionBlock):
    """One decoder layer.

    Args:
        num_heads, key_dim, ff_dim: sizes.
        attention: core of the (causal) self-attention.
        position: score-side positional encoding of the self-attention.
        cross_attention: add cross-attention over ``encoder_outputs`` (always full attention).
        **others: ``norm_first``, ``dropout``, ``attention_dropout``, ``activation``,
            ``num_key_value_heads``, ``layer_norm_epsilon``, ``norm``, ``use_bias``,
            ``qk_norm``, ``feedforward``, ``num_experts``, ``num_experts_per_token``,
            ``router_aux_loss_weight`` as in :class:`TransformerEncoderBlock`.
    """

    option_keys = tuple(OPTION_DEFAULTS)
    config_keys = (
        *SelfAttentionBlock.common_keys,
        "cross_attention",
        "norm_first",
        "num_key_value_heads",
    )

    def __init__(
        self,
        num_heads,
        key_dim,
        ff_dim,
        attention="full",
        position=None,
        cross_attention=True,
        norm_first=True,
        dropout=0.0,
        attention_dropout=0.0,
        activation="gelu",
        num_key_value_heads=None,
        layer_norm_epsilon=1e-5,
        norm="layer",
        use_bias=True,
        qk_norm=False,
        feedforward="dense",
        num_experts=8,
        num_experts_per_token=2,
        router_aux_loss_weight=0.01,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.store_arguments(locals())
        self.self_attention = self.make_self_attention(attention, position, causal=True)
        self.self_attention_norm = self.make_norm("self_attention_norm")
        if self.cross_attention:
            self.cross_attention_layer = MultiHeadAttention(
                num_heads,
                key_dim,
                dropout=attention_dropout,
                attention="full",
                num_key_value_heads=num_key_value_heads,
                use_bias=self.use_bias,
                qk_norm=self.qk_norm,
                qk_norm_epsilon=self.layer_norm_epsilon,
                dtype=self.dtype_policy,
                name="cross_attention",
            )
            self.cross_attention_norm = self.make_norm("cross_attention_norm")
        self.feedforward = self.make_feedforward()
        self.feedforward_norm = self.make_norm("feedforward_norm")
        self.residual_dropout = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)
        self.supports_masking = True

    def build(self, x_shape, encoder_outputs_shape=None):
        input_shape = x_shape
        self.self_attention_norm.build(input_shape)
        self.self_attention.build(input_shape)
        if self.cross_attention:
            self.cross_attention_norm.build(input_shape)
            enc_shape = encoder_outputs_shape or input_shape
            self.cross_attention_layer.build(input_shape, enc_shape)
        self.feedforward_norm.build(input_shape)
        self.feedforward.build(input_shape)
        self.built = True

    @property
    def supports_cache(self):
        """True when the self-attention core decodes incrementally (``cache=`` in ``call``)."""
        return bool(self.self_attention.attention_core.supports_cache)

    def init_cache(self, batch_size, max_length, dtype=None):
        """An empty self-attention cache (format of the attention core)."""
        return self.self_attention.init_cache(batch_size, max_length, dtype=dtype)

    # --- cross-attention cache (cached encoder-decoder decoding, kt.generation.Seq2SeqGenerator)
    def init_cross_cache(self, encoder_outputs):
        """The cross-attention keys and values of ``encoder_outputs (B, Ls, d)``, computed once per
        source: ``(B, 2, Ls, h_kv, dh)`` for ``call(..., cross_cache=...)``."""
        if not self.cross_attention:
            raise ValueError("init_cross_cache: this decoder block has cross_attention=False.")
        layer = self.cross_attention_layer
        _, k, v = layer.project_qkv(encoder_outputs[:, :1], encoder_outputs)  # (B, Ls, h_kv, dh)
        return ops.stack([k, ops.cast(v, k.dtype)], axis=1)  # (B, 2, Ls, h_kv, dh)

    def _cached_cross_attention(self, h, cross_cache, encoder_padding_mask, training):
        """Cross-attention of ``h (B, l, d)`` to the cached keys/values (same result as the
        layer's own call on the encoder output)."""
        layer = self.cross_attention_layer
        q = layer.query_dense(h)  # (B, l, h·dh)
        q = ops.reshape(q, ops.shape(q)[:2] + (layer.num_heads, layer.key_dim))  # (B, l, h, dh)
        if layer.qk_norm:
            q = layer.query_norm(q)
        out = layer.attention_core(
            q,
            cross_cache[:, 0],
            cross_cache[:, 1],
            padding_mask=encoder_padding_mask,
            training=training,
        )  # (B, l, h, dh)
        return layer.project_output(out)  # (B, l, d)

    # --- end of the cross-attention cache
    def call(
        self,
        x,
        encoder_outputs=None,
        padding_mask=None,
        encoder_padding_mask=None,
        cache=None,
        cache_index=None,
        training=None,
        mask=None,
        cross_cache=None,
    ):
        if padding_mask is None:
            padding_mask = mask

        def self_attend(h):
            if cache is None:
                return self.self_attention(h, padding_mask=padding_mask, training=training), None
            return self.self_attention(
                h,
                padding_mask=padding_mask,
                cache=cache,
                cache_index=cache_index,
                training=training,
            )

        x, new_cache = self.residual(x, self_attend, self.self_attention_norm, training)
        if self.cross_attention:
            if encoder_outputs is None and cross_cache is None:
                raise ValueError(
                    "This decoder block has cross_attention=True: pass encoder_outputs=... "
                    "(or cross_cache=init_cross_cache(encoder_outputs))."
                )

            def cross_attend(h):
                if cross_cache is not None:
                    y = self._cached_cross_attention(h, cross_cache, encoder_padding_mask, training)
                    return y, None
                return self.cross_attention_layer(
                    h, encoder_outputs, padding_mask=encoder_padding_mask, training=training
                ), None

            x, _ = self.residual(x, cross_attend, self.cross_attention_norm, training)

        def ffn(h):
            return self.feedforward_call(h, padding_mask, training), None

        x, _ = self.residual(x, ffn, self.feedforward_norm, training)
        return x if cache is None else (x, new_cache)

    def compute_mask(self, x, *args, mask=None, **kwargs):
        return mask
