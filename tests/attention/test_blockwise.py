"""Tests of the `blockwise` core (Qiu et al., 2019)."""

import keras
import numpy as np
import pytest
from layer_pairs import variant_and_full
from reference import numpy_attention

import keras_transformers as kt

RNG = np.random.default_rng(2)


def reference(q, k, v, mask):
    t = lambda x: np.transpose(x, (0, 2, 1, 3))  # noqa: E731
    out, weights = numpy_attention(t(q), t(k), t(v), mask)
    return t(out), weights


def blockwise_mask(length, block, permutation, causal):
    """Independent mask M_ij = [π(⌊i/b⌋) = ⌊j/b⌋] (and j <= i when causal)."""
    i = np.arange(length)
    mask = np.asarray(permutation)[i // block][:, None] == (i // block)[None, :]
    return mask & (i[None, :] <= i[:, None]) if causal else mask


def qkv(length, heads=2, dim=4, batch=2):
    return tuple(RNG.normal(size=(batch, length, heads, dim)).astype("float32") for _ in range(3))


def np_(x):
    return keras.ops.convert_to_numpy(x)


CASES = [
    (12, {"num_blocks": 3}, 4, [0, 1, 2]),
    (12, {"num_blocks": 3, "permutation": [2, 0, 1]}, 4, [2, 0, 1]),
    (14, {"num_blocks": 4, "permutation": [3, 2, 1, 0]}, 4, [3, 2, 1, 0]),
    (13, {"block_size": 5, "permutation": "shift", "shift": 1}, 5, [1, 2, 0]),
    (
        16,
        {"num_blocks": 4, "permutation": "random", "seed": 3},
        4,
        list(np.random.RandomState(3).permutation(4)),
    ),
]


@pytest.mark.parametrize("causal", [False, True])
def test_matches_dense_reference(causal):
    for length, config, block, permutation in CASES:
        _check_against_reference(length, config, block, permutation, causal)


def _check_against_reference(length, config, block, permutation, causal):
    q, k, v = qkv(length)
    padding = RNG.random((2, length)) > 0.25
    core = kt.attention.get("blockwise", **config)
    assert core.permutation_for(len(permutation)) == [int(p) for p in permutation]
    out, weights = core(q, k, v, padding_mask=padding, causal=causal, return_attention_scores=True)
    fast = core(q, k, v, padding_mask=padding, causal=causal)
    mask = blockwise_mask(length, block, permutation, causal)[None, None]
    want, want_weights = reference(q, k, v, mask & padding[:, None, None, :])
    np.testing.assert_allclose(np_(out), want, atol=1e-5)
    np.testing.assert_allclose(np_(fast), want, atol=1e-5)
    np.testing.assert_allclose(np_(weights), want_weights, atol=1e-6)


@pytest.mark.parametrize("causal", [False, True])
def test_one_block_equals_full(causal):
    q, k, v = qkv(10)
    for config in ({"num_blocks": 1}, {"block_size": 16}):
        out = kt.attention.get("blockwise", **config)(q, k, v, causal=causal)
        full = kt.attention.get("full")(q, k, v, causal=causal)
        np.testing.assert_allclose(np_(out), np_(full), atol=1e-5)


def test_mask_counts_from_the_catalogue():
    """Testable property (V25): identity on L=12, n=3 gives L²/n = 48 ones; any π gives L/n
    ones in every row, and each query block reads exactly one key block."""
    core = kt.attention.get("blockwise", num_blocks=3)
    _, weights = core(*qkv(12, batch=1), return_attention_scores=True)
    pattern = np_(weights)[0, 0] > 0
    assert pattern.sum() == 48
    np.testing.assert_array_equal(pattern, np.kron(np.eye(3), np.ones((4, 4))).astype(bool))
    for perm in ([1, 2, 0], [2, 1, 0]):
        core = kt.attention.get("blockwise", num_blocks=3, permutation=perm)
        _, weights = core(*qkv(12, batch=1), return_attention_scores=True)
        pattern = np_(weights)[0, 0] > 0
        assert (pattern.sum(-1) == 4).all()
        blocks = pattern.reshape(3, 4, 3, 4).any(axis=(1, 3))
        np.testing.assert_array_equal(blocks.argmax(-1), perm)
        assert (blocks.sum(-1) == 1).all()


def _pair(attention, causal, position=None, length=12):
    return variant_and_full(attention, causal, RNG, position, length)


@pytest.mark.parametrize("causal", [False, True])
def test_through_multi_head_attention_equals_masked_full(causal):
    for position in (None, "alibi", "shaw"):
        _check_masked_full(position, causal)


def _check_masked_full(position, causal):
    perm = [2, 0, 1]
    x, sparse, full = _pair(
        {"name": "blockwise", "num_blocks": 3, "permutation": perm}, causal, position
    )
    padding = RNG.random((2, 12)) > 0.2
    mask = np.broadcast_to(blockwise_mask(12, 4, perm, causal), (2, 12, 12))
    np.testing.assert_allclose(
        np_(sparse(x, padding_mask=padding)),
        np_(full(x, padding_mask=padding, attention_mask=mask)),
        atol=1e-5,
    )


def test_causality():
    x, sparse, _ = _pair({"name": "blockwise", "num_blocks": 3}, True)
    base = np_(sparse(x))
    for i in (0, 5, 10):
        changed = x.copy()
        changed[:, i + 1 :] = RNG.normal(size=changed[:, i + 1 :].shape)
        np.testing.assert_allclose(np_(sparse(changed))[:, : i + 1], base[:, : i + 1], atol=1e-5)


def test_padding_and_empty_rows():
    q, k, v = qkv(12)
    core = kt.attention.get("blockwise", num_blocks=3, permutation=[1, 2, 0])
    padding = np.ones((2, 12), bool)
    padding[:, 4:8] = False  # key block 1 fully padded: query block 0 has nothing to attend
    out = np_(core(q, k, v, padding_mask=padding))
    assert np.isfinite(out).all()
    assert np.all(out[:, :4] == 0.0)
    k2 = k.copy()
    k2[:, 4:8] += 3.0
    np.testing.assert_allclose(np_(core(q, k2, v, padding_mask=padding)), out, atol=1e-6)


def test_seeded_shift_is_reproducible_and_validation():
    a = kt.attention.get("blockwise", num_blocks=5, permutation="shift", seed=7)
    b = kt.attention.get("blockwise", num_blocks=5, permutation="shift", seed=7)
    perm = a.permutation_for(5)
    assert perm == b.permutation_for(5)
    shift = perm[0]
    assert 1 <= shift < 5 and perm == [(i + shift) % 5 for i in range(5)]
    clone = type(a).from_config(a.get_config())
    assert clone.permutation_for(5) == perm
    with pytest.raises(ValueError, match="num_blocks=0"):
        kt.attention.get("blockwise", num_blocks=0)
    with pytest.raises(ValueError, match="give only one"):
        kt.attention.get("blockwise", num_blocks=2, block_size=4)
    with pytest.raises(ValueError, match="permutation=\\[0, 0, 1\\]"):
        kt.attention.get("blockwise", num_blocks=3, permutation=[0, 0, 1])
    with pytest.raises(ValueError, match="permutation='sorted'"):
        kt.attention.get("blockwise", permutation="sorted")
    core = kt.attention.get("blockwise", block_size=4, permutation=[1, 0])
    with pytest.raises(ValueError, match="permutation"):
        core(*qkv(12))  # 3 blocks of 4, but a permutation of 2
