"""BERT-style encoder-only classifier (Devlin et al., 2019; Vaswani et al., 2017 encoder).

``token_ids (B, L) -> embeddings (+ positions) -> N x TransformerEncoderBlock -> LN -> pool ->
Dense(num_classes)`` logits. Token id 0 is padding and is masked out of attention and pooling.
"""

import keras

from keras_transformers.models.backbone import (
    BackboneModel,
    check_model_sizes,
    needs_static_length,
)
from keras_transformers.models.layers import PaddingMask, SequencePooling

__all__ = [
    "EncoderClassifier",
    "TextEncoder",
    "build_encoder_classifier",
    "build_retrieval_classifier",
    "build_text_encoder",
    "check_model_sizes",
    "encode_tokens",
    "needs_static_length",
]


def encode_tokens(model, token_ids, segment_ids=None, **config):
    """The encoder sequence of ``model``: padding mask + the shared backbone of encoder blocks.

    Sets ``model.padding_mask_layer`` and the backbone parts
    (:meth:`~keras_transformers.models.backbone.BackboneModel.assemble_stack` with ``config``,
    the arguments of :func:`build_text_encoder` less ``pooling``); ``segment_ids (B, L)`` feed
    the ``segment_embedding`` when ``num_segments`` is set.

    Returns:
        ``(hidden (B, L, d), padding_mask (B, L))``.
    """
    model.padding_mask_layer = PaddingMask(name="padding_mask")
    padding_mask = model.padding_mask_layer(token_ids)  # (B, L)
    if segment_ids is not None:
        config["segment_ids"] = segment_ids
    x = model.assemble_stack("encoder", token_ids, padding_mask=padding_mask, **config)
    return x, padding_mask  # (B, L, d), (B, L)


@keras.saving.register_keras_serializable(package="keras_transformers")
class TextEncoder(BackboneModel):
    """The pooled encoder tower ``token_ids (B, L) -> (B, d_model)`` on the shared backbone.

    ``TextEncoder(**config)`` with the arguments of :func:`build_text_encoder`. Parts:
    ``token_embedding``, ``position_embedding``, ``segment_embedding`` (None without
    ``num_segments``), ``embedding_norm``, ``transformer_layers`` (encoder blocks),
    ``final_norm``, ``padding_mask_layer`` and ``pooling`` (None with ``pooling=None``: the
    output is the sequence ``(B, L, d)``). With ``num_segments`` the inputs are
    ``{"token_ids": (B, L), "segment_ids": (B, L)}``.
    """

    default_name = "text_encoder"

    def build_graph(self, max_length, pooling="mean", num_segments=None, **config):
        inputs = text_inputs(max_length, num_segments)
        x, padding_mask = encode_tokens(
            self,
            inputs["token_ids"],
            inputs.get("segment_ids"),
            max_length=max_length,
            num_segments=num_segments,
            **config,
        )
        inputs = inputs if num_segments else inputs["token_ids"]
        self.pooling = None
        if pooling is None:
            return inputs, x  # (B, L, d)
        self.pooling = SequencePooling(pooling, name="pooling")
        return inputs, self.pooling(x, padding_mask=padding_mask)  # (B, d)


def text_inputs(max_length, num_segments=None):
    """``{"token_ids": Input (B, L)}``, plus ``"segment_ids"`` when ``num_segments``."""
    inputs = {"token_ids": keras.Input(shape=(max_length,), dtype="int32", name="token_ids")}
    if num_segments:
        inputs["segment_ids"] = keras.Input(shape=(max_length,), dtype="int32", name="segment_ids")
    return inputs


@keras.saving.register_keras_serializable(package="keras_transformers")
class EncoderClassifier(BackboneModel):
    """``token_ids (B, L) -> logits (B, num_classes)``: a :class:`TextEncoder` (``backbone``)
    followed by dropout and a Dense head (``classifier_head``).

    ``EncoderClassifier(**config)`` with the arguments of :func:`build_encoder_classifier`.
    """

    default_name = "encoder_classifier"

    def build_graph(self, num_classes, max_length, dropout=0.1, num_segments=None, **encoder_args):
        self.backbone = TextEncoder(
            max_length=max_length,
            dropout=dropout,
            num_segments=num_segments,
            name="text_encoder",
            **encoder_args,
        )
        inputs = text_inputs(max_length, num_segments)
        inputs = inputs if num_segments else inputs["token_ids"]
        pooled = keras.layers.Dropout(dropout, name="head_dropout")(self.backbone(inputs))
        self.classifier_head = keras.layers.Dense(num_classes, dtype="float32", name="logits")
        return inputs, self.classifier_head(pooled)  # (B, num_classes)


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
    num_segments=None,
    embedding_norm=False,
    norm="layer",
    layer_norm_epsilon=1e-5,
    use_bias=True,
    name="text_encoder",
):
    """Build the pooled encoder tower (:class:`TextEncoder`): ``token_ids (B, L) -> (B, d_model)``.

    Arguments as in :func:`build_encoder_classifier`; ``pooling=None`` returns the sequence
    ``(B, L, d_model)`` (a BERT backbone's sequence output). Used on its own for two-tower
    models (retrieval): call the returned model on each input.
    """
    config = dict(locals())
    check_model_sizes(d_model, num_heads, num_layers)
    return TextEncoder(**config)


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
    num_segments=None,
    embedding_norm=False,
    norm="layer",
    layer_norm_epsilon=1e-5,
    use_bias=True,
    name="encoder_classifier",
):
    """Build an encoder classifier (:class:`EncoderClassifier`).

    Args:
        vocab_size: token vocabulary (id 0 = padding).
        num_classes: output classes; the model returns logits ``(B, num_classes)``.
        max_length: input length ``L``.
        d_model, num_heads, num_layers, ff_dim: sizes (``ff_dim`` defaults to ``4·d_model``).
        attention: any name in ``kt.attention.available()``, a config dict or an instance.
        position: any name in ``kt.positional.available()`` (embedding- or score-side) or None.
        pooling: ``"mean"`` (masked), ``"max"`` or ``"cls"`` (first token).
        activation: feed-forward activation (``gelu``, ``gelu_approximate``, ``relu``,
            ``swiglu``, ...).
        norm_first: pre-norm blocks and a final norm (False: BERT's post-norm, no final norm).
        num_segments: a learned segment (token type) embedding of that many rows, added to the
            token and position embeddings (BERT: 2); the model's inputs are then
            ``{"token_ids": (B, L), "segment_ids": (B, L)}``.
        embedding_norm: a norm after the summed embeddings (BERT).
        norm: ``"layer"`` or ``"rms"`` for every norm.
        layer_norm_epsilon: epsilon of every norm (BERT: 1e-12).
        use_bias: biases of the attention projections and the feed-forward layers.

    Returns:
        ``keras.Model``: ``token_ids (B, L) int -> logits (B, num_classes)``; its encoder is
        ``model.backbone`` (a :class:`TextEncoder` named ``text_encoder``).
    """
    config = dict(locals())
    check_model_sizes(d_model, num_heads, num_layers)
    return EncoderClassifier(**config)


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
