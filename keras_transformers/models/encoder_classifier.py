"""BERT-style encoder-only classifier (Devlin et al., 2019; Vaswani et al., 2017 encoder).

``token_ids (B, L) -> embeddings (+ positions) -> N x TransformerEncoderBlock -> LN -> pool ->
Dense(num_classes)`` logits. Token id 0 is padding and is masked out of attention and pooling.
"""

import keras

from keras_transformers import attention as attention_registry
from keras_transformers import positional
from keras_transformers.blocks import TransformerEncoderBlock
from keras_transformers.models.layers import (
    PaddingMask,
    SequencePooling,
    embedding_position_layer,
    resolve_position,
)


def check_model_sizes(d_model, num_heads, num_layers):
    """Validate the common size arguments of the builders."""
    if d_model % num_heads:
        raise ValueError(f"d_model={d_model} must be divisible by num_heads={num_heads}.")
    if num_layers < 1:
        raise ValueError(f"num_layers={num_layers}: must be >= 1.")


def needs_static_length(attention):
    """True when the core blocks or chunks the sequence (its ``needs_static_length``)."""
    core = (
        attention_registry.get(attention)
        if not isinstance(attention, attention_registry.AttentionCore)
        else attention
    )
    return core.needs_static_length


def build_text_encoder(
    vocab_size,
    max_length,
    d_model=128,
    num_heads=4,
    num_layers=2,
    ff_dim=None,
    attention="full",
    position="learned",
    dropout=0.1,
    pooling="mean",
    activation="gelu",
    norm_first=True,
    num_key_value_heads=None,
    name="text_encoder",
):
    """Build the pooled encoder tower: ``token_ids (B, L) -> (B, d_model)``.

    Arguments as in :func:`build_encoder_classifier`. Used on its own for two-tower models
    (retrieval): call the returned model on each input.
    """
    check_model_sizes(d_model, num_heads, num_layers)
    ff_dim = ff_dim or 4 * d_model
    embed_pos, score_pos = resolve_position(position)
    token_ids = keras.Input(shape=(max_length,), dtype="int32", name="token_ids")
    padding_mask = PaddingMask(name="padding_mask")(token_ids)
    x = keras.layers.Embedding(vocab_size, d_model, name="token_embedding")(token_ids)
    pos_layer = embedding_position_layer(embed_pos, max_length, "position_embedding")
    if pos_layer is not None:
        x = pos_layer(x)
    x = keras.layers.Dropout(dropout, name="embedding_dropout")(x)
    for i in range(num_layers):
        x = TransformerEncoderBlock(
            num_heads,
            d_model // num_heads,
            ff_dim,
            attention=attention_registry.fresh(attention),
            position=None if score_pos is None else positional.fresh(score_pos),
            norm_first=norm_first,
            dropout=dropout,
            activation=activation,
            num_key_value_heads=num_key_value_heads,
            name=f"encoder_block_{i}",
        )(x, padding_mask=padding_mask)
    if norm_first:
        x = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")(x)
    pooled = SequencePooling(pooling, name="pooling")(x, padding_mask=padding_mask)
    return keras.Model(token_ids, pooled, name=name)


def build_encoder_classifier(
    vocab_size,
    num_classes,
    max_length,
    d_model=128,
    num_heads=4,
    num_layers=2,
    ff_dim=None,
    attention="full",
    position="learned",
    dropout=0.1,
    pooling="mean",
    activation="gelu",
    norm_first=True,
    num_key_value_heads=None,
    name="encoder_classifier",
):
    """Build a Functional encoder classifier.

    Args:
        vocab_size: token vocabulary (id 0 = padding).
        num_classes: output classes; the model returns logits ``(B, num_classes)``.
        max_length: input length ``L``.
        d_model, num_heads, num_layers, ff_dim: sizes (``ff_dim`` defaults to ``4·d_model``).
        attention: any name in ``kt.attention.available()``, a config dict or an instance.
        position: any name in ``kt.positional.available()`` (embedding- or score-side) or None.
        pooling: ``"mean"`` (masked), ``"max"`` or ``"cls"`` (first token).

    Returns:
        ``keras.Model``: ``token_ids (B, L) int -> logits (B, num_classes)``.
    """
    encoder = build_text_encoder(
        vocab_size,
        max_length,
        d_model=d_model,
        num_heads=num_heads,
        num_layers=num_layers,
        ff_dim=ff_dim,
        attention=attention,
        position=position,
        dropout=dropout,
        pooling=pooling,
        activation=activation,
        norm_first=norm_first,
        num_key_value_heads=num_key_value_heads,
    )
    token_ids = keras.Input(shape=(max_length,), dtype="int32", name="token_ids")
    pooled = keras.layers.Dropout(dropout, name="head_dropout")(encoder(token_ids))
    logits = keras.layers.Dense(num_classes, dtype="float32", name="logits")(pooled)
    return keras.Model(token_ids, logits, name=name)


def build_retrieval_classifier(vocab_size, max_length, num_classes=2, name="retrieval", **kwargs):
    """Two-tower classifier over a pair of documents (LRA retrieval).

    One shared :func:`build_text_encoder` embeds both documents ``u, v``; the head sees
    ``[u, v, u·v, u−v]``. Inputs ``{"document_a": (B, L), "document_b": (B, L)}``; returns logits
    ``(B, num_classes)``.
    """
    encoder = build_text_encoder(vocab_size, max_length, **kwargs)
    a = keras.Input(shape=(max_length,), dtype="int32", name="document_a")
    b = keras.Input(shape=(max_length,), dtype="int32", name="document_b")
    u, v = encoder(a), encoder(b)
    features = keras.layers.Concatenate(name="pair_features")(
        [u, v, keras.layers.Multiply()([u, v]), keras.layers.Subtract()([u, v])]
    )
    hidden = keras.layers.Dense(encoder.output_shape[-1], activation="gelu", name="head")(features)
    logits = keras.layers.Dense(num_classes, dtype="float32", name="logits")(hidden)
    return keras.Model({"document_a": a, "document_b": b}, logits, name=name)
