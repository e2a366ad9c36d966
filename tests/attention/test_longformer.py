"""Longformer (sliding + dilated windows + global tokens) against an independent numpy reference."""

import keras
import numpy as np
import pytest
from reference import numpy_attention

import keras_transformers as kt

RNG = np.random.default_rng(0)


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def heads_first(x):
    return np.transpose(x, (0, 2, 1, 3))


def qkv(b=2, length=21, h=3, kv_heads=None, dh=8, seed=0):
    rng = np.random.default_rng(seed)
    kv_heads = kv_heads or h
    q = rng.normal(size=(b, length, h, dh)).astype("float32")
    k = rng.normal(size=(b, length, kv_heads, dh)).astype("float32")
    v = rng.normal(size=(b, length, kv_heads, dh)).astype("float32")
    return q, k, v


def reference_mask(length, heads, window, dilations, causal, is_global, padding=None):
    """Independent pattern: bool (B, h, L, L) built by looping over pairs.

    ``is_global`` is bool (B, L); ``dilations`` one per head.
    """
    batch = is_global.shape[0]
    mask = np.zeros((batch, heads, length, length), bool)
    for bi in range(batch):
        for hi in range(heads):
            d = dilations[hi]
            for i in range(length):
                for j in range(length):
                    off = j - i
                    lo = -window * d
                    hi_ = 0 if causal else window * d
                    local = lo <= off <= hi_ and off % d == 0
                    ok = local or is_global[bi, i] or is_global[bi, j]
                    if causal and j > i:
                        ok = False
                    if padding is not None and not padding[bi, j]:
                        ok = False
                    mask[bi, hi, i, j] = ok
    return mask


