"""Transformer blocks: encoder, decoder, feed-forward, normalization, reversible (Reformer) blocks."""

from keras_transformers.blocks.decoder import TransformerDecoderBlock
from keras_transformers.blocks.encoder import TransformerEncoderBlock
from keras_transformers.blocks.feedforward import FeedForward
from keras_transformers.blocks.gated import GatingLayer, GTrXLBlock
from keras_transformers.blocks.moe import MixtureOfExperts
from keras_transformers.blocks.norms import RMSNormalization
from keras_transformers.blocks.reversible import (
    ChunkedFeedForward,
    ReversibleBlock,
    ReversibleStack,
)
from keras_transformers.blocks.universal import UniversalTransformerBlock

__all__ = [
    "ChunkedFeedForward",
    "FeedForward",
    "GatingLayer",
    "GTrXLBlock",
    "MixtureOfExperts",
    "ReversibleBlock",
    "RMSNormalization",
    "ReversibleStack",
    "TransformerDecoderBlock",
    "TransformerEncoderBlock",
    "UniversalTransformerBlock",
]
