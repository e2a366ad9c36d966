"""Tests of the `adaptive_span` core (Sukhbaatar et al., 2019, Adaptive Attention Span)."""

import keras
import numpy as np
import pytest

import keras_transformers as kt
from keras_transformers.attention.adaptive_span import AdaptiveSpanAttention, soft_span_mask

RNG = np.random.default_rng(0)


def np_(x):
    return keras.ops.convert_to_numpy(x)


# ----------------------------------------------------------------------------- numpy reference
def np_soft_mask(x, z, ramp):
    """m_z(x) = clip((R + z - x) / R, 0, 1), written independently in numpy."""
    return np.clip((ramp + z - x) / ramp, 0.0, 1.0)


def reference(q, k, v, spans, max_span, ramp, causal, padding=None, attend_self=True):
    """Dense adaptive-span attention in float64.

    q, k, v (B, L, h, d); spans (h,). Weight of key j for query i:
    m_z(x_ij) exp(s_ij) 1[x_ij <= S] / sum over allowed keys, x_ij = i - j (j <= i) when causal,
    |i - j| otherwise. Returns (out (B, L, h, d), weights (B, h, L, L)).
    """
    q, k, v = (np.transpose(np.asarray(t, np.float64), (0, 2, 1, 3)) for t in (q, k, v))
    length = q.shape[2]
    i = np.arange(length)[:, None]
    j = np.arange(length)[None, :]
    dist = i - j if causal else np.abs(i - j)
    allowed = (dist >= 0) & (dist <= max_span)
    if not attend_self:
        allowed &= dist != 0
    m = np_soft_mask(dist[None], np.asarray(spans, np.float64)[:, None, None], ramp)  # (h, L, L)
    m = np.where(allowed[None], m, 0.0)[None]  # (1, h, L, L)
    if padding is not None:
        m = m * padding[:, None, None, :]
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    e = m * np.exp(scores - scores.max(-1, keepdims=True))
    denom = e.sum(-1, keepdims=True)
    weights = np.divide(e, denom, out=np.zeros_like(e), where=denom > 0)
    return np.transpose(weights @ v, (0, 2, 1, 3)), weights


def qkv(length, heads=2, dim=4, batch=2):
    return tuple(RNG.normal(size=(batch, length, heads, dim)).astype("float32") for _ in range(3))


def core_with_spans(spans, **kwargs):
    return kt.attention.get("adaptive_span", initial_span=list(spans), **kwargs)


# ----------------------------------------------------------------------------- the soft mask
def test_soft_mask_catalogue_values_and_slope():
    x = np.array([8.0, 10.0, 12.0, 14.0, 20.0], "float32")
    np.testing.assert_allclose(np_(soft_span_mask(x, 10.0, 4.0)), [1, 1, 0.5, 0, 0], atol=1e-7)
    # dm/dz = 1/R inside the ramp (z < x < z + R), 0 outside it.
    x = np.array([8.0, 11.0, 12.0, 13.5, 20.0], "float32")
    eps = 1e-2
    slope = (np_(soft_span_mask(x, 10.0 + eps, 4.0)) - np_(soft_span_mask(x, 10.0, 4.0))) / eps
    np.testing.assert_allclose(slope, [0, 0.25, 0.25, 0.25, 0], atol=1e-3)


# ----------------------------------------------------------------------------- equality
@pytest.mark.parametrize("causal", [False, True])
def test_matches_dense_reference(causal):
    for length, max_span, ramp, spans, block in [
        (16, 6, 3.0, [2.0, 5.5], None),
        (13, 5, 2.0, [0.0, 3.25], None),
        (13, 4, 4.0, [1.5, 4.0], 3),
        (9, 12, 1.5, [7.0, 2.0], None),
    ]:
        q, k, v = qkv(length)
        padding = RNG.random((2, length)) > 0.25
        core = core_with_spans(spans, max_span=max_span, ramp=ramp, block_size=block)
        out, weights = core(
            q, k, v, padding_mask=padding, causal=causal, return_attention_scores=True
        )
        fast = core(q, k, v, padding_mask=padding, causal=causal)
        want, want_weights = reference(q, k, v, spans, max_span, ramp, causal, padding)
        np.testing.assert_allclose(np_(out), want, atol=1e-5)
        np.testing.assert_allclose(np_(fast), want, atol=1e-5)
        np.testing.assert_allclose(np_(weights), want_weights, atol=1e-6)


