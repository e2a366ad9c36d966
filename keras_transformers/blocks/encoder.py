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

from keras_transformers.attention import MultiHeadAttention
from keras_transformers.blocks.feedforward import FeedForward
from keras_transformers.blocks.residual import residual_sublayer


@keras.saving.register_keras_serializable(package="keras_transformers")
class TransformerEncoderBlock(keras.layers.Layer):
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
        layer_norm_epsilon: epsilon of the layer norms.
    """

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
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.key_dim = int(key_dim)
        self.ff_dim = int(ff_dim)
        self.norm_first = bool(norm_first)
        self.dropout = float(dropout)
        self.attention_dropout = float(attention_dropout)
        self.activation = activation
        self.num_key_value_heads = num_key_value_heads
        self.causal = bool(causal)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.self_attention = MultiHeadAttention(
            num_heads,
            key_dim,
            dropout=attention_dropout,
            attention=attention,
            position=position,
            causal=causal,
            num_key_value_heads=num_key_value_heads,
            dtype=self.dtype_policy,
            name="self_attention",
        )
        self.feedforward = FeedForward(
            ff_dim,
            activation=activation,
            dropout=dropout,
            dtype=self.dtype_policy,
            name="feedforward",
        )
        self.attention_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="attention_norm"
        )
        self.feedforward_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="feedforward_norm"
        )
        self.residual_dropout = keras.layers.Dropout(dropout, dtype=self.dtype_policy)
        self.supports_masking = True

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
        attn_kwargs = dict(
            padding_mask=padding_mask, attention_mask=attention_mask, training=training
        )
        if global_mask is not None:
            attn_kwargs["global_mask"] = global_mask
        x, _ = residual_sublayer(
            x,
            lambda h: self.self_attention(h, **attn_kwargs),
            self.attention_norm,
            self.residual_dropout,
            self.norm_first,
            training,
        )  # (B, L, d)
        x, _ = residual_sublayer(
            x,
            lambda h: self.feedforward(h, training=training),
            self.feedforward_norm,
            self.residual_dropout,
            self.norm_first,
            training,
        )  # (B, L, d)
        return x

    def compute_mask(self, x, mask=None):
        return mask

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        attn = self.self_attention.get_config()
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "ff_dim": self.ff_dim,
            "attention": attn["attention"],
            "position": attn["position"],
            "norm_first": self.norm_first,
            "dropout": self.dropout,
            "attention_dropout": self.attention_dropout,
            "activation": self.activation,
            "num_key_value_heads": self.num_key_value_heads,
            "causal": self.causal,
            "layer_norm_epsilon": self.layer_norm_epsilon,
        }
