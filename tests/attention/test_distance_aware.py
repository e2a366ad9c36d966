"""DA-Transformer distance-aware attention (Wu et al., 2021) against an independent numpy reference,
the learnable sigmoid's properties (catalogue V14) and the w = 0 reduction."""

import keras
import numpy as np
import pytest

import keras_transformers as kt
from keras_transformers.attention.distance_aware import (
    DistanceAwareAttention,
    rescale_coefficients,
)

RNG = np.random.default_rng(0)
B, L, H, DH = 2, 9, 3, 4


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def numpy_sigmoid_rescale(r, w, v):
    """(1 + e^v) / (1 + e^(v - w r)) straight from the paper, float64."""
    return (1.0 + np.exp(v)) / (1.0 + np.exp(v - w * r))


def numpy_da_attention(q, k, v, w, s, mask=None, signed=False):
    """Dense reference. q, k, v (B, h, L, dh); w, s (h,); mask broadcastable to (B, h, Lq, Lk)."""
    q, k, v = (np.asarray(t, np.float64) for t in (q, k, v))
    lq, lk = q.shape[2], k.shape[2]
    i = np.arange(lq)[:, None]
    j = np.arange(lk)[None, :]
    r = (j - i) if signed else np.abs(i - j)
    coef = numpy_sigmoid_rescale(r[None].astype(np.float64), w[:, None, None], s[:, None, None])
    scores = np.maximum(q @ np.swapaxes(k, -1, -2), 0.0) * coef[None] / np.sqrt(q.shape[-1])
    mask = np.ones(scores.shape, bool) if mask is None else np.broadcast_to(mask, scores.shape)
    scores = np.where(mask, scores, -np.inf)
    row_max = np.max(np.where(mask, scores, -1e300), axis=-1, keepdims=True)
    e = np.where(mask, np.exp(scores - row_max), 0.0)
    denom = e.sum(-1, keepdims=True)
    weights = np.divide(e, denom, out=np.zeros_like(e), where=denom > 0)
    return weights @ v, weights


def make_core(w, s, **kwargs):
    core = DistanceAwareAttention(**kwargs)
    core.build((B, L, len(w), DH))
    core.distance_weight.assign(np.asarray(w, "float32"))
    core.sigmoid_param.assign(np.asarray(s, "float32"))
    return core


def qkv(lq=L, lk=L):
    q = RNG.normal(size=(B, lq, H, DH)).astype("float32")
    k = RNG.normal(size=(B, lk, H, DH)).astype("float32")
    v = RNG.normal(size=(B, lk, H, DH)).astype("float32")
    return q, k, v


def heads_first(x):
    return np.transpose(x, (0, 2, 1, 3))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("distance", ["absolute", "signed"])
def test_core_matches_numpy_reference(causal, distance):
    w = np.array([-0.7, 0.0, 0.4])
    s = np.array([0.3, -1.0, 1.5])
    core = make_core(w, s, distance=distance)
    q, k, v = qkv()
    padding = np.ones((B, L), bool)
    padding[1, 6:] = False
    out, weights = core(q, k, v, padding_mask=padding, causal=causal, return_attention_scores=True)
    mask = padding[:, None, None, :]
    if causal:
        mask = mask & np.tril(np.ones((L, L), bool))[None, None]
    ref_out, ref_w = numpy_da_attention(
        heads_first(q), heads_first(k), heads_first(v), w, s, mask, signed=distance == "signed"
    )
    np.testing.assert_allclose(to_numpy(weights), ref_w, atol=1e-5)
    np.testing.assert_allclose(to_numpy(out), heads_first(ref_out), atol=1e-5)
    # the fast call (no weights) gives the same output
    np.testing.assert_allclose(
        to_numpy(core(q, k, v, padding_mask=padding, causal=causal)), to_numpy(out), atol=1e-6
    )


def test_attention_mask_matches_numpy_reference():
    w, s = np.array([-0.3, 0.2, 0.0]), np.array([0.0, 0.5, -0.5])
    core = make_core(w, s)
    q, k, v = qkv()
    am = RNG.random((B, L, L)) > 0.4
    am[0, 3] = False  # a query with nothing to attend -> zeros
    out = to_numpy(core(q, k, v, attention_mask=am))
    ref, _ = numpy_da_attention(heads_first(q), heads_first(k), heads_first(v), w, s, am[:, None])
    np.testing.assert_allclose(out, heads_first(ref), atol=1e-5)
    np.testing.assert_allclose(out[0, 3], 0.0, atol=1e-7)