def run_reference(q, k, v, mask):
    h = q.shape[2]
    rep = h // k.shape[2]
    kk = np.repeat(heads_first(k), rep, 1)
    vv = np.repeat(heads_first(v), rep, 1)
    out, weights = numpy_attention(heads_first(q), kk, vv, mask)
    return heads_first(out), weights


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    "window,dilation,tokens,kv_heads",
    [(2, 1, [], 3), (3, [1, 2, 3], [0], 3), (2, [2, 1], [0, 9, 20], 1), (4, 2, [5], 3)],
)
def test_static_globals_match_reference(causal, window, dilation, tokens, kv_heads):
    length, h = 21, 3  # 21 is not a multiple of the blocks: internal padding
    q, k, v = qkv(length=length, h=h, kv_heads=kv_heads)
    padding = np.ones((2, length), bool)
    padding[1, 15:] = False
    core = kt.attention.get("longformer", window=window, dilation=dilation, global_tokens=tokens)
    out = to_np(core(q, k, v, padding_mask=padding, causal=causal))
    dil = dilation if isinstance(dilation, list) else [dilation]
    is_global = np.zeros((2, length), bool)
    is_global[:, tokens] = True
    mask = reference_mask(
        length, h, window, [dil[i % len(dil)] for i in range(h)], causal, is_global, padding
    )
    ref, ref_w = run_reference(q, k, v, mask)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    out_dbg, weights = core(
        q, k, v, padding_mask=padding, causal=causal, return_attention_scores=True
    )
    np.testing.assert_allclose(to_np(weights), ref_w, atol=1e-5)
    np.testing.assert_allclose(to_np(out_dbg), ref, atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_per_batch_global_mask_matches_reference(causal):
    length, h = 19, 2
    q, k, v = qkv(length=length, h=h)
    global_mask = np.zeros((2, length), bool)
    global_mask[0, [3, 11]] = True
    global_mask[1, [0, 4, 5, 18]] = True
    padding = np.ones((2, length), bool)
    padding[0, 16:] = False
    core = kt.attention.get(
        "longformer", window=2, dilation=[1, 2], global_tokens=[7], max_global=5
    )
    out = to_np(core(q, k, v, padding_mask=padding, causal=causal, global_mask=global_mask))
    is_global = global_mask.copy()
    is_global[:, 7] = True
    mask = reference_mask(length, h, 2, [1, 2], causal, is_global, padding)
    ref, ref_w = run_reference(q, k, v, mask)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    _, weights = core(
        q,
        k,
        v,
        padding_mask=padding,
        causal=causal,
        global_mask=global_mask,
        return_attention_scores=True,
    )
    np.testing.assert_allclose(to_np(weights), ref_w, atol=1e-5)


def test_global_capacity_keeps_the_first_max_global():
    length = 16
    q, k, v = qkv(b=1, length=length, h=2)
    global_mask = np.zeros((1, length), bool)
    global_mask[0, [2, 6, 9, 13]] = True
    core = kt.attention.get("longformer", window=1, max_global=2)
    out = to_np(core(q, k, v, global_mask=global_mask))
    kept = np.zeros((1, length), bool)
    kept[0, [2, 6]] = True  # 9 and 13 exceed the capacity and stay local
    ref, _ = run_reference(q, k, v, reference_mask(length, 2, 1, [1, 1], False, kept))
    np.testing.assert_allclose(out, ref, atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_window_covering_everything_equals_full(causal):
    q, k, v = qkv(length=13, h=2)
    full = to_np(kt.attention.get("full")(q, k, v, causal=causal))
    core = kt.attention.get("longformer", window=13)
    np.testing.assert_allclose(to_np(core(q, k, v, causal=causal)), full, atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_all_tokens_global_equals_full(causal):
    length = 12
    q, k, v = qkv(length=length, h=2)
    full = to_np(kt.attention.get("full")(q, k, v, causal=causal))
    static = kt.attention.get(
        "longformer", window=1, dilation=[1, 3], global_tokens=list(range(length))
    )
    np.testing.assert_allclose(to_np(static(q, k, v, causal=causal)), full, atol=1e-5)
    dynamic = kt.attention.get("longformer", window=1, max_global=length)
    gm = np.ones((2, length), bool)
    np.testing.assert_allclose(
        to_np(dynamic(q, k, v, causal=causal, global_mask=gm)), full, atol=1e-5
    )


def test_equals_sliding_window_without_globals():
    if "sliding_window" not in kt.attention.available():
        pytest.skip("sliding_window core not available")
    q, k, v = qkv(length=23, h=2)
    for causal in (False, True):
        sw = kt.attention.get("sliding_window", window=3)
        lf = kt.attention.get("longformer", window=3)
        np.testing.assert_allclose(
            to_np(lf(q, k, v, causal=causal)), to_np(sw(q, k, v, causal=causal)), atol=1e-5
        )


def test_causality_through_multi_head_attention():
    length, i = 24, 10
    layer = kt.attention.MultiHeadAttention(
        num_heads=2,
        key_dim=4,
        causal=True,
        attention={"name": "longformer", "window": 3, "dilation": [1, 2], "global_tokens": [0]},
    )
    x = RNG.normal(size=(2, length, 8)).astype("float32")
    x2 = x.copy()
    x2[:, i + 1 :] = RNG.normal(size=x2[:, i + 1 :].shape)
    gm = np.zeros((2, length), bool)
    gm[:, [4, 15]] = True  # a future global token must not leak either
    out1, out2 = to_np(layer(x, global_mask=gm)), to_np(layer(x2, global_mask=gm))
    np.testing.assert_allclose(out1[:, : i + 1], out2[:, : i + 1], atol=1e-5)
    assert np.abs(out1[:, i + 1 :] - out2[:, i + 1 :]).max() > 1e-4


def test_padding_mask_through_multi_head_attention():
    length = 20
    layer = kt.attention.MultiHeadAttention(
        num_heads=2,
        key_dim=4,
        attention={"name": "longformer", "window": 2, "global_tokens": [0], "max_global": 3},
    )
    x = RNG.normal(size=(2, length, 8)).astype("float32")
    mask = np.ones((2, length), bool)
    mask[0, 12:] = False
    x2 = x.copy()
    x2[~mask] = 100.0
    gm = np.zeros((2, length), bool)
    gm[:, 14] = True  # a padded global token is still masked as a key
    out1 = to_np(layer(x, padding_mask=mask, global_mask=gm))
    out2 = to_np(layer(x2, padding_mask=mask, global_mask=gm))
    np.testing.assert_allclose(out1[mask], out2[mask], atol=1e-5)


@pytest.mark.parametrize("position", ["alibi", "shaw", "t5"])
def test_position_bias_blocked_equals_dense(position):
    layer = kt.attention.MultiHeadAttention(
        num_heads=2,
        key_dim=4,
        position=position,
        attention={
            "name": "longformer",
            "window": 2,
            "dilation": [1, 2],
            "global_tokens": [0],
            "max_global": 4,
        },
    )
    x = RNG.normal(size=(2, 18, 8)).astype("float32")
    gm = np.zeros((2, 18), bool)
    gm[0, 9] = True
    gm[1, 3] = True
    blocked = to_np(layer(x, global_mask=gm))
    dense, _ = layer(x, global_mask=gm, return_attention_scores=True)
    np.testing.assert_allclose(blocked, to_np(dense), atol=1e-5)


def test_alibi_matches_numpy_bias():
    length, h = 17, 2
    q, k, v = qkv(b=1, length=length, h=h)
    alibi = kt.positional.get("alibi")
    alibi.build((1, length, h, 8))
    core = kt.attention.get("longformer", window=2, global_tokens=[4])
    out = to_np(core(q, k, v, position=alibi))
    is_global = np.zeros((1, length), bool)
    is_global[:, 4] = True
    mask = reference_mask(length, h, 2, [1, 1], False, is_global)
    slopes = kt.positional.alibi_slopes(h)
    dist = np.abs(np.arange(length)[None, :] - np.arange(length)[:, None])
    bias = -slopes[:, None, None] * dist[None]
    kk, vv = heads_first(k), heads_first(v)
    ref, _ = numpy_attention(heads_first(q), kk, vv, mask, bias[None])
    np.testing.assert_allclose(out, heads_first(ref), atol=1e-5)


def test_catalogue_properties():
    """Local query: <= 2w + 1 + |G| keys; global row covers all L keys; dilated span ~ 2w·d."""
    length, w = 40, 3
    q, k, v = qkv(b=1, length=length, h=2)
    core = kt.attention.get("longformer", window=w, dilation=[1, 4], global_tokens=[0, 20])
    _, weights = core(q, k, v, return_attention_scores=True)
    nz = to_np(weights)[0] > 0  # (h, L, L)
    is_global = np.zeros(length, bool)
    is_global[[0, 20]] = True
    counts = nz.sum(-1)  # (h, L)
    assert counts[:, ~is_global].max() <= 2 * w + 1 + 2
    assert (counts[:, is_global] == length).all()
    # the dilated head (d = 4) of a middle query spans 2·w·d positions of the band
    local = np.flatnonzero(nz[1, 17] & ~is_global)
    assert local.max() - local.min() == 2 * w * 4
    assert set(np.diff(local)) == {4}


def test_xla_jit_with_global_mask():
    if keras.backend.backend() != "tensorflow":
        pytest.skip("tf.function check")
    import tensorflow as tf

    q, k, v = qkv(length=20, h=2)
    gm = np.zeros((2, 20), bool)
    gm[0, 5] = gm[1, 17] = True
    core = kt.attention.get(
        "longformer", window=2, dilation=[1, 2], global_tokens=[0], max_global=3
    )
    fn = tf.function(lambda a, b, c, g: core(a, b, c, global_mask=g), jit_compile=True)
    np.testing.assert_allclose(
        to_np(fn(q, k, v, gm)), to_np(core(q, k, v, global_mask=gm)), atol=1e-5
    )


def test_config_round_trip_and_errors():
    core = kt.attention.get(
        "longformer", window=4, dilation=[1, 2], global_tokens=[3, 0], max_global=6
    )
    clone = type(core).from_config(core.get_config())
    assert clone.get_config() == core.get_config()
    assert clone.global_tokens == [0, 3]
    with pytest.raises(ValueError, match="window=0"):
        kt.attention.get("longformer", window=0)
    with pytest.raises(ValueError, match="dilation=0"):
        kt.attention.get("longformer", dilation=[1, 0])
    with pytest.raises(ValueError, match="global_tokens=-1"):
        kt.attention.get("longformer", global_tokens=[-1])
    with pytest.raises(ValueError, match="max_global=1"):
        kt.attention.get("longformer", global_tokens=[0, 1], max_global=1)
    q, k, v = qkv(length=8, h=2)
    with pytest.raises(ValueError, match="global_tokens"):
        kt.attention.get("longformer", global_tokens=[9])(q, k, v)
    with pytest.raises(ValueError, match="attention_mask"):
        kt.attention.get("longformer")(q, k, v, attention_mask=np.ones((2, 8, 8), bool))
    with pytest.raises(ValueError, match="global_mask"):
        kt.attention.get("longformer")(q, k, v, global_mask=np.ones((2, 7), bool))
