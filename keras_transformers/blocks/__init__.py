"""Transformer blocks: encoder, decoder, feed-forward."""

from keras_transformers.blocks.decoder import TransformerDecoderBlock
from keras_transformers.blocks.encoder import TransformerEncoderBlock
from keras_transformers.blocks.feedforward import FeedForward

__all__ = ["FeedForward", "TransformerDecoderBlock", "TransformerEncoderBlock"]
