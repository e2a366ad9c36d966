"""KNNMemory: exact chunked top-k search, FIFO writes, validity, clearing, no gradients."""

import numpy as np
import pytest
from keras import ops
from memory_autodiff import gradients

from keras_transformers.memory.knn import KNNMemory, top_k_search


def _np_top_k(q, keys, k, valid=None, metric="dot"):
    """Brute force: (..., Lq, d) x (..., S, d) -> sorted scores and indices (..., Lq, k)."""
    if metric == "dot":
        s = q @ np.swapaxes(keys, -1, -2)
    else:
        s = -(((q[..., :, None, :] - keys[..., None, :, :]) ** 2).sum(-1))
    if valid is not None:
        s = np.where(valid[..., None, :], s, -np.inf)
    order = np.argsort(-s, axis=-1, kind="stable")[..., :k]
    return np.take_along_axis(s, order, axis=-1), order


@pytest.mark.backends
@pytest.mark.parametrize("chunk_size", [5, 7, 1000])
@pytest.mark.parametrize("metric", ["dot", "squared_l2"])
def test_top_k_search_matches_brute_force(chunk_size, metric):
    rng = np.random.default_rng(0)
    q = rng.normal(size=(2, 3, 6, 4)).astype("float32")
    keys = rng.normal(size=(2, 3, 23, 4)).astype("float32")
    valid = rng.random((2, 1, 23)) < 0.7
    scores, index, found = top_k_search(
        q, keys, 4, valid=valid, chunk_size=chunk_size, metric=metric
    )
    ref_s, ref_i = _np_top_k(q, keys, 4, np.broadcast_to(valid, (2, 3, 23)), metric)
    np.testing.assert_array_equal(ops.convert_to_numpy(index), ref_i)
    np.testing.assert_allclose(ops.convert_to_numpy(scores), ref_s, rtol=1e-5, atol=1e-5)
    assert ops.convert_to_numpy(found).all()


@pytest.mark.backends
def test_top_k_search_fewer_keys_than_k_marks_missing():
    rng = np.random.default_rng(1)
    q = rng.normal(size=(1, 2, 3)).astype("float32")
    keys = rng.normal(size=(1, 4, 3)).astype("float32")
    valid = np.array([[True, False, True, False]])
    _, index, found = top_k_search(q, keys, 6, valid=valid, chunk_size=3)
    found = ops.convert_to_numpy(found)
    assert found.shape == (1, 2, 6)
    np.testing.assert_array_equal(found.sum(-1), [[2, 2]])  # only the 2 valid keys exist
    got = np.sort(ops.convert_to_numpy(index)[found.astype(bool)].reshape(2, 2), axis=-1)
    np.testing.assert_array_equal(got, [[0, 2], [0, 2]])


def _filled(m=5, length=3, writes=3, batch=2, heads=2, dh=3):
    """Write `writes` segments whose key/value entries encode their global position."""
    mem = KNNMemory(memory_size=m, num_heads=heads, key_dim=dh, batch_size=batch, chunk_size=2)
    mem.build()
    history = []
    for w in range(writes):
        pos = w * length + np.arange(length)  # global positions of the segment
        keys = np.zeros((batch, length, heads, dh), "float32")
        keys += pos[None, :, None, None] + 100 * np.arange(batch)[:, None, None, None]
        mem.write(keys, keys + 0.5)
        history.extend(pos.tolist())
    return mem, history


@pytest.mark.backends
def test_fifo_order_and_capacity():
    m = 5
    mem, history = _filled(m=m, length=3, writes=3)
    # numpy FIFO simulation: slot (t mod m) holds the last position t written there
    expected = np.zeros(m)
    for t in history:
        expected[t % m] = t
    keys = ops.convert_to_numpy(mem.keys)  # (B, h, m, dh)
    np.testing.assert_array_equal(keys[0, 0, :, 0], expected)  # [5 6 7 8 4]... by slot
    np.testing.assert_array_equal(keys[1, 1, :, 2], expected + 100)
    np.testing.assert_array_equal(ops.convert_to_numpy(mem.values)[0, 1, :, 0], expected + 0.5)
    assert int(ops.convert_to_numpy(mem.pointer)) == len(history) % m
    np.testing.assert_array_equal(ops.convert_to_numpy(mem.size()), [m, m])  # capped at m
    # the surviving entries are exactly the m newest positions
    assert sorted(keys[0, 0, :, 0].tolist()) == history[-m:]


@pytest.mark.backends
def test_partial_fill_and_segment_longer_than_memory():
    mem, _ = _filled(m=8, length=3, writes=1)
    np.testing.assert_array_equal(ops.convert_to_numpy(mem.valid)[0], [1, 1, 1, 0, 0, 0, 0, 0])
    mem, history = _filled(m=4, length=7, writes=2)  # each write overflows the memory
    expected = np.zeros(4)
    for t in history:
        expected[t % 4] = t
    np.testing.assert_array_equal(ops.convert_to_numpy(mem.keys)[0, 0, :, 0], expected)
    assert sorted(expected.tolist()) == history[-4:]


