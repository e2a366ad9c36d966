"""Routing attention: online k-means and cluster-restricted attention against numpy."""

import os

import keras
import numpy as np
import pytest
from reference import numpy_attention

import keras_transformers as kt

RNG = np.random.default_rng(0)


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def heads_first(x):
    return np.transpose(np.asarray(x, np.float64), (0, 2, 1, 3))


def heads_last(x):
    return np.transpose(x, (0, 2, 1, 3))


def unit(x):
    return x / np.sqrt((x**2).sum(-1, keepdims=True) + 1e-6)


def numpy_routing(q, v, centroids, chunk, causal, key_mask):
    """Shared-QK routing attention of one (batch, head) with explicit loops.

    q (L, dh), v (L, dv), centroids (k, dh), key_mask (L,).
    """
    length, dh = q.shape
    k = unit(q)
    num_clusters = centroids.shape[0]
    clusters = np.where(key_mask, np.argmax(k @ centroids.T, -1), num_clusters)
    chunk = min(chunk, length)
    order = sorted(range(length), key=lambda i: (clusters[i], i))
    rank = np.empty(length, int)
    rank[order] = np.arange(length)
    out = np.zeros((length, v.shape[1]))
    for i in range(length):
        keys = []
        for j in range(length):
            if not key_mask[j] or clusters[i] != clusters[j]:
                continue
            if causal and not (rank[i] - chunk <= rank[j] <= rank[i]):
                continue
            if not causal and rank[j] // chunk not in (rank[i] // chunk, rank[i] // chunk - 1):
                continue
            keys.append(j)
        others = [j for j in keys if j != i]
        keys = others if others else keys
        if keys:
            s = np.array([q[i] @ k[j] / np.sqrt(dh) for j in keys])
            w = np.exp(s - s.max())
            out[i] = w @ v[keys] / w.sum()
    return out, clusters


def data(b=2, length=24, h=2, dh=8):
    q = RNG.normal(size=(b, length, h, dh)).astype("float32")
    v = RNG.normal(size=(b, length, h, dh)).astype("float32")
    padding = np.ones((b, length), bool)
    padding[0, 19:] = False
    return q, v, padding


@pytest.mark.parametrize("causal", [False, True])
def test_matches_numpy_cluster_reference(causal):
    q, v, padding = data()
    core = kt.attention.get("routing", num_clusters=3, chunk_size=4, seed=2)
    out = to_numpy(core(q, q, v, padding_mask=padding, causal=causal))
    centroids = to_numpy(core.centroids).astype(np.float64)
    qh, vh = heads_first(q), heads_first(v)
    ref = np.zeros_like(vh)
    for b in range(2):
        for h in range(2):
            ref[b, h], _ = numpy_routing(qh[b, h], vh[b, h], centroids[h], 4, causal, padding[b])
    np.testing.assert_allclose(out, heads_last(ref), atol=1e-5)


def test_attended_keys_share_the_query_centroid():
    q, v, padding = data()
    core = kt.attention.get("routing", num_clusters=3, chunk_size=6, seed=5)
    _, weights = core(q, q, v, padding_mask=padding, return_attention_scores=True)
    w = to_numpy(weights)  # (B, h, L, L)
    centroids = to_numpy(core.centroids)
    for b in range(2):
        for h in range(2):
            c = np.argmax(unit(heads_first(q)[b, h]) @ centroids[h].T, -1)
            attended = w[b, h] > 0
            rows, cols = np.nonzero(attended)
            np.testing.assert_array_equal(c[rows], c[cols])
    assert np.abs(w[0, :, :, 19:]).max() == 0.0


def test_one_cluster_with_a_long_chunk_is_full_attention_with_self_rule():
    q, v, _ = data()
    length = q.shape[1]
    core = kt.attention.get("routing", num_clusters=1, chunk_size=64)
    out = to_numpy(core(q, q, v, causal=True))
    qh = heads_first(q)
    causal = np.tril(np.ones((length, length), bool))
    mask = causal & ~np.eye(length, dtype=bool)
    mask[0, 0] = True  # the first token has only itself
    ref, _ = numpy_attention(qh, unit(qh), heads_first(v), mask)
    np.testing.assert_allclose(out, heads_last(ref), atol=1e-5)


def clustered_data(centers, b=4, length=32, noise=0.1, rng=RNG):
    labels = rng.integers(0, len(centers), size=(b, length, 1))
    x = centers[labels] * 2.0 + noise * rng.normal(size=(b, length, 1, centers.shape[1]))
    return x.astype("float32")  # (B, L, 1, dh)


