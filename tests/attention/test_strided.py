"""Tests of the `strided` core (Sparse Transformer strided pattern, three combination modes)."""

import keras
import numpy as np
import pytest
from layer_pairs import variant_and_full
from reference import factorized_head_masks as head_masks
from reference import numpy_attention

import keras_transformers as kt

RNG = np.random.default_rng(4)
MODES = ["merged", "interleave", "multihead"]


def reference(q, k, v, mask):
    t = lambda x: np.transpose(x, (0, 2, 1, 3))  # noqa: E731
    out, weights = numpy_attention(t(q), t(k), t(v), mask)
    return t(out), weights


def strided_sets(length, stride, causal):
    """Independent A(1), A(2) as (L, L) bool: |i-j| <= ℓ and (i-j) mod ℓ = 0 (j <= i if causal)."""
    i = np.arange(length)
    diff = i[:, None] - i[None, :]  # i - j
    a1, a2 = np.abs(diff) <= stride, diff % stride == 0
    if causal:
        a1, a2 = a1 & (diff >= 0), a2 & (diff >= 0)
    return a1, a2


def qkv(length, heads=3, dim=4, batch=2):
    return tuple(RNG.normal(size=(batch, length, heads, dim)).astype("float32") for _ in range(3))


def np_(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize(
    "mode,layer_index", [("merged", 0), ("interleave", 0), ("interleave", 1), ("multihead", 0)]
)
def test_matches_dense_reference(mode, layer_index):
    for length, stride, causal in [
        (16, 4, False),
        (13, 4, True),
        (20, 3, False),
        (20, 3, True),
        (7, 2, True),
    ]:
        _check_against_reference(mode, layer_index, length, stride, causal)


def _check_against_reference(mode, layer_index, length, stride, causal):
    q, k, v = qkv(length)
    padding = RNG.random((2, length)) > 0.25
    core = kt.attention.get("strided", stride=stride, mode=mode, layer_index=layer_index)
    out, weights = core(q, k, v, padding_mask=padding, causal=causal, return_attention_scores=True)
    fast = core(q, k, v, padding_mask=padding, causal=causal)
    masks = head_masks(*strided_sets(length, stride, causal), mode, layer_index, 3)
    want, want_weights = reference(q, k, v, masks[None] & padding[:, None, None, :])
    np.testing.assert_allclose(np_(out), want, atol=1e-5)
    np.testing.assert_allclose(np_(fast), want, atol=1e-5)
    np.testing.assert_allclose(np_(weights), want_weights, atol=1e-6)


def test_stride_at_least_length_equals_full():
    q, k, v = qkv(12)
    for causal in (False, True):
        out = kt.attention.get("strided", stride=12)(q, k, v, causal=causal)
        full = kt.attention.get("full")(q, k, v, causal=causal)
        np.testing.assert_allclose(np_(out), np_(full), atol=1e-5)


def test_two_hops_reach_every_past_position():
    """Testable property (V23): with j <= i, every j <= i is reachable from i within 2 hops
    (L=64, ℓ=8): through one merged layer twice, and through layers A(1) then A(2)."""
    length, stride = 64, 8
    q, k, v = qkv(length, heads=1, batch=1)

    def pattern(**config):
        core = kt.attention.get("strided", stride=stride, **config)
        _, weights = core(q, k, v, causal=True, return_attention_scores=True)
        return (np_(weights)[0, 0] > 0).astype(int)

    past = np.tril(np.ones((length, length), bool))
    merged = pattern(mode="merged")
    assert ((merged @ merged > 0) == past).all()
    first, second = (
        pattern(mode="interleave", layer_index=0),
        pattern(mode="interleave", layer_index=1),
    )
    assert ((second @ first > 0) == past).all()


def test_key_count_is_order_l_over_stride_plus_stride():
    """Testable property (V23): O(ℓ + L/ℓ) keys per query, far below L²/2 in total
    (L=1024, ℓ=32), and the two sets overlap exactly at {i, i - ℓ}."""
    length, stride = 1024, 32
    pattern = kt.attention.get("strided", stride=stride).static_pattern(length, causal=True)[0]
    assert pattern.sum(-1).max() <= stride + 1 + length // stride
    assert pattern.sum() < 0.1 * length * length / 2
    a1, a2 = strided_sets(length, stride, causal=True)
    i = np.arange(length)
    overlap = a1 & a2
    expected = (i[:, None] == i[None, :]) | ((i[:, None] - stride) == i[None, :])
    np.testing.assert_array_equal(overlap, expected)
    np.testing.assert_array_equal(pattern, a1 | a2)


def _pair(attention, causal, position=None, length=14):
    return variant_and_full(attention, causal, RNG, position, length)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("layer_index", [0, 1])
def test_through_multi_head_attention_equals_masked_full(causal, layer_index):
    for position in (None, "alibi", "shaw"):
        _check_masked_full(position, causal, layer_index)


def _check_masked_full(position, causal, layer_index):
    mode = "merged" if layer_index == 0 else "interleave"
    x, sparse, full = _pair(
        {"name": "strided", "stride": 4, "mode": mode, "layer_index": layer_index}, causal, position
    )
    padding = RNG.random((2, 14)) > 0.2
    mask = head_masks(*strided_sets(14, 4, causal), mode, layer_index, 1)[0]
    mask = np.broadcast_to(mask, (2, 14, 14))
    np.testing.assert_allclose(
        np_(sparse(x, padding_mask=padding)),
        np_(full(x, padding_mask=padding, attention_mask=mask)),
        atol=1e-5,
    )


@pytest.mark.parametrize("mode", MODES)
def test_causality(mode):
    x, sparse, _ = _pair({"name": "strided", "stride": 3, "mode": mode, "layer_index": 1}, True)
    base = np_(sparse(x))
    for i in (0, 7, 12):
        changed = x.copy()
        changed[:, i + 1 :] = RNG.normal(size=changed[:, i + 1 :].shape)
        np.testing.assert_allclose(np_(sparse(changed))[:, : i + 1], base[:, : i + 1], atol=1e-5)


def test_padding_and_empty_rows():
    q, k, v = qkv(12)
    core = kt.attention.get("strided", stride=4)
    padding = np.ones((2, 12), bool)
    padding[:, 9:] = False
    out = np_(core(q, k, v, padding_mask=padding))
    k2 = k.copy()
    k2[:, 9:] += 3.0
    np.testing.assert_allclose(np_(core(q, k2, v, padding_mask=padding)), out, atol=1e-6)
    assert np.all(np_(core(q, k, v, padding_mask=np.zeros((2, 12), bool))) == 0.0)


def test_validation_and_config():
    with pytest.raises(ValueError, match="stride=0"):
        kt.attention.get("strided", stride=0)
    with pytest.raises(ValueError, match="mode='both'"):
        kt.attention.get("strided", mode="both")
    with pytest.raises(ValueError, match="layer_index=-1"):
        kt.attention.get("strided", layer_index=-1)
    with pytest.raises(ValueError, match="num_heads >= 2"):
        kt.attention.MultiHeadAttention(
            num_heads=1, key_dim=4, attention={"name": "strided", "stride": 2, "mode": "multihead"}
        )(np.zeros((1, 8, 4), "float32"))
    core = kt.attention.get("strided", stride=5, mode="interleave", layer_index=3)
    clone = type(core).from_config(core.get_config())
    assert (clone.stride, clone.mode, clone.layer_index) == (5, "interleave", 3)
