"""Catalogue properties of the positional encodings (V4-V8, V15, T5 bias)."""

import keras
import numpy as np
import pytest

import keras_transformers as kt
from keras_transformers.positional.rope import rotate
from keras_transformers.positional.shaw import clipped_labels

RNG = np.random.default_rng(0)


def np_(x):
    return keras.ops.convert_to_numpy(x)


def test_sinusoidal_properties():
    table = np_(kt.positional.sinusoid_table(np.arange(64), 32))
    assert table.shape == (64, 32)
    assert table.min() >= -1 and table.max() <= 1
    np.testing.assert_allclose(table[0], np.tile([0.0, 1.0], 16), atol=1e-7)
    # pair 0 has wavelength exactly 2*pi: angle(pos) = pos
    np.testing.assert_allclose(table[:, 0], np.sin(np.arange(64)), atol=1e-5)
    # p_i . p_j depends only on i - j
    dots = table @ table.T
    for offset in (1, 5, 17):
        diag = np.diagonal(dots, offset)
        np.testing.assert_allclose(diag, diag[0], atol=1e-4)


def test_sinusoidal_pair_is_rotation():
    table = np_(kt.positional.sinusoid_table(np.arange(40), 8))
    k = 3
    for j in range(4):
        w = 10000.0 ** (-2 * j / 8)
        rot = np.array([[np.cos(k * w), -np.sin(k * w)], [np.sin(k * w), np.cos(k * w)]])
        np.testing.assert_allclose(
            table[10:20, 2 * j : 2 * j + 2] @ rot, table[13:23, 2 * j : 2 * j + 2], atol=1e-5
        )


def test_learned_position_cannot_extrapolate():
    layer = kt.positional.get("learned", max_length=8)
    assert layer(np.zeros((1, 8, 4), "float32")).shape == (1, 8, 4)
    with pytest.raises(ValueError, match="max_length=8"):
        layer(np.zeros((1, 9, 4), "float32"))


@pytest.mark.parametrize("pairing", ["half", "interleaved"])
def test_rope_score_depends_only_on_offset(pairing):
    q = RNG.normal(size=(1, 1, 1, 16)).astype("float32")
    k = RNG.normal(size=(1, 1, 1, 16)).astype("float32")

    def score(i, j):
        qi = np_(rotate(q, np.array([i]), pairing=pairing))
        kj = np_(rotate(k, np.array([j]), pairing=pairing))
        return float((qi * kj).sum())

    assert score(3, 7) == pytest.approx(score(103, 107), abs=1e-3)
    assert score(0, 0) == pytest.approx(float((q * k).sum()), abs=1e-5)  # R_0 = I
    rotated = np_(rotate(q, np.array([42]), pairing=pairing))
    assert np.linalg.norm(rotated) == pytest.approx(np.linalg.norm(q), rel=1e-5)


def test_alibi_slopes():
    np.testing.assert_allclose(kt.positional.alibi_slopes(8), 2.0 ** -np.arange(1, 9))
    s16 = kt.positional.alibi_slopes(16)
    assert s16[0] == pytest.approx(2**-0.5) and s16[-1] == pytest.approx(2**-8)
    assert len(kt.positional.alibi_slopes(12)) == 12


def test_alibi_bias_and_geometric_decay():
    layer = kt.attention.MultiHeadAttention(num_heads=8, key_dim=4, position="alibi", causal=True)
    layer.build((1, 6, 32))
    rel = np.arange(6)[None, :] - np.arange(6)[:, None]
    bias = np_(layer.position.score_bias(keras.ops.convert_to_tensor(rel)))  # (h, L, L)
    assert np.all(np.diagonal(bias, axis1=1, axis2=2) == 0)
    # equal q.k scores: causal weights decay geometrically, a_ij / a_i,j+1 = e^-m
    core = kt.attention.get("full")
    zeros = np.zeros((1, 6, 8, 4), "float32")
    _, w = core(
        zeros, zeros, zeros, causal=True, position=layer.position, return_attention_scores=True
    )
    w = np_(w)[0]
    m = kt.positional.alibi_slopes(8)
    for h in range(8):
        np.testing.assert_allclose(w[h, 5, 2] / w[h, 5, 3], np.exp(-m[h]), rtol=1e-4)


def test_shaw_labels():
    rel = np.arange(10)[None, :] - np.arange(10)[:, None]
    labels = np_(clipped_labels(rel, 3))
    assert len(np.unique(labels)) == 7
    np.testing.assert_array_equal(labels[:-1, :-1], labels[1:, 1:])  # Toeplitz
    assert (labels[np.abs(rel) >= 3] == np.where(rel[np.abs(rel) >= 3] > 0, 6, 0)).all()


def test_shaw_matches_numpy_reference():
    layer = kt.attention.MultiHeadAttention(num_heads=2, key_dim=4, position="shaw", use_bias=False)
    x = RNG.normal(size=(1, 5, 8)).astype("float32")
    out = np_(layer(x))
    wqkv = np_(layer.qkv_kernel)
    q, k, v = np.split(x[0] @ wqkv, 3, axis=-1)
    pk, pv = np_(layer.position.key_table), np_(layer.position.value_table)
    kd = layer.position.max_distance
    heads = []
    for h in range(2):
        qh, kh, vh = (t[:, h * 4 : (h + 1) * 4] for t in (q, k, v))
        rel = np.clip(np.arange(5)[None] - np.arange(5)[:, None], -kd, kd) + kd
        e = np.einsum("id,ijd->ij", qh, kh[None] + pk[rel]) / 2.0
        a = np.exp(e - e.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        heads.append(np.einsum("ij,ijd->id", a, vh[None] + pv[rel]))
    expected = np.concatenate(heads, -1) @ np_(layer.output_kernel)
    np.testing.assert_allclose(out[0], expected, atol=1e-5)


def test_t5_buckets():
    rel = np.arange(-300, 301)
    bi = np_(kt.positional.relative_position_bucket(rel, True, 32, 128))
    uni = np_(kt.positional.relative_position_bucket(rel, False, 32, 128))
    assert bi.min() >= 0 and bi.max() < 32 and uni.max() < 32
    assert len(np.unique(bi[rel > 0])) < 16 + 1 and bi[600] == bi[599]  # far keys share a bucket
    assert (uni[rel > 0] == 0).all()  # causal: future keys collapse to bucket 0
    assert (np.diff(uni[rel <= 0][::-1]) >= 0).all()  # monotone in distance
