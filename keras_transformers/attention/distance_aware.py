"""DA-Transformer distance-aware attention (Wu, Wu and Huang, 2021, NAACL, "DA-Transformer:
Distance-aware Transformer").

Idea: every head re-scales its (non-negative) attention scores by a learnable function of the real
token distance. Head ``i`` owns two scalars: a distance weight ``w_i`` (``w_i > 0`` makes the head
favour distant tokens, ``w_i < 0`` nearby ones) and a sigmoid parameter ``v_i`` that sets the upper
bound and the slope of the re-scaling. The raw scores are clipped with a ReLU first (the paper:
keeps them non-negative so the product with the coefficient acts as a re-weighting, and adds
sparsity), then multiplied element-wise by the coefficients before the softmax.

Equation (paper; the survey writes ``α_i, β_i`` for ``w_i, v_i``)::

    R_ij     = |i - j|                                   (distance="absolute", the paper's)
    R^(i)    = w_i · R
    R̂^(i)    = (1 + exp(v_i)) / (1 + exp(v_i - R^(i)))    (learnable sigmoid)
    head_i   = softmax( ReLU(Q_i K_iᵀ) ∘ R̂^(i) / sqrt(dh) ) V_i

``R̂(0) = 1``, ``R̂ -> 0`` as ``R^(i) -> -inf``, ``R̂ -> 1 + exp(v_i)`` as ``R^(i) -> +inf``, and
``R̂`` is strictly increasing. With ``w_i = 0`` the coefficients are all 1 and the head reduces to
``softmax(ReLU(Q Kᵀ) / sqrt(dh)) V`` (ReLU-clipped scaled dot-product attention, *not* plain
attention: the ReLU stays). ``distance="signed"`` uses ``R_ij = j - i`` instead (an option of this
library for direction-aware heads; under a causal mask it equals ``-|i - j|``, i.e. it flips the
sign of ``w_i``). Computed as ``R̂ = exp(softplus(v_i)) · sigmoid(w_i R - v_i)``, which is the same
function without overflow.

Shapes: ``q (B, Lq, h, dh)``, ``k, v (B, Lk, h_kv, dh)`` -> ``(B, Lq, h, dh)``; parameters
``w, v ∈ R^h`` per layer; the distance matrix and coefficients are ``(h, Lq, Lk)``.
Cost: ``O(L²·dh)`` time and ``O(L²)`` memory per head, like full attention (a dense variant, not an
efficient one); the re-scaling adds ``O(h·L²)`` time and ``2h`` parameters. Decoding with a cache
keeps every key and value, ``(B, 2, L_max, h_kv, dh)``, as full attention does.

Example:
    >>> import numpy as np, keras_transformers as kt
    >>> mha = kt.attention.MultiHeadAttention(num_heads=2, key_dim=8,
    ...                                       attention="distance_aware", causal=True)
    >>> mha(np.zeros((1, 6, 16), "float32")).shape
    (1, 6, 16)
"""

import keras
from keras import ops

from keras_transformers.attention.base import AttentionCore, KeyValueCache
from keras_transformers.attention.full import relative_positions
from keras_transformers.attention.registry import register
from keras_transformers.ops.attention import (
    heads_first,
    heads_last,
    masked_softmax,
    zero_empty_rows,
)
from keras_transformers.ops.masks import combine_masks

DISTANCES = ("absolute", "signed")


def rescale_coefficients(distance, weight, sigmoid_param):
    """The learnable sigmoid ``R̂ = (1 + e^v) / (1 + e^(v - w·R))`` per head, in float32.

    Args:
        distance: float32 ``(Lq, Lk)`` distances ``R``.
        weight: ``(h,)`` distance weights ``w``.
        sigmoid_param: ``(h,)`` sigmoid parameters ``v``.

    Returns:
        float32 ``(h, Lq, Lk)`` coefficients.
    """
    w = ops.cast(weight, "float32")[:, None, None]  # (h, 1, 1)
    v = ops.cast(sigmoid_param, "float32")[:, None, None]  # (h, 1, 1)
    scaled = w * distance[None]  # (h, Lq, Lk) = R^(i)
    # (1 + e^v) / (1 + e^(v - R)) = exp(softplus(v)) * sigmoid(R - v): no overflow for large |R|.
    return ops.exp(ops.softplus(v)) * ops.sigmoid(scaled - v)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _initializer(value, name):
    if _is_number(value):
        return keras.initializers.Constant(float(value))
    try:
        return keras.initializers.get(value)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"{name}={value!r}: must be a number or a Keras initializer ({error})."
        ) from None


