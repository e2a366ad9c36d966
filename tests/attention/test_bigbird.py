"""BigBird (window + global + random blocks) against an independent numpy reference."""

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


def qkv(b=2, length=30, h=2, kv_heads=None, dh=8, seed=0):
    rng = np.random.default_rng(seed)
    kv_heads = kv_heads or h
    return (
        rng.normal(size=(b, length, h, dh)).astype("float32"),
        rng.normal(size=(b, length, kv_heads, dh)).astype("float32"),
        rng.normal(size=(b, length, kv_heads, dh)).astype("float32"),
    )


def bigbird_mask(length, b, n_w, g, table, causal):
    """Independent token-level pattern from the block rules and the random table."""
    mask = np.zeros((length, length), bool)
    half = n_w // 2
    for i in range(length):
        qi = i // b
        for j in range(length):
            kj = j // b
            window = (qi - half <= kj <= qi) if causal else abs(kj - qi) <= half
            ok = window or qi < g or kj < g or kj in set(table[qi][table[qi] >= 0])
            mask[i, j] = ok and (j <= i or not causal)
    return mask


def reference(q, k, v, mask):
    rep = q.shape[2] // k.shape[2]
    out, weights = numpy_attention(
        heads_first(q), np.repeat(heads_first(k), rep, 1), np.repeat(heads_first(v), rep, 1), mask
    )
    return heads_first(out), weights


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    "b,n_w,g,r,kv_heads", [(4, 3, 1, 2, 2), (3, 1, 2, 1, 1), (5, 5, 0, 1, 2), (4, 3, 1, 0, 2)]
)
def test_matches_numpy_reference(causal, b, n_w, g, r, kv_heads):
    length = 30  # not a multiple of 4: padded internally
    q, k, v = qkv(length=length, kv_heads=kv_heads)
    padding = np.ones((2, length), bool)
    padding[1, 21:] = False
    core = kt.attention.get(
        "bigbird",
        block_size=b,
        num_window_blocks=n_w,
        num_global_blocks=g,
        num_random_blocks=r,
        seed=3,
    )
    out = to_np(core(q, k, v, padding_mask=padding, causal=causal))
    table = core.random_blocks(length, causal)
    mask = bigbird_mask(length, b, n_w, g, table, causal)[None, None] & padding[:, None, None]
    ref, ref_w = reference(q, k, v, mask)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    _, weights = core(q, k, v, padding_mask=padding, causal=causal, return_attention_scores=True)
    np.testing.assert_allclose(to_np(weights), ref_w, atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_random_table_rules(causal):
    core = kt.attention.get(
        "bigbird",
        block_size=2,
        num_window_blocks=3,
        num_global_blocks=2,
        num_random_blocks=3,
        seed=5,
    )
    n = 40
    table = core.random_blocks(2 * n, causal)
    assert table.shape == (n, 3)
    assert (table[:2] == -1).all()  # global query blocks need none
    for i in range(2, n):
        chosen = table[i][table[i] >= 0]
        assert len(set(chosen)) == len(chosen)  # distinct
        assert (chosen >= 2).all()  # never a global block
        assert (np.abs(chosen - i) > 1).all()  # never a window block
        if causal:
            assert (chosen < i).all()  # only from the past
        candidates = [j for j in range(2, n) if abs(j - i) > 1 and (not causal or j < i)]
        assert len(chosen) == min(3, len(candidates))


def test_random_blocks_are_deterministic_per_seed(tmp_path):
    config = {"block_size": 4, "num_random_blocks": 2, "seed": 11}
    a = kt.attention.get("bigbird", **config)
    b = kt.attention.get("bigbird", **config)
    c = kt.attention.get("bigbird", **{**config, "seed": 12})
    np.testing.assert_array_equal(a.random_blocks(64), b.random_blocks(64))
    assert (a.random_blocks(64) != c.random_blocks(64)).any()
    q, k, v = qkv(length=64)
    out = to_np(a(q, k, v))
    np.testing.assert_array_equal(out, to_np(a(q, k, v)))  # the same on every call
    np.testing.assert_allclose(out, to_np(b(q, k, v)), atol=1e-6)
    clone = type(a).from_config(a.get_config())
    np.testing.assert_array_equal(clone.random_blocks(64), a.random_blocks(64))


def test_keys_per_query_and_band_superset():
    """Interior queries attend to exactly (n_w + g + r)·b keys; the mask contains the band."""
    b, n_w, g, r, length = 4, 3, 1, 2, 64
    core = kt.attention.get(
        "bigbird",
        block_size=b,
        num_window_blocks=n_w,
        num_global_blocks=g,
        num_random_blocks=r,
        seed=0,
    )
    q, k, v = qkv(b=1, length=length)
    _, weights = core(q, k, v, return_attention_scores=True)
    nz = to_np(weights)[0, 0] > 0  # (L, L)
    np.testing.assert_array_equal(nz, core.pattern(length))
    blocks = np.arange(length) // b
    interior = (blocks >= g + 2) & (blocks <= length // b - 2)  # window clear of global/ends
    assert (nz.sum(-1)[interior] == (n_w + g + r) * b).all()
    assert (nz.sum(-1)[blocks < g] == length).all()  # global rows cover everything
    band = np.abs(blocks[:, None] - blocks[None, :]) <= n_w // 2
    assert nz[band].all()
    # constant in L: doubling the length keeps the interior count
    nz2 = core.pattern(2 * length)
    blocks2 = np.arange(2 * length) // b
    interior2 = (blocks2 >= g + 2) & (blocks2 <= 2 * length // b - 2)
    assert (nz2.sum(-1)[interior2] == (n_w + g + r) * b).all()


@pytest.mark.parametrize("causal", [False, True])
def test_degenerate_settings_equal_full(causal):
    length = 22
    q, k, v = qkv(length=length)
    full = to_np(kt.attention.get("full")(q, k, v, causal=causal))
    wide = kt.attention.get(
        "bigbird", block_size=4, num_window_blocks=11, num_global_blocks=0, num_random_blocks=2
    )
    np.testing.assert_allclose(to_np(wide(q, k, v, causal=causal)), full, atol=1e-5)
    all_global = kt.attention.get("bigbird", block_size=4, num_global_blocks=6)
    np.testing.assert_allclose(to_np(all_global(q, k, v, causal=causal)), full, atol=1e-5)
    one_block = kt.attention.get("bigbird", block_size=64, num_global_blocks=0)
    np.testing.assert_allclose(to_np(one_block(q, k, v, causal=causal)), full, atol=1e-5)


def test_causality_and_padding_through_multi_head_attention():
    length, i = 32, 13
    config = {"name": "bigbird", "block_size": 4, "num_random_blocks": 2, "seed": 1}
    layer = kt.attention.MultiHeadAttention(num_heads=2, key_dim=4, causal=True, attention=config)
    x = RNG.normal(size=(2, length, 8)).astype("float32")
    x2 = x.copy()
    x2[:, i + 1 :] = RNG.normal(size=x2[:, i + 1 :].shape)
    out1, out2 = to_np(layer(x)), to_np(layer(x2))
    np.testing.assert_allclose(out1[:, : i + 1], out2[:, : i + 1], atol=1e-5)
    assert np.abs(out1[:, i + 1 :] - out2[:, i + 1 :]).max() > 1e-4

    layer = kt.attention.MultiHeadAttention(num_heads=2, key_dim=4, attention=config)
    mask = np.ones((2, length), bool)
    mask[1, 19:] = False
    x3 = x.copy()
    x3[~mask] = -30.0
    np.testing.assert_allclose(
        to_np(layer(x, padding_mask=mask))[mask],
        to_np(layer(x3, padding_mask=mask))[mask],
        atol=1e-5,
    )


@pytest.mark.parametrize("position", ["alibi", "shaw"])
def test_position_bias_blocked_equals_dense(position):
    layer = kt.attention.MultiHeadAttention(
        num_heads=2,
        key_dim=4,
        position=position,
        attention={"name": "bigbird", "block_size": 3, "num_random_blocks": 2},
    )
    x = RNG.normal(size=(2, 25, 8)).astype("float32")
    dense, _ = layer(x, return_attention_scores=True)
    np.testing.assert_allclose(to_np(layer(x)), to_np(dense), atol=1e-5)


def test_errors_and_config():
    with pytest.raises(ValueError, match="block_size=0"):
        kt.attention.get("bigbird", block_size=0)
    with pytest.raises(ValueError, match="num_window_blocks=2"):
        kt.attention.get("bigbird", num_window_blocks=2)
    with pytest.raises(ValueError, match="num_random_blocks=-1"):
        kt.attention.get("bigbird", num_random_blocks=-1)
    with pytest.raises(ValueError, match="seed=-3"):
        kt.attention.get("bigbird", seed=-3)
    q, k, v = qkv(length=8)
    with pytest.raises(ValueError, match="global_mask"):
        kt.attention.get("bigbird")(q, k, v, global_mask=np.ones((2, 8), bool))
    core = kt.attention.get(
        "bigbird",
        block_size=8,
        num_window_blocks=5,
        num_global_blocks=2,
        num_random_blocks=1,
        seed=9,
    )
    assert type(core).from_config(core.get_config()).get_config() == core.get_config()
