"""Full attention and the MultiHeadAttention shell against independent references."""

import keras
import numpy as np
import pytest
from reference import numpy_attention

import keras_transformers as kt

RNG = np.random.default_rng(0)


def heads_last(x):
    return np.transpose(x, (0, 2, 1, 3))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("use_padding", [False, True])
@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_full_core_matches_numpy(causal, use_padding, kv_heads):
    b, lq, h, dh = 2, 9, 4, 8
    q = RNG.normal(size=(b, lq, h, dh)).astype("float32")
    k = RNG.normal(size=(b, lq, kv_heads, dh)).astype("float32")
    v = RNG.normal(size=(b, lq, kv_heads, dh)).astype("float32")
    padding = np.ones((b, lq), bool)
    if use_padding:
        padding[0, 6:] = False
    core = kt.attention.get("full")
    out = core(q, k, v, padding_mask=padding if use_padding else None, causal=causal)
    mask = padding[:, None, None, :] & (np.tril(np.ones((lq, lq), bool)) if causal else True)
    rep = h // kv_heads
    ref, _ = numpy_attention(
        heads_last(q), np.repeat(heads_last(k), rep, 1), np.repeat(heads_last(v), rep, 1), mask
    )
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), heads_last(ref), atol=1e-5)


def test_explicit_path_matches_fused_path():
    q, k, v = (RNG.normal(size=(2, 7, 2, 4)).astype("float32") for _ in range(3))
    core = kt.attention.get("full")
    fused = core(q, k, v, causal=True)
    explicit, weights = core(q, k, v, causal=True, return_attention_scores=True)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(fused), keras.ops.convert_to_numpy(explicit), atol=1e-5
    )
    w = keras.ops.convert_to_numpy(weights)
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
    assert np.abs(np.triu(w[0, 0], 1)).max() == 0


def test_fully_masked_query_row_gives_zeros_mixed_float16():
    keras.config.set_dtype_policy("mixed_float16")
    layer = kt.attention.MultiHeadAttention(num_heads=2, key_dim=4, use_bias=False)
    x = RNG.normal(size=(1, 5, 8)).astype("float32") * 50
    mask = np.ones((1, 5, 5), bool)
    mask[0, 2] = False  # query 2 may attend to nothing
    out = keras.ops.convert_to_numpy(keras.ops.cast(layer(x, attention_mask=mask), "float32"))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[0, 2], 0.0, atol=1e-6)
    assert np.abs(out[0, 1]).max() > 0


@pytest.mark.parametrize("cross", [False, True])
def test_matches_keras_multi_head_attention_with_copied_weights(cross):
    d, h, dh, lq, lk = 16, 4, 8, 6, 5
    x = RNG.normal(size=(2, lq, d)).astype("float32")
    y = RNG.normal(size=(2, lk, d)).astype("float32") if cross else x
    ref = keras.layers.MultiHeadAttention(num_heads=h, key_dim=dh)
    expected = ref(x, y)
    ours = kt.attention.MultiHeadAttention(num_heads=h, key_dim=dh)
    ours(x, y) if cross else ours(x)
    qk, qb = ref._query_dense.get_weights()
    kk, kb = ref._key_dense.get_weights()
    vk, vb = ref._value_dense.get_weights()
    ok, ob = ref._output_dense.get_weights()
    flat = [a.reshape(d, h * dh) for a in (qk, kk, vk)]
    flat_b = [a.reshape(h * dh) for a in (qb, kb, vb)]
    out_w = [ok.reshape(h * dh, d), ob]
    if cross:
        weights = [
            flat[0],
            flat_b[0],
            np.concatenate(flat[1:], 1),
            np.concatenate(flat_b[1:]),
            *out_w,
        ]
        got = ours(x, y)
    else:
        weights = [np.concatenate(flat, 1), np.concatenate(flat_b), *out_w]
        got = ours(x)
    ours.set_weights(weights)
    got = ours(x, y) if cross else ours(x)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(expected), atol=1e-5
    )


def test_kv_cache_decoding_equals_full_recompute():
    layer = kt.attention.MultiHeadAttention(
        num_heads=2, key_dim=4, causal=True, position="rope", num_key_value_heads=1
    )
    x = RNG.normal(size=(2, 6, 8)).astype("float32")
    full = keras.ops.convert_to_numpy(layer(x))
    cache = np.zeros((2, 2, 6, 1, 4), "float32")
    steps = []
    for t in range(6):
        out, cache = layer(x[:, t : t + 1], cache=cache, cache_index=t)
        steps.append(keras.ops.convert_to_numpy(out))
    np.testing.assert_allclose(np.concatenate(steps, 1), full, atol=1e-5)


