"""Linformer attention (Wang et al., 2020, "Linformer: self-attention with linear complexity").

Keys and values are projected along the *length* axis from ``L`` rows to ``k`` rows by learned
matrices ``E, F`` of shape ``(k, L)``, so the attention matrix is ``L × k`` instead of ``L × L``:

``head_i = softmax(Q_i (E_i K_i)ᵀ / sqrt(dh)) (F_i V_i)``

(the survey writes ``E_i, F_i ∈ R^{L×k}``; as applied they are ``k × L`` -- catalogue erratum).

Sharing modes (``sharing=``):

* ``"none"``: separate ``E_i, F_i`` per head, weights ``(h, k, L)`` each;
* ``"headwise"`` (default): one ``E`` and one ``F`` shared by all heads of the layer;
* ``"kv"``: one matrix ``E = F`` shared by keys, values and all heads;
* ``"layerwise"``: one matrix as in ``"kv"``, meant to be shared across layers as well: create
  *one* instance and pass that same object to every layer
  (``core = kt.attention.get("linformer", sharing="layerwise", ...)``,
  ``MultiHeadAttention(..., attention=core)`` for each layer). Keras shares the weights of a
  reused layer object; builders that clone cores per layer (``registry.fresh``) do not share.

``max_length`` fixes the number of columns of ``E, F``; shorter key sequences use the first
``Lk`` columns, longer ones raise a clear error. Padded keys and values are zeroed before the
projection (they add nothing to the projected rows; the projection itself is not renormalised).
Linformer mixes all positions in the projection, so it cannot be causal (``causal=True`` raises).

Shapes: ``q (B, Lq, h, dh)``, ``k, v (B, Lk, h_kv, dh)`` -> ``(B, Lq, h, dv)``;
``E, F (k, L)`` (``(h, k, L)`` with ``sharing="none"``); ``K̄, V̄ (B, h, k, dh)``;
scores ``(B, h, Lq, k)``.
Cost: ``O(L·k·dh)`` time and memory.

Example:
    >>> import numpy as np, keras_transformers as kt
    >>> mha = kt.attention.MultiHeadAttention(
    ...     num_heads=2, key_dim=8,
    ...     attention={"name": "linformer", "projection_dim": 16, "max_length": 128})
    >>> tuple(mha(np.random.rand(1, 128, 16).astype("float32")).shape)
    (1, 128, 16)
"""

import keras
from keras import ops

from keras_transformers.attention.base import AttentionCore
from keras_transformers.attention.linear import check_int
from keras_transformers.attention.registry import register
from keras_transformers.ops.attention import attend, heads_first, heads_last

SHARING = ("none", "headwise", "kv", "layerwise")


@register("linformer")
class LinformerAttention(AttentionCore):
    """Low-rank attention with learned length projections ``E, F (k, L)``.

    ``model.quantize("int8")`` quantizes the shell's projections; ``E`` and ``F`` stay float32:
    they are raw weights of this core (no quantizable ``Dense``), applied along the length axis.

    Args:
        projection_dim: ``k``, the number of projected key/value rows (default 64).
        max_length: the largest key length ``L`` (columns of ``E, F``). None: the key length seen
            at build time (the model must then be built with a fixed length).
        sharing: ``"none"``, ``"headwise"`` (default), ``"kv"`` or ``"layerwise"`` (see module
            docstring).
        kernel_initializer: initializer of ``E, F`` (default ``N(0, 1/k)``).
    """

    supports_position_bias = False
    supports_attention_mask = False
    supports_cross_attention = True
    supports_causal = False
    supports_cache = False
    #: Each query attends over ``projection_dim`` mixtures ``E K`` of the keys, not the keys.
    supports_attention_scores = False
    example_config = {"projection_dim": 8}
    benchmark_config = {"projection_dim": 128}
    quick_benchmark_config = {"projection_dim": 16}

    def __init__(
        self,
        projection_dim=64,
        max_length=None,
        sharing="headwise",
        kernel_initializer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.projection_dim = check_int("projection_dim", projection_dim)
        self.max_length = None if max_length is None else check_int("max_length", max_length)
        if sharing not in SHARING:
            raise ValueError(
                f"sharing={sharing!r}: allowed values are {', '.join(repr(s) for s in SHARING)}."
            )
        self.sharing = sharing
        if kernel_initializer is None:
            kernel_initializer = keras.initializers.RandomNormal(
                stddev=1.0 / self.projection_dim**0.5
            )
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, query_shape, key_shape=None):
        key_shape = key_shape or query_shape
        key_length = key_shape[1]
        if self.max_length is None:
            if key_length is None:
                raise ValueError(
                    "attention='linformer' needs max_length= or a model built with a fixed "
                    "sequence length (the projections E, F have one column per position)."
                )
            self.max_length = int(key_length)
        self._check_length(key_length)
        k, length = self.projection_dim, self.max_length
        heads = int(query_shape[2])
        shape = (heads, k, length) if self.sharing == "none" else (k, length)
        self.key_projection = self.add_weight(
            name="key_projection", shape=shape, initializer=self.kernel_initializer
        )
        if self.sharing in ("none", "headwise"):
            self.value_projection = self.add_weight(
                name="value_projection", shape=shape, initializer=self.kernel_initializer
            )
        else:
            self.value_projection = None
        self.built = True

    def _check_length(self, key_length):
        if key_length is not None and self.max_length is not None and key_length > self.max_length:
            raise ValueError(
                f"attention='linformer' got a key sequence of length {key_length} > "
                f"max_length={self.max_length}: E and F have max_length columns. Build the core "
                "with a larger max_length or shorten the input."
            )

    def _project(self, weight, x, length):
        """Project ``x (B, h, L, d)`` along the length with ``weight[..., :L]`` -> ``(B, h, k, d)``."""
        w = ops.cast(weight[..., :length], x.dtype)  # (k, L) or (h, k, L)
        if self.sharing == "none":
            w = w[None]  # (1, h, k, L)
        return ops.matmul(w, x)  # (B, h, k, d)

    def compute(self, query, key, value, context):
        """``query (B, Lq, h, dh)``, ``key/value (B, Lk, h, ·)`` -> ``(B, Lq, h, dv)``."""
        key_length = key.shape[1]
        self._check_length(key_length)
        padding_mask = context.padding_mask
        q = heads_first(query)  # (B, h, Lq, dh)
        k = heads_first(key)  # (B, h, Lk, dh)
        v = heads_first(value)  # (B, h, Lk, dv)
        if padding_mask is not None:
            keep = ops.cast(padding_mask, k.dtype)[:, None, :, None]  # (B, 1, Lk, 1)
            k, v = k * keep, v * ops.cast(keep, v.dtype)
        value_weight = (
            self.key_projection if self.value_projection is None else (self.value_projection)
        )
        k_bar = self._project(self.key_projection, k, key_length)  # (B, h, k, dh)
        v_bar = self._project(value_weight, v, key_length)  # (B, h, k, dv)
        out, _ = attend(
            q, k_bar, v_bar, dropout=context.dropout
        )  # (B, h, Lq, dv), weights (B,h,Lq,k)
        if padding_mask is not None:
            any_key = ops.any(ops.cast(padding_mask, "bool"), axis=-1)  # (B,)
            out = out * ops.cast(any_key, out.dtype)[:, None, None, None]
        out = heads_last(out)  # (B, Lq, h, dv)
        return out

    def get_config(self):
        return {
            **super().get_config(),
            "projection_dim": self.projection_dim,
            "max_length": self.max_length,
            "sharing": self.sharing,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
