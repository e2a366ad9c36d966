"""Generation: KV-cached decoding for decoder LMs and encoder-decoders, with
``keras_hub.samplers``."""

from keras_transformers.generation.generator import Generator
from keras_transformers.generation.pattern_cache import (
    CachedLocal2DAttention,
    CachedLocalAttention,
    PatternCache,
)
from keras_transformers.generation.seq2seq import Seq2SeqGenerator

__all__ = [
    "CachedLocal2DAttention",
    "CachedLocalAttention",
    "Generator",
    "PatternCache",
    "Seq2SeqGenerator",
]
