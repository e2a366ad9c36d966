"""Transformer encoder block: self-attention + feed-forward, each with a residual and layer norm.

Post-norm (Vaswani et al., 2017): ``x = LN(x + MHA(x)); x = LN(x + FFN(x))``.
Pre-norm (``norm_first=True``, the default; more stable for deep stacks):
``x = x + MHA(LN(x)); x = x + FFN(LN(x))``.

Shapes: ``(B, L, d) -> (B, L, d)``; ``padding_mask (B, L)`` bool, True = real token.

Example:
    >>> import numpy as np, keras_transformers as kt
    >>> block = kt.blocks.TransformerEncoderBlock(num_heads=2, key_dim=8, ff_dim=32,
    ...                                           attention="full", position="rope")
    >>> block(np.zeros((2, 6, 16), "float32")).shape
    (2, 6, 16)
"""

import keras

from keras_transformers.blocks.residual import OPTION_DEFAULTS, SelfAttentionBlock


@keras.saving.register_keras_serializable(package="keras_transformers")
class TransformerEncoderBlock(SelfAttentionBlock):
    """One encoder layer with any attention core and score-side positional encoding.

    Args:
        num_heads, key_dim: attention heads and per-head size.
        ff_dim: feed-forward width.
        attention: attention core name / dict / instance (``kt.attention.available()``).
        position: None or a score-side positional encoding (``"rope"``, ``"alibi"``, ...).
        norm_first: pre-norm (True) or post-norm (False).
        dropout: residual and feed-forward dropout.
        attention_dropout: dropout on attention weights.
        activation: feed-forward activation (``gelu``, ``relu``, ``swiglu``, ``geglu``, ...).
        num_key_value_heads: grouped-query attention.
        causal: make the self-attention causal (used by decoder-only stacks).
        layer_norm_epsilon: epsilon of the norms (and of the QK-norm).
        norm: ``"layer"`` (LayerNormalization) or ``"rms"`` (:class:`RMSNormalization`).
        use_bias: biases of the attention projections and the feed-forward layers.
        qk_norm: RMS-normalize each query and key head (OLMo-2, Qwen3, Gemma 3).
        feedforward: ``"dense"`` (:class:`FeedForward`) or ``"moe"``
            (:class:`MixtureOfExperts`, Mixtral).
        num_experts, num_experts_per_token, router_aux_loss_weight: the mixture of experts'.

    Parts: ``self_attention``, ``attention_norm`` (also ``self_attention_norm``, the decoder
    block's name), ``feedforward``, ``feedforward_norm``.
    """

    option_keys = tuple(OPTION_DEFAULTS)
    config_keys = (*SelfAttentionBlock.common_keys, "norm_first", "num_key_value_heads", "causal")

    def __init__(
        self,
        num_heads,
        key_dim,
        ff_dim,
        attention="full",
        position=None,
        norm_first=True,
        dropout=0.0,
        attention_dropout=0.0,
        activation="gelu",
        num_key_value_heads=None,
        causal=False,
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
        self.self_attention = self.make_self_attention(attention, position, self.causal)
        self.feedforward = self.make_feedforward()
        self.attention_norm = self.make_norm("attention_norm")
        self.feedforward_norm = self.make_norm("feedforward_norm")
        self.residual_dropout = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)
        self.supports_masking = True

    @property
    def self_attention_norm(self):
        """The norm of the self-attention sub-layer (``attention_norm``), under the decoder
        block's name."""
        return self.attention_norm

    def build(self, input_shape):
        self.attention_norm.build(input_shape)
        self.self_attention.build(input_shape)
        self.feedforward_norm.build(input_shape)
        self.feedforward.build(input_shape)
        self.built = True

    def call(
        self, x, padding_mask=None, attention_mask=None, global_mask=None, training=None, mask=None
    ):
        if padding_mask is None:
            padding_mask = mask
        attn_kwargs = self.attention_kwargs(padding_mask, attention_mask, global_mask, training)
        x, _ = self.residual(
            x, lambda h: self.self_attention(h, **attn_kwargs), self.attention_norm, training
        )  # (B, L, d)
        x, _ = self.residual(
            x,
            lambda h: self.feedforward_call(h, padding_mask, training),
            self.feedforward_norm,
            training,
        )  # (B, L, d)
        return x

    def compute_mask(self, x, mask=None):
        return mask

    def compute_output_shape(self, input_shape):
        return input_shape
