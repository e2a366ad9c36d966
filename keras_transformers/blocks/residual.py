"""The residual sub-layer and the base class shared by the self-attention blocks.

Pre-norm (``norm_first=True``, Xiong et al., 2020): ``x + Dropout(F(LN(x)))``.
Post-norm (``norm_first=False``, Vaswani et al., 2017): ``LN(x + Dropout(F(x)))``.
Shapes: ``x (B, L, d) -> (B, L, d)``. The GTrXL block (:mod:`.gated`) replaces the add by a gate
and keeps its own step.

:class:`SelfAttentionBlock` holds what the encoder, decoder and GTrXL blocks share: how their
arguments are stored, how the self-attention, feed-forward and norms are made, the
attention keywords of a call, the residual step and ``get_config``.

The encoder and decoder blocks also take the options of pretrained checkpoint families
(:data:`OPTION_DEFAULTS`): ``norm`` (``"layer"`` or ``"rms"``), ``use_bias`` (attention and
feed-forward biases), ``qk_norm`` (RMSNorm of each query/key head), ``feedforward``
(``"dense"`` or ``"moe"``: a :class:`~keras_transformers.blocks.MixtureOfExperts` of
``num_experts`` FeedForward experts, ``num_experts_per_token`` per token, auxiliary loss weight
``router_aux_loss_weight``). Blocks that do not take them
(GTrXL, memorizing) use the defaults.
"""

import keras

from keras_transformers.attention import MultiHeadAttention
from keras_transformers.blocks.feedforward import FeedForward
from keras_transformers.blocks.moe import MixtureOfExperts
from keras_transformers.blocks.norms import check_norm, make_norm

#: How a block argument is stored (the others are stored as given).
_CASTS = {
    "num_heads": int,
    "key_dim": int,
    "ff_dim": int,
    "norm_first": bool,
    "cross_attention": bool,
    "causal": bool,
    "sublayer_relu": bool,
    "dropout": float,
    "attention_dropout": float,
    "layer_norm_epsilon": float,
    "memory_size": int,
    "batch_size": int,
    "top_k": int,
    "chunk_size": int,
    "normalize": bool,
    "gate_bias_initializer": float,
    "use_bias": bool,
    "qk_norm": bool,
    "norm": check_norm,
    "feedforward": lambda value: _check_feedforward(value),
    "num_experts": int,
    "num_experts_per_token": int,
    "router_aux_loss_weight": float,
}

#: Values of the ``feedforward=`` option.
FEEDFORWARDS = ("dense", "moe")


def _check_feedforward(feedforward):
    if feedforward not in FEEDFORWARDS:
        raise ValueError(
            f"feedforward={feedforward!r}: allowed values are {', '.join(map(repr, FEEDFORWARDS))}."
        )
    return feedforward


#: The checkpoint-family options of the encoder and decoder blocks, with their defaults.
OPTION_DEFAULTS = {
    "norm": "layer",
    "use_bias": True,
    "qk_norm": False,
    "feedforward": "dense",
    "num_experts": 8,
    "num_experts_per_token": 2,
    "router_aux_loss_weight": 0.01,
}


def block_arguments(arguments, names):
    """The block arguments ``names`` out of ``arguments`` (a constructor's ``locals()``), cast
    as the blocks store them (sizes ``int``, rates and epsilon ``float``, flags ``bool``)."""
    return {name: _CASTS.get(name, lambda value: value)(arguments[name]) for name in names}


def residual_sublayer(x, sublayer, norm, dropout, norm_first, training=None):
    """Apply one residual sub-layer around ``sublayer``.

    Args:
        x: ``(B, L, d)`` residual stream.
        sublayer: ``h -> y`` or ``h -> (y, extra)`` (e.g. attention with its new cache), ``y``
            shaped like ``x``.
        norm: the sub-layer's LayerNormalization (before ``sublayer`` pre-norm, after the add
            post-norm).
        dropout: Dropout layer on ``y``.
        norm_first: pre-norm (True) or post-norm (False).
        training: passed to ``dropout``.

    Returns:
        ``(x, extra)``: the new stream ``(B, L, d)`` and ``extra`` (None when ``sublayer``
        returns ``y`` alone).
    """
    out = sublayer(norm(x) if norm_first else x)
    y, extra = out if isinstance(out, tuple) else (out, None)
    x = x + dropout(y, training=training)  # (B, L, d)
    return (x if norm_first else norm(x)), extra


