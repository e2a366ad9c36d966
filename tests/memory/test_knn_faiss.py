"""KNNMemory(index="faiss"): the same top-k as the exact search on random data, behind the same
interface; clear errors for a bad index and for a traced call."""

import keras
import numpy as np
import pytest

from keras_transformers.memory.knn import KNNMemory

pytest.importorskip("faiss")

B, H, DH, M = 2, 3, 8, 50


def _memories(rng, valid_fraction=1.0):
    exact = KNNMemory(M, H, DH, B, chunk_size=16)
    faiss = KNNMemory(M, H, DH, B, index="faiss")
    keys = rng.normal(size=(B, 60, H, DH)).astype("float32")  # 60 > M: FIFO overwrites
    values = rng.normal(size=(B, 60, H, DH)).astype("float32")
    mask = rng.random((B, 60)) < valid_fraction
    for mem in (exact, faiss):
        mem.write(keys[:, :30], values[:, :30], mask[:, :30])
        mem.write(keys[:, 30:], values[:, 30:], mask[:, 30:])
    return exact, faiss


@pytest.mark.parametrize("valid_fraction", [0.5])
def test_faiss_top_k_equals_exact_top_k(valid_fraction):
    rng = np.random.default_rng(0)
    exact, faiss = _memories(rng, valid_fraction)
    q = rng.normal(size=(B, 7, H, DH)).astype("float32")
    got = [keras.ops.convert_to_numpy(t) for t in faiss.retrieve(q, 5, return_scores=True)]
    ref = [keras.ops.convert_to_numpy(t) for t in exact.retrieve(q, 5, return_scores=True)]
    k, v, found, scores, index = got
    np.testing.assert_array_equal(found, ref[2])
    np.testing.assert_array_equal(np.where(found, index, -1), np.where(ref[2], ref[4], -1))
    np.testing.assert_allclose(np.where(found, scores, 0), np.where(ref[2], ref[3], 0), rtol=1e-5)
    np.testing.assert_allclose(k[found], ref[0][found], rtol=1e-6)
    np.testing.assert_allclose(v[found], ref[1][found], rtol=1e-6)
    # numpy reference: dot-product top-5 among the valid slots of each row and head
    mem_keys = keras.ops.convert_to_numpy(faiss.keys)  # (B, h, m, dh)
    valid = keras.ops.convert_to_numpy(faiss.valid).astype(bool)
    sims = np.einsum("blhd,bhmd->blhm", q, mem_keys)
    sims = np.where(valid[:, None, None, :], sims, -np.inf)
    top = np.argsort(-sims, axis=-1)[..., :5]
    np.testing.assert_array_equal(np.where(found, index, -1), np.where(found, top, -1))


def test_faiss_empty_memory_and_errors():
    mem = KNNMemory(M, H, DH, B, index="faiss")
    _, _, found = mem.retrieve(np.ones((B, 2, H, DH), "float32"), 3)
    assert not keras.ops.convert_to_numpy(found).any()
    assert KNNMemory.from_config(mem.get_config()).index == "faiss"
    with pytest.raises(ValueError, match="index='hnsw'"):
        KNNMemory(M, H, DH, B, index="hnsw")


def test_knn_attention_with_faiss_matches_exact():
    """The Memorizing layer's output is the same with either index (eager calls)."""
    from keras_transformers.memory.memorizing import KNNAugmentedAttention

    rng = np.random.default_rng(1)
    layers = [KNNAugmentedAttention(2, 4, 16, B, top_k=3, index=i) for i in ("exact", "faiss")]
    x = rng.normal(size=(2, B, 6, 8)).astype("float32")
    outs = []
    for layer in layers:
        layer.build((B, 6, 8))
    layers[1].set_weights(layers[0].get_weights())
    for layer in layers:
        layer(x[0])  # fills the memory
        outs.append(keras.ops.convert_to_numpy(layer(x[1])))
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-5, atol=1e-6)
