"""ETC global-local attention against an independent numpy reference."""

import os

import keras
import numpy as np
import pytest
from reference import numpy_attention

import keras_transformers as kt
from keras_transformers.attention.etc import GlobalTokenPrepender
from keras_transformers.ops.global_local import soft_mask_logits

RNG = np.random.default_rng(0)


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def heads_first(x):
    return np.transpose(x, (0, 2, 1, 3))


def qkv(b=2, length=23, h=2, kv_heads=None, dh=8, seed=0):
    rng = np.random.default_rng(seed)
    kv_heads = kv_heads or h
    return (
        rng.normal(size=(b, length, h, dh)).astype("float32"),
        rng.normal(size=(b, length, kv_heads, dh)).astype("float32"),
        rng.normal(size=(b, length, kv_heads, dh)).astype("float32"),
    )


def etc_masks(length, n_g, w, causal):
    """The four pieces built separately (paper's M^{g2g}, M^{g2l}, M^{l2g}, M^{l2l})."""
    n_l = length - n_g
    g2g = np.ones((n_g, n_g), bool)
    g2l = np.ones((n_g, n_l), bool)
    l2g = np.ones((n_l, n_g), bool)
    ii, jj = np.meshgrid(np.arange(n_l), np.arange(n_l), indexing="ij")
    l2l = np.abs(ii - jj) <= w
    mask = np.block([[g2g, g2l], [l2g, l2l]])
    if causal:
        mask &= np.tril(np.ones((length, length), bool))
    return mask


def reference(q, k, v, mask):
    rep = q.shape[2] // k.shape[2]
    out, weights = numpy_attention(
        heads_first(q), np.repeat(heads_first(k), rep, 1), np.repeat(heads_first(v), rep, 1), mask
    )
    return heads_first(out), weights


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n_g,w,kv_heads", [(3, 2, 2), (0, 3, 1), (1, 1, 2), (4, 0, 2)])
def test_matches_numpy_reference(causal, n_g, w, kv_heads):
    length = 23  # n_l not a multiple of the block: internal padding
    q, k, v = qkv(length=length, kv_heads=kv_heads)
    padding = np.ones((2, length), bool)
    padding[1, 17:] = False
    padding[0, 1] = n_g < 2  # a padded global token
    core = kt.attention.get("etc", num_global_tokens=n_g, window=w)
    out = to_np(core(q, k, v, padding_mask=padding, causal=causal))
    mask = etc_masks(length, n_g, w, causal)[None, None] & padding[:, None, None, :]
    ref, ref_w = reference(q, k, v, mask)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    _, weights = core(q, k, v, padding_mask=padding, causal=causal, return_attention_scores=True)
    np.testing.assert_allclose(to_np(weights), ref_w, atol=1e-5)