class SelfAttentionBlock(keras.layers.Layer):
    """Base of the blocks built from a ``self_attention`` and a ``feedforward`` sub-layer.

    A subclass lists the constructor arguments it stores in ``config_keys`` and calls
    :meth:`store_arguments` with its ``locals()``; ``get_config`` returns those plus the
    self-attention's ``attention`` and ``position``.
    """

    #: Arguments every block stores (a subclass's ``config_keys`` start with them).
    common_keys = (
        "num_heads",
        "key_dim",
        "ff_dim",
        "dropout",
        "attention_dropout",
        "activation",
        "layer_norm_epsilon",
    )
    #: Constructor arguments stored as attributes and returned by ``get_config``.
    config_keys = common_keys
    #: Options (of :data:`OPTION_DEFAULTS`) the subclass's constructor takes; stored and returned
    #: by ``get_config`` like ``config_keys``. The others keep the class defaults below.
    option_keys = ()
    norm = OPTION_DEFAULTS["norm"]
    use_bias = OPTION_DEFAULTS["use_bias"]
    qk_norm = OPTION_DEFAULTS["qk_norm"]
    feedforward_kind = OPTION_DEFAULTS["feedforward"]

    def store_arguments(self, arguments):
        names = (*self.config_keys, *self.option_keys)
        for name, value in block_arguments(arguments, names).items():
            # `feedforward` is the sub-layer's attribute; its kind is kept as feedforward_kind
            setattr(self, "feedforward_kind" if name == "feedforward" else name, value)

    def feedforward_call(self, h, padding_mask, training):
        """The feed-forward sub-layer on ``h (B, L, d)`` (a mixture of experts also gets the
        padding mask, for its auxiliary loss)."""
        if getattr(self.feedforward, "uses_padding_mask", False):
            return self.feedforward(h, padding_mask=padding_mask, training=training)
        return self.feedforward(h, training=training)

    def make_self_attention(self, attention, position, causal):
        """The ``(B, L, d)`` self-attention sub-layer (named ``self_attention``)."""
        return MultiHeadAttention(
            self.num_heads,
            self.key_dim,
            dropout=self.attention_dropout,
            attention=attention,
            position=position,
            causal=causal,
            num_key_value_heads=self.num_key_value_heads,
            use_bias=self.use_bias,
            qk_norm=self.qk_norm,
            qk_norm_epsilon=self.layer_norm_epsilon,
            dtype=self.dtype_policy,
            name="self_attention",
        )

    def make_feedforward(self):
        """The position-wise feed-forward sub-layer (named ``feedforward``): a FeedForward, or a
        MixtureOfExperts with ``feedforward="moe"``."""
        if self.feedforward_kind == "moe":
            return MixtureOfExperts(
                self.ff_dim,
                num_experts=self.num_experts,
                num_experts_per_token=self.num_experts_per_token,
                activation=self.activation,
                use_bias=self.use_bias,
                dropout=self.dropout,
                router_aux_loss_weight=self.router_aux_loss_weight,
                dtype=self.dtype_policy,
                name="feedforward",
            )
        return FeedForward(
            self.ff_dim,
            activation=self.activation,
            dropout=self.dropout,
            use_bias=self.use_bias,
            dtype=self.dtype_policy,
            name="feedforward",
        )

    def make_norm(self, name):
        """A ``LayerNormalization`` or, with ``norm="rms"``, an ``RMSNormalization``."""
        return make_norm(self.norm, self.layer_norm_epsilon, name, dtype=self.dtype_policy)

    def residual(self, x, sublayer, norm, training):
        """:func:`residual_sublayer` with the block's ``residual_dropout`` and ``norm_first``."""
        return residual_sublayer(
            x, sublayer, norm, self.residual_dropout, self.norm_first, training
        )

    @staticmethod
    def attention_kwargs(padding_mask, attention_mask, global_mask, training):
        """Keywords of the self-attention call (``global_mask`` only when given)."""
        kwargs = dict(padding_mask=padding_mask, attention_mask=attention_mask, training=training)
        if global_mask is not None:
            kwargs["global_mask"] = global_mask
        return kwargs

    def attention_config(self):
        """The ``attention`` and ``position`` entries of ``get_config`` (from the
        self-attention's own config)."""
        attn = self.self_attention.get_config()
        return {"attention": attn["attention"], "position": attn["position"]}

    def get_config(self):
        return {
            **super().get_config(),
            **{name: getattr(self, name) for name in self.config_keys},
            **{
                name: getattr(self, "feedforward_kind" if name == "feedforward" else name)
                for name in self.option_keys
            },
            **self.attention_config(),
        }
