"""SPALM: the gate and the episodic memory against numpy references, the catalogue's V12
properties, and the LM builder (datastore, fit, .keras round trip)."""

import keras
import numpy as np
import pytest

from keras_transformers.memory.spalm import EpisodicMemory, SPALMGate
from keras_transformers.models.spalm import SPALMLM, build_spalm_datastore, build_spalm_lm

B, L, K, D = 2, 5, 3, 6


def _np_gate(h, y, found, w):
    """Dense numpy SPALM gate: m = Σ softmax(yᵀh)·y over found, g = σ(wᵀh), z = (1-g)m + gh."""
    scores = np.einsum("blkd,bld->blk", y, h)
    scores = np.where(found, scores, -np.inf)
    e = np.exp(scores - scores.max(-1, keepdims=True))
    e = np.where(found, e, 0.0)
    a = e / e.sum(-1, keepdims=True)
    m = np.einsum("blk,blkd->bld", a, y)
    g = 1.0 / (1.0 + np.exp(-(h @ w)))  # (B, L, 1)
    return (1 - g) * m + g * h, g, m


def _gate(seed=0):
    gate = SPALMGate(kernel_initializer=keras.initializers.RandomNormal(seed=seed))
    gate.build((B, L, D))
    return gate


def test_gate_matches_numpy_reference():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(B, L, D)).astype("float32")
    y = rng.normal(size=(B, L, K, D)).astype("float32")
    found = rng.random((B, L, K)) > 0.3
    found[..., 0] = True  # every position found something
    gate = _gate()
    z, g, m = (keras.ops.convert_to_numpy(t) for t in gate(h, y, found, return_memory=True))
    z_ref, g_ref, m_ref = _np_gate(h, y, found, keras.ops.convert_to_numpy(gate.kernel))
    np.testing.assert_allclose(m, m_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(z, z_ref, rtol=1e-5, atol=1e-5)


def test_gate_properties():
    """V12: m_t is convex in the y_i (equal y_i give m_t = y_1); g_t = 1 gives z_t = h; nothing
    found gives z_t = h."""
    rng = np.random.default_rng(1)
    h = rng.normal(size=(B, L, D)).astype("float32")
    y = np.repeat(rng.normal(size=(B, L, 1, D)), K, axis=2).astype("float32")
    gate = _gate()
    z, g, m = gate(h, y, np.ones((B, L, K), bool), return_memory=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(m), y[:, :, 0], rtol=1e-5, atol=1e-6)
    # a huge w_g along h drives g to 1 in float32: the memory is ignored
    gate.kernel.assign(1e4 * np.ones((D, 1), "float32"))
    hp = np.abs(h) + 0.1
    z, g = gate(hp, y, np.ones((B, L, K), bool))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(g), 1.0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(z), hp, rtol=1e-6)
    z, g = _gate()(h, y, np.zeros((B, L, K), bool))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(z), h, rtol=1e-6)


def test_episodic_memory_top_k_matches_numpy_and_fifo():
    rng = np.random.default_rng(2)
    mem = EpisodicMemory(datastore_size=20, key_dim=D, top_k=K, chunk_size=7)
    keys = rng.normal(size=(26, D)).astype("float32")
    tokens = np.arange(26, dtype="int32")
    mem.add(keys[:10], tokens[:10])
    mem.add(keys[10:], tokens[10:])  # 26 > 20: the 6 oldest are overwritten
    assert mem.size() == 20
    q = rng.normal(size=(B, L, D)).astype("float32")
    ids, found = (keras.ops.convert_to_numpy(t) for t in mem(q))
    kept, kept_tokens = keys[6:], tokens[6:]
    dist = ((q[:, :, None, :] - kept) ** 2).sum(-1)  # (B, L, 20)
    expected = kept_tokens[np.argsort(dist, axis=-1)[..., :K]]
    np.testing.assert_array_equal(ids, expected)
    assert found.all()
    with pytest.raises(ValueError, match="metric='cos'"):
        EpisodicMemory(8, D, metric="cos")


def test_spalm_lm_datastore_fit_and_round_trip(tmp_path):
    lm = build_spalm_lm(
        vocab_size=30,
        segment_length=6,
        memory_length=6,
        batch_size=2,
        datastore_size=64,
        top_k=2,
        d_model=16,
        num_heads=2,
        num_layers=1,
    )
    assert isinstance(lm, SPALMLM) and lm.gate is not None
    x = np.random.default_rng(0).integers(4, 30, size=(8, 6)).astype("int32")
    # empty store: the gate passes h through
    np.testing.assert_array_equal(lm.gate_values(x[:2]), 1.0)
    assert build_spalm_datastore(lm, x, x) == 48
    g = lm.gate_values(x[:2])
    assert g.shape == (2, 6) and np.all((g > 0) & (g < 1))
    lm.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = lm.fit(x, x, batch_size=2, shuffle=False, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    path = tmp_path / "spalm.keras"
    lm.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, SPALMLM) and loaded.long_term_memory.size() == 48
    with pytest.raises(ValueError, match="metric='cos'"):
        build_spalm_lm(30, 6, 6, 2, metric="cos")
