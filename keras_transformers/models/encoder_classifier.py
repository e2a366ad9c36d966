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


def encode_tokens(model, token_ids, **config):
    """The encoder sequence of ``model``: padding mask + the shared backbone of encoder blocks.

    Sets ``model.padding_mask_layer`` and the backbone parts
    (:meth:`~keras_transformers.models.backbone.BackboneModel.assemble_stack` with ``config``,
    the arguments of :func:`build_text_encoder` less ``pooling``).

    Returns:
        ``(hidden (B, L, d), padding_mask (B, L))``.
    """
    model.padding_mask_layer = PaddingMask(name="padding_mask")
    padding_mask = model.padding_mask_layer(token_ids)  # (B, L)
    x = model.assemble_stack("encoder", token_ids, padding_mask=padding_mask, **config)
    return x, padding_mask  # (B, L, d), (B, L)


@keras.saving.register_keras_serializable(package="keras_transformers")
class TextEncoder(BackboneModel):
    """The pooled encoder tower ``token_ids (B, L) -> (B, d_model)`` on the shared backbone.

    ``TextEncoder(**config)`` with the arguments of :func:`build_text_encoder`. Parts:
    ``token_embedding``, ``position_embedding``, ``transformer_layers`` (encoder blocks),
    ``final_norm``, ``padding_mask_layer`` and ``pooling``.
    """

    default_name = "text_encoder"

    def build_graph(self, max_length, pooling="mean", **config):
        token_ids = keras.Input(shape=(max_length,), dtype="int32", name="token_ids")
        x, padding_mask = encode_tokens(self, token_ids, max_length=max_length, **config)
        self.pooling = SequencePooling(pooling, name="pooling")
        return token_ids, self.pooling(x, padding_mask=padding_mask)  # (B, d)


@keras.saving.register_keras_serializable(package="keras_transformers")
class EncoderClassifier(BackboneModel):
    """``token_ids (B, L) -> logits (B, num_classes)``: a :class:`TextEncoder` (``backbone``)
    followed by dropout and a Dense head (``classifier_head``).

    ``EncoderClassifier(**config)`` with the arguments of :func:`build_encoder_classifier`.
    """

    default_name = "encoder_classifier"

    def build_graph(self, num_classes, max_length, dropout=0.1, **encoder_args):
        self.backbone = TextEncoder(
            max_length=max_length, dropout=dropout, name="text_encoder", **encoder_args
        )
        token_ids = keras.Input(shape=(max_length,), dtype="int32", name="token_ids")
        pooled = keras.layers.Dropout(dropout, name="head_dropout")(self.backbone(token_ids))
        self.classifier_head = keras.layers.Dense(num_classes, dtype="float32", name="logits")
        return token_ids, self.classifier_head(pooled)  # (B, num_classes)


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
    """Build the pooled encoder tower (:class:`TextEncoder`): ``token_ids (B, L) -> (B, d_model)``.

    Arguments as in :func:`build_encoder_classifier`. Used on its own for two-tower models
    (retrieval): call the returned model on each input.
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
