"""Adaptive Attention Span (Sukhbaatar, Grave, Bojanowski and Joulin, 2019, "Adaptive Attention
Span in Transformers", ACL).

Every head learns how far back it looks. Head ``i`` has a span ``z_i ∈ [0, S]`` (``S`` =
``max_span``); the attention weight of a key at distance ``x`` from the query is multiplied by a
soft, piecewise-linear mask that is 1 up to ``z``, falls to 0 over a ramp of ``R`` tokens, and is
differentiable in ``z``; the weights are renormalised over the keys. An L1 penalty on the spans
(``span_penalty``) pushes them down, so each head keeps only the context it needs:

``m_z(x) = clip((R + z − x) / R, 0, 1)``

``a_ij = m_z(x_ij) exp(s_ij) / Σ_r m_z(x_ir) exp(s_ir)``,  ``s_ij = q_i k_jᵀ / sqrt(dh)``

``loss += span_penalty · (1/h) Σ_i z_i``  (per layer, as in the paper's ``λ/M Σ z``).

The distance is ``x_ij = i − j`` with ``j <= i`` when causal (the paper's language-model
setting) and the symmetric ``|i − j|`` otherwise. Keys with ``x ≥ z + R`` get exactly zero weight.

Computed in blocks over a band of ``S`` keys, never as an ``L x L`` matrix: this is the banded
attention of ``sliding_window`` (window ``S``) with the log of the soft mask added to the scores,
``a = softmax(s + log m_z(x))`` (``log 0`` is the usual ``-1e9`` mask), which is exactly the
paper's renormalised product. Keys farther than ``S`` are never computed. With
``crop_band=True`` an eager (not traced) call computes only the band that the current spans can
reach, ``ceil(max_i z_i + R) − 1 <= S`` keys (the paper's speed-up at inference).

The paper's sum runs over the keys ``t − S .. t − 1``; here each token also sees itself (distance
0, ``m_z(0) = 1``), so a sequence without a memory has no empty first row and ``z >= L − 1``
gives full (causal) attention exactly. ``attend_self=False`` drops the token itself as in the
paper's equation.

Shapes: ``q (B, L, h, dh)``, ``k, v (B, L, h_kv, dh)`` -> ``(B, L, h, dh)``; ``z (h,)``;
blocked scores ``(B, h, L/b, b, 3b)`` (``(B, h, L/b, b, 2b)`` causal), ``b = S`` by default.
Cost: ``O(L·S·dh)`` time and ``O(L·S)`` memory; ``O(L·(z + R))`` with ``crop_band``.

Example:
    >>> import numpy as np, keras_transformers as kt
    >>> mha = kt.attention.MultiHeadAttention(
    ...     num_heads=2, key_dim=8, causal=True,
    ...     attention={"name": "adaptive_span", "max_span": 8, "ramp": 4, "span_penalty": 1e-3})
    >>> mha(np.zeros((1, 20, 16), "float32")).shape
    (1, 20, 16)
    >>> mha.attention_core.current_spans().shape
    (2,)
"""

import math

import keras
import numpy as np
from keras import ops

from keras_transformers.attention.registry import register
from keras_transformers.attention.sliding_window import window_block_size
from keras_transformers.attention.sparse_core import SparsePatternCore
from keras_transformers.ops import sparse_patterns as sp

_MASK_VALUE = -1e9


def soft_span_mask(distance, span, ramp):
    """The paper's soft mask ``m_z(x) = clip((R + z − x) / R, 0, 1)`` (float32).

    Args:
        distance: ``x``, any shape.
        span: ``z``, broadcastable to ``distance``.
        ramp: ``R > 0`` (Python float).
    """
    distance = ops.cast(distance, "float32")
    span = ops.cast(span, "float32")
    return ops.clip((ramp + span - distance) / ramp, 0.0, 1.0)


def log_span_mask(distance, span, ramp):
    """``log m_z(x)`` as an additive score term: ``-1e9`` where the mask is 0 (float32)."""
    mask = soft_span_mask(distance, span, ramp)
    return ops.where(mask > 0, ops.log(ops.maximum(mask, 1e-30)), _MASK_VALUE)


