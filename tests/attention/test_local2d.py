"""Tests of the `local2d` core (Image Transformer 2D local attention)."""

import keras
import numpy as np
import pytest
from layer_pairs import variant_and_full
from reference import numpy_attention

import keras_transformers as kt

RNG = np.random.default_rng(3)


def reference(q, k, v, mask):
    t = lambda x: np.transpose(x, (0, 2, 1, 3))  # noqa: E731
    out, weights = numpy_attention(t(q), t(k), t(v), mask)
    return t(out), weights


def local2d_mask(length, width, hq, wq, hm, wm, causal):
    """Independent mask by pixel coordinates on a raster grid of the given width."""
    i = np.arange(length)
    r, c = i // width, i % width
    top, left = (r // hq) * hq, (c // wq) * wq
    rows_ok = (r[None, :] >= top[:, None] - hm) & (
        r[None, :] < top[:, None] + hq + (0 if causal else hm)
    )
    cols_ok = (c[None, :] >= left[:, None] - wm) & (c[None, :] < left[:, None] + wq + wm)
    mask = rows_ok & cols_ok
    return mask & (i[None, :] <= i[:, None]) if causal else mask


def qkv(length, heads=2, dim=4, batch=2):
    return tuple(RNG.normal(size=(batch, length, heads, dim)).astype("float32") for _ in range(3))


def np_(x):
    return keras.ops.convert_to_numpy(x)


CASES = [  # (L, config, width used by the reference)
    (
        64,
        {
            "height": 8,
            "width": 8,
            "query_height": 2,
            "query_width": 4,
            "memory_height": 2,
            "memory_width": 2,
        },
        8,
    ),
    (
        30,
        {
            "height": 5,
            "width": 6,
            "query_height": 2,
            "query_width": 4,
            "memory_height": 1,
            "memory_width": 1,
        },
        6,
    ),
    (18, {"query_height": 2, "query_width": 2, "memory_height": 1, "memory_width": 1}, 5),
    (
        22,
        {"width": 4, "query_height": 3, "query_width": 3, "memory_height": 2, "memory_width": 0},
        4,
    ),
]


@pytest.mark.parametrize("causal", [False, True])
def test_matches_dense_reference(causal):
    for length, config, width in CASES:
        _check_against_reference(length, config, width, causal)


def _check_against_reference(length, config, width, causal):
    q, k, v = qkv(length)
    padding = RNG.random((2, length)) > 0.25
    core = kt.attention.get("local2d", **config)
    assert core.grid(length)[1] == width
    out, weights = core(q, k, v, padding_mask=padding, causal=causal, return_attention_scores=True)
    fast = core(q, k, v, padding_mask=padding, causal=causal)
    mask = local2d_mask(
        length,
        width,
        config["query_height"],
        config["query_width"],
        config["memory_height"],
        config["memory_width"],
        causal,
    )
    want, want_weights = reference(q, k, v, mask[None, None] & padding[:, None, None, :])
    np.testing.assert_allclose(np_(out), want, atol=1e-5)
    np.testing.assert_allclose(np_(fast), want, atol=1e-5)
    np.testing.assert_allclose(np_(weights), want_weights, atol=1e-6)


def test_query_block_of_whole_image_equals_full():
    q, k, v = qkv(20)
    core = kt.attention.get(
        "local2d", height=4, width=5, query_height=4, query_width=5, memory_height=0, memory_width=0
    )
    for causal in (False, True):
        full = kt.attention.get("full")(q, k, v, causal=causal)
        np.testing.assert_allclose(np_(core(q, k, v, causal=causal)), np_(full), atol=1e-5)


def test_memory_block_property():
    """Testable property (V22): no key below the query block or right of the memory extension,
    and the key set size is constant in the image size."""
    hq, wq, hm, wm = 2, 2, 2, 1
    sizes = []
    for side in (8, 12):
        length = side * side
        core = kt.attention.get(
            "local2d", query_height=hq, query_width=wq, memory_height=hm, memory_width=wm
        )
        _, weights = core(*qkv(length, batch=1), causal=True, return_attention_scores=True)
        allowed = np_(weights)[0, 0] > 0
        i = np.arange(length)
        r, c = i // side, i % side
        block_bottom = (r // hq) * hq + hq - 1
        right_edge = (c // wq) * wq + wq - 1 + wm
        rows, cols = np.nonzero(allowed)
        assert (r[cols] <= block_bottom[rows]).all()
        assert (c[cols] <= right_edge[rows]).all()
        sizes.append(allowed.sum(-1).max())
    assert sizes[0] == sizes[1] <= (hq + hm) * (wq + 2 * wm)


def _pair(attention, causal, position=None, length=30):
    return variant_and_full(attention, causal, RNG, position, length)


CONFIG = {
    "name": "local2d",
    "height": 5,
    "width": 6,
    "query_height": 2,
    "query_width": 3,
    "memory_height": 1,
    "memory_width": 1,
}


@pytest.mark.parametrize("causal", [False, True])
def test_through_multi_head_attention_equals_masked_full(causal):
    for position in (None, "alibi", "shaw"):
        _check_masked_full(position, causal)


def _check_masked_full(position, causal):
    x, sparse, full = _pair(CONFIG, causal, position)
    padding = RNG.random((2, 30)) > 0.2
    mask = np.broadcast_to(local2d_mask(30, 6, 2, 3, 1, 1, causal), (2, 30, 30))
    np.testing.assert_allclose(
        np_(sparse(x, padding_mask=padding)),
        np_(full(x, padding_mask=padding, attention_mask=mask)),
        atol=1e-5,
    )


def test_causality():
    x, sparse, _ = _pair(CONFIG, True)
    base = np_(sparse(x))
    for i in (0, 8, 20):
        changed = x.copy()
        changed[:, i + 1 :] = RNG.normal(size=changed[:, i + 1 :].shape)
        np.testing.assert_allclose(np_(sparse(changed))[:, : i + 1], base[:, : i + 1], atol=1e-5)


def test_padding_and_training_finite_on_a_ragged_grid():
    """18 cells on a 4 x 5 grid (two padding cells): outputs, and weights after one fit step
    with attention dropout, stay finite."""
    x = RNG.normal(size=(2, 18, 16)).astype("float32")
    config = {
        "name": "local2d",
        "query_height": 2,
        "query_width": 2,
        "memory_height": 1,
        "memory_width": 1,
    }
    layer = kt.attention.MultiHeadAttention(num_heads=2, key_dim=8, attention=config)
    padding = np.ones((2, 18), bool)
    padding[1] = False
    out = np_(layer(x, padding_mask=padding))
    assert np.isfinite(out).all() and np.all(out[1] == np_(layer.output_bias))
    inputs = keras.Input((18, 16))
    outputs = kt.attention.MultiHeadAttention(
        num_heads=2, key_dim=8, attention=config, dropout=0.1
    )(inputs)
    model = keras.Model(inputs, outputs)
    model.compile("adam", "mse")
    model.fit(x, np.zeros_like(x), epochs=1, verbose=0)
    assert all(np.isfinite(np_(w)).all() for w in model.trainable_weights)


def test_grid_inference_and_validation():
    core = kt.attention.get("local2d")
    assert core.grid(64) == (8, 8)
    assert core.grid(18) == (4, 5)
    assert kt.attention.get("local2d", width=4).grid(22) == (6, 4)
    assert kt.attention.get("local2d", height=3).grid(20) == (3, 7)
    with pytest.raises(ValueError, match="height=4, width=4"):
        kt.attention.get("local2d", height=4, width=4).grid(20)
    with pytest.raises(ValueError, match="query_height=0"):
        kt.attention.get("local2d", query_height=0)
    with pytest.raises(ValueError, match="memory_width=-1"):
        kt.attention.get("local2d", memory_width=-1)
    clone = type(core).from_config(kt.attention.get("local2d", height=4, width=5).get_config())
    assert clone.grid(20) == (4, 5)


def test_with_grid_returns_a_configured_copy():
    core = kt.attention.get("local2d", query_height=2, query_width=2, memory_height=1)
    assert core.uses_token_grid
    on_grid = core.with_grid(4, 6)
    assert (on_grid.height, on_grid.width) == (4, 6)
    assert (core.height, core.width) == (None, None)  # the original is unchanged
    assert on_grid.get_config()["query_height"] == 2
    assert on_grid.grid(24) == (4, 6)
    q, k, v = qkv(24)
    mask = local2d_mask(24, 6, 2, 2, 1, 4, causal=False)
    out = on_grid(q, k, v)
    np.testing.assert_allclose(np_(out), reference(q, k, v, mask[None, None])[0], atol=1e-5)
