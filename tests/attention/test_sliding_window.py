"""Tests of the `sliding_window` core (Longformer's banded attention)."""

import keras
import numpy as np
import pytest
from layer_pairs import variant_and_full
from reference import numpy_attention

import keras_transformers as kt
from keras_transformers.attention.sliding_window import sliding_window_attention

RNG = np.random.default_rng(0)


# ----------------------------------------------------------------------------- numpy reference
def reference(q, k, v, mask):
    """Dense masked softmax attention. q, k, v (B, L, h, d); mask bool (B|1, h|1, L, L)."""
    t = lambda x: np.transpose(x, (0, 2, 1, 3))  # noqa: E731
    out, weights = numpy_attention(t(q), t(k), t(v), mask)
    return t(out), weights


def band(length, window, causal):
    """Independent band mask: |i - j| <= w (and j <= i when causal), (L, L)."""
    i = np.arange(length)
    dist = i[None, :] - i[:, None]
    mask = np.abs(dist) <= window
    return mask & (dist <= 0) if causal else mask


def qkv(length, heads=2, dim=4, batch=2, kv_heads=None):
    q = RNG.normal(size=(batch, length, heads, dim)).astype("float32")
    k = RNG.normal(size=(batch, length, kv_heads or heads, dim)).astype("float32")
    v = RNG.normal(size=(batch, length, kv_heads or heads, dim)).astype("float32")
    return q, k, v


def np_(x):
    return keras.ops.convert_to_numpy(x)


# ----------------------------------------------------------------------------- equality
@pytest.mark.parametrize("causal", [False, True])
def test_matches_dense_reference(causal):
    for length, window, block in [
        (16, 3, None),
        (13, 4, None),
        (13, 3, 2),
        (7, 2, 5),
        (20, 1, None),
    ]:
        _check_against_reference(length, window, block, causal)


def _check_against_reference(length, window, block, causal):
    q, k, v = qkv(length)
    padding = RNG.random((2, length)) > 0.25
    core = kt.attention.get("sliding_window", window=window, block_size=block)
    out, weights = core(q, k, v, padding_mask=padding, causal=causal, return_attention_scores=True)
    fast = core(q, k, v, padding_mask=padding, causal=causal)
    mask = band(length, window, causal)[None, None] & padding[:, None, None, :]
    want, want_weights = reference(q, k, v, mask)
    np.testing.assert_allclose(np_(out), want, atol=1e-5)
    np.testing.assert_allclose(np_(fast), want, atol=1e-5)
    np.testing.assert_allclose(np_(weights), want_weights, atol=1e-6)


def test_grouped_kv_heads():
    q, k, v = qkv(12, heads=4, kv_heads=2)
    out = kt.attention.get("sliding_window", window=2)(q, k, v, causal=True)
    rep = lambda x: np.repeat(x, 2, axis=2)  # noqa: E731
    want, _ = reference(q, rep(k), rep(v), band(12, 2, True)[None, None])
    np.testing.assert_allclose(np_(out), want, atol=1e-5)


def test_function_on_heads_first_tensors():
    q, k, v = qkv(11)
    padding = RNG.random((2, 11)) > 0.2
    t = lambda x: np.transpose(x, (0, 2, 1, 3))  # noqa: E731
    out, weights = sliding_window_attention(
        t(q), t(k), t(v), window=3, causal=False, key_mask=padding, return_weights=True
    )
    want, want_w = reference(q, k, v, band(11, 3, False)[None, None] & padding[:, None, None])
    np.testing.assert_allclose(np_(out), t(want), atol=1e-5)
    np.testing.assert_allclose(np_(weights), want_w, atol=1e-6)


def test_window_at_least_length_equals_full():
    q, k, v = qkv(10)
    for causal in (False, True):
        out = kt.attention.get("sliding_window", window=10)(q, k, v, causal=causal)
        full = kt.attention.get("full")(q, k, v, causal=causal)
        np.testing.assert_allclose(np_(out), np_(full), atol=1e-5)


def _pair(attention, causal, position=None, length=14):
    return variant_and_full(attention, causal, RNG, position, length)


@pytest.mark.parametrize("causal", [False, True])
def test_through_multi_head_attention_equals_masked_full(causal):
    for position in (None, "alibi", "shaw", "t5"):
        _check_masked_full(position, causal)


def _check_masked_full(position, causal):
    length, window = 14, 3
    x, sparse, full = _pair({"name": "sliding_window", "window": window}, causal, position)
    padding = RNG.random((2, length)) > 0.2
    mask = np.broadcast_to(band(length, window, causal), (2, length, length))
    got = sparse(x, padding_mask=padding)
    want = full(x, padding_mask=padding, attention_mask=mask)
    np.testing.assert_allclose(np_(got), np_(want), atol=1e-5)


