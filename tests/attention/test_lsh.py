"""Reformer LSH attention against an independent numpy reference of the sort/chunk/bucket rule."""

import keras
import numpy as np
import pytest
from reference import numpy_attention

import keras_transformers as kt
from keras_transformers.ops.hashing import lsh_hash

RNG = np.random.default_rng(0)


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def heads_first(x):
    return np.transpose(np.asarray(x, np.float64), (0, 2, 1, 3))


def heads_last(x):
    return np.transpose(x, (0, 2, 1, 3))


def unit(x):
    return x / np.sqrt((x**2).sum(-1, keepdims=True) + 1e-6)


def numpy_hash(x, rotations):
    """h(x) = argmax([xR; -xR]) for each round: x (L, dh), rotations (R, dh, b/2) -> (R, L)."""
    rot = np.einsum("ld,rdk->rlk", x, rotations)
    return np.argmax(np.concatenate([rot, -rot], -1), -1)


def numpy_bucketed_attention(q, k, v, buckets, chunk, causal, key_mask, num_buckets):
    """Shared-QK bucketed attention of one (batch, head), written with explicit loops.

    q, k (L, dh) (k = normalised q), v (L, dv), buckets (R, L), key_mask (L,).
    """
    length, dh = q.shape
    chunk = min(chunk, length)
    padded = -(-length // chunk) * chunk
    buckets = np.concatenate(
        [
            np.where(key_mask, buckets, num_buckets),
            np.full((buckets.shape[0], padded - length), num_buckets),
        ],
        axis=1,
    )
    outs, lses = [], []
    for r in range(buckets.shape[0]):
        order = sorted(range(padded), key=lambda i, r=r: (buckets[r, i], i))
        rank = np.empty(padded, int)
        rank[order] = np.arange(padded)
        out = np.zeros((length, v.shape[1]))
        lse = np.full(length, -np.inf)
        for i in range(length):
            keys, scores = [], []
            for j in range(length):
                if not key_mask[j] or buckets[r, i] != buckets[r, j]:
                    continue
                if causal:
                    if not (rank[i] - chunk <= rank[j] <= rank[i] and j <= i):
                        continue
                elif rank[j] // chunk not in (rank[i] // chunk, rank[i] // chunk - 1):
                    continue
                count = np.sum(buckets[:, i] == buckets[:, j])  # rounds sharing a bucket
                score = -1e5 if i == j else q[i] @ k[j] / np.sqrt(dh)
                keys.append(j)
                scores.append(score - np.log(count))
            if keys:
                s = np.array(scores)
                top = s.max()
                w = np.exp(s - top)
                out[i] = w @ v[keys] / w.sum()
                lse[i] = top + np.log(w.sum())
        outs.append(out)
        lses.append(lse)
    lses = np.array(lses)
    top = np.max(np.where(np.isfinite(lses), lses, -1e300), 0)
    weights = np.where(np.isfinite(lses), np.exp(lses - top), 0.0)
    weights = np.divide(
        weights, weights.sum(0), out=np.zeros_like(weights), where=weights.sum(0) > 0
    )
    return np.einsum("rl,rld->ld", weights, np.array(outs))


def reference(core, q, v, causal, padding):
    qh, vh = heads_first(q), heads_first(v)
    rotations = to_numpy(core.rotations).astype(np.float64)
    out = np.zeros_like(vh)
    for b in range(qh.shape[0]):
        for h in range(qh.shape[1]):
            kk = unit(qh[b, h])
            buckets = (
                numpy_hash(kk, rotations)
                if core.num_buckets > 1
                else np.zeros((core.num_hashes, qh.shape[2]), int)
            )
            out[b, h] = numpy_bucketed_attention(
                qh[b, h],
                kk,
                vh[b, h],
                buckets,
                core.chunk_size,
                causal,
                padding[b],
                core.num_buckets,
            )
    return heads_last(out)


def data(b=2, length=23, h=2, dh=8):
    q = RNG.normal(size=(b, length, h, dh)).astype("float32")
    v = RNG.normal(size=(b, length, h, dh)).astype("float32")
    padding = np.ones((b, length), bool)
    padding[1, 17:] = False
    return q, v, padding


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("use_padding", [False, True])
def test_one_bucket_one_round_equals_full_attention_with_self_rule(causal, use_padding):
    q, v, padding = data()
    if not use_padding:
        padding[:] = True
    length = q.shape[1]
    core = kt.attention.get("lsh", num_buckets=1, num_hashes=1, chunk_size=64)
    out = to_numpy(core(q, q, v, padding_mask=padding, causal=causal))
    qh = heads_first(q)
    kh = unit(qh)
    mask = padding[:, None, None, :] & (
        np.tril(np.ones((length, length), bool)) if causal else True
    )
    mask = np.broadcast_to(mask, (2, 2, length, length))
    eye = np.eye(length, dtype=bool)
    others = mask & ~eye
    # a token attends to itself only when it has no other key
    mask = others | (eye & mask & ~others.any(-1, keepdims=True))
    ref, _ = numpy_attention(qh, kh, heads_first(v), mask)
    # padded positions are moved out of every bucket: their (unused) outputs are zeros
    np.testing.assert_allclose(out[padding], heads_last(ref)[padding], atol=1e-5)
    np.testing.assert_allclose(out[~padding], 0.0)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("num_hashes", [1, 3])
def test_matches_numpy_sort_chunk_reference(causal, num_hashes):
    q, v, padding = data()
    core = kt.attention.get("lsh", num_buckets=4, num_hashes=num_hashes, chunk_size=4, seed=7)
    out = to_numpy(core(q, q, v, padding_mask=padding, causal=causal))
    np.testing.assert_allclose(out, reference(core, q, v, causal, padding), atol=1e-5)
    out2, weights = core(q, q, v, padding_mask=padding, causal=causal, return_attention_scores=True)
    np.testing.assert_allclose(to_numpy(out2), out, atol=1e-5)
    w = to_numpy(weights)
    np.testing.assert_allclose(w.sum(-1)[0], 1.0, atol=1e-5)
    assert np.abs(w[1, :, :, 17:]).max() == 0.0
    if causal:
        assert np.abs(np.triu(w, 1)).max() == 0.0


def test_hash_properties():
    b = 8
    x = RNG.normal(size=(2, 2, 30, 6)).astype("float32")
    rotations = RNG.normal(size=(3, 6, b // 2)).astype("float32")
    h = to_numpy(lsh_hash(x, rotations, b))
    assert h.shape == (2, 2, 3, 30) and h.min() >= 0 and h.max() < b
    np.testing.assert_array_equal(to_numpy(lsh_hash(2.5 * x, rotations, b)), h)  # h(αx) = h(x)
    np.testing.assert_array_equal(to_numpy(lsh_hash(-x, rotations, b)), (h + b // 2) % b)
    np.testing.assert_array_equal(to_numpy(lsh_hash(unit(x), rotations, b)), h)  # shared-QK


def test_causality_and_padding_through_multi_head_attention():
    config = {"name": "lsh", "num_buckets": 4, "num_hashes": 2, "chunk_size": 4, "seed": 1}
    layer = kt.attention.MultiHeadAttention(num_heads=2, key_dim=8, attention=config, causal=True)
    x = RNG.normal(size=(2, 26, 16)).astype("float32")
    x2 = x.copy()
    x2[:, 12:] = RNG.normal(size=x2[:, 12:].shape)
    out1, out2 = to_numpy(layer(x)), to_numpy(layer(x2))
    np.testing.assert_allclose(out1[:, :12], out2[:, :12], atol=1e-5)  # strictly causal
    encoder = kt.attention.MultiHeadAttention(num_heads=2, key_dim=8, attention=config)
    mask = np.ones((2, 26), bool)
    mask[0, 20:] = False
    x3 = x.copy()
    x3[0, 20:] += 5.0
    a, c = to_numpy(encoder(x, padding_mask=mask)), to_numpy(encoder(x3, padding_mask=mask))
    np.testing.assert_allclose(a[0, :20], c[0, :20], atol=1e-5)


def test_rotations_are_stored_and_redrawn_only_in_training():
    q, v, _ = data(length=16)
    core = kt.attention.get("lsh", num_buckets=4, num_hashes=2, chunk_size=4, seed=3)
    first = to_numpy(core(q, q, v))
    np.testing.assert_array_equal(first, to_numpy(core(q, q, v)))  # inference: deterministic
    assert [w.name for w in core.non_trainable_weights] == ["rotations"]
    assert tuple(core.rotations.shape) == (2, 8, 2)
    trained = [to_numpy(core(q, q, v, training=True)) for _ in range(3)]
    assert max(np.abs(t - first).max() for t in trained) > 1e-4  # fresh hashes per step
    fixed = kt.attention.get("lsh", num_buckets=4, chunk_size=4, seed=3, redraw_rotations=False)
    np.testing.assert_allclose(to_numpy(fixed(q, q, v, training=True)), to_numpy(fixed(q, q, v)))


def test_automatic_bucket_count_and_argument_errors():
    q, v, _ = data(length=40)
    core = kt.attention.get("lsh", chunk_size=8)
    core(q, q, v)
    assert core.num_buckets == 10  # 2 * ceil(40 / 8)
    assert core.get_config()["num_buckets"] == 10
    for kwargs, pattern in (
        ({"num_buckets": 3}, "num_buckets=3"),
        ({"num_hashes": 0}, "num_hashes=0"),
        ({"chunk_size": 0}, "chunk_size=0"),
    ):
        with pytest.raises(ValueError, match=pattern):
            kt.attention.get("lsh", **kwargs)
    with pytest.raises(ValueError, match="shared_qk"):
        kt.attention.get("lsh", shared_qk=False)(q, q, v, causal=True)
    with pytest.raises(ValueError, match="self-attention"):
        kt.attention.get("lsh")(q, q[:, :20], v[:, :20])


def test_separate_query_and_key_hashing_runs_non_causal():
    q, v, padding = data()
    k = RNG.normal(size=q.shape).astype("float32")
    core = kt.attention.get("lsh", num_buckets=4, chunk_size=4, shared_qk=False, seed=2)
    out = to_numpy(core(q, k, v, padding_mask=padding))
    out2, _ = core(q, k, v, padding_mask=padding, return_attention_scores=True)
    np.testing.assert_allclose(out, to_numpy(out2), atol=1e-5)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="inspects a TF graph")
def test_never_forms_an_l_by_l_tensor():
    import tensorflow as tf

    length = 1024
    q = RNG.normal(size=(1, length, 1, 16)).astype("float32")
    core = kt.attention.get("lsh", num_buckets=16, num_hashes=2, chunk_size=32)
    core.build(q.shape)
    spec = tf.TensorSpec(q.shape, q.dtype)
    graph = (
        tf.function(lambda a, c: core(a, a, c, causal=True)).get_concrete_function(spec, spec).graph
    )
    biggest = max(
        int(np.prod(t.shape))
        for op in graph.get_operations()
        for t in op.outputs
        if t.shape.rank is not None and t.shape.is_fully_defined() and t.dtype != tf.resource
    )
    assert biggest < length * length // 4
