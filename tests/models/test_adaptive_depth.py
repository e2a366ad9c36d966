"""Early-exit models (Depth-Adaptive Transformer, CALM): exit losses, confidence, predictor."""

import os

import keras
import numpy as np
import pytest

from keras_transformers.models.adaptive_depth import (
    EarlyExitPredictor,
    ExitAccuracy,
    MultiExitLoss,
    build_early_exit_classifier,
    build_early_exit_lm,
    confidence,
    normalized_exit_weights,
)

RNG = np.random.default_rng(0)
N = 3


def np_(x):
    return keras.ops.convert_to_numpy(x)


@pytest.fixture(scope="module")
def classifier():
    keras.utils.set_random_seed(1)
    model = build_early_exit_classifier(30, 4, 8, d_model=16, num_heads=2, num_layers=N)
    x = RNG.integers(1, 30, size=(6, 8)).astype("int32")
    x[:, 6:] = 0
    return model, x, np_(model(x))  # (B, N, C)


@pytest.fixture(scope="module")
def lm():
    keras.utils.set_random_seed(2)
    model = build_early_exit_lm(30, 8, d_model=16, num_heads=2, num_layers=N)
    x = RNG.integers(1, 30, size=(2, 6)).astype("int32")
    return model, x, np_(model(x))  # (B, N, L, V)


def test_confidence_measures_catalogue_values():
    logits = np.log([0.6, 0.3, 0.1])
    np.testing.assert_allclose(confidence("softmax_response", logits), 0.3, atol=1e-9)
    np.testing.assert_allclose(confidence("softmax_max", logits), 0.6, atol=1e-9)
    h = RNG.normal(size=(3, 8))
    np.testing.assert_allclose(confidence("saturation", None, h, h), 1.0, atol=1e-12)
    with pytest.raises(ValueError, match="confidence='entropy'"):
        confidence("entropy", logits)


def test_exit_weights():
    np.testing.assert_allclose(normalized_exit_weights(4, "uniform"), [0.25] * 4)
    np.testing.assert_allclose(normalized_exit_weights(3, "linear"), [1 / 6, 2 / 6, 3 / 6])
    np.testing.assert_allclose(normalized_exit_weights(2, [1, 3]), [0.25, 0.75])
    with pytest.raises(ValueError, match="exit_weights='cubic'"):
        MultiExitLoss("cubic")


def np_ce(y, logits):
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return -np.take_along_axis(logp, y[..., None], -1)[..., 0]


@pytest.mark.parametrize("weights", ["uniform", "linear"])
def test_multi_exit_loss_is_weighted_average_of_exit_losses(classifier, lm, weights):
    _, _, logits = classifier
    y = RNG.integers(0, 4, size=(logits.shape[0],))
    w = normalized_exit_weights(N, weights)
    expected = np.mean(sum(w[n] * np_ce(y, logits[:, n]) for n in range(N)))
    got = float(MultiExitLoss(weights)(y, logits))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    _, x, lm_logits = lm  # token-level: mean over positions, then weighted over exits
    expected = np.mean(sum(w[n] * np_ce(x, lm_logits[:, n]).mean(-1) for n in range(N)))
    np.testing.assert_allclose(float(MultiExitLoss(weights)(x, lm_logits)), expected, rtol=1e-5)


class CountingBlock:
    def __init__(self, block, calls):
        self.block, self.calls = block, calls

    def __call__(self, *args, **kwargs):
        self.calls.append(args[0].shape[0])
        return self.block(*args, **kwargs)


@pytest.mark.parametrize(
    "measure,threshold",
    [("softmax_max", 0.0), ("softmax_response", 0.0), ("saturation", -1.0)],  # cos >= -1
)
def test_classifier_threshold_zero_uses_one_layer(classifier, measure, threshold):
    model, x, full = classifier
    predictor = EarlyExitPredictor(model, threshold=threshold, confidence=measure)
    calls = []
    predictor.blocks = [CountingBlock(b, calls) for b in predictor.blocks]
    logits, used = predictor.predict(x)
    assert calls == [len(x)]  # layers 2..N never ran
    np.testing.assert_array_equal(used, 1)
    assert predictor.average_layers == 1.0
    np.testing.assert_allclose(logits, full[:, 0], atol=1e-5)


def test_classifier_threshold_above_one_matches_full_model(classifier):
    model, x, full = classifier
    predictor = EarlyExitPredictor(model, threshold=1.01)
    logits, used = predictor.predict(x)
    np.testing.assert_array_equal(used, N)
    assert predictor.average_layers == N
    np.testing.assert_allclose(logits, full[:, -1], atol=1e-5)


