"""Tests of the GTrXL gate and block (Parisotto et al., 2019)."""

import os

import keras
import numpy as np
import pytest

from keras_transformers.blocks.gated import GATES, GatingLayer, GTrXLBlock

RNG = np.random.default_rng(0)


def np_(x):
    return keras.ops.convert_to_numpy(x)


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


# ----------------------------------------------------------------------------- numpy references
def reference_gate(gate, x, y, w):
    """The paper's gates in float64 numpy; w maps a weight name to its array."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    d = x.shape[-1]
    if gate == "gru":
        wr, wz, wg = (w["y_kernel"][:, i * d : (i + 1) * d] for i in range(3))
        ur, uz = (w["x_kernel"][:, i * d : (i + 1) * d] for i in range(2))
        r = sigmoid(y @ wr + x @ ur)
        z = sigmoid(y @ wz + x @ uz - w["gate_bias"])
        h = np.tanh(y @ wg + (r * x) @ w["reset_kernel"])
        return (1 - z) * x + z * h
    if gate == "input":
        return sigmoid(x @ w["x_kernel"]) * x + y
    if gate == "output":
        return x + sigmoid(x @ w["x_kernel"] - w["gate_bias"]) * y
    if gate == "highway":
        s = sigmoid(x @ w["x_kernel"] + w["gate_bias"])
        return s * x + (1 - s) * y
    if gate == "sigmoid_tanh":
        wg, ug = w["y_kernel"][:, :d], w["y_kernel"][:, d:]
        return x + sigmoid(y @ wg - w["gate_bias"]) * np.tanh(y @ ug)
    return x + y


@pytest.mark.parametrize("gate", GATES)
def test_gate_matches_numpy_reference(gate):
    x = RNG.normal(size=(2, 5, 6)).astype("float32")
    y = RNG.normal(size=(2, 5, 6)).astype("float32")
    layer = GatingLayer(gate=gate, gate_bias=1.5)
    layer(x, y)
    for weight in layer.weights:  # random values, including a non-constant bias
        weight.assign(RNG.normal(size=weight.shape).astype("float32") * 0.5)
    weights = {w.path.split("/")[-1]: np_(w).astype(np.float64) for w in layer.weights}
    np.testing.assert_allclose(np_(layer(x, y)), reference_gate(gate, x, y, weights), atol=1e-5)


def test_gru_gate_catalogue_value_with_zero_weights():
    """W = U = 0, b_g = 2: r = 1/2, z = σ(-2), ĥ = 0, so g = (1 - σ(-2)) x = 0.8808 x."""
    x = RNG.normal(size=(2, 4, 8)).astype("float32")
    y = RNG.normal(size=(2, 4, 8)).astype("float32")
    layer = GatingLayer("gru", gate_bias=2.0, kernel_initializer="zeros")
    np.testing.assert_allclose(np_(layer(x, y)), 0.8807971 * x, rtol=1e-5, atol=1e-6)


def test_gate_tends_to_identity_as_bias_grows():
    x = RNG.normal(size=(2, 4, 8)).astype("float32")
    y = RNG.normal(size=(2, 4, 8)).astype("float32")
    errors = []
    for bias in (0.0, 2.0, 6.0, 12.0):
        keras.utils.set_random_seed(0)  # the same weights for every bias (order-independent)
        errors.append(np.abs(np_(GatingLayer("gru", gate_bias=bias)(x, y)) - x).max())
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 1e-3


def test_gate_validation():
    with pytest.raises(ValueError, match="gate='lstm'"):
        GatingLayer("lstm")
    with pytest.raises(ValueError, match="gate_bias='2'"):
        GatingLayer("gru", gate_bias="2")
    with pytest.raises(ValueError, match="same width"):
        GatingLayer("gru")(np.zeros((1, 2, 4), "float32"), np.zeros((1, 2, 3), "float32"))


# ----------------------------------------------------------------------------- the block
def test_block_with_large_gate_bias_starts_near_identity():
    x = RNG.normal(size=(2, 10, 16)).astype("float32")
    block = GTrXLBlock(num_heads=2, key_dim=8, ff_dim=32, causal=True, gate_bias=12.0)
    assert np.abs(np_(block(x)) - x).max() < 1e-3
    # With b_g = 0 the block is far from the identity: the bias is what makes the difference.
    free = GTrXLBlock(num_heads=2, key_dim=8, ff_dim=32, causal=True, gate_bias=0.0)
    assert np.abs(np_(free(x)) - x).max() > 0.1


def test_block_follows_the_identity_map_reordering():
    """With gate='residual' the block is TrXL-I: x + ReLU(MHA(LN(x))), then + ReLU(FFN(LN(.)))."""
    x = RNG.normal(size=(2, 7, 16)).astype("float32")
    block = GTrXLBlock(num_heads=2, key_dim=8, ff_dim=24, gate="residual", causal=True)
    got = np_(block(x))
    e = x + np.maximum(np_(block.self_attention(block.attention_norm(x))), 0.0)
    want = e + np.maximum(np_(block.feedforward(block.feedforward_norm(e))), 0.0)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_block_is_causal_and_respects_padding():
    x = RNG.normal(size=(2, 12, 16)).astype("float32")
    block = GTrXLBlock(
        num_heads=2,
        key_dim=8,
        ff_dim=32,
        causal=True,
        gate_bias=0.5,
        attention={"name": "sliding_window", "window": 3},
        position="alibi",
    )
    x2 = x.copy()
    x2[:, 8:] = RNG.normal(size=x2[:, 8:].shape)
    np.testing.assert_allclose(np_(block(x))[:, :8], np_(block(x2))[:, :8], atol=1e-5)
    mask = np.ones((2, 12), bool)
    mask[:, 8:] = False
    plain = GTrXLBlock(num_heads=2, key_dim=8, ff_dim=32, gate_bias=0.5)
    a, b = np_(plain(x, padding_mask=mask)), np_(plain(x2, padding_mask=mask))
    np.testing.assert_allclose(a[:, :8], b[:, :8], atol=1e-5)


def _model(**kwargs):
    x = keras.Input((10, 16))
    y = GTrXLBlock(num_heads=2, key_dim=8, ff_dim=32, causal=True, **kwargs)(x)
    return keras.Model(x, keras.layers.Dense(3)(y))


def test_gradients_finite_and_fit_one_step():
    model = _model(gate="gru", position="rope")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    x = RNG.normal(size=(4, 10, 16)).astype("float32")
    y = RNG.normal(size=(4, 10, 3)).astype("float32")
    before = [np_(w).copy() for w in model.trainable_weights]
    history = model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    changed = 0
    for old, w in zip(before, model.trainable_weights):
        new = np_(w)
        assert np.isfinite(new).all(), w.path
        changed += int(np.abs(new - old).max() > 0)
    assert changed == len(before)  # every weight, gates included, received a gradient


def test_keras_round_trip(tmp_path):
    model = _model(gate="highway", gate_bias=1.0, attention={"name": "sliding_window", "window": 4})
    x = RNG.normal(size=(2, 10, 16)).astype("float32")
    path = os.path.join(tmp_path, "gtrxl.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(np_(model(x)), np_(loaded(x)), atol=1e-6)
    block = model.layers[1]
    clone = GTrXLBlock.from_config(block.get_config())
    assert clone.get_config() == block.get_config()


def test_block_validation():
    with pytest.raises(ValueError, match="ff_dim=0"):
        GTrXLBlock(num_heads=2, key_dim=8, ff_dim=0)
    with pytest.raises(ValueError, match="gate='gruu'"):
        GTrXLBlock(num_heads=2, key_dim=8, ff_dim=8, gate="gruu")
