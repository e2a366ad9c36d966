"""Al-Rfou et al. auxiliary losses: the decay schedule (exactly 0 at i/(2N), then no gradient),
the loss against a numpy reference, per-layer learned positions against a numpy composition, and
the builder (fit with the callback, .keras round trip, cached generate, errors)."""

import keras
import numpy as np
import pytest

from keras_transformers.callbacks.aux_schedule import AuxiliaryLossSchedule
from keras_transformers.models.al_rfou import AlRfouLM, build_al_rfou_lm, layer_loss_weights

V, L, N = 20, 8, 4


def _lm(**kw):
    args = dict(vocab_size=V, max_length=L, d_model=8, num_heads=2, num_layers=N, num_future=2)
    return build_al_rfou_lm(**{**args, **kw})


def _np_ce(targets, logits):
    logits = logits - logits.max(-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return -np.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]


def test_layer_weights_reach_zero_exactly_at_i_over_2n():
    for i in range(1, N):
        end = i / (2 * N)
        assert layer_loss_weights(end, N)[i - 1] == 0.0
        assert layer_loss_weights(end * 0.999, N)[i - 1] > 0.0
        assert layer_loss_weights(end / 2, N)[i - 1] == pytest.approx(0.5)
    assert np.all(layer_loss_weights(0.5, N) == 0.0) and np.all(layer_loss_weights(1.0, N) == 0)
    np.testing.assert_allclose(layer_loss_weights(0.0, N), 1.0)


@pytest.fixture(scope="module")
def lm():
    return _lm()


def test_loss_matches_numpy_reference(lm):
    rng = np.random.default_rng(0)
    y = rng.integers(0, V, size=(3, L))
    pred = rng.normal(size=(3, N + 2, L, V)).astype("float32")
    w = np.array([0.7, 0.2, 0.0], "float32")
    got = float(keras.ops.convert_to_numpy(lm.auxiliary_loss(y, pred, progress_weights=w)))
    ref = _np_ce(y, pred[:, N - 1]).mean()
    ref += sum(w[i] * _np_ce(y, pred[:, i]).mean() for i in range(N - 1))
    for f in (1, 2):  # head f at position t predicts y[t + f]
        ref += 0.5 * _np_ce(y[:, f:], pred[:, N - 1 + f, : L - f]).mean()
    assert got == pytest.approx(ref, rel=1e-5)


def test_per_layer_positions_match_numpy_composition(lm):
    assert len(lm.layer_positions) == N and lm.position_embedding is None
    x = np.random.default_rng(1).integers(0, V, size=(2, L)).astype("int32")
    emb = keras.ops.convert_to_numpy(lm.token_embedding.embeddings)  # (V, d)
    h = emb[x]
    for table, block in zip(lm.layer_positions, lm.transformer_layers):
        h = h + keras.ops.convert_to_numpy(table.table)[:L][None]  # E_pos^i at layer i's input
        h = keras.ops.convert_to_numpy(block(h))
    mu, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
    gamma, beta = (keras.ops.convert_to_numpy(v) for v in lm.final_norm.weights)
    logits = ((h - mu) / np.sqrt(var + 1e-5) * gamma + beta) @ emb.T
    got = keras.ops.convert_to_numpy(lm(x))[:, N - 1]
    np.testing.assert_allclose(got, logits, rtol=1e-4, atol=1e-4)


def test_fit_schedule_then_no_gradient_to_dropped_layers(lm, tmp_path):
    x = np.random.default_rng(2).integers(0, V, size=(16, L)).astype("int32")
    lm.compile(keras.optimizers.SGD(learning_rate=1.0))
    callback = AuxiliaryLossSchedule()
    history = lm.fit(x, x, batch_size=4, epochs=2, verbose=0, callbacks=[callback])
    # 8 steps: after epoch 1 p = 0.5, every intermediate weight is exactly 0
    assert [p for _, p, _ in callback.history] == [0.5, 1.0]
    assert history.history["aux_weight_layer_3"] == [0.0, 0.0]
    norms = [[keras.ops.convert_to_numpy(v).copy() for v in n.weights] for n in lm.layer_norms]
    lm.fit(x[:4], x[:4], batch_size=4, epochs=1, verbose=0)  # p stays 1: no gradient flows
    for before, layer in zip(norms, lm.layer_norms):
        for b, v in zip(before, layer.weights):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(v), b)
    lm.set_schedule_steps(100)  # a new schedule: the layers are scored again
    lm.fit(x[:4], x[:4], batch_size=4, epochs=1, verbose=0)
    assert not np.array_equal(keras.ops.convert_to_numpy(lm.layer_norms[0].weights[0]), norms[0][0])
    path = tmp_path / "al_rfou.keras"
    lm.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, AlRfouLM) and loaded.progress() == pytest.approx(0.01)
    assert lm.generate(x[:2, :3], max_length=6, jit=False).shape == (2, 6)


def test_errors_name_the_argument(lm):
    with pytest.raises(ValueError, match="position='rope'"):
        _lm(position="rope")
    with pytest.raises(ValueError, match="num_future=8"):
        _lm(num_future=8)


@pytest.mark.parametrize("position", ["learned_per_layer", "learned"])
def test_cached_generation_equals_recomputing_the_window(position):
    """The KV-cached decode adds E_pos^i[t] at block i as the full pass does: same tokens."""
    lm = _lm(position=position, num_future=1)
    rng = np.random.default_rng(4)
    # larger weights so that the greedy choice is not a near tie between similar logits
    lm.set_weights([w * 4.0 if w.ndim == 2 else w for w in lm.get_weights()])
    prompt = rng.integers(1, V, size=(2, 3)).astype("int32")
    assert lm.generator(use_cache=None, jit=False).use_cache  # caches by default
    cached = lm.generate(prompt, max_length=L, use_cache=True, jit=False)
    recomputed = lm.generate(prompt, max_length=L, use_cache=False, jit=False)
    np.testing.assert_array_equal(cached, recomputed)
    # the cached step's logits equal the full pass's row for every position
    gen = lm.generator(use_cache=True, jit=False)
    logits, _, _ = gen.call_with_cache(cached, gen.empty_cache(2, L), 0)
    full = keras.ops.convert_to_numpy(lm(cached))[:, N - 1]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(logits), full, rtol=1e-4, atol=1e-4)
