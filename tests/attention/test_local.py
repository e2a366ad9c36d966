"""Tests of the `local` core (Image Transformer 1D local attention)."""

import keras
import numpy as np
import pytest
from layer_pairs import variant_and_full
from reference import numpy_attention

import keras_transformers as kt

RNG = np.random.default_rng(1)


def reference(q, k, v, mask):
    """Dense masked attention on (B, L, h, d) tensors with a (B|1, h|1, L, L) mask."""
    t = lambda x: np.transpose(x, (0, 2, 1, 3))  # noqa: E731
    out, weights = numpy_attention(t(q), t(k), t(v), mask)
    return t(out), weights


def local_mask(length, block, memory, causal):
    """Independent mask: key block within [qb - M, qb] (or [qb - M, qb + M]), plus j <= i."""
    i = np.arange(length)
    qb, kb = i[:, None] // block, i[None, :] // block
    mask = (kb >= qb - memory) & (kb <= qb + (0 if causal else memory))
    return mask & (i[None, :] <= i[:, None]) if causal else mask


def qkv(length, heads=2, dim=4, batch=2):
    return tuple(RNG.normal(size=(batch, length, heads, dim)).astype("float32") for _ in range(3))


def np_(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize("causal", [False, True])
def test_matches_dense_reference(causal):
    for length, block, memory in [(16, 4, 1), (13, 4, 1), (14, 3, 2), (9, 4, 0), (5, 8, 1)]:
        _check_against_reference(length, block, memory, causal)


def _check_against_reference(length, block, memory, causal):
    q, k, v = qkv(length)
    padding = RNG.random((2, length)) > 0.25
    core = kt.attention.get("local", block_size=block, memory_blocks=memory)
    out, weights = core(q, k, v, padding_mask=padding, causal=causal, return_attention_scores=True)
    fast = core(q, k, v, padding_mask=padding, causal=causal)
    mask = local_mask(length, block, memory, causal)[None, None] & padding[:, None, None, :]
    want, want_weights = reference(q, k, v, mask)
    np.testing.assert_allclose(np_(out), want, atol=1e-5)
    np.testing.assert_allclose(np_(fast), want, atol=1e-5)
    np.testing.assert_allclose(np_(weights), want_weights, atol=1e-6)


@pytest.mark.parametrize("causal", [False, True])
def test_degenerate_settings_equal_full(causal):
    """One block of size >= L, or a memory that reaches the start, is full attention."""
    q, k, v = qkv(12)
    full = kt.attention.get("full")(q, k, v, causal=causal)
    for config in ({"block_size": 12, "memory_blocks": 0}, {"block_size": 3, "memory_blocks": 4}):
        out = kt.attention.get("local", **config)(q, k, v, causal=causal)
        np.testing.assert_allclose(np_(out), np_(full), atol=1e-5)


def _pair(attention, causal, position=None, length=14):
    return variant_and_full(attention, causal, RNG, position, length)


@pytest.mark.parametrize("causal", [False, True])
def test_through_multi_head_attention_equals_masked_full(causal):
    for position in (None, "alibi", "shaw"):
        _check_masked_full(position, causal)


def _check_masked_full(position, causal):
    length = 14
    x, sparse, full = _pair(
        {"name": "local", "block_size": 4, "memory_blocks": 1}, causal, position, length
    )
    padding = RNG.random((2, length)) > 0.2
    mask = np.broadcast_to(local_mask(length, 4, 1, causal), (2, length, length))
    np.testing.assert_allclose(
        np_(sparse(x, padding_mask=padding)),
        np_(full(x, padding_mask=padding, attention_mask=mask)),
        atol=1e-5,
    )


def test_causality():
    x, sparse, _ = _pair({"name": "local", "block_size": 4, "memory_blocks": 1}, True)
    base = np_(sparse(x))
    for i in (0, 5, 12):
        changed = x.copy()
        changed[:, i + 1 :] = RNG.normal(size=changed[:, i + 1 :].shape)
        np.testing.assert_allclose(np_(sparse(changed))[:, : i + 1], base[:, : i + 1], atol=1e-5)


def test_padding_mask_hides_keys_and_empty_rows_are_zero():
    q, k, v = qkv(12)
    core = kt.attention.get("local", block_size=4, memory_blocks=1)
    padding = np.ones((2, 12), bool)
    padding[:, 9:] = False
    out = np_(core(q, k, v, padding_mask=padding))
    k2, v2 = k.copy(), v.copy()
    k2[:, 9:] += 4.0
    v2[:, 9:] -= 2.0
    np.testing.assert_allclose(np_(core(q, k2, v2, padding_mask=padding)), out, atol=1e-6)
    assert np.all(np_(core(q, k, v, padding_mask=np.zeros((2, 12), bool))) == 0.0)


def test_keys_per_query_at_most_lq_plus_lm_and_only_past():
    """Testable property (V21): <= l_q + l_m keys per query, independent of L; causal: j <= i."""
    block, memory = 4, 2
    for length in (24, 64):
        core = kt.attention.get("local", block_size=block, memory_blocks=memory)
        _, weights = core(*qkv(length, batch=1), causal=True, return_attention_scores=True)
        allowed = np_(weights)[0] > 0  # (h, L, L)
        assert allowed.sum(-1).max() <= block + memory * block
        assert not np.triu(allowed, k=1).any()


def test_static_pattern_and_validation():
    core = kt.attention.get("local", block_size=3, memory_blocks=1)
    for causal in (False, True):
        np.testing.assert_array_equal(
            core.static_pattern(10, causal)[0], local_mask(10, 3, 1, causal)
        )
    with pytest.raises(ValueError, match="block_size=0"):
        kt.attention.get("local", block_size=0)
    with pytest.raises(ValueError, match="memory_blocks=-1"):
        kt.attention.get("local", memory_blocks=-1)
    clone = type(core).from_config(core.get_config())
    assert (clone.block_size, clone.memory_blocks) == (3, 1)