class _SpanMaskedPosition:
    """Score-side hook for the sparse engine: ``log m_z(x)`` per head plus an optional inner
    positional encoding (its bias is added, its value term kept)."""

    has_score_bias = True

    def __init__(self, inner, spans, ramp, causal):
        self.inner = inner
        self.spans = spans  # (h,) float32
        self.ramp = ramp
        self.causal = causal
        self.has_value_term = inner is not None and inner.has_value_term

    def score_bias(self, rel, query=None, key=None, causal=False):
        # rel = key_pos - query_pos, (G, bq, m)
        distance = -rel if self.causal else ops.abs(rel)
        spans = ops.reshape(self.spans, (1, -1) + (1,) * len(rel.shape))  # (1, h, 1, 1, 1)
        bias = log_span_mask(distance[None, None], spans, self.ramp)  # (1, h, G, bq, m)
        if self.inner is not None and self.inner.has_score_bias:
            extra = self.inner.score_bias(rel, query, key, causal)
            if extra is not None:
                bias = bias + ops.cast(extra, "float32")
        return bias

    def value_term(self, weights, rel):
        if self.inner is None:
            return None
        return self.inner.value_term(weights, rel)


class _UnitInterval(keras.constraints.Constraint):
    """Keeps the span ratios ``z / S`` in ``[0, 1]`` after each optimizer step."""

    def __call__(self, w):
        return ops.clip(w, 0.0, 1.0)


def _span_pattern(window, causal, attend_self):
    def pattern(qpos, kpos):
        dist = kpos - qpos
        allowed = np.abs(dist) <= window
        if causal:
            allowed = np.logical_and(allowed, dist <= 0)
        if not attend_self:
            allowed = np.logical_and(allowed, dist != 0)
        return allowed

    return pattern


