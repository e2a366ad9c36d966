"""GPT-style decoder-only language model (Radford et al., 2018; Vaswani et al., 2017 decoder).

``token_ids (B, L) -> embeddings (+ positions) -> N x causal block -> LN -> logits (B, L, V)``
with the output projection tied to the token embedding by default.
"""

import keras
from keras_hub.layers import ReversibleEmbedding

from keras_transformers import attention as attention_registry
from keras_transformers import positional
from keras_transformers.blocks import TransformerDecoderBlock
from keras_transformers.models.encoder_classifier import check_model_sizes, needs_static_length
from keras_transformers.models.layers import embedding_position_layer, resolve_position


def build_decoder_lm(
    vocab_size,
    max_length,
    d_model=128,
    num_heads=4,
    num_layers=2,
    ff_dim=None,
    attention="full",
    position="learned",
    dropout=0.0,
    activation="gelu",
    norm_first=True,
    tie_embeddings=True,
    num_key_value_heads=None,
    name="decoder_lm",
):
    """Build a Functional causal language model.

    Args:
        vocab_size: vocabulary size ``V``.
        max_length: the longest sequence (size of a learned position table; the fixed input
            length for efficient attention cores, which block the sequence).
        d_model, num_heads, num_layers, ff_dim: sizes (``ff_dim`` defaults to ``4·d_model``).
        attention: any name in ``kt.attention.available()``, a config dict or an instance.
        position: any positional name (embedding- or score-side) or None.
        tie_embeddings: reuse the token embedding matrix as the output projection.

    Returns:
        ``keras.Model``: ``token_ids (B, L) int -> logits (B, L, V) float32``. Train with
        ``SparseCategoricalCrossentropy(from_logits=True)`` on next-token targets.
    """
    check_model_sizes(d_model, num_heads, num_layers)
    ff_dim = ff_dim or 4 * d_model
    embed_pos, score_pos = resolve_position(position)
    length = max_length if needs_static_length(attention) else None
    token_ids = keras.Input(shape=(length,), dtype="int32", name="token_ids")
    embedding = ReversibleEmbedding(
        vocab_size, d_model, tie_weights=tie_embeddings, name="token_embedding"
    )
    x = embedding(token_ids)  # (B, L, d)
    pos_layer = embedding_position_layer(embed_pos, max_length, "position_embedding")
    if pos_layer is not None:
        x = pos_layer(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="embedding_dropout")(x)
    for i in range(num_layers):
        x = TransformerDecoderBlock(
            num_heads,
            d_model // num_heads,
            ff_dim,
            attention=attention_registry.fresh(attention),
            position=None if score_pos is None else positional.fresh(score_pos),
            cross_attention=False,
            norm_first=norm_first,
            dropout=dropout,
            activation=activation,
            num_key_value_heads=num_key_value_heads,
            name=f"decoder_block_{i}",
        )(x)
    if norm_first:
        x = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")(x)
    logits = embedding(x, reverse=True)  # (B, L, V)
    logits = keras.layers.Activation("linear", dtype="float32", name="logits")(logits)
    return keras.Model(token_ids, logits, name=name)
