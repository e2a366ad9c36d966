"""Random feature attention (RFA) against numpy references and the catalogue's properties."""

import keras
import numpy as np
import pytest

import keras_transformers as kt
from keras_transformers.ops.feature_maps import random_fourier_features

RNG = np.random.default_rng(0)


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def heads_first(x):
    return np.transpose(np.asarray(x, np.float64), (0, 2, 1, 3))


def heads_last(x):
    return np.transpose(x, (0, 2, 1, 3))


def unit(x):
    return x / np.sqrt((x**2).sum(-1, keepdims=True) + 1e-6)


def qkv(b=2, length=20, h=2, dh=8):
    return tuple(RNG.normal(size=(b, length, h, dh)).astype("float32") for _ in range(3))


def test_kernel_identity_needs_inverse_sigma_variance():
    """E[φ(x)·φ(y)] = exp(-|x-y|²/2σ²) for w ~ N(0, σ⁻² I) (catalogue erratum: not σ² I)."""
    x = np.array([0.5, -0.1, 0.3], "float32")
    y = np.array([0.1, 0.4, 0.2], "float32")
    sigma = 0.7
    target = np.exp(-((x - y) ** 2).sum() / (2 * sigma**2))
    omega = RNG.normal(size=(3, 50000)).astype("float32")
    right = to_numpy(random_fourier_features(x[None], omega / sigma))[0]
    right_y = to_numpy(random_fourier_features(y[None], omega / sigma))[0]
    assert abs(float(right @ right_y) - target) < 0.02
    wrong = to_numpy(random_fourier_features(x[None], omega * sigma))[0]
    wrong_y = to_numpy(random_fourier_features(y[None], omega * sigma))[0]
    assert abs(float(wrong @ wrong_y) - target) > 0.05  # the survey's N(0, σ² I) is off


def test_error_falls_as_the_number_of_features_grows():
    q, k, v = qkv(length=32, dh=16)
    sigma = 0.5
    qn, kn = unit(heads_first(q)), unit(heads_first(k))
    s = qn @ np.swapaxes(kn, -1, -2) / sigma**2
    w = np.exp(s - s.max(-1, keepdims=True))
    ref = heads_last((w / w.sum(-1, keepdims=True)) @ heads_first(v))  # softmax(q̂·k̂/σ²) V
    errors = []
    for d in (16, 128, 1024):
        per_seed = []
        for seed in range(3):
            core = kt.attention.get("rfa", num_features=d, sigma=sigma, seed=seed)
            per_seed.append(np.abs(to_numpy(core(q, k, v)) - ref).mean())
        errors.append(np.mean(per_seed))
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < errors[0] / 4, errors


def numpy_rfa_features(core, x):
    omega = to_numpy(core.projection).astype(np.float64)  # (D, dh)
    sigma = np.exp(to_numpy(core.log_sigma).astype(np.float64))  # (h,)
    xw = np.einsum("bhld,Dd->bhlD", unit(heads_first(x)), omega) / sigma[None, :, None, None]
    return np.concatenate([np.sin(xw), np.cos(xw)], -1) / np.sqrt(omega.shape[0])


@pytest.mark.parametrize("gating", [False, True])
@pytest.mark.parametrize("chunk_size", [1, 6, 64])
def test_causal_recurrence_equals_prefix_sum_form(gating, chunk_size):
    q, k, v = qkv(length=19)
    padding = np.ones(q.shape[:2], bool)
    padding[1, 14:] = False
    core = kt.attention.get("rfa", num_features=16, gating=gating, seed=2, chunk_size=chunk_size)
    core(q, k, v, causal=True)  # build
    if gating:
        core.gate_kernel.assign(RNG.normal(size=core.gate_kernel.shape).astype("float32"))
        core.gate_bias.assign(np.array([0.5, -0.5], "float32"))
    out = to_numpy(core(q, k, v, causal=True, padding_mask=padding))
    fq, fk, vv = numpy_rfa_features(core, q), numpy_rfa_features(core, k), heads_first(v)
    if gating:
        logits = np.einsum("bhld,hd->bhl", heads_first(k), to_numpy(core.gate_kernel))
        g = 1 / (1 + np.exp(-(logits + to_numpy(core.gate_bias)[None, :, None])))
    b, h, length, r = fk.shape
    ref = np.zeros_like(vv)
    for bi in range(b):
        for hi in range(h):
            state = np.zeros((r, vv.shape[-1]))
            z = np.zeros(r)
            for t in range(length):  # S_t = S_{t-1} + φ(k_t) v_tᵀ (gated: decay and write)
                if padding[bi, t]:
                    write = np.outer(fk[bi, hi, t], vv[bi, hi, t])
                    if gating:
                        gt = g[bi, hi, t]
                        state, z = gt * state + (1 - gt) * write, gt * z + (1 - gt) * fk[bi, hi, t]
                    else:
                        state, z = state + write, z + fk[bi, hi, t]
                den = fq[bi, hi, t] @ z
                ref[bi, hi, t] = fq[bi, hi, t] @ state / den
    np.testing.assert_allclose(out, heads_last(ref), atol=2e-4, rtol=1e-3)


def test_non_causal_matches_quadratic_form_and_debug_weights():
    q, k, v = qkv()
    padding = np.ones(q.shape[:2], bool)
    padding[0, 11:] = False
    core = kt.attention.get("rfa", num_features=32, seed=4)
    out = to_numpy(core(q, k, v, padding_mask=padding))
    fq, fk = numpy_rfa_features(core, q), numpy_rfa_features(core, k)
    a = np.einsum("bhir,bhjr->bhij", fq, fk) * padding[:, None, None, :]
    ref = heads_last((a / a.sum(-1, keepdims=True)) @ heads_first(v))
    np.testing.assert_allclose(out, ref, atol=2e-4, rtol=1e-3)
    out2, weights = core(q, k, v, padding_mask=padding, return_attention_scores=True)
    np.testing.assert_allclose(to_numpy(out2), out, atol=1e-4)
    np.testing.assert_allclose(to_numpy(weights).sum(-1), 1.0, atol=1e-4)


def test_causality_with_gating_through_multi_head_attention():
    layer = kt.attention.MultiHeadAttention(
        num_heads=2,
        key_dim=8,
        causal=True,
        attention={"name": "rfa", "num_features": 16, "gating": True, "chunk_size": 4},
    )
    x = RNG.normal(size=(2, 15, 16)).astype("float32")
    x2 = x.copy()
    x2[:, 8:] = RNG.normal(size=x2[:, 8:].shape)
    out1, out2 = to_numpy(layer(x)), to_numpy(layer(x2))
    np.testing.assert_allclose(out1[:, :8], out2[:, :8], atol=1e-5)
    assert np.abs(out1[:, 8:] - out2[:, 8:]).max() > 1e-4
    names = [w.name for w in layer.attention_core.trainable_weights]
    assert {"gate_kernel", "gate_bias", "log_sigma"} <= set(names)


def test_sigma_is_trainable_only_when_asked_and_gating_needs_causal():
    q, k, v = qkv(length=6)
    fixed = kt.attention.get("rfa", num_features=8, learn_sigma=False)
    fixed(q, k, v)
    assert not fixed.trainable_weights
    with pytest.raises(ValueError, match="gating"):
        kt.attention.get("rfa", gating=True)(q, k, v, causal=False)
    for kwargs, pattern in (({"sigma": 0}, "sigma"), ({"num_features": 0}, "num_features=0")):
        with pytest.raises(ValueError, match=pattern):
            kt.attention.get("rfa", **kwargs)
