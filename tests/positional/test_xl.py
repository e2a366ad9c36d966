"""Transformer-XL relative encoding: numpy reference of the 4-term score, relative (shift)
invariance, blocks, and use through MultiHeadAttention with the full and a blocked core."""

import keras
import numpy as np
import pytest

import keras_transformers as kt
from keras_transformers.positional.xl import XLRelativePosition

B, L, H, DH = 2, 10, 2, 4
D = H * DH


def np_(x):
    return keras.ops.convert_to_numpy(x)


def np_sinusoid(distances, dim, max_wavelength=10000.0):
    """r_Δ with interleaved sin (even columns) / cos (odd columns)."""
    inv = max_wavelength ** (-2.0 * np.arange(dim // 2) / dim)
    ang = np.asarray(distances, "float64")[..., None] * inv
    out = np.zeros(ang.shape[:-1] + (dim,))
    out[..., 0::2] = np.sin(ang)
    out[..., 1::2] = np.cos(ang)
    return out


def np_xl_scores(q, k, q_pos, k_pos, w_r, u, v, d_r):
    """The paper's four terms, one by one. q (h, Lq, dh), k (h, Lk, dh) -> (h, Lq, Lk)."""
    h, lq, dh = q.shape
    lk = k.shape[1]
    out = np.zeros((h, lq, lk))
    for a in range(h):
        for i in range(lq):
            for j in range(lk):
                r = np_sinusoid(q_pos[i] - k_pos[j], d_r)  # r_{i-j}
                wr = r @ w_r[:, a, :]  # W_R r_{i-j}  (dh,)
                out[a, i, j] = (
                    q[a, i] @ k[a, j]  # content-based addressing
                    + q[a, i] @ wr  # content-dependent positional bias
                    + u[a] @ k[a, j]  # global content bias
                    + v[a] @ wr  # global positional bias
                )
    return out / np.sqrt(dh)


def make_position(d_r=None, seed=0):
    pos = XLRelativePosition(relative_dim=d_r)
    pos.build((B, L, H, DH))
    rng = np.random.default_rng(seed)
    for w in pos.weights:
        w.assign(rng.normal(size=w.shape).astype("float32") * 0.5)
    return pos


def test_score_bias_matches_four_term_reference():
    pos = make_position(d_r=6)
    rng = np.random.default_rng(1)
    q = rng.normal(size=(1, H, 5, DH)).astype("float32")
    k = rng.normal(size=(1, H, 7, DH)).astype("float32")
    q_pos, k_pos = np.arange(2, 7), np.arange(7)  # queries after a 2-slot memory
    rel = (k_pos[None, :] - q_pos[:, None]).astype("int32")
    bias = np_(pos.score_bias(rel, q, k, causal=True))[0]
    content = np.einsum("hid,hjd->hij", q[0], k[0]) / np.sqrt(DH)
    ref = np_xl_scores(
        q[0],
        k[0],
        q_pos,
        k_pos,
        np_(pos.position_kernel),
        np_(pos.content_bias),
        np_(pos.position_bias),
        6,
    )
    np.testing.assert_allclose(content + bias, ref, atol=1e-4)


def test_block_bias_equals_entries_of_full_bias():
    # a block with gathered (non-contiguous) keys gets the same entries as the full matrix
    pos = make_position()
    rng = np.random.default_rng(2)
    q = rng.normal(size=(1, H, L, DH)).astype("float32")
    k = rng.normal(size=(1, H, L, DH)).astype("float32")
    full_rel = (np.arange(L)[None, :] - np.arange(L)[:, None]).astype("int32")
    full = np_(pos.score_bias(full_rel, q, k))
    qi, kj = np.array([6, 7, 8]), np.array([0, 3, 5, 8, 9])
    rel = (kj[None, :] - qi[:, None]).astype("int32")
    block = np_(pos.score_bias(rel, q[:, :, qi], k[:, :, kj]))
    np.testing.assert_allclose(block, full[:, :, qi][:, :, :, kj], atol=1e-5)
    # with block axes: (n, b) blocks of queries, each block against its own keys
    qb = q[:, :, :8].reshape(1, H, 2, 4, DH)
    kb = k[:, :, :8].reshape(1, H, 2, 4, DH)
    rel_b = np.stack([full_rel[:4, :4], full_rel[4:8, 4:8]])  # (2, 4, 4)
    got = np_(pos.score_bias(rel_b, qb, kb))  # (1, H, 2, 4, 4)
    np.testing.assert_allclose(got[:, :, 1], full[:, :, 4:8, 4:8], atol=1e-5)


def test_equal_content_gives_toeplitz_scores():
    # catalogue V7 property: with all x equal, a^rel depends only on i - j
    pos = make_position()
    q = np.tile(np.random.default_rng(3).normal(size=(1, H, 1, DH)), (1, 1, L, 1))
    k = np.tile(np.random.default_rng(4).normal(size=(1, H, 1, DH)), (1, 1, L, 1))
    rel = (np.arange(L)[None, :] - np.arange(L)[:, None]).astype("int32")
    s = np_(pos.score_bias(rel, q.astype("float32"), k.astype("float32")))[0]
    np.testing.assert_allclose(s[:, 1:, 1:], s[:, :-1, :-1], atol=1e-5)
    assert np.abs(s[:, 0, 1:] - s[:, 0, :-1]).max() > 1e-4  # and it does depend on i - j


def test_shift_invariance_of_absolute_positions():
    # the same relative layout at absolute offset 0 or 1000 gives the same bias
    pos = make_position()
    rng = np.random.default_rng(5)
    q = rng.normal(size=(1, H, 4, DH)).astype("float32")
    k = rng.normal(size=(1, H, 6, DH)).astype("float32")
    for offset in (0, 1000):
        qp, kp = np.arange(2, 6) + offset, np.arange(6) + offset
        rel = (kp[None, :] - qp[:, None]).astype("int32")
        out = np_(pos.score_bias(rel, q, k))
        if offset == 0:
            first = out
    np.testing.assert_allclose(out, first, atol=1e-5)


def mha_reference(mha, x):
    """Dense numpy causal multi-head attention with the XL score."""
    pos = mha.position
    w = np_(mha.qkv_kernel)
    b = np_(mha.qkv_bias)
    qkv = x @ w + b
    q, k, v = np.split(qkv, [D, 2 * D], axis=-1)
    out = np.zeros((x.shape[0], x.shape[1], D))
    for n in range(x.shape[0]):
        qh = q[n].reshape(L, H, DH).transpose(1, 0, 2)
        kh = k[n].reshape(L, H, DH).transpose(1, 0, 2)
        vh = v[n].reshape(L, H, DH).transpose(1, 0, 2)
        s = np_xl_scores(
            qh,
            kh,
            np.arange(L),
            np.arange(L),
            np_(pos.position_kernel),
            np_(pos.content_bias),
            np_(pos.position_bias),
            D,
        )
        s = np.where(np.tril(np.ones((L, L), bool)), s, -np.inf)
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        out[n] = (p @ vh).transpose(1, 0, 2).reshape(L, D)
    return out @ np_(mha.output_kernel) + np_(mha.output_bias)


def test_multi_head_attention_full_core_matches_reference():
    x = np.random.default_rng(6).normal(size=(B, L, D)).astype("float32")
    mha = kt.attention.MultiHeadAttention(H, DH, causal=True, position="xl")
    mha(x)
    rng = np.random.default_rng(7)
    for wt in mha.position.weights:
        wt.assign(rng.normal(size=wt.shape).astype("float32") * 0.5)
    np.testing.assert_allclose(np_(mha(x)), mha_reference(mha, x), atol=1e-4)


def test_blocked_core_equals_full_core_when_window_covers_everything():
    x = np.random.default_rng(8).normal(size=(B, 12, D)).astype("float32")
    full = kt.attention.MultiHeadAttention(H, DH, causal=True, position="xl")
    blocked = kt.attention.MultiHeadAttention(
        H,
        DH,
        causal=True,
        position="xl",
        attention={"name": "sliding_window", "window": 12, "block_size": 4},
    )
    full(x)
    blocked(x)
    blocked.set_weights(full.get_weights())
    np.testing.assert_allclose(np_(blocked(x)), np_(full(x)), atol=1e-5)


def test_relative_dim_validation():
    with pytest.raises(ValueError, match="relative_dim=3"):
        XLRelativePosition(relative_dim=3)
    assert "xl" in kt.positional.available()