def test_core_cache_protocol_with_grouped_heads():
    """The core's own init_cache/decode_step (no shell): grouped (B, l, h_kv, dh) keys go into
    the cache unrepeated, and step-by-step outputs equal one causal call."""
    core = kt.attention.get("full")
    q = RNG.normal(size=(2, 5, 4, 8)).astype("float32")  # (B, L, h, dh)
    k = RNG.normal(size=(2, 5, 2, 8)).astype("float32")  # (B, L, h_kv, dh)
    v = RNG.normal(size=(2, 5, 2, 8)).astype("float32")
    want = keras.ops.convert_to_numpy(core(q, k, v, causal=True))  # (B, L, h, dh)
    cache = core.init_cache(2, 5, 4, 2, 8, 8, "float32")
    assert tuple(cache.shape) == (2, 2, 5, 2, 8)  # (B, 2, L_max, h_kv, dh)
    outs = []
    for t in range(5):
        context = core.context(causal=True, query_offset=t)
        out, cache = core.decode_step(
            q[:, t : t + 1], k[:, t : t + 1], v[:, t : t + 1], cache, t, context
        )
        outs.append(keras.ops.convert_to_numpy(out))
    np.testing.assert_allclose(np.concatenate(outs, 1), want, atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(cache[:, 0]), k, atol=0)
    with pytest.raises(ValueError, match="value_dim"):
        core.init_cache(2, 5, 4, 2, 8, 6, "float32")


def test_bad_inputs_raise_clear_errors():
    layer = kt.attention.MultiHeadAttention(num_heads=2, key_dim=4)
    with pytest.raises(ValueError, match="rank 3"):
        layer(np.zeros((2, 5), "float32"))
    layer = kt.attention.MultiHeadAttention(num_heads=2, key_dim=4)
    with pytest.raises(ValueError, match="padding_mask"):
        layer(np.zeros((2, 5, 8), "float32"), padding_mask=np.ones((2, 4), bool))
    with pytest.raises(ValueError, match="attention_mask"):
        layer(np.zeros((2, 5, 8), "float32"), attention_mask=np.ones((2, 5), bool))
    with pytest.raises(ValueError, match="num_key_value_heads=3"):
        kt.attention.MultiHeadAttention(num_heads=4, key_dim=4, num_key_value_heads=3)
    with pytest.raises(ValueError, match="embedding-side"):
        kt.attention.MultiHeadAttention(num_heads=2, key_dim=4, position="sinusoidal")
    with pytest.raises(ValueError, match="Allowed values"):
        kt.attention.MultiHeadAttention(num_heads=2, key_dim=4, position="rotary")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_heads": 2.7, "key_dim": 4}, "num_heads=2.7"),
        ({"num_heads": 2, "key_dim": 4.5}, "key_dim=4.5"),
        ({"num_heads": 2, "key_dim": 4, "value_dim": 3.5}, "value_dim=3.5"),
        ({"num_heads": 4, "key_dim": 4, "num_key_value_heads": 1.5}, "num_key_value_heads=1.5"),
        ({"num_heads": True, "key_dim": 4}, "num_heads=True"),
        ({"num_heads": 0, "key_dim": 4}, "num_heads=0"),
    ],
)
def test_fractional_sizes_are_refused_not_truncated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kt.attention.MultiHeadAttention(**kwargs)
    # whole floats are fine
    layer = kt.attention.MultiHeadAttention(num_heads=2.0, key_dim=4.0)
    assert (layer.num_heads, layer.key_dim) == (2, 4)


def test_permutation_equivariance_without_positions():
    layer = kt.attention.MultiHeadAttention(num_heads=2, key_dim=4)
    x = RNG.normal(size=(1, 7, 8)).astype("float32")
    perm = RNG.permutation(7)
    out = keras.ops.convert_to_numpy(layer(x))
    out_perm = keras.ops.convert_to_numpy(layer(x[:, perm]))
    np.testing.assert_allclose(out[:, perm], out_perm, atol=1e-5)