def test_degenerate_window_equals_full_attention_layer():
    for position in (None, "alibi"):
        _check_degenerate_layer(position)


def _check_degenerate_layer(position):
    x, sparse, full = _pair({"name": "sliding_window", "window": 20}, True, position)
    np.testing.assert_allclose(np_(sparse(x)), np_(full(x)), atol=1e-5)


# ----------------------------------------------------------------------------- properties
def test_causality():
    length = 15
    x, sparse, _ = _pair({"name": "sliding_window", "window": 4}, True, length=length)
    base = np_(sparse(x))
    for i in (0, 6, 13):
        changed = x.copy()
        changed[:, i + 1 :] = RNG.normal(size=changed[:, i + 1 :].shape)
        np.testing.assert_allclose(np_(sparse(changed))[:, : i + 1], base[:, : i + 1], atol=1e-5)


def test_padding_mask_hides_keys_and_empty_rows_are_zero():
    q, k, v = qkv(12)
    core = kt.attention.get("sliding_window", window=2)
    padding = np.ones((2, 12), bool)
    padding[:, 8:] = False
    out = np_(core(q, k, v, padding_mask=padding))
    k2, v2 = k.copy(), v.copy()
    k2[:, 8:] += 5.0
    v2[:, 8:] -= 3.0
    np.testing.assert_allclose(np_(core(q, k2, v2, padding_mask=padding)), out, atol=1e-6)
    none = np_(core(q, k, v, padding_mask=np.zeros((2, 12), bool)))
    assert np.all(none == 0.0)


def test_keys_per_query_are_bounded_by_the_window():
    """Testable property: at most 2w + 1 keys per query (w + 1 when causal), for any L."""
    for length in (16, 40):
        weights = np_(
            kt.attention.get("sliding_window", window=3)(
                *qkv(length, batch=1), return_attention_scores=True
            )[1]
        )
        assert (weights > 0).sum(-1).max() == 7
        weights = np_(
            kt.attention.get("sliding_window", window=3)(
                *qkv(length, batch=1), causal=True, return_attention_scores=True
            )[1]
        )
        assert (weights > 0).sum(-1).max() == 4


def test_blocked_scores_never_l_by_l():
    """The normal path only forms (B, h, L/w, w, 3w) score blocks."""
    from keras_transformers.ops import sparse_patterns as sp

    length, window = 64, 8
    q = keras.ops.zeros((1, 2, length, 4))
    part = kt.attention.sliding_window.sliding_window_part(
        q, q, q, length, length, window, False, window
    )
    assert tuple(part.key.shape) == (1, 2, length // window, 3 * window, 4)
    assert sp.static_mask(part, length).shape == (length // window, window, 3 * window)


def test_static_pattern_matches_band():
    core = kt.attention.get("sliding_window", window=3, block_size=2)
    for causal in (False, True):
        np.testing.assert_array_equal(core.static_pattern(11, causal)[0], band(11, 3, causal))


def test_validation_and_config():
    with pytest.raises(ValueError, match="window=0"):
        kt.attention.get("sliding_window", window=0)
    with pytest.raises(ValueError, match="block_size"):
        kt.attention.get("sliding_window", window=2, block_size=-1)
    core = kt.attention.get("sliding_window", window=5, block_size=3)
    clone = type(core).from_config(core.get_config())
    assert (clone.window, clone.block_size) == (5, 3)
    q, k, v = qkv(6)
    with pytest.raises(ValueError, match="attention_mask"):
        core(q, k, v, attention_mask=np.ones((2, 6, 6), bool))
    with pytest.raises(ValueError, match="self-attention"):
        core(q, k[:, :4], v[:, :4])


@pytest.mark.parametrize("position", [None, "alibi", "t5"])
def test_ring_buffer_cache_equals_uncached_layer(position):
    """Pre-fill 5 tokens, then 1 and 2 at a time: same outputs as one causal pass; the cache
    stays a ring of w + 1 slots (grouped KV heads, positions recovered from the slots)."""
    window, length = 2, 12
    mha = kt.attention.MultiHeadAttention(
        num_heads=4,
        key_dim=4,
        num_key_value_heads=2,
        causal=True,
        position=position,
        attention={"name": "sliding_window", "window": window},
    )
    x = np.random.default_rng(1).normal(size=(2, length, 8)).astype("float32")
    expected = np_(mha(x))
    cache = mha.init_cache(2, 1000)
    assert tuple(cache.shape) == (2, 2, window + 1, 2, 4)
    outs, start = [], 0
    for size in (5, 1, 2, 1, 1, 2):
        out, cache = mha(x[:, start : start + size], cache=cache, cache_index=start)
        assert tuple(cache.shape) == (2, 2, window + 1, 2, 4)
        outs.append(np_(out))
        start += size
    np.testing.assert_allclose(np.concatenate(outs, axis=1), expected, rtol=1e-5, atol=1e-5)