@register("adaptive_span")
class AdaptiveSpanAttention(SparsePatternCore):
    """Banded attention whose per-head span ``z`` is learned through a soft mask.

    The learned span ratios stay float32 under ``model.quantize("int8")`` (one number per head
    feeding the soft mask; only the shell's projections are quantized).

    Args:
        max_span: ``S >= 1``, the largest span: keys farther than ``S`` are never computed.
        ramp: ``R > 0``, width of the soft ramp of the mask (the paper uses 32).
        initial_span: starting span ``z`` in tokens, a number in ``[0, S]`` or a list of one per
            head (the paper starts at 0 and lets the task grow the spans).
        span_penalty: weight ``λ`` of the L1 penalty ``λ · mean_i z_i`` added with ``add_loss``
            at every call (0 disables it; the paper uses 2e-6 per token of span).
        attend_self: each token also attends to itself (distance 0). ``False`` follows the
            paper's sum over ``t − S .. t − 1`` literally (a first token without a memory then
            has no key and gets zeros).
        crop_band: in eager calls, compute only the ``ceil(max z + R) − 1`` nearest keys that
            the current spans can reach (same result, less work); traced calls (``fit``,
            ``jit_compile``) always use the full band of ``S``.
        block_size: computation block ``b`` (default ``S``); any value gives the same result.
    """

    example_config = {"max_span": 8, "ramp": 4, "initial_span": 4.0}

    def __init__(
        self,
        max_span=512,
        ramp=32,
        initial_span=0.0,
        span_penalty=0.0,
        attend_self=True,
        crop_band=False,
        block_size=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.max_span = sp.check_int("max_span", max_span, 1)
        self.ramp = _check_number("ramp", ramp, 0.0, strict=True)
        self.initial_span = _check_spans(initial_span, self.max_span)
        self.span_penalty = _check_number("span_penalty", span_penalty, 0.0)
        self.attend_self = _check_bool("attend_self", attend_self)
        self.crop_band = _check_bool("crop_band", crop_band)
        self.block_size = sp.check_int("block_size", block_size, 1, allow_none=True)

    def build(self, query_shape, key_shape=None):
        num_heads = int(query_shape[2])
        init = np.asarray(self.initial_span, "float32")
        if init.ndim == 1 and init.shape[0] != num_heads:
            raise ValueError(
                f"initial_span={self.initial_span!r}: a list needs one span per head "
                f"(num_heads={num_heads})."
            )
        ratio = np.broadcast_to(init / self.max_span, (num_heads,)).astype("float32")
        # z / S in [0, 1], kept in float32 even under mixed precision.
        self.span_ratio = self.add_weight(
            name="span_ratio",
            shape=(num_heads,),
            initializer=keras.initializers.Zeros(),
            constraint=_UnitInterval(),
            autocast=False,
        )
        self.span_ratio.assign(ratio)
        self.built = True

    # ------------------------------------------------------------------ spans
    def spans(self):
        """The spans ``z`` in tokens as a float32 tensor ``(h,)``."""
        return ops.cast(self.span_ratio, "float32") * float(self.max_span)

    def current_spans(self):
        """The learned spans ``z`` in tokens, numpy ``(h,)``."""
        return ops.convert_to_numpy(self.spans()).astype("float32")

    def cropped_span(self, spans=None):
        """Keys per side that the current spans can reach: ``min(S, ceil(max z + R) − 1)``."""
        spans = self.current_spans() if spans is None else np.asarray(spans)
        reach = math.ceil(float(np.max(spans)) + self.ramp) - 1
        return int(min(self.max_span, max(1, reach)))

    def _concrete_spans(self):
        """Numpy spans when the variable has a concrete value (eager), else None (traced)."""
        try:
            return np.asarray(ops.convert_to_numpy(self.spans()), "float32")
        except Exception:  # noqa: BLE001 - symbolic/traced values cannot be read
            return None

    # ------------------------------------------------------------------ pattern
    def _block(self, length, window):
        return window_block_size(window, length, self.block_size)

    def _padded_length(self, length, window=None):
        block = self._block(length, window or self.max_span)
        return sp.ceil_div(length, block) * block

    def _parts(self, q, k, v, length, lp, causal, window=None):
        window = window or self.max_span
        block = self._block(length, window)
        reach = min(sp.ceil_div(window, block), lp // block - 1)
        part = sp.band_part(
            q,
            k,
            v,
            length,
            lp,
            block,
            before=reach,
            after=0 if causal else reach,
            pattern_fn=_span_pattern(window, causal, self.attend_self),
        )
        return [part]

    def compute(self, query, key, value, context):
        """``query (B, L, h, dh)``, ``key/value (B, L, h, ·)`` -> ``(B, L, h, dv)``: the band of
        ``S`` keys with the soft span mask ``log m_z`` added to the scores."""
        spans = self.spans()  # (h,)
        if self.span_penalty > 0:
            self.add_loss(self.span_penalty * ops.mean(spans))
        window = self.max_span
        if self.crop_band and not isinstance(query, keras.KerasTensor):
            concrete = self._concrete_spans()
            if concrete is not None:
                window = self.cropped_span(concrete)

        def build_parts(q, k, v, length, lp, is_causal):
            return self._parts(q, k, v, length, lp, is_causal, window)

        masked = _SpanMaskedPosition(context.position, spans, self.ramp, context.causal)
        return sp.sparse_compute(
            self,
            query,
            key,
            value,
            context.replace(position=masked),
            build_parts,
            lambda length: self._padded_length(length, window),
        )

    def get_config(self):
        return {
            **super().get_config(),
            "max_span": self.max_span,
            "ramp": self.ramp,
            "initial_span": self.initial_span,
            "span_penalty": self.span_penalty,
            "attend_self": self.attend_self,
            "crop_band": self.crop_band,
            "block_size": self.block_size,
        }


def _check_number(name, value, minimum, strict=False):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name}={value!r}: must be a number.")
    value = float(value)
    if not math.isfinite(value) or value < minimum or (strict and value == minimum):
        relation = ">" if strict else ">="
        raise ValueError(f"{name}={value}: must be a finite number {relation} {minimum:g}.")
    return value


def _check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name}={value!r}: must be True or False.")
    return bool(value)


def _check_spans(value, max_span):
    values = value if isinstance(value, (list, tuple)) else [value]
    if isinstance(value, (list, tuple)) and not value:
        raise ValueError("initial_span=[]: give a number or one number per head.")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise ValueError(f"initial_span={value!r}: must be a number or a list of numbers.")
        if not 0 <= float(v) <= max_span:
            raise ValueError(
                f"initial_span={value!r}: every span must be in [0, max_span={max_span}]."
            )
        out.append(float(v))
    return out if isinstance(value, (list, tuple)) else out[0]