def mean_best_cosine(centroids, centers):
    return float(np.max(unit(centroids) @ centers.T, axis=0).mean())


def test_kmeans_centroids_move_toward_the_data():
    # its own generator: the outcome must not depend on which tests ran before on this worker
    rng = np.random.default_rng(0)
    centers = unit(rng.normal(size=(4, 8)))
    q = clustered_data(centers, rng=rng)
    core = kt.attention.get("routing", num_clusters=4, chunk_size=8, decay=0.8, seed=0)
    core(q, q, q)
    before = to_numpy(core.centroids)[0].copy()
    core(q, q, q, training=False)
    np.testing.assert_array_equal(to_numpy(core.centroids)[0], before)  # inference: frozen
    for _ in range(25):
        batch = clustered_data(centers, rng=rng)
        core(batch, batch, batch, training=True)
    after = to_numpy(core.centroids)[0]
    assert mean_best_cosine(after, centers) > mean_best_cosine(before, centers) + 0.2
    # online k-means may leave two centroids in one cluster: over 8 data seeds 0.86 .. 1.0
    assert mean_best_cosine(after, centers) > 0.85
    np.testing.assert_allclose(np.linalg.norm(after, axis=-1), 1.0, atol=1e-4)  # spherical


def test_padded_tokens_do_not_update_centroids():
    q, v, _ = data(length=8)
    core = kt.attention.get("routing", num_clusters=2, chunk_size=4, decay=0.5, seed=0)
    core(q, q, v)
    before = to_numpy(core.centroids).copy()
    core(q, q, v, padding_mask=np.zeros((2, 8), bool), training=True)
    np.testing.assert_array_equal(to_numpy(core.centroids), before)


def test_centroids_are_saved_with_the_model(tmp_path):
    x = keras.Input((16, 8))
    layer = kt.attention.MultiHeadAttention(
        num_heads=1,
        key_dim=8,
        causal=True,
        attention={"name": "routing", "num_clusters": 2, "chunk_size": 4, "decay": 0.5},
    )
    model = keras.Model(x, layer(x))
    data_x = RNG.normal(size=(2, 16, 8)).astype("float32")
    before = to_numpy(layer.attention_core.centroids).copy()
    model.compile(optimizer="sgd", loss="mse")
    model.fit(data_x, data_x, epochs=1, verbose=0)
    trained = to_numpy(layer.attention_core.centroids)
    assert np.abs(trained - before).max() > 1e-4  # the EMA ran during fit
    path = os.path.join(tmp_path, "routing.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    core = [lay for lay in loaded.layers if hasattr(lay, "attention_core")][0].attention_core
    np.testing.assert_array_equal(to_numpy(core.centroids), trained)
    np.testing.assert_allclose(to_numpy(model(data_x)), to_numpy(loaded(data_x)), atol=1e-6)


def test_causality_through_multi_head_attention():
    layer = kt.attention.MultiHeadAttention(
        num_heads=2,
        key_dim=8,
        causal=True,
        attention={"name": "routing", "num_clusters": 3, "chunk_size": 4},
    )
    x = RNG.normal(size=(2, 26, 16)).astype("float32")
    x2 = x.copy()
    x2[:, 11:] = RNG.normal(size=x2[:, 11:].shape)
    np.testing.assert_allclose(to_numpy(layer(x))[:, :11], to_numpy(layer(x2))[:, :11], atol=1e-5)


def test_argument_errors_and_separate_routing():
    for kwargs, pattern in (
        ({"num_clusters": 0}, "num_clusters=0"),
        ({"chunk_size": 0}, "chunk_size=0"),
        ({"decay": 1.0}, "decay=1.0"),
    ):
        with pytest.raises(ValueError, match=pattern):
            kt.attention.get("routing", **kwargs)
    q, v, padding = data()
    k = RNG.normal(size=q.shape).astype("float32")
    core = kt.attention.get("routing", num_clusters=3, chunk_size=4, shared_qk=False)
    with pytest.raises(ValueError, match="shared_qk"):
        core(q, k, v, causal=True)
    out = to_numpy(core(q, k, v, padding_mask=padding, training=True))
    out2, _ = core(q, k, v, padding_mask=padding, return_attention_scores=True)
    np.testing.assert_allclose(out, to_numpy(out2), atol=1e-5)