@register("distance_aware")
class DistanceAwareAttention(KeyValueCache, AttentionCore):
    """DA-Transformer: ReLU scores re-scaled by a learnable sigmoid of the weighted distance.

    Args:
        distance: ``"absolute"`` (the paper's ``R_ij = |i - j|``) or ``"signed"``
            (``R_ij = j - i``).
        distance_initializer: initializer of the per-head distance weights ``w``, or a number
            (the same starting value for every head). Default zeros: the layer starts as ReLU
            attention and learns each head's distance preference.
        sigmoid_initializer: initializer of the per-head sigmoid parameters ``v``, or a number.
            Default zeros: coefficients in ``(0, 2)``.
    """

    supports_cache = True
    supports_cross_attention = False
    example_config = {"distance_initializer": -0.5}

    def __init__(
        self,
        distance="absolute",
        distance_initializer="zeros",
        sigmoid_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if distance not in DISTANCES:
            raise ValueError(
                f"distance={distance!r}: allowed values are {', '.join(map(repr, DISTANCES))}."
            )
        self.distance = distance
        self.distance_initializer = _initializer(distance_initializer, "distance_initializer")
        self.sigmoid_initializer = _initializer(sigmoid_initializer, "sigmoid_initializer")
        # numbers and names stay as given in get_config (short configs and titles)
        self._init_args = {
            "distance_initializer": distance_initializer,
            "sigmoid_initializer": sigmoid_initializer,
        }

    def build(self, query_shape, key_shape=None):
        num_heads = int(query_shape[2])
        self.distance_weight = self.add_weight(
            name="distance_weight", shape=(num_heads,), initializer=self.distance_initializer
        )  # w_i
        self.sigmoid_param = self.add_weight(
            name="sigmoid_param", shape=(num_heads,), initializer=self.sigmoid_initializer
        )  # v_i
        self.built = True

    def coefficients(self, query_length, key_length, query_offset=0):
        """Re-scaling coefficients ``R̂`` ``(h, Lq, Lk)`` float32 (for inspection and tests)."""
        rel = relative_positions(query_length, key_length, query_offset)  # (Lq, Lk) = j - i
        return self._coefficients(rel)

    def _coefficients(self, rel):
        rel = ops.cast(rel, "float32")
        distance = ops.abs(rel) if self.distance == "absolute" else rel  # (Lq, Lk)
        return rescale_coefficients(distance, self.distance_weight, self.sigmoid_param)

    def compute(self, query, key, value, context):
        """``query (B, Lq, h, dh)``, ``key/value (B, Lk, h, ·)`` -> ``(B, Lq, h, dv)``."""
        q_len, k_len = ops.shape(query)[1], ops.shape(key)[1]
        offset = context.query_offset
        mask = combine_masks(
            context.padding_mask, context.attention_mask, context.causal, q_len, k_len, offset
        )
        q, k, v = heads_first(query), heads_first(key), heads_first(value)  # (B, h, L, dh)
        # ReLU(q kᵀ)/sqrt(dh) = ReLU((q/sqrt(dh)) kᵀ): scale first so float16 stays in range.
        scale = 1.0 / float(query.shape[-1]) ** 0.5
        raw = ops.matmul(q * ops.cast(scale, q.dtype), ops.swapaxes(k, -1, -2))  # (B, h, Lq, Lk)
        raw = ops.relu(ops.cast(raw, "float32"))
        rel = relative_positions(q_len, k_len, offset)  # (Lq, Lk)
        scores = raw * self._coefficients(rel)[None]  # (B, h, Lq, Lk) float32
        position = context.position
        uses_bias = context.uses_position_bias
        if uses_bias and position.has_score_bias:
            bias = position.score_bias(rel, q, k, context.causal)
            if bias is not None:
                scores = scores + ops.cast(bias, "float32")
        weights = ops.cast(masked_softmax(scores, mask), value.dtype)  # (B, h, Lq, Lk)
        if context.dropout is not None:
            weights = context.dropout(weights)
        out = ops.matmul(weights, v)  # (B, h, Lq, dv)
        if uses_bias and position.has_value_term:
            out = out + ops.cast(position.value_term(weights, rel), out.dtype)
        out = zero_empty_rows(heads_last(out), mask)  # (B, Lq, h, dv)
        if context.return_scores:
            return out, weights
        return out

    def get_config(self):
        return {
            **super().get_config(),
            "distance": self.distance,
            **{
                name: float(value)
                if _is_number(value)
                else value
                if isinstance(value, str)
                else keras.initializers.serialize(getattr(self, name))
                for name, value in self._init_args.items()
            },
        }