def test_paper_soft_masking_with_c_10000():
    """The paper lowers masked logits by C = 10000: their weight is ~0, same as hard masking."""
    length, n_g, w = 20, 2, 2
    q, k, v = qkv(length=length)
    out = to_np(kt.attention.get("etc", num_global_tokens=n_g, window=w)(q, k, v))
    qq, kk, vv = heads_first(q).astype(np.float64), heads_first(k), heads_first(v)
    a = qq @ np.swapaxes(kk, -1, -2) / np.sqrt(qq.shape[-1])
    m = etc_masks(length, n_g, w, False)
    a = a - (1 - m) * 10000.0  # a_ij - (1 - M_ij) C
    e = np.exp(a - a.max(-1, keepdims=True))
    weights = e / e.sum(-1, keepdims=True)
    assert weights[..., ~m].max() < 1e-30
    np.testing.assert_allclose(out, heads_first(weights @ vv), atol=1e-5)
    soft = soft_mask_logits(keras.ops.convert_to_tensor(a.astype("float32")), m)
    np.testing.assert_allclose(to_np(keras.ops.softmax(soft)), weights, atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_l2l_band_tensor_shape_and_values(causal):
    length, n_g, w = 21, 3, 2
    q, k, _ = qkv(length=length)
    core = kt.attention.get("etc", num_global_tokens=n_g, window=w)
    band = to_np(core.l2l_band_scores(q, k, causal=causal))
    n_l = length - n_g
    width = w + 1 if causal else 2 * w + 1
    assert band.shape == (2, 2, n_l, width)  # n_l × (2w+1)
    dense = heads_first(q) @ np.swapaxes(heads_first(k), -1, -2) / np.sqrt(8)  # (B, h, L, L)
    for i in range(n_l):
        for t in range(width):
            j = i + t - w
            if 0 <= j < n_l:
                np.testing.assert_allclose(
                    band[:, :, i, t], dense[:, :, n_g + i, n_g + j], atol=1e-5
                )
            else:
                assert (band[:, :, i, t] <= -1e8).all()


@pytest.mark.parametrize("causal", [False, True])
def test_degenerate_settings_equal_full(causal):
    length = 14
    q, k, v = qkv(length=length)
    full = to_np(kt.attention.get("full")(q, k, v, causal=causal))
    wide = kt.attention.get("etc", num_global_tokens=2, window=length)
    np.testing.assert_allclose(to_np(wide(q, k, v, causal=causal)), full, atol=1e-5)
    all_global = kt.attention.get("etc", num_global_tokens=length, window=0)
    np.testing.assert_allclose(to_np(all_global(q, k, v, causal=causal)), full, atol=1e-5)


def test_causality_and_padding_through_multi_head_attention():
    length, i = 26, 12
    layer = kt.attention.MultiHeadAttention(
        num_heads=2,
        key_dim=4,
        causal=True,
        attention={"name": "etc", "num_global_tokens": 2, "window": 3},
    )
    x = RNG.normal(size=(2, length, 8)).astype("float32")
    x2 = x.copy()
    x2[:, i + 1 :] = RNG.normal(size=x2[:, i + 1 :].shape)
    out1, out2 = to_np(layer(x)), to_np(layer(x2))
    np.testing.assert_allclose(out1[:, : i + 1], out2[:, : i + 1], atol=1e-5)
    assert np.abs(out1[:, i + 1 :] - out2[:, i + 1 :]).max() > 1e-4

    layer = kt.attention.MultiHeadAttention(
        num_heads=2, key_dim=4, attention={"name": "etc", "num_global_tokens": 2, "window": 3}
    )
    mask = np.ones((2, length), bool)
    mask[0, 18:] = False
    x3 = x.copy()
    x3[~mask] = 50.0
    np.testing.assert_allclose(
        to_np(layer(x, padding_mask=mask))[mask],
        to_np(layer(x3, padding_mask=mask))[mask],
        atol=1e-5,
    )


@pytest.mark.parametrize("position", ["shaw", "alibi"])
def test_relative_position_blocked_equals_dense(position):
    layer = kt.attention.MultiHeadAttention(
        num_heads=2,
        key_dim=4,
        position=position,
        attention={"name": "etc", "num_global_tokens": 2, "window": 2},
    )
    x = RNG.normal(size=(2, 19, 8)).astype("float32")
    dense, _ = layer(x, return_attention_scores=True)
    np.testing.assert_allclose(to_np(layer(x)), to_np(dense), atol=1e-5)


def test_cost_is_linear_in_long_length():
    """Attended pairs = n_g·L + n_l·n_g + l2l band: linear in n_l for fixed n_g and w."""
    core = kt.attention.get("etc", num_global_tokens=2, window=3)
    counts = [core.pattern(2 + n_l).sum() for n_l in (64, 128, 256)]
    growth = np.diff(counts)
    assert growth[1] == 2 * growth[0]


def test_global_token_prepender_model_save_load(tmp_path):
    n_g, length, d = 3, 16, 8
    inputs = keras.Input((length, d))
    prep = GlobalTokenPrepender(n_g)
    y = prep(inputs)
    assert tuple(y.shape) == (None, n_g + length, d)
    y = kt.attention.MultiHeadAttention(
        num_heads=2, key_dim=4, attention={"name": "etc", "num_global_tokens": n_g, "window": 2}
    )(y)
    summary = y[:, :n_g]  # the global tokens: per-sequence summaries
    long_part = prep.strip(y)  # == y[:, n_g:]
    model = keras.Model(inputs, [long_part, summary])
    x = RNG.normal(size=(2, length, d)).astype("float32")
    out_long, out_summary = model(x)
    assert tuple(out_long.shape) == (2, length, d)
    assert tuple(out_summary.shape) == (2, n_g, d)
    path = os.path.join(tmp_path, "etc.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(to_np(loaded(x)[0]), to_np(out_long), atol=1e-6)
    mask = prep.prepend_mask(np.array([[True] * 10 + [False] * 6] * 2))
    assert to_np(mask).shape == (2, n_g + length)
    assert to_np(mask)[:, :n_g].all() and not to_np(mask)[:, -1].any()


def test_errors():
    with pytest.raises(ValueError, match="window=-1"):
        kt.attention.get("etc", window=-1)
    with pytest.raises(ValueError, match="num_global_tokens=-2"):
        kt.attention.get("etc", num_global_tokens=-2)
    with pytest.raises(ValueError, match="num_global_tokens=0"):
        GlobalTokenPrepender(0)
    q, k, v = qkv(length=6)
    with pytest.raises(ValueError, match="num_global_tokens=7"):
        kt.attention.get("etc", num_global_tokens=7)(q, k, v)
    with pytest.raises(ValueError, match="global_mask"):
        kt.attention.get("etc")(q, k, v, global_mask=np.ones((2, 6), bool))
    core = kt.attention.get("etc", num_global_tokens=2, window=5, block_size=3)
    assert type(core).from_config(core.get_config()).get_config() == core.get_config()