def test_without_self_follows_the_papers_key_range():
    q, k, v = qkv(12)
    core = core_with_spans([1.0, 3.0], max_span=4, ramp=2.0, attend_self=False)
    out, weights = core(q, k, v, causal=True, return_attention_scores=True)
    want, want_weights = reference(q, k, v, [1.0, 3.0], 4, 2.0, True, attend_self=False)
    np.testing.assert_allclose(np_(out), want, atol=1e-5)
    np.testing.assert_allclose(np_(weights), want_weights, atol=1e-6)
    assert np.abs(np_(out)[:, 0]).max() == 0.0  # token 0 has no earlier key: zeros, not NaN


@pytest.mark.parametrize("causal", [False, True])
def test_full_span_equals_sliding_window(causal):
    """z = S: the mask is 1 on the whole band (x <= S < z + R for every R), so the core is the
    sliding window of width S exactly."""
    q, k, v = qkv(15)
    padding = RNG.random((2, 15)) > 0.2
    for ramp in (0.5, 3.0, 40.0):
        core = kt.attention.get("adaptive_span", max_span=5, ramp=ramp, initial_span=5)
        window = kt.attention.get("sliding_window", window=5)
        got = core(q, k, v, padding_mask=padding, causal=causal)
        want = window(q, k, v, padding_mask=padding, causal=causal)
        np.testing.assert_allclose(np_(got), np_(want), atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_span_covering_the_sequence_equals_full_attention(causal):
    """m_z(x) = 1 for every x <= z; the largest distance in a sequence is L - 1, so S >= L - 1
    and z >= L - 1 give full attention exactly whatever the ramp R. With z < L - 1 the ramp
    reaches into the sequence and the result differs."""
    length = 11
    q, k, v = qkv(length)
    full = np_(kt.attention.get("full")(q, k, v, causal=causal))
    for max_span, span in [(10, 10.0), (16, 10.0), (16, 16.0)]:
        core = kt.attention.get("adaptive_span", max_span=max_span, ramp=8.0, initial_span=span)
        np.testing.assert_allclose(np_(core(q, k, v, causal=causal)), full, atol=1e-5)
    short = kt.attention.get("adaptive_span", max_span=16, ramp=8.0, initial_span=9.0)
    assert np.abs(np_(short(q, k, v, causal=causal)) - full).max() > 1e-4


def test_weights_beyond_span_plus_ramp_are_exactly_zero():
    spans, ramp, length = [2.0, 4.5], 3.0, 24
    core = core_with_spans(spans, max_span=10, ramp=ramp)
    q, k, v = qkv(length)
    _, weights = core(q, k, v, causal=True, return_attention_scores=True)
    weights = np_(weights)  # (B, h, L, L)
    dist = np.arange(length)[:, None] - np.arange(length)[None, :]
    for head, z in enumerate(spans):
        beyond = dist >= z + ramp
        assert (weights[:, head][:, beyond] == 0.0).all()
        inside = (dist >= 0) & (dist < z + ramp)
        assert (weights[:, head][:, inside] > 0.0).all()


def test_causality():
    core = core_with_spans([3.0, 6.0], max_span=7, ramp=2.0)
    q, k, v = qkv(20)
    q2, k2, v2 = (x.copy() for x in (q, k, v))
    for x in (q2, k2, v2):
        x[:, 10:] = RNG.normal(size=x[:, 10:].shape)
    a, b = np_(core(q, k, v, causal=True)), np_(core(q2, k2, v2, causal=True))
    np.testing.assert_allclose(a[:, :10], b[:, :10], atol=1e-6)
    assert np.abs(a[:, 10:] - b[:, 10:]).max() > 1e-3


def test_crop_band_gives_the_same_output():
    q, k, v = qkv(30)
    full_band = core_with_spans([1.0, 3.5], max_span=16, ramp=2.0)
    cropped = core_with_spans([1.0, 3.5], max_span=16, ramp=2.0, crop_band=True)
    assert cropped.cropped_span([1.0, 3.5]) == 5  # ceil(3.5 + 2) - 1
    for causal in (False, True):
        np.testing.assert_allclose(
            np_(cropped(q, k, v, causal=causal)), np_(full_band(q, k, v, causal=causal)), atol=1e-5
        )
    np.testing.assert_allclose(cropped.current_spans(), [1.0, 3.5])


# ----------------------------------------------------------------------------- through MHA
def test_through_multi_head_attention_matches_reference():
    heads, dim, length = 2, 4, 14
    mha = kt.attention.MultiHeadAttention(
        num_heads=heads,
        key_dim=dim,
        causal=True,
        attention={"name": "adaptive_span", "max_span": 6, "ramp": 2.0, "initial_span": [1, 4]},
    )
    x = RNG.normal(size=(2, length, 8)).astype("float32")
    got = np_(mha(x))
    qkv_ = x @ np_(mha.qkv_kernel) + np_(mha.qkv_bias)
    q, k, v = (t.reshape(2, length, heads, dim) for t in np.split(qkv_, 3, axis=-1))
    out, _ = reference(q, k, v, [1.0, 4.0], 6, 2.0, True)
    want = out.reshape(2, length, heads * dim) @ np_(mha.output_kernel) + np_(mha.output_bias)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_composes_with_a_score_position_bias():
    """With z = S the core must equal sliding_window under the same ALiBi bias."""
    x = RNG.normal(size=(2, 12, 8)).astype("float32")
    a = kt.attention.MultiHeadAttention(
        num_heads=2,
        key_dim=4,
        causal=True,
        position="alibi",
        attention={"name": "adaptive_span", "max_span": 4, "initial_span": 4},
    )
    b = kt.attention.MultiHeadAttention(
        num_heads=2,
        key_dim=4,
        causal=True,
        position="alibi",
        attention={"name": "sliding_window", "window": 4},
    )
    a(x), b(x)
    by_name = {w.path.split("/", 1)[-1]: w for w in b.weights}  # e.g. "qkv/kernel"
    for w in a.weights:
        name = w.path.split("/", 1)[-1]
        if name.split("/")[-1] != "span_ratio":
            by_name[name].assign(w)
    np.testing.assert_allclose(np_(a(x)), np_(b(x)), atol=1e-5)


# ----------------------------------------------------------------------------- training
def _span_model(penalty, spans, scale=0.0, crop=False):
    x = keras.Input((10, 8))
    mha = kt.attention.MultiHeadAttention(
        num_heads=2,
        key_dim=4,
        causal=True,
        attention={
            "name": "adaptive_span",
            "max_span": 8,
            "ramp": 2.0,
            "initial_span": spans,
            "span_penalty": penalty,
            "crop_band": crop,
        },
    )
    y = keras.layers.Add()([x, keras.layers.Rescaling(scale)(mha(x))])
    return keras.Model(x, y), mha.attention_core


def test_regulariser_value_and_gradient_drive_spans_down():
    model, core = _span_model(0.5, [4.0, 6.0])  # the attention output is multiplied by 0
    x = RNG.normal(size=(2, 10, 8)).astype("float32")
    model(x)
    np.testing.assert_allclose(float(np_(sum(model.losses))), 0.5 * 5.0, rtol=1e-6)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    model.fit(x, x, epochs=1, batch_size=2, verbose=0)
    # Only the penalty reaches the spans: d(λ·mean(S·ratio))/d ratio = λ·S/h per head, so
    # z = S·ratio moves by -lr·λ·S²/h = -0.01·0.5·64/2 = -0.16 tokens.
    np.testing.assert_allclose(core.current_spans(), [3.84, 5.84], atol=1e-5)
    model.compile(optimizer=keras.optimizers.SGD(100.0), loss="mse")
    model.fit(x, x, epochs=1, batch_size=2, verbose=0)
    np.testing.assert_allclose(core.current_spans(), [0.0, 0.0])  # kept in [0, S]


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_task_gradient_reaches_the_spans(jit):
    model, core = _span_model(0.0, [2.0, 3.0], scale=1.0, crop=True)
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse", jit_compile=jit)
    x = RNG.normal(size=(4, 10, 8)).astype("float32")
    y = RNG.normal(size=(4, 10, 8)).astype("float32")
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    spans = core.current_spans()
    assert np.isfinite(spans).all()
    assert np.abs(spans - [2.0, 3.0]).max() > 1e-6  # the soft mask is differentiable in z


# ----------------------------------------------------------------------------- config, errors
def test_config_round_trip_keeps_per_head_spans():
    core = core_with_spans([1.0, 2.5], max_span=6, ramp=2, span_penalty=1e-3, crop_band=True)
    clone = AdaptiveSpanAttention.from_config(core.get_config())
    assert clone.get_config() == core.get_config()
    q, k, v = qkv(9)
    np.testing.assert_allclose(np_(clone(q, k, v)), np_(core(q, k, v)), atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_span": 0}, "max_span=0"),
        ({"ramp": 0}, "ramp=0"),
        ({"ramp": -1.0}, "ramp=-1"),
        ({"max_span": 4, "initial_span": 5}, "initial_span=5"),
        ({"initial_span": -1}, "initial_span=-1"),
        ({"span_penalty": -0.1}, "span_penalty=-0.1"),
        ({"attend_self": "yes"}, "attend_self='yes'"),
        ({"block_size": 0}, "block_size=0"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kt.attention.get("adaptive_span", **kwargs)


def test_span_list_must_match_heads():
    q, k, v = qkv(6, heads=3)
    with pytest.raises(ValueError, match="one span per head"):
        core_with_spans([1.0, 2.0], max_span=4)(q, k, v)