def test_learnable_sigmoid_properties():
    """Catalogue V14: f(0) = 1, f(-60) < 1e-20, f(+60) = 1 + e^v, strictly increasing."""
    v = np.array([-2.0, 0.0, 0.5, 3.0], "float32")
    w = np.ones(4, "float32")
    r = np.linspace(-60.0, 60.0, 241).astype("float32")
    f = to_numpy(rescale_coefficients(keras.ops.convert_to_tensor(r[None, :]), w, v))[
        :, 0
    ]  # (h, n)
    np.testing.assert_allclose(f[:, 120], 1.0, rtol=1e-6)  # r = 0
    assert (f[:, 0] < 1e-20).all()  # r = -60
    np.testing.assert_allclose(f[:, -1], 1.0 + np.exp(v), rtol=1e-5)  # r = +60: the upper bound
    assert (np.diff(f, axis=1) >= 0).all()  # monotonic everywhere ...
    assert (np.diff(f[:, 80:145], axis=1) > 0).all()  # strictly where float32 resolves (|r| <~ 15)
    np.testing.assert_allclose(
        f, numpy_sigmoid_rescale(r[None], 1.0, v[:, None]), rtol=1e-4, atol=1e-30
    )


def test_head_distance_preference():
    """w < 0 shrinks the coefficients of far keys (local head), w > 0 grows them (long-range)."""
    core = make_core([-1.0, 1.0, 0.0], [0.0, 0.0, 0.0])
    coef = to_numpy(core.coefficients(L, L))  # (h, L, L)
    row = coef[:, 4]  # query 4, keys 0..8
    assert row[0, 4] == pytest.approx(1.0) and row[0, 0] < row[0, 3] < 1.0
    assert row[1, 0] > row[1, 3] > 1.0 and row[1].max() < 2.0  # bounded by 1 + e^0
    np.testing.assert_allclose(row[2], 1.0, atol=1e-7)


def test_zero_distance_weight_reduces_to_relu_attention():
    """w = 0 gives R̂ ≡ 1 whatever v: softmax(ReLU(Q Kᵀ)/sqrt(dh)) V, the paper's degenerate case."""
    q, k, v = qkv()
    out_a = to_numpy(make_core([0.0] * H, [0.0, 2.0, -3.0])(q, k, v))
    out_b = to_numpy(make_core([0.0] * H, [5.0, -1.0, 0.3])(q, k, v))
    np.testing.assert_allclose(out_a, out_b, atol=1e-6)
    qf, kf, vf = (heads_first(t).astype(np.float64) for t in (q, k, v))
    scores = np.maximum(qf @ np.swapaxes(kf, -1, -2), 0.0) / np.sqrt(DH)
    e = np.exp(scores - scores.max(-1, keepdims=True))
    ref = (e / e.sum(-1, keepdims=True)) @ vf
    np.testing.assert_allclose(out_a, heads_first(ref), atol=1e-5)
    # ... which is plain scaled dot-product attention whenever every q·k >= 0
    q_pos, k_pos = np.abs(q), np.abs(k)
    full = kt.attention.get("full")
    np.testing.assert_allclose(
        to_numpy(make_core([0.0] * H, [1.0] * H)(q_pos, k_pos, v, causal=True)),
        to_numpy(full(q_pos, k_pos, v, causal=True)),
        atol=1e-5,
    )


def test_signed_equals_absolute_with_negated_weight_under_causal_mask():
    q, k, v = qkv()
    w, s = np.array([0.5, -0.2, 1.0]), np.array([0.1, 0.2, 0.3])
    signed = to_numpy(make_core(w, s, distance="signed")(q, k, v, causal=True))
    absolute = to_numpy(make_core(-w, s)(q, k, v, causal=True))
    np.testing.assert_allclose(signed, absolute, atol=1e-6)


def mha(causal=False, **kwargs):
    config = {
        "name": "distance_aware",
        "distance_initializer": {"class_name": "Constant", "config": {"value": -0.4}},
    }
    return kt.attention.MultiHeadAttention(
        num_heads=2, key_dim=4, attention=config, causal=causal, **kwargs
    )


