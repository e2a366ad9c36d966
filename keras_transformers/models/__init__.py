"""Model builders returning plain Functional ``keras.Model`` objects."""

from keras_transformers.models.decoder_lm import build_decoder_lm
from keras_transformers.models.encoder_classifier import (
    build_encoder_classifier,
    build_retrieval_classifier,
    build_text_encoder,
)
from keras_transformers.models.layers import PaddingMask, SequencePooling
from keras_transformers.models.seq2seq import build_seq2seq

__all__ = [
    "PaddingMask",
    "SequencePooling",
    "build_decoder_lm",
    "build_encoder_classifier",
    "build_retrieval_classifier",
    "build_text_encoder",
    "build_seq2seq",
]
