"""Vanilla encoder-decoder Transformer (Vaswani et al., 2017, "Attention is all you need").

``encoder_token_ids (B, Ls) -> N_enc x encoder block``; ``decoder_token_ids (B, Lt) -> N_dec x
(causal self-attention + cross-attention over the encoder) -> logits (B, Lt, V_tgt)``. Token id 0
is padding in both streams.
"""

import keras

from keras_transformers import attention as attention_registry
from keras_transformers import positional
from keras_transformers.blocks import TransformerDecoderBlock, TransformerEncoderBlock
from keras_transformers.models.encoder_classifier import check_model_sizes
from keras_transformers.models.layers import (
    PaddingMask,
    embedding_position_layer,
    resolve_position,
)


def build_seq2seq(
    src_vocab_size,
    tgt_vocab_size,
    src_length,
    tgt_length,
    d_model=128,
    num_heads=4,
    num_encoder_layers=2,
    num_decoder_layers=2,
    ff_dim=None,
    attention="full",
    position="learned",
    dropout=0.1,
    activation="gelu",
    norm_first=True,
    name="seq2seq",
):
    """Build a Functional encoder-decoder model.

    ``attention`` sets the encoder self-attention and the decoder self-attention cores (decoder
    cross-attention stays full). ``position`` as in the other builders.

    Returns:
        ``keras.Model``: ``{"encoder_token_ids": (B, Ls), "decoder_token_ids": (B, Lt)} ->
        logits (B, Lt, V_tgt)``. Train with teacher forcing on shifted targets.
    """
    check_model_sizes(d_model, num_heads, max(num_encoder_layers, num_decoder_layers))
    ff_dim = ff_dim or 4 * d_model
    embed_pos, score_pos = resolve_position(position)
    enc_ids = keras.Input(shape=(src_length,), dtype="int32", name="encoder_token_ids")
    dec_ids = keras.Input(shape=(tgt_length,), dtype="int32", name="decoder_token_ids")
    enc_mask = PaddingMask(name="encoder_padding_mask")(enc_ids)
    dec_mask = PaddingMask(name="decoder_padding_mask")(dec_ids)

    def embed(ids, vocab, length, prefix):
        x = keras.layers.Embedding(vocab, d_model, name=f"{prefix}_token_embedding")(ids)
        pos_layer = embedding_position_layer(embed_pos, length, f"{prefix}_position_embedding")
        if pos_layer is not None:
            x = pos_layer(x)
        return keras.layers.Dropout(dropout, name=f"{prefix}_embedding_dropout")(x)

    def score_position():
        return None if score_pos is None else positional.fresh(score_pos)

    x = embed(enc_ids, src_vocab_size, src_length, "encoder")
    for i in range(num_encoder_layers):
        x = TransformerEncoderBlock(
            num_heads,
            d_model // num_heads,
            ff_dim,
            attention=attention_registry.fresh(attention),
            position=score_position(),
            norm_first=norm_first,
            dropout=dropout,
            activation=activation,
            name=f"encoder_block_{i}",
        )(x, padding_mask=enc_mask)
    if norm_first:
        x = keras.layers.LayerNormalization(epsilon=1e-5, name="encoder_final_norm")(x)
    encoded = x

    y = embed(dec_ids, tgt_vocab_size, tgt_length, "decoder")
    for i in range(num_decoder_layers):
        y = TransformerDecoderBlock(
            num_heads,
            d_model // num_heads,
            ff_dim,
            attention=attention_registry.fresh(attention),
            position=score_position(),
            cross_attention=True,
            norm_first=norm_first,
            dropout=dropout,
            activation=activation,
            name=f"decoder_block_{i}",
        )(y, encoded, padding_mask=dec_mask, encoder_padding_mask=enc_mask)
    if norm_first:
        y = keras.layers.LayerNormalization(epsilon=1e-5, name="decoder_final_norm")(y)
    logits = keras.layers.Dense(tgt_vocab_size, dtype="float32", name="logits")(y)
    return keras.Model(
        {"encoder_token_ids": enc_ids, "decoder_token_ids": dec_ids}, logits, name=name
    )
