"""RoPE scaling types (linear, dynamic/NTK, YaRN, Llama 3) against numpy and keras-hub's layers.

The numpy reference recomputes each type's frequencies from its formula in float64; the same
rotation must also equal keras-hub's ``RotaryEmbedding`` (``rope_type``) or, for Llama 3, its
``LlamaRotaryEmbedding``, whose checkpoints the converters load.
"""

import math

import keras
import numpy as np
import pytest
from keras_hub.layers import RotaryEmbedding as HubRotaryEmbedding
from keras_hub.src.models.llama.llama_rotary_embedding import LlamaRotaryEmbedding

import keras_transformers as kt
from keras_transformers.positional.rope import check_scaling, rotate

DH, L, BASE = 16, 40, 10000.0
X = np.random.default_rng(0).normal(size=(2, L, 3, DH)).astype("float32")  # (B, L, h, dh)

SCALINGS = {
    "linear": {"type": "linear", "factor": 4.0},
    "dynamic": {"type": "dynamic", "factor": 4.0},
    "yarn": {
        "type": "yarn",
        "factor": 8.0,
        "original_max_length": 64,
        "beta_fast": 32.0,
        "beta_slow": 1.0,
    },
    "llama3": {
        "type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_length": 32,
    },
}


def numpy_frequencies(kind, s):
    theta = BASE ** (-np.arange(0, DH, 2) / DH)  # (dh/2,)
    if kind == "linear":
        return theta / s["factor"], 1.0
    if kind == "dynamic":
        return theta / s["factor"] ** (DH / (DH - 2)), 1.0
    if kind == "yarn":

        def dim_of(turns):
            return (
                DH
                * math.log(s["original_max_length"] / (turns * 2 * math.pi))
                / (2 * math.log(BASE))
            )

        lo = max(math.floor(dim_of(s["beta_fast"])), 0)
        hi = min(math.ceil(dim_of(s["beta_slow"])), DH - 1)
        ramp = np.clip((np.arange(DH // 2) - lo) / max(hi - lo, 1e-3), 0, 1)
        return theta * (1 - ramp) + theta / s["factor"] * ramp, 0.1 * math.log(s["factor"]) + 1
    wavelength = 2 * np.pi / theta
    context, low, high = s["original_max_length"], s["low_freq_factor"], s["high_freq_factor"]
    smooth = (context / wavelength - low) / (high - low)
    out = np.where(wavelength > context / low, theta / s["factor"], theta)
    medium = (wavelength >= context / high) & (wavelength <= context / low)
    return np.where(medium, (1 - smooth) * theta / s["factor"] + smooth * theta, out), 1.0


def numpy_rope(x, inv, temperature):
    angles = np.arange(x.shape[1])[:, None] * inv[None, :]  # (L, dh/2)
    cos = (np.cos(angles) * temperature)[None, :, None, :]
    sin = (np.sin(angles) * temperature)[None, :, None, :]
    x1, x2 = x[..., : DH // 2], x[..., DH // 2 :]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def keras_hub_rope(kind, s):
    if kind == "llama3":
        layer = LlamaRotaryEmbedding(
            max_wavelength=BASE,
            frequency_adjustment_factor=s["factor"],
            low_freq_factor=s["low_freq_factor"],
            high_freq_factor=s["high_freq_factor"],
            pretraining_sequence_length=s["original_max_length"],
        )
    elif kind == "yarn":
        layer = HubRotaryEmbedding(
            max_wavelength=BASE,
            scaling_factor=s["factor"],
            rope_type="yarn",
            beta_fast=s["beta_fast"],
            beta_slow=s["beta_slow"],
            original_max_position_embeddings=s["original_max_length"],
        )
    else:
        layer = HubRotaryEmbedding(max_wavelength=BASE, scaling_factor=s["factor"], rope_type=kind)
    return keras.ops.convert_to_numpy(layer(X))


@pytest.mark.parametrize("kind", list(SCALINGS))
def test_scaling_matches_numpy_and_keras_hub(kind):
    scaling = check_scaling(SCALINGS[kind])
    got = keras.ops.convert_to_numpy(rotate(X, np.arange(L), BASE, scaling=scaling))
    inv, temperature = numpy_frequencies(kind, SCALINGS[kind])
    np.testing.assert_allclose(got, numpy_rope(X.astype("float64"), inv, temperature), atol=1e-4)
    np.testing.assert_allclose(got, keras_hub_rope(kind, SCALINGS[kind]), atol=1e-5)
    if kind != "linear":  # the scaling changes something (the test is not vacuous)
        assert np.abs(got - keras.ops.convert_to_numpy(rotate(X, np.arange(L), BASE))).max() > 0.1


def test_unscaled_layout_is_keras_hubs():
    got = keras.ops.convert_to_numpy(rotate(X, np.arange(L), BASE))
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(HubRotaryEmbedding()(X)), atol=1e-5)


def test_position_dict_through_the_builder():
    """(The .keras round trip of a scaled rope is in tests/models/test_backbone_options.py.)"""
    position = {"name": "rope", "max_wavelength": 500000, "scaling": SCALINGS["llama3"]}
    lm = kt.models.build_decoder_lm(23, 8, d_model=16, num_heads=2, num_layers=1, position=position)
    rope = lm.transformer_layers[0].self_attention.position
    assert rope.max_wavelength == 500000 and rope.scaling["type"] == "llama3"
    assert lm.get_config()["position"] == position
    assert rope.get_config()["scaling"] == check_scaling(SCALINGS["llama3"])


@pytest.mark.parametrize(
    "scaling, message",
    [
        ({"type": "ntk", "factor": 2.0}, "scaling type 'ntk'"),
        ({"type": "linear"}, r"missing \['factor'\]"),
        ({"type": "dynamic", "factor": 2.0, "original_max_length": 10}, "unknown"),
        (
            {
                "type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 4.0,
                "high_freq_factor": 1.0,
                "original_max_length": 32,
            },
            "high_freq_factor",
        ),
    ],
)
def test_bad_scaling_names_the_problem(scaling, message):
    with pytest.raises(ValueError, match=message):
        kt.positional.get({"name": "rope", "scaling": scaling})
