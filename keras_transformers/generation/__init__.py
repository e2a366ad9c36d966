"""Generation: KV-cached decoding for decoder LMs, with ``keras_hub.samplers``."""

from keras_transformers.generation.generator import Generator

__all__ = ["Generator"]
