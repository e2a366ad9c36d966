"""Rotary position embedding, RoPE (Su et al., 2021, "RoFormer"), with its context-extension scalings.

Queries and keys are rotated by an angle proportional to their absolute position, so that their
dot product depends only on the offset:

``q_iᵀ k_j = (R_i q)ᵀ (R_j k) = qᵀ R_{j-i} k``, ``R_i = blockdiag(R(i θ_1), ..., R(i θ_{dh/2}))``,
``θ_t = base^(-2(t-1)/dh)`` (``base = max_wavelength``, 10000).

Values are not rotated (the survey's "key and value" wording is an erratum). RoPE has no
parameters and works with every attention core, efficient ones included, because it only
transforms ``q`` and ``k`` before attention.

Layout (``pairing``): ``"half"`` (the default) rotates dimension ``t`` with ``t + dh/2``
(``[x1, x2] -> [x1 cos - x2 sin, x2 cos + x1 sin]`` on the two contiguous halves), the
"rotate-half" layout of keras-hub's ``RotaryEmbedding`` and of Hugging Face Llama/Mistral/Gemma,
so their checkpoints load without permuting the query/key columns. ``"interleaved"`` rotates
``(2t, 2t+1)`` as in the paper (GPT-J, original Meta Llama weights). Both satisfy the same
relative-position property.

Scalings (``scaling={"type": ..., ...}``) change the frequencies ``θ_t`` for contexts longer than
the pre-training one, with keras-hub's conventions:

- ``linear`` (position interpolation, Chen et al., 2023): ``θ_t / factor``.
- ``dynamic`` (NTK-aware, bloc97 2023): ``θ_t / factor^(dh / (dh - 2))``, i.e. the base
  multiplied by ``factor^(dh/(dh-2))`` (keras-hub's form: fixed, not recomputed per length).
- ``yarn`` (Peng et al., 2023, "YaRN"): per dimension a ramp between interpolated
  (``θ_t / factor``) and original frequencies over the dimensions whose wavelengths make between
  ``beta_slow`` and ``beta_fast`` turns in ``original_max_length`` tokens; cos and sin are
  multiplied by ``0.1 ln(factor) + 1`` (attention temperature).
- ``llama3`` (Llama 3.1): wavelengths above ``original_max_length / low_freq_factor`` use
  ``θ_t / factor``, those below ``original_max_length / high_freq_factor`` stay, and those between
  blend with ``s = (original_max_length / λ - low) / (high - low)``:
  ``(1 - s) θ_t / factor + s θ_t``.

Shapes: ``q (B, Lq, h, dh)``, ``k (B, Lk, h_kv, dh)``; extra cost ``O(L·dh)`` per head.

Example:
    >>> import keras_transformers as kt
    >>> layer = kt.attention.MultiHeadAttention(num_heads=2, key_dim=8, position="rope")
    >>> llama3 = kt.positional.get({"name": "rope", "max_wavelength": 500000, "scaling": {
    ...     "type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
    ...     "original_max_length": 8192}})
"""

import math

from keras import ops

from keras_transformers.positional.base import PositionalEncoding
from keras_transformers.positional.registry import register

#: scaling type -> (required keys, optional keys with their defaults)
SCALINGS = {
    "linear": (("factor",), {}),
    "dynamic": (("factor",), {}),
    "yarn": (
        ("factor",),
        {"original_max_length": 4096, "beta_fast": 32.0, "beta_slow": 1.0, "truncate": True},
    ),
    "llama3": (("factor", "low_freq_factor", "high_freq_factor", "original_max_length"), {}),
}


def check_scaling(scaling):
    """Validate a ``scaling=`` dict and return it complete (defaults filled in), or None."""
    if scaling is None:
        return None
    if not isinstance(scaling, dict) or scaling.get("type") not in SCALINGS:
        got = scaling.get("type") if isinstance(scaling, dict) else scaling
        raise ValueError(
            f"scaling type {got!r}: allowed values are {', '.join(map(repr, SCALINGS))} "
            '(scaling={"type": ..., "factor": ...}).'
        )
    kind = scaling["type"]
    required, optional = SCALINGS[kind]
    missing = [key for key in required if key not in scaling]
    unknown = sorted(set(scaling) - {"type", *required, *optional})
    if missing or unknown:
        raise ValueError(
            f"scaling type {kind!r} takes {', '.join(required)}"
            + (f" (optional {', '.join(optional)})" if optional else "")
            + f"; missing {missing}, unknown {unknown}."
        )
    out = {"type": kind, **optional}
    for key, value in scaling.items():
        if key != "type":
            out[key] = bool(value) if key == "truncate" else float(value)
    if out["factor"] <= 0:
        raise ValueError(f"scaling factor={scaling['factor']}: must be > 0.")
    if kind == "llama3" and not out["high_freq_factor"] > out["low_freq_factor"]:
        raise ValueError("scaling llama3: high_freq_factor must be > low_freq_factor.")
    return out


