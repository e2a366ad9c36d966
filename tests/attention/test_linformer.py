"""Linformer against an independent numpy reference; k = L with identity projections is full."""

import keras
import numpy as np
import pytest
from reference import numpy_attention

import keras_transformers as kt

RNG = np.random.default_rng(0)
SHARINGS = ["none", "headwise", "kv", "layerwise"]


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def heads_first(x):
    return np.transpose(np.asarray(x, np.float64), (0, 2, 1, 3))


def heads_last(x):
    return np.transpose(x, (0, 2, 1, 3))


def qkv(b=2, length=16, h=2, h_kv=2, dh=8):
    return (
        RNG.normal(size=(b, length, h, dh)).astype("float32"),
        RNG.normal(size=(b, length, h_kv, dh)).astype("float32"),
        RNG.normal(size=(b, length, h_kv, dh)).astype("float32"),
    )


@pytest.mark.parametrize("sharing", SHARINGS)
def test_identity_projections_with_k_equal_l_give_full_attention(sharing):
    q, k, v = qkv()
    length = q.shape[1]
    core = kt.attention.get("linformer", projection_dim=length, sharing=sharing)
    core.build(q.shape, k.shape)
    for weight in core.weights:
        weight.assign(np.broadcast_to(np.eye(length, dtype="float32"), weight.shape))
    out = to_numpy(core(q, k, v))
    ref, _ = numpy_attention(heads_first(q), heads_first(k), heads_first(v))
    np.testing.assert_allclose(out, heads_last(ref), atol=1e-5)
    full = to_numpy(kt.attention.get("full")(q, k, v))
    np.testing.assert_allclose(out, full, atol=1e-5)


@pytest.mark.parametrize("sharing", SHARINGS)
@pytest.mark.parametrize("h_kv", [2, 1])
def test_matches_numpy_projection_reference(sharing, h_kv):
    q, k, v = qkv(length=13, h_kv=h_kv)
    padding = np.ones(q.shape[:2], bool)
    padding[1, 9:] = False
    core = kt.attention.get("linformer", projection_dim=5, max_length=20, sharing=sharing)
    out = to_numpy(core(q, k, v, padding_mask=padding))
    length, rep = q.shape[1], q.shape[2] // h_kv
    e = to_numpy(core.key_projection)[..., :length].astype(np.float64)
    f = (
        e
        if core.value_projection is None
        else (to_numpy(core.value_projection)[..., :length].astype(np.float64))
    )
    keep = padding[:, None, :, None]
    kk = np.repeat(heads_first(k), rep, 1) * keep
    vv = np.repeat(heads_first(v), rep, 1) * keep
    eq = "hkl,bhld->bhkd" if sharing == "none" else "kl,bhld->bhkd"
    ref, weights = numpy_attention(heads_first(q), np.einsum(eq, e, kk), np.einsum(eq, f, vv))
    assert weights.shape == (2, 2, 13, 5)  # scores (B, h, L, k)
    np.testing.assert_allclose(out, heads_last(ref), atol=1e-5)


def test_sharing_modes_create_the_documented_weights():
    q, k, v = qkv(length=10)
    shapes = {}
    for sharing in SHARINGS:
        core = kt.attention.get("linformer", projection_dim=4, sharing=sharing)
        core(q, k, v)
        shapes[sharing] = sorted(tuple(w.shape) for w in core.trainable_weights)
    assert shapes["none"] == [(2, 4, 10), (2, 4, 10)]
    assert shapes["headwise"] == [(4, 10), (4, 10)]
    assert shapes["kv"] == shapes["layerwise"] == [(4, 10)]


def test_layerwise_sharing_reuses_one_instance_across_layers():
    core = kt.attention.get("linformer", projection_dim=4, sharing="layerwise")
    x = keras.Input((12, 16))
    h = kt.attention.MultiHeadAttention(2, 8, attention=core)(x)
    h = kt.attention.MultiHeadAttention(2, 8, attention=core)(h)
    model = keras.Model(x, h)
    projections = [w for w in model.weights if "key_projection" in w.path]
    assert len(projections) == 1  # one E for both layers, keys and values


def test_length_checks_and_shorter_inputs():
    q, k, v = qkv(length=12)
    core = kt.attention.get("linformer", projection_dim=4, max_length=12)
    core(q, k, v)
    with pytest.raises(ValueError, match="max_length=12"):
        big = RNG.normal(size=(1, 20, 2, 8)).astype("float32")
        core(big, big, big)
    short = q[:, :7]
    out = to_numpy(core(short, short, short))  # uses the first 7 columns of E, F
    e = to_numpy(core.key_projection)[:, :7].astype(np.float64)
    f = to_numpy(core.value_projection)[:, :7].astype(np.float64)
    ref, _ = numpy_attention(
        heads_first(short),
        np.einsum("kl,bhld->bhkd", e, heads_first(short)),
        np.einsum("kl,bhld->bhkd", f, heads_first(short)),
    )
    np.testing.assert_allclose(out, heads_last(ref), atol=1e-5)
    cross = to_numpy(core(q[:, :5], k, v))  # cross-attention: Lq != Lk
    assert cross.shape == (2, 5, 2, 8)


def test_unsupported_modes_raise_clear_errors():
    assert kt.attention.get("linformer").supports_causal is False
    layer = kt.attention.MultiHeadAttention(2, 4, attention="linformer", causal=True)
    with pytest.raises(ValueError, match="causal"):
        layer(np.zeros((1, 8, 8), "float32"))
    with pytest.raises(NotImplementedError, match="return_attention_scores"):
        kt.attention.MultiHeadAttention(2, 4, attention="linformer")(
            np.zeros((1, 8, 8), "float32"), return_attention_scores=True
        )
    for kwargs, pattern in (
        ({"projection_dim": 0}, "projection_dim=0"),
        ({"max_length": -3}, "max_length=-3"),
        ({"sharing": "global"}, "sharing='global'"),
    ):
        with pytest.raises(ValueError, match=pattern):
            kt.attention.get("linformer", **kwargs)
    with pytest.raises(ValueError, match="max_length"):
        x = keras.Input((None, 8))
        kt.attention.MultiHeadAttention(2, 4, attention="linformer")(x)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="inspects a TF graph")
def test_never_forms_an_l_by_l_tensor():
    import tensorflow as tf

    length = 1024
    q = RNG.normal(size=(1, length, 1, 16)).astype("float32")
    core = kt.attention.get("linformer", projection_dim=32)
    core.build(q.shape, q.shape)
    spec = tf.TensorSpec(q.shape, q.dtype)
    graph = tf.function(lambda a, b, c: core(a, b, c)).get_concrete_function(spec, spec, spec).graph
    biggest = max(
        int(np.prod(t.shape))
        for op in graph.get_operations()
        for t in op.outputs
        if t.shape.rank is not None and t.shape.is_fully_defined() and t.dtype != tf.resource
    )
    assert biggest < length * length // 8
