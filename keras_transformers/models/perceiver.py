"""The Perceiver family: Perceiver, Perceiver IO and Perceiver AR.

**Perceiver** (Jaegle et al., 2021, "Perceiver: General Perception with Iterative Attention").
A small learned *latent array* ``Z ∈ R^{N×D}`` (``N ≪ M``) reads the long input ``X ∈ R^{M×C}``
by cross-attention, then a stack of latent self-attention blocks processes it; this repeats for
``num_blocks`` blocks::

    Z ← Z + CrossAttn(LN(Z), LN(X));  Z ← Z + FFN(LN(Z))          (cost O(M·N))
    Z ← LatentTransformer(Z)      (num_self_attends_per_block blocks, cost O(N²) each)

With ``share_weights=True`` (the paper's choice) all cross-attentions after the first share one
set of weights and every block reuses the same latent transformer, so the model is an unrolled
recurrent network. No ``M×M`` tensor is ever built: the cost is linear in the input length ``M``.

**Perceiver IO** (Jaegle et al., 2022, "Perceiver IO: A General Architecture for Structured Inputs
& Outputs") adds a decoder: an *output query array* ``Q ∈ R^{O×E}`` (here learned, one query per
output position) cross-attends to the final latents, ``Y = CrossAttn(LN(Q), LN(Z))``, giving
``O`` outputs (e.g. per-token logits for masked language modelling). Cost ``O(M·N + N²·layers +
O·N)``.

**Perceiver AR** (Hawthorne et al., 2022, "General-purpose, long-context autoregressive modeling
with Perceiver AR"). For a sequence of ``M`` tokens the latents are the embeddings of the *last*
``N`` positions. They cross-attend to all ``M`` positions with a causal mask (latent ``i``, at
absolute position ``M - N + i``, sees keys ``j <= M - N + i``), then a causal self-attention stack
runs over the ``N`` latents. Latent ``i``'s logits predict token ``M - N + i + 1``. Cost
``O(M·N + N²·layers)``.

Shapes: inputs ``(B, M)`` token ids or ``(B, M, C)`` features; latents ``(B, N, D)``;
cross-attention scores ``(B, h, N, M)``; self-attention scores ``(B, h, N, N)``.
"""

import keras
import numpy as np
from keras import ops

from keras_transformers import attention as attention_registry
from keras_transformers.attention import MultiHeadAttention
from keras_transformers.blocks import TransformerEncoderBlock
from keras_transformers.blocks.feedforward import FeedForward
from keras_transformers.models.layers import (
    PaddingMask,
    SequencePooling,
    embedding_position_layer,
    resolve_position,
)


def _positive(name, value):
    if value is None or int(value) < 1:
        raise ValueError(f"{name}={value}: must be an integer >= 1.")
    return int(value)