@pytest.mark.backends
def test_retrieve_equals_numpy_brute_force_per_row_and_head():
    rng = np.random.default_rng(2)
    b, h, dh, m = 2, 3, 4, 16
    mem = KNNMemory(memory_size=m, num_heads=h, key_dim=dh, batch_size=b, chunk_size=5)
    stored_k, stored_v = [], []
    for _ in range(2):  # 2 x 6 = 12 of 16 slots filled
        k = rng.normal(size=(b, 6, h, dh)).astype("float32")
        v = rng.normal(size=(b, 6, h, dh)).astype("float32")
        mem.write(k, v)
        stored_k.append(k)
        stored_v.append(v)
    mk = np.concatenate(stored_k, 1).transpose(0, 2, 1, 3)  # (B, h, 12, dh)
    mv = np.concatenate(stored_v, 1).transpose(0, 2, 1, 3)
    q = rng.normal(size=(b, 5, h, dh)).astype("float32")
    got_k, got_v, valid, scores, index = mem.retrieve(q, top_k=4, return_scores=True)
    ref_s, ref_i = _np_top_k(q.transpose(0, 2, 1, 3), mk, 4)  # (B, h, Lq, k)
    np.testing.assert_array_equal(ops.convert_to_numpy(index), ref_i.transpose(0, 2, 1, 3))
    np.testing.assert_allclose(ops.convert_to_numpy(scores), ref_s.transpose(0, 2, 1, 3), 1e-5)
    ref_k = np.take_along_axis(mk[:, :, None], ref_i[..., None], axis=3)  # (B, h, Lq, k, dh)
    ref_v = np.take_along_axis(mv[:, :, None], ref_i[..., None], axis=3)
    np.testing.assert_allclose(ops.convert_to_numpy(got_k), ref_k.transpose(0, 2, 1, 3, 4))
    np.testing.assert_allclose(ops.convert_to_numpy(got_v), ref_v.transpose(0, 2, 1, 3, 4))
    assert ops.convert_to_numpy(valid).all()


@pytest.mark.backends
def test_empty_and_masked_slots_are_invalid_and_clear_resets():
    rng = np.random.default_rng(3)
    mem = KNNMemory(memory_size=6, num_heads=1, key_dim=2, batch_size=2)
    q = rng.normal(size=(2, 3, 1, 2)).astype("float32")
    _, _, valid = mem.retrieve(q, top_k=2)
    assert not ops.convert_to_numpy(valid).any()  # empty memory: nothing found
    k = rng.normal(size=(2, 4, 1, 2)).astype("float32")
    mask = np.array([[True, False, True, False], [True, True, True, True]])
    mem.write(k, k, mask=mask)
    np.testing.assert_array_equal(ops.convert_to_numpy(mem.size()), [2, 4])
    _, _, valid, _, index = mem.retrieve(q, top_k=3, return_scores=True)
    valid, index = ops.convert_to_numpy(valid), ops.convert_to_numpy(index)
    np.testing.assert_array_equal(valid[0].sum(-1), np.full((3, 1), 2))  # row 0: 2 entries
    assert set(index[0][valid[0]].tolist()) <= {0, 2}  # masked positions never come back
    assert valid[1].all()
    mem.clear()
    assert int(ops.convert_to_numpy(mem.pointer)) == 0
    assert not ops.convert_to_numpy(mem.retrieve(q, top_k=2)[2]).any()


@pytest.mark.backends
def test_writes_stop_gradients():
    mem = KNNMemory(memory_size=8, num_heads=1, key_dim=2, batch_size=1)
    mem.build()
    k = np.random.default_rng(4).normal(size=(1, 3, 1, 2)).astype("float32")
    q = np.ones((1, 2, 1, 2), "float32")

    def loss(keys, direct):
        mem.write(keys * 2.0, keys * 3.0)
        got_k, got_v, _ = mem.retrieve(q, top_k=2)
        return ops.sum(got_k) + ops.sum(got_v) + direct * ops.sum(keys)

    (through_memory,) = gradients(lambda keys: loss(keys, 0.0), [k])
    np.testing.assert_array_equal(through_memory, 0.0)  # written entries are constants
    (with_direct,) = gradients(lambda keys: loss(keys, 1.0), [k])
    np.testing.assert_allclose(with_direct, 1.0)  # only the direct term reaches the input
    # the memory path is really used: the retrieved entries are the written 2k / 3k
    mem.write(k * 2.0, k * 3.0)
    got_k, got_v, found = (ops.convert_to_numpy(t) for t in mem.retrieve(q, top_k=2))
    assert found.all()
    stored = {tuple(row) for row in (2.0 * k[0, :, 0]).round(5).tolist()}
    assert {tuple(row) for row in got_k[0, :, 0].reshape(-1, 2).round(5).tolist()} <= stored
    np.testing.assert_allclose(got_v, 1.5 * got_k, rtol=1e-6)
    assert not mem.trainable_weights and len(mem.non_trainable_weights) == 4


@pytest.mark.backends
def test_validation_errors():
    with pytest.raises(ValueError, match="memory_size=0"):
        KNNMemory(memory_size=0, num_heads=1, key_dim=2, batch_size=1)
    with pytest.raises(ValueError, match="chunk_size=-1"):
        KNNMemory(memory_size=4, num_heads=1, key_dim=2, batch_size=1, chunk_size=-1)
    mem = KNNMemory(memory_size=4, num_heads=1, key_dim=2, batch_size=2)
    with pytest.raises(ValueError, match="batch_size=2"):
        mem.write(np.zeros((3, 2, 1, 2), "float32"), np.zeros((3, 2, 1, 2), "float32"))
    with pytest.raises(ValueError, match="metric='cosine'"):
        top_k_search(np.zeros((1, 2)), np.zeros((3, 2)), 1, metric="cosine")