def test_multi_head_causality_and_padding():
    x = RNG.normal(size=(2, 10, 8)).astype("float32")
    layer = mha(causal=True)
    x2 = x.copy()
    x2[:, 6:] = RNG.normal(size=x2[:, 6:].shape)
    out1, out2 = to_numpy(layer(x)), to_numpy(layer(x2))
    np.testing.assert_allclose(out1[:, :6], out2[:, :6], atol=1e-5)
    assert np.abs(out1[:, 6:] - out2[:, 6:]).max() > 1e-4
    layer = mha()
    mask = np.ones((2, 10), bool)
    mask[0, 7:] = False
    x3 = x.copy()
    x3[0, 7:] = 100.0
    np.testing.assert_allclose(
        to_numpy(layer(x, padding_mask=mask))[0, :7],
        to_numpy(layer(x3, padding_mask=mask))[0, :7],
        atol=1e-5,
    )


def test_multi_head_with_alibi_bias_matches_reference():
    layer = mha(causal=True, position="alibi", use_bias=False)
    x = RNG.normal(size=(1, 7, 8)).astype("float32")
    out, weights = layer(x, return_attention_scores=True)
    core = layer.attention_core
    w, s = to_numpy(core.distance_weight), to_numpy(core.sigmoid_param)
    qkv_out = to_numpy(layer.project_qkv(x)[0])  # per-head queries (1, L, h, dh)
    q = heads_first(qkv_out)
    k = heads_first(to_numpy(layer.project_qkv(x)[1]))
    i, j = np.arange(7)[:, None], np.arange(7)[None, :]
    slopes = np.array([2.0**-4, 2.0**-8])
    coef = numpy_sigmoid_rescale(np.abs(i - j)[None], w[:, None, None], s[:, None, None])
    scores = np.maximum(q @ np.swapaxes(k, -1, -2), 0) * coef / 2.0 - slopes[:, None, None] * (
        i - j
    )
    scores = np.where(j <= i, scores, -np.inf)
    ref = np.exp(scores - scores.max(-1, keepdims=True))
    ref /= ref.sum(-1, keepdims=True)
    np.testing.assert_allclose(to_numpy(weights), ref, atol=1e-5)


def test_kv_cache_decoding_equals_full_recompute():
    layer = mha(causal=True)
    x = RNG.normal(size=(2, 6, 8)).astype("float32")
    full = to_numpy(layer(x))
    cache = np.zeros((2, 2, 6, 2, 4), "float32")
    steps = []
    for t in range(6):
        out, cache = layer(x[:, t : t + 1], cache=cache, cache_index=t)
        steps.append(to_numpy(out))
    np.testing.assert_allclose(np.concatenate(steps, 1), full, atol=1e-5)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="distance='relative'.*absolute"):
        DistanceAwareAttention(distance="relative")


def test_config_round_trip_keeps_arguments():
    core = DistanceAwareAttention(distance="signed", sigmoid_initializer="ones")
    clone = DistanceAwareAttention.from_config(core.get_config())
    assert clone.distance == "signed"
    clone.build((1, 4, 2, 4))
    np.testing.assert_allclose(to_numpy(clone.sigmoid_param), 1.0)


def test_number_initializers_and_bad_initializer():
    core = DistanceAwareAttention(distance_initializer=-0.5, sigmoid_initializer=2)
    core.build((1, 4, 3, 4))
    np.testing.assert_allclose(to_numpy(core.distance_weight), -0.5)
    np.testing.assert_allclose(to_numpy(core.sigmoid_param), 2.0)
    with pytest.raises(ValueError, match="distance_initializer='nope'"):
        DistanceAwareAttention(distance_initializer="nope")


def test_cross_attention_and_fractional_key_dim_are_refused():
    """Issue 17 item 4: |i - j| between two unrelated sequences is meaningless, so the shell
    enforces ``supports_cross_attention = False``; a fractional key_dim is not rounded down."""
    assert not DistanceAwareAttention.supports_cross_attention
    layer = kt.attention.MultiHeadAttention(2, 4, attention="distance_aware")
    query = RNG.normal(size=(1, 6, 8)).astype("float32")
    memory = RNG.normal(size=(1, 4, 8)).astype("float32")
    with pytest.raises(ValueError, match="cross-attention"):
        layer(query, value=memory)
    with pytest.raises(ValueError, match="key_dim=2.7"):
        kt.attention.MultiHeadAttention(2, 2.7, attention="distance_aware")
