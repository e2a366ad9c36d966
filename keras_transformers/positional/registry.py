"""The positional-encoding registry: ``available()``, ``get()``, ``register()``."""

from keras_transformers.positional.base import PositionalEncoding
from keras_transformers.registry import Registry

REGISTRY = Registry("positional", PositionalEncoding)
register = REGISTRY.register
available = REGISTRY.available
get = REGISTRY.get
fresh = REGISTRY.fresh
