"""Universal Transformer classifier / LM builders: fit, ponder loss, causality, save/load."""

import os

import keras
import numpy as np
import pytest

from keras_transformers.models.universal import (
    build_universal_transformer_classifier,
    build_universal_transformer_lm,
)

RNG = np.random.default_rng(0)
CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def tokens(b=4, length=8, vocab=30):
    x = RNG.integers(1, vocab, size=(b, length)).astype("int32")
    x[:, 6:] = 0
    return x


def np_(x):
    return keras.ops.convert_to_numpy(x)


def round_trip(model, x, tmp_path):
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(np_(loaded(x)), np_(model(x)), atol=1e-5)
    return loaded


def test_classifier_fits_with_ponder_loss_and_round_trips(tmp_path):
    model = build_universal_transformer_classifier(30, 3, 8, d_model=16, num_heads=2, max_steps=3)
    x, y = tokens(), np.array([0, 1, 2, 0])
    assert model.output_shape == (None, 3)
    model.compile("adam", CE, jit_compile=False)
    model(x)
    assert len(model.losses) == 1  # the ACT ponder cost
    history = model.fit(x, y, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    steps = float(model.universal_block.average_ponder_steps.numpy())
    assert 1.0 <= steps <= 3.0
    loaded = round_trip(model, x, tmp_path)
    assert loaded.universal_block.max_steps == 3


def test_classifier_weight_count_independent_of_steps():
    counts = {
        build_universal_transformer_classifier(
            30, 3, 8, d_model=16, num_heads=2, max_steps=s
        ).count_params()
        for s in (1, 2, 5)
    }
    assert len(counts) == 1


def test_lm_is_causal_fits_and_round_trips(tmp_path):
    model = build_universal_transformer_lm(30, 8, d_model=16, num_heads=2, max_steps=2)
    x = RNG.integers(1, 30, size=(2, 8)).astype("int32")
    y1 = np_(model(x))
    assert y1.shape == (2, 8, 30)
    x2 = x.copy()
    x2[:, 5:] = (x2[:, 5:] % 29) + 1
    y2 = np_(model(x2))
    np.testing.assert_allclose(y1[:, :5], y2[:, :5], atol=1e-5)
    model.compile("adam", CE, jit_compile=False)
    history = model.fit(x, x, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    round_trip(model, x, tmp_path)


@pytest.mark.slow
def test_classifier_fits_under_xla():
    model = build_universal_transformer_classifier(30, 3, 8, d_model=16, num_heads=2, max_steps=2)
    model.compile("adam", CE, jit_compile=True)
    history = model.fit(tokens(), np.array([0, 1, 2, 0]), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
