"""The attention-core registry: ``available()``, ``get()``, ``register()``."""

from keras_transformers.attention.base import AttentionCore
from keras_transformers.registry import Registry

REGISTRY = Registry("attention", AttentionCore)
register = REGISTRY.register
available = REGISTRY.available
get = REGISTRY.get
fresh = REGISTRY.fresh
