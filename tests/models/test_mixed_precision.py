"""mixed_bfloat16 decoder LM: the tied head multiplies in bfloat16, the logits and the loss stay
float32, transcendental activations run in float32, and the results match the float32 model
within bfloat16 tolerance (the speed figures are in docs/benchmarks/lm_throughput.md)."""

import math

import keras
import numpy as np
import pytest

import keras_transformers as kt
from keras_transformers.blocks.feedforward import apply_activation
from keras_transformers.models.backbone import head_compute_dtype

SIZES = dict(vocab_size=64, max_length=12, d_model=32, num_heads=2, num_layers=2)


def build(policy, **kwargs):
    keras.config.set_dtype_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        return kt.models.build_decoder_lm(**SIZES, **kwargs)
    finally:
        keras.config.set_dtype_policy("float32")


def test_head_compute_dtype_per_policy():
    assert head_compute_dtype(keras.dtype_policies.get("float32")) is None
    assert head_compute_dtype(keras.dtype_policies.get("mixed_bfloat16")) == "bfloat16"
    assert head_compute_dtype(keras.dtype_policies.get("mixed_float16")) == "float16"
    assert head_compute_dtype(keras.dtype_policies.get("bfloat16")) is None


@pytest.mark.parametrize("tie", [True, False])
def test_mixed_bfloat16_lm_matches_float32(tie):
    """Same weights: bf16 logits (float32 dtype) within bf16 tolerance of the float32 model."""
    lm16 = build("mixed_bfloat16", tie_embeddings=tie)
    lm32 = build("float32", tie_embeddings=tie)
    lm16.set_weights(lm32.get_weights())
    assert lm16.token_embedding.reverse_dtype == "bfloat16"
    assert lm32.token_embedding.reverse_dtype is None
    tokens = np.random.default_rng(0).integers(0, 64, (3, 12)).astype("int32")
    logits16 = lm16.predict(tokens, verbose=0)
    logits32 = lm32.predict(tokens, verbose=0)
    assert logits16.dtype == np.float32 and logits16.shape == (3, 12, 64)
    scale = np.abs(logits32).max()
    np.testing.assert_allclose(logits16, logits32, atol=0.05 * scale)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    targets = np.roll(tokens, -1, axis=1)
    assert abs(float(loss(targets, logits16)) - float(loss(targets, logits32))) < 0.02
    assert abs(float(loss(targets, logits32)) - math.log(64)) < 1.0


@pytest.mark.parametrize("name", ["gelu", "gelu_approximate", "silu", "tanh", "relu"])
def test_activation_in_bfloat16_is_float32_accurate(name):
    """A transcendental activation of a bf16 tensor = the float32 one rounded once to bf16."""
    x = np.linspace(-6, 6, 97).astype("float32")
    x16 = keras.ops.cast(x, "bfloat16")
    exact = keras.ops.convert_to_numpy(
        apply_activation(name, keras.ops.cast(x16, "float32"))
    )  # float32 of the same bf16 inputs
    got = apply_activation(name, x16)
    assert keras.backend.standardize_dtype(got.dtype) == "bfloat16"
    got = keras.ops.convert_to_numpy(keras.ops.cast(got, "float32"))
    np.testing.assert_allclose(got, exact, rtol=2**-8, atol=1e-6)
