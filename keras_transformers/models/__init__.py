"""Model builders returning plain Functional ``keras.Model`` objects."""

from keras_transformers.models.adaptive_depth import (
    EarlyExitPredictor,
    ExitAccuracy,
    ExitStack,
    MultiExitLoss,
    build_early_exit_classifier,
    build_early_exit_lm,
)
from keras_transformers.models.decoder_lm import build_decoder_lm
from keras_transformers.models.encoder_classifier import (
    build_encoder_classifier,
    build_retrieval_classifier,
    build_text_encoder,
)
from keras_transformers.models.layers import PaddingMask, SequencePooling
from keras_transformers.models.seq2seq import build_seq2seq
from keras_transformers.models.universal import (
    build_universal_transformer_classifier,
    build_universal_transformer_lm,
)

__all__ = [
    "EarlyExitPredictor",
    "ExitAccuracy",
    "ExitStack",
    "MultiExitLoss",
    "build_early_exit_classifier",
    "build_early_exit_lm",
    "build_universal_transformer_classifier",
    "build_universal_transformer_lm",
    "PaddingMask",
    "SequencePooling",
    "build_decoder_lm",
    "build_encoder_classifier",
    "build_retrieval_classifier",
    "build_text_encoder",
    "build_seq2seq",
]