def test_classifier_mixed_exits_use_the_exit_layer_logits(classifier):
    model, x, full = classifier
    conf = [confidence("softmax_max", full[:, n]) for n in range(N)]
    threshold = float(np.median(conf[0]))  # about half the batch exits at layer 1
    predictor = EarlyExitPredictor(model, threshold=threshold)
    calls = []
    predictor.blocks = [CountingBlock(b, calls) for b in predictor.blocks]
    logits, used = predictor.predict(x)
    for b in range(len(x)):
        first = next((n for n in range(N) if conf[n][b] >= threshold), N - 1)
        assert used[b] == first + 1
        np.testing.assert_allclose(logits[b], full[b, first], atol=1e-5)
    assert calls[0] == len(x) and (len(calls) == 1 or calls[1] < len(x))  # only the rest go on
    assert predictor.average_layers == used.mean()


def test_lm_threshold_zero_and_above_one(lm):
    model, x, full = lm
    predictor = EarlyExitPredictor(model, threshold=0.0, confidence="softmax_response")
    logits, used = predictor.score(x)
    np.testing.assert_array_equal(used, 1)
    np.testing.assert_allclose(logits, full[:, 0], atol=1e-5)  # layer-1 states feed layer 1 only
    predictor = EarlyExitPredictor(model, threshold=2.0)
    logits, used = predictor.score(x)
    np.testing.assert_array_equal(used, N)
    assert predictor.average_layers == N
    np.testing.assert_allclose(logits, full[:, -1], atol=1e-5)


def test_lm_per_token_exit_copies_state(lm):
    model, x, full = lm
    predictor = EarlyExitPredictor(model, threshold=0.0)
    calls = []
    predictor.blocks = [CountingBlock(b, calls) for b in predictor.blocks]
    predictor.score(x)
    assert len(calls) == x.shape[1]  # one layer per token
    # a mixed threshold: token 0 has no context, so its logits are exactly its exit layer's
    conf0 = [confidence("softmax_max", full[:, n, 0]) for n in range(N)]
    threshold = float(np.mean(conf0[0]))
    predictor = EarlyExitPredictor(model, threshold=threshold)
    logits, used = predictor.score(x)
    for b in range(len(x)):
        n = used[b, 0] - 1
        np.testing.assert_allclose(logits[b, 0], full[b, n, 0], atol=1e-5)
    assert 1.0 <= predictor.average_layers <= N


def test_lm_generate_without_exit_matches_greedy_full_model(lm):
    model, x, _ = lm
    predictor = EarlyExitPredictor(model, threshold=2.0)
    tokens, used = predictor.generate(x[:, :2], 3)
    ref = x[:, :2]
    for _ in range(3):
        nxt = np_(model(ref))[:, -1, -1].argmax(-1)
        ref = np.concatenate([ref, nxt[:, None].astype("int32")], 1)
    np.testing.assert_array_equal(tokens, ref)
    np.testing.assert_array_equal(used[:, :-1], N)


def test_fit_one_step_and_round_trip(tmp_path):
    model = build_early_exit_classifier(30, 3, 8, d_model=16, num_heads=2, num_layers=2)
    x = RNG.integers(1, 30, size=(4, 8)).astype("int32")
    y = np.array([0, 1, 2, 0])
    model.compile("adam", MultiExitLoss(), metrics=[ExitAccuracy(-1)], jit_compile=False)
    history = model.fit(x, y, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert 0.0 <= history.history["exit_-1_accuracy"][0] <= 1.0
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(np_(loaded(x)), np_(model(x)), atol=1e-5)
    assert isinstance(loaded.loss, MultiExitLoss)


@pytest.mark.slow
def test_lm_fit_one_step():
    x = RNG.integers(1, 30, size=(4, 8)).astype("int32")
    lm_model = build_early_exit_lm(30, 8, d_model=16, num_heads=2, num_layers=2)
    lm_model.compile("adam", MultiExitLoss("linear"), jit_compile=False)
    assert np.isfinite(lm_model.fit(x, x, epochs=1, verbose=0).history["loss"][0])


def test_predictor_rejects_other_models():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="model"):
        EarlyExitPredictor(model)
    with pytest.raises(ValueError, match="confidence='x'"):
        EarlyExitPredictor(model, confidence="x")
