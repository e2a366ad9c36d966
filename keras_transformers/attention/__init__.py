"""Attention: the multi-head shell and one file per attention core.

``available()`` lists the registered cores, ``get(name, **kwargs)`` builds one, and
:class:`MultiHeadAttention` plugs any of them in with ``attention=``.

Every module in this package that defines a core registers it with ``@register("name")``; the
loop at the bottom imports them all, so adding a variant is adding one file.
"""

import importlib
import pkgutil

from keras_transformers.attention.base import AttentionCore
from keras_transformers.attention.full import FullAttention
from keras_transformers.attention.multi_head import MultiHeadAttention
from keras_transformers.attention.registry import REGISTRY, available, fresh, get, register

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "REGISTRY",
    "AttentionCore",
    "FullAttention",
    "MultiHeadAttention",
    "available",
    "fresh",
    "get",
    "register",
]
