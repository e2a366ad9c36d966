"""Keras' own ``model.quantize("int8")`` reaches every projection of the attention shell and the
feed-forward; the int8 logits stay close to float32."""

import numpy as np
import pytest

import keras_transformers as kt
from keras_transformers.models.lora import projection_layers

pytestmark = pytest.mark.backends


def _relative_error(got, want):
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def _float_projection_kernels(model):
    layers = projection_layers(model)
    assert layers, "the model has no projection"
    return [
        layer.path
        for layer in layers
        for w in layer.weights
        if w.path.endswith("/kernel") and "float" in str(w.dtype)
    ]


@pytest.mark.parametrize(
    "build",
    [
        lambda: kt.models.build_decoder_lm(
            vocab_size=50, max_length=16, d_model=32, num_heads=4, num_layers=2, ff_dim=64
        ),
        lambda: kt.models.build_encoder_classifier(
            vocab_size=50,
            num_classes=3,
            max_length=16,
            d_model=32,
            num_heads=4,
            num_layers=2,
            ff_dim=64,
        ),
    ],
    ids=["decoder_lm", "classifier"],
)
def test_int8_quantizes_every_projection_and_keeps_the_logits(build):
    model = build()
    x = np.random.default_rng(0).integers(1, 50, size=(4, 16))
    want = np.asarray(model.predict(x, verbose=0), "float32")
    assert _float_projection_kernels(model)  # float before
    model.quantize("int8")
    assert _float_projection_kernels(model) == []
    got = np.asarray(model.predict(x, verbose=0), "float32")
    assert _relative_error(got, want) < 0.05


def test_every_shell_projection_is_a_keras_layer():
    mha = kt.attention.MultiHeadAttention(num_heads=2, key_dim=4)
    x = np.random.default_rng(1).normal(size=(2, 5, 8)).astype("float32")
    mha(x)
    assert sorted(mha.projections()) == ["output", "qkv"]
    assert mha.qkv_dense.kernel.shape == (8, 24)  # one fused q, k, v matmul
    cross = kt.attention.MultiHeadAttention(num_heads=2, key_dim=4)
    cross(x, value=x[:, :3])
    assert sorted(cross.projections()) == ["kv", "output", "query"]
    for dense in cross.projections().values():
        dense.quantize("int8")
    assert all(d.kernel.dtype == "int8" for d in cross.projections().values())
    assert cross(x, value=x[:, :3]).shape == (2, 5, 8)
