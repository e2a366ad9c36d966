"""kNN-LM: interpolated probabilities against a numpy reference, the datastore, a retrieval
task where the kNN part lowers the loss, and the wrapped model's .keras round trip."""

import os

import keras
import numpy as np
import pytest
from keras import ops

from keras_transformers.memory.knn_lm import (
    KNNLM,
    build_knn_datastore,
    build_knn_lm,
    knn_lm_log_probs,
)
from keras_transformers.models.decoder_lm import build_decoder_lm

V, DK = 7, 3


def _np_knn_lm(hidden, logits, keys, tokens, k, lam, temperature, distance="squared_l2"):
    """Brute-force kNN-LM probabilities (B, L, V)."""
    d = ((hidden[..., None, :] - keys) ** 2).sum(-1)  # (B, L, S)
    if distance == "l2":
        d = np.sqrt(d)
    order = np.argsort(d, axis=-1, kind="stable")[..., :k]
    dk = np.take_along_axis(d, order, axis=-1)
    w = np.exp(-dk / temperature - np.max(-dk / temperature, axis=-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    p_knn = np.zeros(logits.shape)
    for idx in np.ndindex(*order.shape[:-1]):
        for j, slot in enumerate(order[idx]):
            p_knn[idx + (tokens[slot],)] += w[idx + (j,)]
    e = np.exp(logits - logits.max(-1, keepdims=True))
    p_lm = e / e.sum(-1, keepdims=True)
    return lam * p_knn + (1 - lam) * p_lm, p_knn


def _data(seed=0, s=20):
    rng = np.random.default_rng(seed)
    keys = rng.normal(size=(s, DK)).astype("float32")
    tokens = rng.integers(0, V, size=s)
    hidden = rng.normal(size=(2, 4, DK)).astype("float32")
    logits = rng.normal(size=(2, 4, V)).astype("float32") * 3
    return keys, tokens, hidden, logits


@pytest.mark.backends
@pytest.mark.parametrize("distance", ["squared_l2", "l2"])
def test_interpolated_probabilities_match_numpy_and_sum_to_one(distance):
    keys, tokens, hidden, logits = _data()
    knn = KNNLM(V, DK, datastore_size=32, top_k=5, interpolation=0.3, temperature=2.0,
                distance=distance, chunk_size=6)  # fmt: skip
    knn.add(keys, tokens)
    logp = ops.convert_to_numpy(knn(hidden, logits))
    ref, ref_knn = _np_knn_lm(hidden, logits, keys, tokens, 5, 0.3, 2.0, distance)
    np.testing.assert_allclose(np.exp(logp), ref, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.exp(logp).sum(-1), 1.0, atol=1e-5)
    p_knn = ops.convert_to_numpy(knn.knn_probs(hidden))
    np.testing.assert_allclose(p_knn, ref_knn, atol=1e-5)
    np.testing.assert_allclose(p_knn.sum(-1), 1.0, atol=1e-5)
    # p_kNN is zero for every token not among the k retrieved next tokens
    _, nn_tokens, _ = knn.neighbours(hidden)
    nn_tokens = ops.convert_to_numpy(nn_tokens)
    for idx in np.ndindex(2, 4):
        absent = np.setdiff1d(np.arange(V), nn_tokens[idx])
        assert (p_knn[idx][absent] == 0).all()


@pytest.mark.backends
def test_lambda_zero_is_exactly_the_lm_and_layer_list_call():
    keys, tokens, hidden, logits = _data(1)
    knn = KNNLM(V, DK, datastore_size=20, top_k=3, interpolation=0.0)
    knn.add(keys, tokens)
    ref = ops.convert_to_numpy(ops.log_softmax(logits, axis=-1))
    np.testing.assert_array_equal(ops.convert_to_numpy(knn(hidden, logits)), ref)
    np.testing.assert_array_equal(ops.convert_to_numpy(knn([hidden, logits])), ref)


@pytest.mark.backends
def test_datastore_fifo_overflow_and_fewer_entries_than_k():
    keys, tokens, hidden, logits = _data(2, s=10)
    knn = KNNLM(V, DK, datastore_size=4, top_k=6, interpolation=0.5)
    knn.add(keys[:3], tokens[:3])
    assert knn.size() == 3
    logp = ops.convert_to_numpy(knn(hidden, logits))  # k = 6 > 3 stored: uses the 3
    ref, _ = _np_knn_lm(hidden, logits, keys[:3], tokens[:3], 3, 0.5, 1.0)
    np.testing.assert_allclose(np.exp(logp), ref, rtol=1e-4, atol=1e-6)
    knn.add(keys[3:], tokens[3:])  # 10 written into 4 slots: the 4 newest survive
    stored = ops.convert_to_numpy(knn.keys)
    assert knn.size() == 4
    assert {tuple(r) for r in stored.round(5)} == {tuple(r) for r in keys[-4:].round(5)}
    knn.clear()
    assert knn.size() == 0
    np.testing.assert_allclose(  # empty datastore: p_kNN = 0, the LM part remains
        np.exp(ops.convert_to_numpy(knn(hidden, logits))).sum(-1), 0.5, atol=1e-5
    )


def test_validation_errors():
    with pytest.raises(ValueError, match="interpolation=1.5"):
        KNNLM(V, DK, 8, interpolation=1.5)
    with pytest.raises(ValueError, match="temperature=0"):
        KNNLM(V, DK, 8, temperature=0)
    with pytest.raises(ValueError, match="distance='cos'"):
        KNNLM(V, DK, 8, distance="cos")
    knn = KNNLM(V, DK, 8)
    with pytest.raises(ValueError, match="vocab_size=7"):
        knn.add(np.zeros((2, DK)), [1, 9])
    with pytest.raises(ValueError, match="hidden_layer='nope'"):
        build_knn_lm(build_decoder_lm(V, 4, d_model=8, num_heads=2, num_layers=1), knn, "nope")


def test_knn_recalls_a_stream_the_lm_has_not_learned(tmp_path):
    """An untrained LM over a stream of random tokens: the datastore of that stream holds each
    context's true next token at distance 0, so interpolation lowers the loss on the stream."""
    rng = np.random.default_rng(3)
    vocab, seg = 20, 8
    model = build_decoder_lm(vocab, seg, d_model=16, num_heads=2, num_layers=1)
    stream = rng.integers(0, vocab, size=4 * seg + 1)
    # an untrained LM's contexts lie close together (squared distances ~0.1), so a small
    # temperature makes the exact match (distance 0) dominate the k = 4 neighbours
    knn = build_knn_datastore(model, stream, seg, top_k=4, interpolation=0.5, temperature=0.01)
    assert knn.size() == 4 * seg
    x = stream[:-1].reshape(4, seg)
    y = stream[1:].reshape(4, seg)
    logp = knn_lm_log_probs(model, knn, x)
    log_lm = ops.convert_to_numpy(ops.log_softmax(model.predict(x, verbose=0), axis=-1))
    nll = -np.take_along_axis(logp, y[..., None], -1).mean()
    nll_lm = -np.take_along_axis(log_lm, y[..., None], -1).mean()
    assert nll < nll_lm - 0.3
    assert nll < np.log(1 / 0.5) + 0.2  # ~ -log(λ · p_kNN(true) ≈ λ) at most
    wrapped = build_knn_lm(model, knn)
    np.testing.assert_allclose(wrapped.predict(x, verbose=0), logp, atol=1e-5)
    path = os.path.join(tmp_path, "knn_lm.keras")
    wrapped.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), logp, atol=1e-5)
