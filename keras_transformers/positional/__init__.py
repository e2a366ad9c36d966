"""Positional encodings: embedding-side (sinusoidal, learned) and score-side (rope, alibi, shaw,
t5). ``available()`` lists them; ``get(name, **kwargs)`` builds one."""

from keras_transformers.positional.alibi import ALiBi, alibi_slopes
from keras_transformers.positional.base import PositionalEncoding
from keras_transformers.positional.learned import LearnedPositionEmbedding
from keras_transformers.positional.registry import REGISTRY, available, fresh, get, register
from keras_transformers.positional.rope import RotaryEmbedding
from keras_transformers.positional.shaw import ShawRelativePosition
from keras_transformers.positional.sinusoidal import SinusoidalPositionEmbedding, sinusoid_table
from keras_transformers.positional.t5 import T5RelativeBias, relative_position_bucket
from keras_transformers.positional.xl import XLRelativePosition

__all__ = [
    "REGISTRY",
    "ALiBi",
    "LearnedPositionEmbedding",
    "PositionalEncoding",
    "RotaryEmbedding",
    "ShawRelativePosition",
    "SinusoidalPositionEmbedding",
    "T5RelativeBias",
    "XLRelativePosition",
    "alibi_slopes",
    "available",
    "fresh",
    "get",
    "register",
    "relative_position_bucket",
    "sinusoid_table",
]