def inverse_frequencies(dim, max_wavelength=10000.0, scaling=None):
    """The ``dh/2`` rotation frequencies ``θ_t`` (float32) after ``scaling``."""
    base = ops.cast(max_wavelength, "float32")
    exponent = ops.arange(0, dim, 2, dtype="float32") / ops.cast(dim, "float32")  # (dh/2,)
    inv = ops.power(base, -exponent)  # θ_t
    if scaling is None:
        return inv
    factor, kind = scaling["factor"], scaling["type"]
    if kind == "linear":
        return inv / factor
    if kind == "dynamic":
        return inv / ops.power(ops.cast(factor, "float32"), dim / max(1, dim - 2))
    if kind == "yarn":
        return _yarn_frequencies(inv, dim, float(max_wavelength), scaling)
    return _llama3_frequencies(inv, scaling)


def _yarn_frequencies(inv, dim, base, scaling):
    """YaRN: ramp from the extrapolated (``θ_t``) to the interpolated (``θ_t / factor``)."""

    def correction_dim(turns):  # the dimension whose wavelength fits `turns` times
        return (
            dim
            * math.log(scaling["original_max_length"] / (turns * 2 * math.pi))
            / (2 * math.log(base))
        )

    low, high = correction_dim(scaling["beta_fast"]), correction_dim(scaling["beta_slow"])
    if scaling["truncate"]:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0.0), min(high, dim - 1.0)
    ramp = ops.clip(
        (ops.arange(0, dim // 2, dtype="float32") - low) / max(high - low, 0.001), 0.0, 1.0
    )  # (dh/2,): 0 keeps θ_t, 1 interpolates
    return inv / scaling["factor"] * ramp + inv * (1.0 - ramp)


def _llama3_frequencies(inv, scaling):
    """Llama 3.1: long wavelengths interpolated, short ones kept, a smooth blend between."""
    factor, context = scaling["factor"], scaling["original_max_length"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    wavelength = 2 * math.pi / inv  # (dh/2,)
    smooth = (context / wavelength - low) / (high - low)
    blended = (1.0 - smooth) * inv / factor + smooth * inv
    out = ops.where(wavelength > context / low, inv / factor, inv)
    medium = ops.logical_and(wavelength >= context / high, wavelength <= context / low)
    return ops.where(medium, blended, out)


def rotate(x, positions, max_wavelength=10000.0, pairing="half", scaling_factor=1.0, scaling=None):
    """Rotate ``x (B, L, h, dh)`` by the angles of ``positions (L,)``.

    ``scaling_factor`` divides the positions (linear interpolation, kept for old configs);
    ``scaling`` is a checked scaling dict (:func:`check_scaling`).
    """
    x = ops.convert_to_tensor(x)
    dim = x.shape[-1]
    if dim % 2:
        raise ValueError(f"RoPE needs an even head size; got key_dim={dim}.")
    inv_freq = inverse_frequencies(dim, max_wavelength, scaling)  # (dh/2,)
    pos = ops.cast(positions, "float32") / scaling_factor
    angles = pos[:, None] * inv_freq[None, :]  # (L, dh/2)
    cos = ops.cast(ops.cos(angles), x.dtype)[None, :, None, :]  # (1, L, 1, dh/2)
    sin = ops.cast(ops.sin(angles), x.dtype)[None, :, None, :]
    if scaling is not None and scaling["type"] == "yarn":
        temperature = ops.cast(0.1 * math.log(scaling["factor"]) + 1.0, x.dtype)
        cos, sin = cos * temperature, sin * temperature
    if pairing == "half":
        x1, x2 = x[..., : dim // 2], x[..., dim // 2 :]
        return ops.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    pairs = ops.reshape(x, ops.shape(x)[:-1] + (dim // 2, 2))  # (B, L, h, dh/2, 2)
    x1, x2 = pairs[..., 0], pairs[..., 1]
    rotated = ops.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return ops.reshape(rotated, ops.shape(x))


@register("rope")
class RotaryEmbedding(PositionalEncoding):
    """RoPE as a score-side encoding.

    Args:
        max_wavelength: the base ``10000`` of ``θ`` (Llama 3: 500000).
        pairing: ``"half"`` or ``"interleaved"`` (see module docstring).
        scaling_factor: positions are divided by it (linear position interpolation).
        scaling: None or ``{"type": "linear" | "dynamic" | "yarn" | "llama3", ...}`` (see the
            module docstring for each type's keys).
    """

    kind = "score"

    def __init__(
        self, max_wavelength=10000.0, pairing="half", scaling_factor=1.0, scaling=None, **kwargs
    ):
        super().__init__(**kwargs)
        if pairing not in ("half", "interleaved"):
            raise ValueError(f"pairing={pairing!r}: allowed values are 'half', 'interleaved'.")
        self.max_wavelength = float(max_wavelength)
        self.pairing = pairing
        self.scaling_factor = float(scaling_factor)
        self.scaling = check_scaling(scaling)

    def transform_qk(self, query, key, query_positions, key_positions):
        args = (self.max_wavelength, self.pairing, self.scaling_factor, self.scaling)
        return rotate(query, query_positions, *args), rotate(key, key_positions, *args)

    def get_config(self):
        return {
            **super().get_config(),
            "max_wavelength": self.max_wavelength,
            "pairing": self.pairing,
            "scaling_factor": self.scaling_factor,
            "scaling": None if self.scaling is None else dict(self.scaling),
        }