@keras.saving.register_keras_serializable(package="keras_transformers")
class LearnedArray(keras.layers.Layer):
    """A trainable ``(length, dim)`` array broadcast over the batch of its input.

    Used for the Perceiver latent array and the Perceiver IO output queries. Shapes: any input
    ``(B, ...)`` (only its batch size is read) ``-> (B, length, dim)``.
    """

    def __init__(self, length, dim, initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.length = _positive("length", length)
        self.dim = _positive("dim", dim)
        # The paper initialises the latents with a truncated normal (std 0.02).
        self.initializer = keras.initializers.get(
            initializer or keras.initializers.TruncatedNormal(stddev=0.02)
        )

    def build(self, input_shape):
        self.array = self.add_weight(
            name="array", shape=(self.length, self.dim), initializer=self.initializer
        )
        self.built = True

    def call(self, x):
        array = ops.cast(self.array, self.compute_dtype)[None]  # (1, N, D)
        return ops.broadcast_to(array, (ops.shape(x)[0], self.length, self.dim))  # (B, N, D)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.length, self.dim)

    def get_config(self):
        return {
            **super().get_config(),
            "length": self.length,
            "dim": self.dim,
            "initializer": keras.initializers.serialize(self.initializer),
        }


@keras.saving.register_keras_serializable(package="keras_transformers")
class LastPositions(keras.layers.Layer):
    """``x (B, M, ...) -> x[:, M - n:]``: the last ``n`` positions (Perceiver AR latents)."""

    def __init__(self, num_positions, **kwargs):
        super().__init__(**kwargs)
        self.num_positions = _positive("num_positions", num_positions)

    def call(self, x):
        return x[:, x.shape[1] - self.num_positions :]

    def compute_output_spec(self, x):
        return keras.KerasTensor(
            (x.shape[0], self.num_positions) + tuple(x.shape[2:]), dtype=x.dtype
        )

    def get_config(self):
        return {**super().get_config(), "num_positions": self.num_positions}


@keras.saving.register_keras_serializable(package="keras_transformers")
class PrefixCausalMask(keras.layers.Layer):
    """Perceiver AR cross-attention mask from the input padding mask.

    ``padding_mask (B, M) -> (B, N, M)`` bool: latent ``i`` (absolute position ``M - N + i``)
    attends to key ``j`` iff ``j <= M - N + i`` and ``j`` is not padding.
    """

    def __init__(self, num_latents, **kwargs):
        super().__init__(**kwargs)
        self.num_latents = _positive("num_latents", num_latents)

    def call(self, padding_mask):
        length = padding_mask.shape[1]
        offset = length - self.num_latents
        query_pos = np.arange(self.num_latents)[:, None] + offset  # (N, 1)
        causal = np.arange(length)[None, :] <= query_pos  # (N, M), static
        keep = ops.cast(padding_mask, "bool")[:, None, :]  # (B, 1, M)
        return ops.logical_and(ops.convert_to_tensor(causal)[None], keep)  # (B, N, M)

    def compute_output_spec(self, padding_mask):
        shape = (padding_mask.shape[0], self.num_latents, padding_mask.shape[1])
        return keras.KerasTensor(shape, dtype="bool")

    def get_config(self):
        return {**super().get_config(), "num_latents": self.num_latents}


@keras.saving.register_keras_serializable(package="keras_transformers")
class PerceiverCrossAttention(keras.layers.Layer):
    """Cross-attention from a query array to an input array, then a feed-forward block.

    ``q ← q + MHA(LN(q), LN(x), LN(x))`` (the residual is dropped with
    ``use_query_residual=False``, as in some Perceiver IO decoders), then
    ``q ← q + FFN(LN(q))``.

    Args:
        num_heads: attention heads (the Perceiver uses 1 for cross-attention).
        key_dim: per-head query/key size (default: query width / num_heads).
        ff_dim: feed-forward width (default: query width).
        dropout: residual and feed-forward dropout.
        use_query_residual: add the query to the attention output.
        activation: feed-forward activation.

    Call:
        ``query (B, Lq, Dq)``, ``inputs (B, Lk, C)``, ``padding_mask (B, Lk)`` bool,
        ``attention_mask (B, Lq, Lk)`` bool ``-> (B, Lq, Dq)``.
    """

    def __init__(
        self,
        num_heads=1,
        key_dim=None,
        ff_dim=None,
        dropout=0.0,
        use_query_residual=True,
        activation="gelu",
        layer_norm_epsilon=1e-5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = _positive("num_heads", num_heads)
        self.key_dim = None if key_dim is None else _positive("key_dim", key_dim)
        self.ff_dim = None if ff_dim is None else _positive("ff_dim", ff_dim)
        self.dropout = float(dropout)
        self.use_query_residual = bool(use_query_residual)
        self.activation = activation
        self.layer_norm_epsilon = float(layer_norm_epsilon)

    def build(self, query_shape, inputs_shape=None):
        width = int(query_shape[-1])
        key_dim = self.key_dim or max(1, width // self.num_heads)
        eps, policy = self.layer_norm_epsilon, self.dtype_policy
        self.query_norm = keras.layers.LayerNormalization(
            epsilon=eps, dtype=policy, name="query_norm"
        )
        self.inputs_norm = keras.layers.LayerNormalization(
            epsilon=eps, dtype=policy, name="inputs_norm"
        )
        self.attention = MultiHeadAttention(
            self.num_heads, key_dim, output_dim=width, dtype=policy, name="cross_attention"
        )
        self.feedforward_norm = keras.layers.LayerNormalization(
            epsilon=eps, dtype=policy, name="feedforward_norm"
        )
        self.feedforward = FeedForward(
            self.ff_dim or width,
            activation=self.activation,
            dropout=self.dropout,
            dtype=policy,
            name="feedforward",
        )
        self.residual_dropout = keras.layers.Dropout(self.dropout, dtype=policy)
        self.query_norm.build(query_shape)
        self.inputs_norm.build(inputs_shape)
        self.attention.build(query_shape, inputs_shape)
        self.feedforward_norm.build(query_shape)
        self.feedforward.build(query_shape)
        self.built = True

    def call(self, query, inputs, padding_mask=None, attention_mask=None, training=None):
        h = self.attention(
            self.query_norm(query),
            value=self.inputs_norm(inputs),
            padding_mask=padding_mask,
            attention_mask=attention_mask,
            training=training,
        )  # (B, Lq, Dq)
        h = self.residual_dropout(h, training=training)
        x = query + h if self.use_query_residual else h
        h = self.feedforward(self.feedforward_norm(x), training=training)
        return x + self.residual_dropout(h, training=training)  # (B, Lq, Dq)

    def compute_output_shape(self, query_shape, inputs_shape=None):
        return query_shape

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "ff_dim": self.ff_dim,
            "dropout": self.dropout,
            "use_query_residual": self.use_query_residual,
            "activation": self.activation,
            "layer_norm_epsilon": self.layer_norm_epsilon,
        }


# ---------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------


def _inputs_and_embedding(input_dim, vocab_size, max_length, width, position, masked_inputs):
    """Model inputs, the embedded array ``(B, M, width)`` and the padding mask ``(B, M)``."""
    if (input_dim is None) == (vocab_size is None):
        raise ValueError(
            f"input_dim={input_dim}, vocab_size={vocab_size}: give exactly one of them "
            "(input_dim for feature vectors (B, M, input_dim), vocab_size for token ids (B, M))."
        )
    max_length = _positive("max_length", max_length)
    if vocab_size is not None:
        token_ids = keras.Input(shape=(max_length,), dtype="int32", name="token_ids")
        inputs = token_ids
        padding_mask = PaddingMask(name="padding_mask")(token_ids)
        x = keras.layers.Embedding(
            _positive("vocab_size", vocab_size), width, name="token_embedding"
        )(token_ids)
    else:
        features = keras.Input(
            shape=(max_length, _positive("input_dim", input_dim)), name="features"
        )
        x = keras.layers.Dense(width, name="input_projection")(features)
        if masked_inputs:
            mask_input = keras.Input(shape=(max_length,), dtype="bool", name="padding_mask")
            inputs = {"features": features, "padding_mask": mask_input}
            padding_mask = mask_input
        else:
            inputs, padding_mask = features, None
    embed_pos, score_pos = resolve_position(position)
    if score_pos is not None:
        raise ValueError(
            f"position={position!r}: the Perceiver builders take an embedding-side encoding "
            "('learned', 'sinusoidal') or None."
        )
    pos_layer = embedding_position_layer(embed_pos, max_length, "position_embedding")
    if pos_layer is not None:
        x = pos_layer(x)
    return inputs, x, padding_mask


def _encode(
    x,
    padding_mask,
    num_latents,
    latent_dim,
    num_blocks,
    num_self_attends_per_block,
    num_cross_heads,
    num_self_heads,
    ff_dim,
    attention,
    share_weights,
    dropout,
    activation,
):
    """Latent array + ``num_blocks`` x (cross-attention, latent self-attention stack)."""
    num_latents = _positive("num_latents", num_latents)
    latent_dim = _positive("latent_dim", latent_dim)
    num_blocks = _positive("num_blocks", num_blocks)
    num_self = _positive("num_self_attends_per_block", num_self_attends_per_block)
    num_self_heads = _positive("num_self_heads", num_self_heads)
    if latent_dim % num_self_heads:
        raise ValueError(
            f"latent_dim={latent_dim} must be divisible by num_self_heads={num_self_heads}."
        )
    if latent_dim % _positive("num_cross_heads", num_cross_heads):
        raise ValueError(
            f"latent_dim={latent_dim} must be divisible by num_cross_heads={num_cross_heads}."
        )
    ff_dim = ff_dim or 4 * latent_dim

    def cross_layer(name):
        return PerceiverCrossAttention(
            num_cross_heads, ff_dim=ff_dim, dropout=dropout, activation=activation, name=name
        )

    def self_stack(prefix):
        return [
            TransformerEncoderBlock(
                num_self_heads,
                latent_dim // num_self_heads,
                ff_dim,
                attention=attention_registry.fresh(attention),
                dropout=dropout,
                activation=activation,
                name=f"{prefix}_{j}",
            )
            for j in range(num_self)
        ]

    latents = LearnedArray(num_latents, latent_dim, name="latent_array")(x)  # (B, N, D)
    shared_cross = cross_layer("cross_attend_shared") if share_weights and num_blocks > 1 else None
    shared_stack = self_stack("latent_self_attend") if share_weights else None
    for i in range(num_blocks):
        if i == 0 or shared_cross is None:
            cross = cross_layer(f"cross_attend_{i}")
        else:
            cross = shared_cross
        latents = cross(latents, x, padding_mask=padding_mask)  # (B, N, D)
        for block in shared_stack or self_stack(f"latent_self_attend_{i}"):
            latents = block(latents)  # (B, N, D)
    return latents


#: The builder arguments of :func:`_encode` (after ``x`` and ``padding_mask``).
_ENCODE_ARGUMENTS = (
    "num_latents",
    "latent_dim",
    "num_blocks",
    "num_self_attends_per_block",
    "num_cross_heads",
    "num_self_heads",
    "ff_dim",
    "attention",
    "share_weights",
    "dropout",
    "activation",
)


def _encoder(arguments):
    """Model inputs and final latents ``(B, N, D)`` of the Perceiver encoder, from a builder's
    ``locals()`` (shared by :func:`build_perceiver` and :func:`build_perceiver_io`)."""
    inputs, x, padding_mask = _inputs_and_embedding(
        arguments["input_dim"],
        arguments["vocab_size"],
        arguments["max_length"],
        arguments["input_width"] or arguments["latent_dim"],
        arguments["position"],
        arguments["masked_inputs"],
    )
    encode = {name: arguments[name] for name in _ENCODE_ARGUMENTS}
    return inputs, _encode(x, padding_mask, **encode)


def build_perceiver(
    max_length,
    num_latents,
    latent_dim,
    num_classes,
    input_dim=None,
    vocab_size=None,
    num_blocks=2,
    num_self_attends_per_block=2,
    num_cross_heads=1,
    num_self_heads=4,
    input_width=None,
    ff_dim=None,
    attention="full",
    position="learned",
    share_weights=True,
    masked_inputs=False,
    dropout=0.0,
    activation="gelu",
    name="perceiver",
):
    """Build a Functional Perceiver classifier (Jaegle et al., 2021).

    Args:
        max_length: input length ``M``.
        num_latents, latent_dim: the latent array ``N x D``.
        num_classes: output classes; the model returns logits ``(B, num_classes)``.
        input_dim: feature size ``C`` of float inputs ``(B, M, C)``; or
        vocab_size: vocabulary of token-id inputs ``(B, M)`` (id 0 = padding, masked out).
        num_blocks: cross-attention + latent-transformer blocks.
        num_self_attends_per_block: latent self-attention layers per block.
        num_cross_heads, num_self_heads: heads of the cross- and self-attentions.
        input_width: width the inputs are embedded to (default ``latent_dim``).
        ff_dim: feed-forward width (default ``4·latent_dim``).
        attention: core of the latent self-attention (any registered name, dict or instance).
        position: ``"learned"``, ``"sinusoidal"`` or None, added to the embedded inputs.
        share_weights: share the cross-attentions after the first and the latent transformer
            across blocks (the paper's setting).
        masked_inputs: with ``input_dim``: the model takes
            ``{"features": (B, M, C), "padding_mask": (B, M) bool}``.

    Returns:
        ``keras.Model``: ``inputs -> logits (B, num_classes)`` (latents mean-pooled).
    """
    inputs, latents = _encoder(locals())
    latents = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")(latents)
    pooled = SequencePooling("mean", name="pooling")(latents)
    logits = keras.layers.Dense(
        _positive("num_classes", num_classes), dtype="float32", name="logits"
    )(pooled)
    return keras.Model(inputs, logits, name=name)


def build_perceiver_io(
    max_length,
    num_latents,
    latent_dim,
    output_dim,
    input_dim=None,
    vocab_size=None,
    num_outputs=None,
    query_dim=None,
    num_blocks=1,
    num_self_attends_per_block=2,
    num_cross_heads=1,
    num_self_heads=4,
    num_decoder_heads=1,
    input_width=None,
    ff_dim=None,
    attention="full",
    position="learned",
    share_weights=True,
    masked_inputs=False,
    dropout=0.0,
    activation="gelu",
    name="perceiver_io",
):
    """Build a Functional Perceiver IO (Jaegle et al., 2022).

    The encoder is :func:`build_perceiver`'s. The decoder's output query array is a learned
    ``(num_outputs, query_dim)`` array (one query per output position, like the position-only
    queries of the paper's masked-LM model); it cross-attends to the final latents and a linear
    layer maps each decoded query to ``output_dim`` values.

    Args:
        output_dim: values per output (e.g. the vocabulary size for masked LM logits).
        num_outputs: output positions ``O`` (default ``max_length``: per-token outputs).
        query_dim: query width ``E`` (default ``latent_dim``).
        num_decoder_heads: heads of the decoder cross-attention.
        Others: as in :func:`build_perceiver`.

    Returns:
        ``keras.Model``: ``inputs -> (B, num_outputs, output_dim)``.
    """
    inputs, latents = _encoder(locals())
    latents = keras.layers.LayerNormalization(epsilon=1e-5, name="latent_norm")(latents)
    num_outputs = _positive("num_outputs", num_outputs or max_length)
    query_dim = _positive("query_dim", query_dim or latent_dim)
    if query_dim % _positive("num_decoder_heads", num_decoder_heads):
        raise ValueError(
            f"query_dim={query_dim} must be divisible by num_decoder_heads={num_decoder_heads}."
        )
    queries = LearnedArray(num_outputs, query_dim, name="output_queries")(latents)  # (B, O, E)
    decoded = PerceiverCrossAttention(
        num_decoder_heads, ff_dim=ff_dim, dropout=dropout, activation=activation, name="decoder"
    )(queries, latents)  # (B, O, E)
    decoded = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")(decoded)
    outputs = keras.layers.Dense(
        _positive("output_dim", output_dim), dtype="float32", name="outputs"
    )(decoded)  # (B, O, output_dim)
    return keras.Model(inputs, outputs, name=name)


def build_perceiver_ar(
    vocab_size,
    max_length,
    num_latents,
    d_model=128,
    num_heads=4,
    num_layers=2,
    num_cross_heads=None,
    ff_dim=None,
    attention="full",
    position="learned",
    dropout=0.0,
    activation="gelu",
    name="perceiver_ar",
):
    """Build a Functional Perceiver AR language model (Hawthorne et al., 2022).

    Args:
        vocab_size: vocabulary (id 0 = padding).
        max_length: total length ``M`` (prefix + latent positions).
        num_latents: ``N <= M``: the last ``N`` positions become the latents.
        d_model, num_heads, num_layers, ff_dim: width, heads, causal latent self-attention
            layers, feed-forward width (default ``4·d_model``).
        num_cross_heads: heads of the causal cross-attention (default ``num_heads``).
        attention: core of the latent self-attention; must support ``causal``.
        position: ``"learned"``, ``"sinusoidal"`` or None (added to the token embeddings).

    Returns:
        ``keras.Model``: ``token_ids (B, M) -> logits (B, N, vocab_size)``; logits ``i`` predict
        token ``M - N + i + 1`` (train with ``y = ids[:, M - N + 1 : M + 1]``).

    Example:
        >>> import numpy as np
        >>> from keras_transformers.models.perceiver import build_perceiver_ar
        >>> model = build_perceiver_ar(50, 32, 8, d_model=16, num_heads=2, num_layers=1)
        >>> model(np.ones((2, 32), "int32")).shape
        (2, 8, 50)
    """
    max_length = _positive("max_length", max_length)
    num_latents = _positive("num_latents", num_latents)
    if num_latents > max_length:
        raise ValueError(
            f"num_latents={num_latents}: must be <= max_length={max_length} (the latents are "
            "the last num_latents positions of the input)."
        )
    num_heads = _positive("num_heads", num_heads)
    if d_model % num_heads:
        raise ValueError(f"d_model={d_model} must be divisible by num_heads={num_heads}.")
    num_cross_heads = _positive("num_cross_heads", num_cross_heads or num_heads)
    if d_model % num_cross_heads:
        raise ValueError(
            f"d_model={d_model} must be divisible by num_cross_heads={num_cross_heads}."
        )
    num_layers = _positive("num_layers", num_layers)
    ff_dim = ff_dim or 4 * d_model
    core = attention_registry.get(attention)
    if not core.supports_causal:
        raise ValueError(
            f"attention={core.variant!r} does not support causal attention, which the "
            "Perceiver AR latent stack needs."
        )
    inputs, x, padding_mask = _inputs_and_embedding(
        None, vocab_size, max_length, d_model, position, False
    )
    x = keras.layers.Dropout(dropout, name="embedding_dropout")(x)
    latents = LastPositions(num_latents, name="latent_positions")(x)  # (B, N, d)
    cross_mask = PrefixCausalMask(num_latents, name="cross_attention_mask")(padding_mask)
    latents = PerceiverCrossAttention(
        num_cross_heads, ff_dim=ff_dim, dropout=dropout, activation=activation, name="cross_attend"
    )(latents, x, attention_mask=cross_mask)  # (B, N, d)
    latent_padding = LastPositions(num_latents, name="latent_padding_mask")(padding_mask)
    for i in range(num_layers):
        latents = TransformerEncoderBlock(
            num_heads,
            d_model // num_heads,
            ff_dim,
            attention=attention_registry.fresh(attention),
            causal=True,
            dropout=dropout,
            activation=activation,
            name=f"latent_self_attend_{i}",
        )(latents, padding_mask=latent_padding)
    latents = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")(latents)
    logits = keras.layers.Dense(vocab_size, dtype="float32", name="logits")(latents)
    return keras.Model(inputs, logits, name=name)
