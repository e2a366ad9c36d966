"""The shared contract every registered positional encoding must meet, through the builders:
causality of a decoder LM, padding invariance of an encoder, ``.keras`` round trip, one ``fit``
step (eager and XLA) with finite weights, mixed precision without NaN."""

import os

import keras
import numpy as np
import pytest

import keras_transformers as kt

pytestmark = pytest.mark.backends

NAMES = kt.positional.available()
B, L, V = 2, 16, 40


def lm(position, **kwargs):
    return kt.models.build_decoder_lm(
        vocab_size=V,
        max_length=L,
        d_model=16,
        num_heads=2,
        num_layers=1,
        position=position,
        **kwargs,
    )


def ids(seed=0):
    return np.random.default_rng(seed).integers(1, V, size=(B, L)).astype("int32")


def np_(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize("name", NAMES)
def test_decoder_lm_is_causal(name):
    model = lm(name)
    x = ids()
    x2 = x.copy()
    x2[:, 9:] = ids(1)[:, 9:]
    out1, out2 = np_(model(x)), np_(model(x2))
    np.testing.assert_allclose(out1[:, :9], out2[:, :9], atol=1e-5)
    assert np.abs(out1[:, 9:] - out2[:, 9:]).max() > 1e-5


@pytest.mark.parametrize("name", NAMES)
def test_encoder_ignores_padded_tokens(name):
    model = kt.models.build_encoder_classifier(
        vocab_size=V,
        num_classes=3,
        max_length=L,
        d_model=16,
        num_heads=2,
        num_layers=1,
        position=name,
        dropout=0.0,
    )
    x = ids()
    x[:, 12:] = 0  # padding
    a = np_(model(x))
    x2 = x.copy()
    x2[:, 12:] = 0
    np.testing.assert_allclose(a, np_(model(x2)), atol=1e-6)
    # changing a real token does change the prediction
    x3 = x.copy()
    x3[:, 3] = (x3[:, 3] % (V - 1)) + 1
    assert np.abs(a - np_(model(x3))).max() > 1e-6


@pytest.mark.parametrize("name", NAMES)
def test_positions_break_permutation_symmetry(name):
    # without positions a mean-pooled encoder is permutation invariant; with them it is not
    model = kt.models.build_encoder_classifier(
        vocab_size=V,
        num_classes=3,
        max_length=L,
        d_model=16,
        num_heads=2,
        num_layers=1,
        position=name,
        dropout=0.0,
    )
    x = ids()
    perm = np.random.default_rng(3).permutation(L)
    assert np.abs(np_(model(x)) - np_(model(x[:, perm]))).max() > 1e-6


@pytest.mark.parametrize("name", NAMES)
def test_save_load_identical(name, tmp_path):
    model = lm(name)
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(np_(model(ids())), np_(loaded(ids())), atol=1e-6)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("name", NAMES)
def test_fit_one_step(name, jit):
    model = lm(name)
    model.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=jit
    )
    hist = model.fit(ids(), ids(1), epochs=1, batch_size=B, verbose=0)
    assert np.isfinite(hist.history["loss"][0])
    assert all(np.isfinite(np_(w)).all() for w in model.trainable_weights)


@pytest.mark.parametrize("name", NAMES)
def test_mixed_precision(name):
    keras.config.set_dtype_policy("mixed_float16")
    model = lm(name)
    out = np_(model(ids()))
    assert out.dtype == np.float32 and np.isfinite(out).all()
