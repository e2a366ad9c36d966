"""TokenDatastore (shared by KNNLM and SPALM's EpisodicMemory): FIFO slot placement equals
one-by-one writes, also when one write overflows the store; search against numpy."""

import numpy as np
import pytest
from keras import ops

from keras_transformers.memory.knn_lm import KNNLM
from keras_transformers.memory.spalm import EpisodicMemory

S, D = 5, 3


def _stores():
    return [KNNLM(16, D, datastore_size=S, top_k=2), EpisodicMemory(S, D, top_k=2)]


def _state(store):
    return [
        ops.convert_to_numpy(v) for v in (store.keys, store.next_tokens, store.valid, store.pointer)
    ]


@pytest.mark.parametrize("writes", [[3, 9], [2, 2, 7], [12]])
def test_bulk_writes_place_pairs_as_one_by_one_writes(writes):
    rng = np.random.default_rng(0)
    n = sum(writes)
    keys = rng.normal(size=(n, D)).astype("float32")
    tokens = rng.integers(0, 16, size=n)
    for bulk, single in zip(_stores(), _stores()):
        start = 0
        for w in writes:
            bulk.add(keys[start : start + w], tokens[start : start + w])
            start += w
        for i in range(n):
            single.add(keys[i : i + 1], tokens[i : i + 1])
        for a, b in zip(_state(bulk), _state(single)):
            np.testing.assert_array_equal(a, b)
        # numpy FIFO: slot (t mod S) holds the last pair t written there
        expect = {t % S: t for t in range(n)}
        stored_keys = _state(bulk)[0]
        for slot, t in expect.items():
            np.testing.assert_array_equal(stored_keys[slot], keys[t])
        assert bulk.size() == min(n, S)


def test_search_matches_numpy_nearest_keys():
    rng = np.random.default_rng(1)
    keys = rng.normal(size=(4, D)).astype("float32")
    tokens = np.array([3, 1, 4, 1])
    q = rng.normal(size=(2, 3, D)).astype("float32")
    mem = EpisodicMemory(8, D, top_k=3)
    mem.add(keys, tokens)
    scores, got, found = (ops.convert_to_numpy(t) for t in mem.search(q, metric="squared_l2"))
    d2 = ((q[..., None, :] - keys) ** 2).sum(-1)  # (2, 3, 4)
    order = np.argsort(d2, axis=-1, kind="stable")[..., :3]
    np.testing.assert_array_equal(got, tokens[order])
    np.testing.assert_allclose(scores, -np.take_along_axis(d2, order, -1), rtol=1e-5, atol=1e-5)
    assert found.all()
