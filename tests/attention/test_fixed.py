"""Tests of the `fixed` core (Sparse Transformer fixed pattern, three combination modes)."""

import keras
import numpy as np
import pytest
from layer_pairs import variant_and_full
from reference import factorized_head_masks as head_masks
from reference import numpy_attention

import keras_transformers as kt

RNG = np.random.default_rng(5)
MODES = ["merged", "interleave", "multihead"]


def reference(q, k, v, mask):
    t = lambda x: np.transpose(x, (0, 2, 1, 3))  # noqa: E731
    out, weights = numpy_attention(t(q), t(k), t(v), mask)
    return t(out), weights


def fixed_sets(length, stride, c, causal):
    """Independent A(1) = same block, A(2) = j mod ℓ in {ℓ-c..ℓ-1} (j <= i if causal)."""
    i = np.arange(length)
    a1 = (i[:, None] // stride) == (i[None, :] // stride)
    a2 = np.broadcast_to((i[None, :] % stride) >= stride - c, (length, length))
    if causal:
        past = i[None, :] <= i[:, None]
        a1, a2 = a1 & past, a2 & past
    return a1, a2


def qkv(length, heads=3, dim=4, batch=2):
    return tuple(RNG.normal(size=(batch, length, heads, dim)).astype("float32") for _ in range(3))


def np_(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize(
    "mode,layer_index", [("merged", 0), ("interleave", 0), ("interleave", 1), ("multihead", 0)]
)
def test_matches_dense_reference(mode, layer_index):
    for length, stride, c, causal in [
        (16, 4, 1, False),
        (13, 4, 2, True),
        (14, 5, 2, False),
        (14, 5, 5, True),
        (6, 8, 3, True),
    ]:
        _check_against_reference(mode, layer_index, length, stride, c, causal)


def _check_against_reference(mode, layer_index, length, stride, c, causal):
    q, k, v = qkv(length)
    padding = RNG.random((2, length)) > 0.25
    core = kt.attention.get(
        "fixed", stride=stride, summary_size=c, mode=mode, layer_index=layer_index
    )
    out, weights = core(q, k, v, padding_mask=padding, causal=causal, return_attention_scores=True)
    fast = core(q, k, v, padding_mask=padding, causal=causal)
    masks = head_masks(*fixed_sets(length, stride, c, causal), mode, layer_index, 3)
    want, want_weights = reference(q, k, v, masks[None] & padding[:, None, None, :])
    np.testing.assert_allclose(np_(out), want, atol=1e-5)
    np.testing.assert_allclose(np_(fast), want, atol=1e-5)
    np.testing.assert_allclose(np_(weights), want_weights, atol=1e-6)


def test_one_block_equals_full():
    q, k, v = qkv(12)
    for causal in (False, True):
        for c in (1, 12):
            out = kt.attention.get("fixed", stride=12, summary_size=c)(q, k, v, causal=causal)
            full = kt.attention.get("full")(q, k, v, causal=causal)
            np.testing.assert_allclose(np_(out), np_(full), atol=1e-5)
    # every position a summary cell (c = ℓ) is full attention too
    out = kt.attention.get("fixed", stride=4, summary_size=4)(q, k, v, causal=True)
    np.testing.assert_allclose(
        np_(out), np_(kt.attention.get("full")(q, k, v, causal=True)), atol=1e-5
    )


def test_two_hops_reach_every_past_position():
    """Testable property (V24): with j <= i, every j <= i is reachable from i within 2 hops
    (L=64, ℓ=8, c=2): one merged layer twice, and layer A(1) then layer A(2) once the residual
    connections are counted (paths through I + A: the earlier positions of i's own block are
    reached through A(1) alone, since that block's summary cells come after i)."""
    length, stride, c = 64, 8, 2
    q, k, v = qkv(length, heads=1, batch=1)

    def pattern(**config):
        core = kt.attention.get("fixed", stride=stride, summary_size=c, **config)
        _, weights = core(q, k, v, causal=True, return_attention_scores=True)
        return (np_(weights)[0, 0] > 0).astype(int)

    past = np.tril(np.ones((length, length), bool))
    merged = pattern(mode="merged")
    assert ((merged @ merged > 0) == past).all()
    first, second = (
        pattern(mode="interleave", layer_index=0),
        pattern(mode="interleave", layer_index=1),
    )
    eye = np.eye(length, dtype=int)
    assert ((second + eye) @ (first + eye) > 0).sum() == past.sum()
    assert (((second + eye) @ (first + eye) > 0) == past).all()
    assert not ((second @ first > 0) == past).all()  # without residuals some pairs are cut


def test_key_count_is_order_stride_plus_summaries():
    """Testable property: at most ℓ + c·L/ℓ keys per query; total far below L²/2."""
    length, stride, c = 1024, 32, 2
    pattern = kt.attention.get("fixed", stride=stride, summary_size=c).static_pattern(
        length, causal=True
    )[0]
    assert pattern.sum(-1).max() <= stride + c * length // stride
    assert pattern.sum() < 0.1 * length * length / 2
    np.testing.assert_array_equal(pattern, np.logical_or(*fixed_sets(length, stride, c, True)))


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
        {"name": "fixed", "stride": 4, "summary_size": 1, "mode": mode, "layer_index": layer_index},
        causal,
        position,
    )
    padding = RNG.random((2, 14)) > 0.2
    mask = head_masks(*fixed_sets(14, 4, 1, causal), mode, layer_index, 1)[0]
    mask = np.broadcast_to(mask, (2, 14, 14))
    np.testing.assert_allclose(
        np_(sparse(x, padding_mask=padding)),
        np_(full(x, padding_mask=padding, attention_mask=mask)),
        atol=1e-5,
    )


@pytest.mark.parametrize("mode", MODES)
def test_causality(mode):
    x, sparse, _ = _pair(
        {"name": "fixed", "stride": 4, "summary_size": 2, "mode": mode, "layer_index": 1}, True
    )
    base = np_(sparse(x))
    for i in (0, 6, 12):
        changed = x.copy()
        changed[:, i + 1 :] = RNG.normal(size=changed[:, i + 1 :].shape)
        np.testing.assert_allclose(np_(sparse(changed))[:, : i + 1], base[:, : i + 1], atol=1e-5)


def test_padding_and_empty_rows():
    q, k, v = qkv(12)
    core = kt.attention.get("fixed", stride=4, summary_size=1)
    padding = np.ones((2, 12), bool)
    padding[:, 9:] = False
    out = np_(core(q, k, v, padding_mask=padding))
    k2 = k.copy()
    k2[:, 9:] += 3.0
    np.testing.assert_allclose(np_(core(q, k2, v, padding_mask=padding)), out, atol=1e-6)
    assert np.all(np_(core(q, k, v, padding_mask=np.zeros((2, 12), bool))) == 0.0)


def test_validation_and_config():
    with pytest.raises(ValueError, match="stride=0"):
        kt.attention.get("fixed", stride=0)
    with pytest.raises(ValueError, match="summary_size=5: must be <= stride=4"):
        kt.attention.get("fixed", stride=4, summary_size=5)
    with pytest.raises(ValueError, match="summary_size=0"):
        kt.attention.get("fixed", stride=4, summary_size=0)
    with pytest.raises(ValueError, match="mode='dense'"):
        kt.attention.get("fixed", mode="dense")
    core = kt.attention.get("fixed", stride=6, summary_size=2, mode="multihead")
    clone = type(core).from_config(core.get_config())
    assert (clone.stride, clone.summary_size, clone.mode) == (6, 2, "multihead")
