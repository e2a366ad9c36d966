"""Universal Transformer (Dehghani et al., 2019) classifier and language model builders.

``token_ids (B, L) -> embedding -> UniversalTransformerBlock (one weight-tied block applied up to
max_steps times, ACT halting per position) -> [LN] -> head``. The coordinate embedding (position +
time step) is added inside the block at every step, so ``position=None`` is the paper's setting;
any embedding-side (``"learned"``) or score-side (``"rope"``, ``"alibi"``, ...) position can be added.

The ACT ponder cost ``tau·mean(N + R)`` is part of ``model.losses`` and is added to the compiled
loss by ``fit``. ``model.universal_block.average_ponder_steps`` holds the mean number of steps of
the latest batch.

Example:
    >>> from keras_transformers.models.universal import build_universal_transformer_classifier
    >>> model = build_universal_transformer_classifier(100, 3, 16, d_model=16, num_heads=2)
    >>> model.output_shape
    (None, 3)
"""

import keras

from keras_transformers import attention as attention_registry
from keras_transformers import positional
from keras_transformers.blocks.universal import UniversalTransformerBlock
from keras_transformers.models.backbone import (
    BackboneModel,
    builder_arguments,
    needs_static_length,
)
from keras_transformers.models.decoder_lm import DecoderLM
from keras_transformers.models.layers import PaddingMask, SequencePooling, resolve_position


def _check(d_model, num_heads):
    if d_model % num_heads:
        raise ValueError(f"d_model={d_model} must be divisible by num_heads={num_heads}.")


def _assemble_universal(
    model,
    token_ids,
    causal,
    vocab_size,
    max_length,
    d_model,
    num_heads,
    ff_dim,
    attention,
    position,
    dropout,
    norm_first,
    tie_embeddings=True,
    padding_mask=None,
    **block_args,
):
    """The shared backbone with one weight-tied :class:`UniversalTransformerBlock` as its stack;
    sets ``model.universal_block``. Returns the hidden states ``(B, L, d)``."""
    _, score_pos = resolve_position(position)
    model.universal_block = UniversalTransformerBlock(
        num_heads,
        d_model // num_heads,
        ff_dim or 4 * d_model,
        attention=attention_registry.fresh(attention),
        position=None if score_pos is None else positional.fresh(score_pos),
        causal=causal,
        norm_first=norm_first,
        dropout=dropout,
        name="universal_block",
        **block_args,
    )
    inputs = {} if padding_mask is None else {"padding_mask": padding_mask}
    return model.assemble(
        token_ids,
        [model.universal_block],
        vocab_size=vocab_size,
        d_model=d_model,
        max_length=max_length,
        position=position,
        dropout=dropout,
        norm_first=norm_first,
        tie_embeddings=tie_embeddings,
        **inputs,
    )  # (B, L, d)


@keras.saving.register_keras_serializable(package="keras_transformers")
class UniversalTransformerClassifier(BackboneModel):
    """Universal Transformer encoder classifier on the shared backbone.

    ``UniversalTransformerClassifier(**config)`` with the arguments of
    :func:`build_universal_transformer_classifier`. ``transformer_layers`` is the one shared
    :class:`UniversalTransformerBlock` (also ``universal_block``); the head is ``pooling`` and
    ``classifier_head``.
    """

    default_name = "universal_transformer_classifier"

    def build_graph(self, num_classes, max_length, dropout, pooling, **config):
        token_ids = keras.Input(shape=(max_length,), dtype="int32", name="token_ids")
        padding_mask = PaddingMask(name="padding_mask")(token_ids)  # (B, L)
        x = _assemble_universal(
            self,
            token_ids,
            False,
            max_length=max_length,
            dropout=dropout,
            padding_mask=padding_mask,
            **config,
        )  # (B, L, d)
        self.pooling = SequencePooling(pooling, name="pooling")
        pooled = self.pooling(x, padding_mask=padding_mask)
        pooled = keras.layers.Dropout(dropout, name="head_dropout")(pooled)
        self.classifier_head = keras.layers.Dense(num_classes, dtype="float32", name="logits")
        return token_ids, self.classifier_head(pooled)


@keras.saving.register_keras_serializable(package="keras_transformers")
class UniversalTransformerLM(DecoderLM):
    """Causal Universal Transformer LM on the shared backbone, with ``generate``.

    ``UniversalTransformerLM(**config)`` with the arguments of
    :func:`build_universal_transformer_lm`. ``transformer_layers`` is the one shared causal
    :class:`UniversalTransformerBlock` (also ``universal_block``). ``generate`` recomputes the
    sequence for every token (the ACT block has no KV cache).
    """

    default_name = "universal_transformer_lm"

    def build_graph(self, max_length, attention, **config):
        length = max_length if needs_static_length(attention) else None
        token_ids = keras.Input(shape=(length,), dtype="int32", name="token_ids")
        x = _assemble_universal(
            self, token_ids, True, max_length=max_length, attention=attention, **config
        )  # (B, L, d)
        return token_ids, self.logits_output(x)


def build_universal_transformer_classifier(
    vocab_size,
    num_classes,
    max_length,
    d_model=128,
    num_heads=4,
    max_steps=4,
    ff_dim=None,
    attention="full",
    position=None,
    act=True,
    halting_epsilon=0.01,
    ponder_cost_weight=0.01,
    dropout=0.1,
    pooling="mean",
    activation="relu",
    norm_first=False,
    name="universal_transformer_classifier",
):
    """Build a Functional Universal Transformer encoder classifier.

    Args:
        vocab_size: token vocabulary (id 0 = padding, masked out of attention, pooling and the
            ponder cost).
        num_classes: output classes; the model returns logits ``(B, num_classes)``.
        max_length: input length ``L``.
        d_model, num_heads, ff_dim: sizes of the shared block (``ff_dim`` defaults to
            ``4·d_model``).
        max_steps: recurrence depth ``T`` (ACT step limit).
        attention: any name in ``kt.attention.available()``, a config dict or an instance.
        position: None (the block's coordinate embedding only) or any positional name.
        act, halting_epsilon, ponder_cost_weight: ACT halting (see
            :class:`~keras_transformers.blocks.universal.UniversalTransformerBlock`).
        norm_first: pre-norm; ``False`` (default) is the paper's post-norm.
        pooling: ``"mean"``, ``"max"`` or ``"cls"``.

    Returns:
        ``keras.Model``: ``token_ids (B, L) int -> logits (B, num_classes)``.
    """
    _check(d_model, num_heads)
    return UniversalTransformerClassifier(**builder_arguments(locals()))


def build_universal_transformer_lm(
    vocab_size,
    max_length,
    d_model=128,
    num_heads=4,
    max_steps=4,
    ff_dim=None,
    attention="full",
    position=None,
    act=True,
    halting_epsilon=0.01,
    ponder_cost_weight=0.01,
    dropout=0.0,
    activation="relu",
    norm_first=False,
    tie_embeddings=True,
    name="universal_transformer_lm",
):
    """Build a Functional decoder-only (causal) Universal Transformer language model.

    The shared block uses causal self-attention; ACT halting is per position and reads only the
    position's own state, so the model stays causal. Arguments as in
    :func:`build_universal_transformer_classifier`, plus ``tie_embeddings`` (output projection
    = token embedding).

    Returns:
        :class:`UniversalTransformerLM` (a :class:`DecoderLM` with ``generate``):
        ``token_ids (B, L) int -> logits (B, L, V) float32``.
    """
    _check(d_model, num_heads)
    return UniversalTransformerLM(**builder_arguments(locals()))
