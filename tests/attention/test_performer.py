"""Performer (FAVOR+) against numpy references and the catalogue's testable properties."""

import keras
import numpy as np
import pytest
from reference import numpy_attention

import keras_transformers as kt
from keras_transformers.ops.feature_maps import gaussian_random_matrix, positive_random_features

RNG = np.random.default_rng(0)


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def heads_first(x):
    return np.transpose(np.asarray(x, np.float64), (0, 2, 1, 3))


def heads_last(x):
    return np.transpose(x, (0, 2, 1, 3))


def qkv(b=2, length=24, h=2, dh=8, scale=0.5):
    return tuple((RNG.normal(size=(b, length, h, dh)) * scale).astype("float32") for _ in range(3))


def test_orthogonal_block_rows_are_orthogonal_and_features_positive():
    w = to_numpy(gaussian_random_matrix(8, 8, seed=3, orthogonal=True))  # one block
    gram = w @ w.T
    off = gram - np.diag(np.diag(gram))
    assert np.abs(off).max() < 1e-4 * np.abs(np.diag(gram)).max()
    w20 = to_numpy(gaussian_random_matrix(20, 8, seed=3))  # 3 blocks, last truncated
    assert w20.shape == (20, 8)
    block = w20[8:16] @ w20[8:16].T
    assert np.abs(block - np.diag(np.diag(block))).max() < 1e-3
    x = RNG.normal(size=(2, 2, 16, 8)).astype("float32")
    for is_query in (True, False):
        phi = to_numpy(positive_random_features(x, w20, is_query=is_query))
        assert (phi > 0).all()


def test_positive_features_estimate_the_softmax_kernel():
    x = np.array([0.3, -0.2, 0.5, 0.1], "float32")
    y = np.array([0.4, 0.3, 0.6, -0.2], "float32")
    m = 20000
    w = to_numpy(gaussian_random_matrix(m, 4, seed=11, orthogonal=False))
    # without stabilisation: φ(x) = exp(Wx - |x|²/2) / sqrt(m)
    fx = np.exp(w @ x - x @ x / 2)
    fy = np.exp(w @ y - y @ y / 2)
    samples = fx * fy
    se = samples.std() / np.sqrt(m)
    assert abs(samples.mean() - np.exp(x @ y)) < 4 * se


def numpy_softmax(q, k, v, causal=False):
    length = q.shape[1]
    mask = np.tril(np.ones((length, length), bool)) if causal else None
    out, _ = numpy_attention(heads_first(q), heads_first(k), heads_first(v), mask)
    return heads_last(out)


@pytest.mark.parametrize("causal", [False, True])
def test_error_falls_as_the_number_of_features_grows(causal):
    q, k, v = qkv(length=32, dh=16)
    ref = numpy_softmax(q, k, v, causal)
    errors = []
    for m in (8, 64, 512):
        per_seed = []
        for seed in range(3):
            core = kt.attention.get("performer", num_features=m, seed=seed, chunk_size=8)
            per_seed.append(np.abs(to_numpy(core(q, k, v, causal=causal)) - ref).mean())
        errors.append(np.mean(per_seed))
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < errors[0] / 3, errors


@pytest.mark.parametrize("chunk_size", [3, 8, 64])
def test_causal_prefix_sums_match_quadratic_numpy_form(chunk_size):
    q, k, v = qkv(length=21)
    padding = np.ones(q.shape[:2], bool)
    padding[0, 17:] = False
    core = kt.attention.get("performer", num_features=16, seed=1, chunk_size=chunk_size)
    out = to_numpy(core(q, k, v, causal=True, padding_mask=padding))
    w = to_numpy(core.projection).astype(np.float64)  # (m, dh)
    scale = q.shape[-1] ** -0.25
    qs, ks = heads_first(q) * scale, heads_first(k) * scale
    fq = np.exp(qs @ w.T - (qs**2).sum(-1, keepdims=True) / 2)
    fk = np.exp(ks @ w.T - (ks**2).sum(-1, keepdims=True) / 2)
    length = q.shape[1]
    mask = np.tril(np.ones((length, length), bool)) & padding[:, None, None, :]
    a = np.einsum("bhir,bhjr->bhij", fq, fk) * mask
    ref = (a / a.sum(-1, keepdims=True)) @ heads_first(v)
    np.testing.assert_allclose(out, heads_last(ref), atol=1e-5)


def test_causality_and_padding_through_multi_head_attention():
    layer = kt.attention.MultiHeadAttention(
        num_heads=2,
        key_dim=8,
        attention={"name": "performer", "num_features": 32, "chunk_size": 4, "seed": 0},
        causal=True,
    )
    x = RNG.normal(size=(2, 17, 16)).astype("float32")
    x2 = x.copy()
    x2[:, 9:] = RNG.normal(size=x2[:, 9:].shape) * 5
    out1, out2 = to_numpy(layer(x)), to_numpy(layer(x2))
    np.testing.assert_allclose(out1[:, :9], out2[:, :9], atol=1e-5)
    plain = kt.attention.MultiHeadAttention(num_heads=2, key_dim=8, attention="performer")
    mask = np.ones((2, 17), bool)
    mask[1, 11:] = False
    a = to_numpy(plain(x, padding_mask=mask))
    x3 = x.copy()
    x3[1, 11:] += 10.0  # only masked tokens change
    c = to_numpy(plain(x3, padding_mask=mask))
    np.testing.assert_allclose(a[1, :11], c[1, :11], atol=1e-5)


def test_redraw_schedule_counts_training_calls_only():
    q, k, v = qkv(length=8)
    core = kt.attention.get("performer", num_features=8, redraw_every=2, seed=5)
    core(q, k, v)
    w0 = to_numpy(core.projection)
    core(q, k, v, training=False)
    assert int(to_numpy(core.step)) == 0
    core(q, k, v, training=True)  # step 1: no redraw
    assert int(to_numpy(core.step)) == 1
    np.testing.assert_array_equal(to_numpy(core.projection), w0)
    core(q, k, v, training=True)  # step 2: redraw
    w2 = to_numpy(core.projection)
    assert int(to_numpy(core.step)) == 2 and np.abs(w2 - w0).max() > 1e-3
    out_a, out_b = core(q, k, v), core(q, k, v)  # inference is deterministic
    np.testing.assert_array_equal(to_numpy(out_a), to_numpy(out_b))
    names = sorted(w.name for w in core.non_trainable_weights)
    assert "projection" in names and "step" in names and not core.trainable_weights
    never = kt.attention.get("performer", num_features=8, redraw_every=0, seed=5)
    never(q, k, v)
    before = to_numpy(never.projection)
    never(q, k, v, training=True)
    np.testing.assert_array_equal(to_numpy(never.projection), before)


def test_large_inputs_stay_finite():
    q, k, v = qkv(scale=30.0)
    core = kt.attention.get("performer", num_features=32, seed=0)
    for causal in (False, True):
        assert np.isfinite(to_numpy(core(q, k, v, causal=causal))).all()


def test_invalid_arguments_name_the_argument():
    for kwargs, pattern in (
        ({"num_features": 0}, "num_features=0"),
        ({"redraw_every": -1}, "redraw_every=-1"),
        ({"scaling": "unit"}, "scaling='unit'"),
        ({"chunk_size": 0}, "chunk_size=0"),
    ):
        with pytest.raises(ValueError, match=pattern):
            kt.attention.get("performer", **kwargs)
