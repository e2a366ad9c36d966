"""keras_transformers: the transformer family as Keras 3 layers and model builders.

import keras_transformers as kt
kt.attention.available()
model = kt.models.build_decoder_lm(vocab_size=260, max_length=128, attention="full",
                                   position="rope")
"""

__version__ = "0.1.0"

from keras_transformers import (
    attention,
    blocks,
    callbacks,
    data,
    generation,
    memory,
    models,
    ops,
    positional,
)  # noqa: E402,I001

__all__ = [
    "attention",
    "blocks",
    "callbacks",
    "data",
    "generation",
    "memory",
    "models",
    "ops",
    "positional",
    "__version__",
]
