"""Linear attention (elu + 1) against independent numpy references."""

import keras
import numpy as np
import pytest

import keras_transformers as kt

RNG = np.random.default_rng(0)


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def heads_first(x):
    return np.transpose(np.asarray(x, np.float64), (0, 2, 1, 3))


def elu1(x):
    return np.where(x > 0, x + 1.0, np.exp(np.minimum(x, 0)))


def numpy_kernel_attention(phi_q, phi_k, v, mask):
    """Quadratic masked form: (φq φkᵀ ⊙ mask) v / rowsum, in float64; empty rows give 0."""
    a = np.einsum("bhir,bhjr->bhij", phi_q, phi_k) * mask
    den = a.sum(-1, keepdims=True)
    w = np.divide(a, den, out=np.zeros_like(a), where=den != 0)
    return w @ v


def qkv(b=2, length=21, h=2, h_kv=2, dh=8):
    return (
        RNG.normal(size=(b, length, h, dh)).astype("float32"),
        RNG.normal(size=(b, length, h_kv, dh)).astype("float32"),
        RNG.normal(size=(b, length, h_kv, dh)).astype("float32"),
    )


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("chunk_size", [1, 4, 8, 64])
@pytest.mark.parametrize("h_kv", [2, 1])
def test_linear_matches_quadratic_numpy_form(causal, chunk_size, h_kv):
    q, k, v = qkv(h_kv=h_kv)
    padding = np.ones(q.shape[:2], bool)
    padding[1, 15:] = False
    core = kt.attention.get("linear", chunk_size=chunk_size)
    out = to_numpy(core(q, k, v, padding_mask=padding, causal=causal))
    rep = q.shape[2] // h_kv
    fq = elu1(heads_first(q))
    fk = elu1(np.repeat(heads_first(k), rep, 1))
    vv = np.repeat(heads_first(v), rep, 1)
    length = q.shape[1]
    mask = padding[:, None, None, :] & (
        np.tril(np.ones((length, length), bool)) if causal else True
    )
    ref = numpy_kernel_attention(fq, fk, vv, mask)
    np.testing.assert_allclose(out, np.transpose(ref, (0, 2, 1, 3)), atol=1e-5)


def test_debug_weights_match_output_and_are_causal():
    q, k, v = qkv()
    core = kt.attention.get("linear", chunk_size=4)
    out = core(q, k, v, causal=True)
    out2, weights = core(q, k, v, causal=True, return_attention_scores=True)
    np.testing.assert_allclose(to_numpy(out), to_numpy(out2), atol=1e-5)
    w = to_numpy(weights)
    assert w.shape == (2, 2, 21, 21)
    assert np.abs(np.triu(w, 1)).max() == 0.0
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
    assert (w[..., np.tril(np.ones((21, 21), bool))] > 0).all()  # elu + 1 > 0


def test_causality_through_multi_head_attention():
    layer = kt.attention.MultiHeadAttention(
        num_heads=2,
        key_dim=8,
        attention={"name": "linear", "chunk_size": 4},
        causal=True,
        position="rope",
    )
    x = RNG.normal(size=(2, 19, 16)).astype("float32")
    x2 = x.copy()
    x2[:, 10:] = RNG.normal(size=x2[:, 10:].shape)
    out1, out2 = to_numpy(layer(x)), to_numpy(layer(x2))
    np.testing.assert_allclose(out1[:, :10], out2[:, :10], atol=1e-5)
    assert np.abs(out1[:, 10:] - out2[:, 10:]).max() > 1e-3


def test_padding_mask_and_empty_rows():
    q, k, v = qkv()
    padding = np.ones(q.shape[:2], bool)
    padding[0, 12:] = False
    padding[1] = False
    core = kt.attention.get("linear")
    out1 = to_numpy(core(q, k, v, padding_mask=padding))
    k2, v2 = k.copy(), v.copy()
    k2[0, 12:] += 3.0
    v2[0, 12:] -= 2.0
    out2 = to_numpy(core(q, k2, v2, padding_mask=padding))
    np.testing.assert_allclose(out1[0], out2[0], atol=1e-5)
    np.testing.assert_allclose(out1[1], 0.0)
    causal = to_numpy(core(q, k, v, padding_mask=padding, causal=True))
    assert np.isfinite(causal).all()
    np.testing.assert_allclose(causal[1], 0.0)


def test_cross_attention_lengths_and_causal_error():
    q = RNG.normal(size=(1, 5, 2, 4)).astype("float32")
    k = RNG.normal(size=(1, 9, 2, 4)).astype("float32")
    core = kt.attention.get("linear")
    assert tuple(core(q, k, k).shape) == (1, 5, 2, 4)
    with pytest.raises(ValueError, match="causal"):
        core(q, k, k, causal=True)


def test_unsupported_features_raise_clear_errors():
    with pytest.raises(ValueError, match="chunk_size=0"):
        kt.attention.get("linear", chunk_size=0)
    with pytest.raises(ValueError, match="position"):
        kt.attention.MultiHeadAttention(
            num_heads=2, key_dim=4, attention="linear", position="alibi"
        )
    layer = kt.attention.MultiHeadAttention(num_heads=2, key_dim=4, attention="linear")
    with pytest.raises(ValueError, match="attention_mask"):
        layer(np.zeros((1, 4, 8), "float32"), attention_mask=np.ones((1, 4, 4), bool))


def largest_intermediate(fn, *arrays):
    """Largest tensor (elements) in the TensorFlow graph of ``fn``."""
    import tensorflow as tf

    specs = [tf.TensorSpec(a.shape, a.dtype) for a in arrays]
    graph = tf.function(fn).get_concrete_function(*specs).graph
    sizes = [
        int(np.prod(t.shape))
        for op in graph.get_operations()
        for t in op.outputs
        if t.shape.rank is not None and t.shape.is_fully_defined() and t.dtype != tf.resource
    ]
    return max(sizes)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="inspects a TF graph")
@pytest.mark.parametrize("causal", [False, True])
def test_never_forms_an_l_by_l_tensor(causal):
    length = 1024
    q = RNG.normal(size=(1, length, 1, 16)).astype("float32")
    core = kt.attention.get("linear", chunk_size=32)
    biggest = largest_intermediate(lambda a, b, c: core(a, b, c, causal=causal), q, q, q)
    assert biggest < length * length // 8


@pytest.mark.parametrize("name", ["linear", "performer"])
def test_recurrent_state_cache_equals_uncached_layer(name):
    """Pre-fill then 1-2 tokens at a time: same outputs as one causal pass (GQA, rope); the
    state [S | z] keeps its shape (B, h, r, dv + 1)."""
    attention = {"name": name, "chunk_size": 4}
    if name == "performer":
        attention.update(num_features=16, seed=0)
    mha = kt.attention.MultiHeadAttention(
        num_heads=4, key_dim=4, num_key_value_heads=2, causal=True, position="rope",
        attention=attention,
    )  # fmt: skip
    x = np.random.default_rng(2).normal(size=(2, 11, 8)).astype("float32")
    expected = to_numpy(mha(x))
    cache = mha.init_cache(2, 11)
    r = 16 if name == "performer" else 4
    assert tuple(cache.shape) == (2, 4, r, 5)
    outs, start = [], 0
    for size in (6, 1, 2, 1, 1):
        out, cache = mha(x[:, start : start + size], cache=cache, cache_index=start)
        assert tuple(cache.shape) == (2, 4, r, 5)
        outs.append(to_numpy(out))
        start += size
    np.testing.assert_allclose(np.concatenate(outs, axis=1), expected, rtol=1e-4, atol=1e-5)
