"""Kernelised cores at large query/key norms, against a float64 numpy estimator.

Every core built on ``KernelAttentionCore`` (linear-time attention through feature maps) is run
on per-head queries and keys of standard deviation 30 (where exponential features underflow in
float32 unless they are stabilised), causal and not, and by cached decoding where the core
caches. Its output must be finite, have no all-zero row, and equal the same estimator (the same
random features, read from the core) computed in float64 in log space. Issue 17: causal
``performer`` returned exact zeros for every row from about x12 on.
"""

import keras
import numpy as np
import pytest

import keras_transformers as kt
from keras_transformers.attention.linear import KernelAttentionCore, LinearAttention
from keras_transformers.attention.performer import PerformerAttention
from keras_transformers.attention.rfa import RandomFeatureAttention

pytestmark = pytest.mark.backends

B, L, H, DH = 2, 16, 2, 8
SCALE = 30.0
KERNEL_CORES = [
    name
    for name in kt.attention.available()
    if issubclass(type(kt.attention.get(name)), KernelAttentionCore)
]


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x), np.float64)


def _performer_log_features(core, x):
    """``log φ⁺(x) = W x' - ‖x'‖²/2`` (the constant ``-log(m)/2`` cancels), float64."""
    w = to_numpy(core.projection)  # (m, dh)
    x = x * x.shape[-1] ** -0.25
    return x @ w.T - 0.5 * np.sum(x * x, axis=-1, keepdims=True), True


def _linear_features(core, x):
    return np.where(x > 0, x + 1.0, np.exp(np.minimum(x, 0.0))), False


def _rfa_features(core, x):
    """``[sin(x̂ W), cos(x̂ W)] / sqrt(D)`` with ``W = ωᵀ / σ_head`` (h, dh, D), float64."""
    omega = to_numpy(core.projection)  # (D, dh)
    sigma = np.exp(to_numpy(core.log_sigma))  # (h,)
    unit = x / np.sqrt(np.sum(x * x, axis=-1, keepdims=True) + 1e-6)
    xw = np.einsum("bhld,hdf->bhlf", unit, omega.T[None] / sigma[:, None, None])
    return np.concatenate([np.sin(xw), np.cos(xw)], axis=-1) / np.sqrt(omega.shape[0]), False


#: The numpy form of each kernelised core's feature map: a new kernelised core must add its own.
REFERENCE_FEATURES = {
    PerformerAttention: _performer_log_features,
    LinearAttention: _linear_features,
    RandomFeatureAttention: _rfa_features,
}


def reference(core, q, k, v, causal):
    """float64 ``Σ_j κ(q_i, k_j) v_j / Σ_j κ(q_i, k_j)``; ``q, k, v (B, L, h, dh)``."""
    q, k, v = (np.transpose(np.asarray(t, np.float64), (0, 2, 1, 3)) for t in (q, k, v))
    features = REFERENCE_FEATURES[type(core)]
    (fq, log_space), (fk, _) = features(core, q), features(core, k)
    allowed = np.tril(np.ones((L, L), bool)) if causal else np.ones((L, L), bool)
    if log_space:  # log κ_ij = logsumexp_f(ℓ_f(q_i) + ℓ_f(k_j))
        pair = fq[:, :, :, None, :] + fk[:, :, None, :, :]  # (B, h, L, L, m)
        top = pair.max(axis=-1, keepdims=True)
        log_kernel = top[..., 0] + np.log(np.exp(pair - top).sum(axis=-1))
        log_kernel = np.where(allowed, log_kernel, -np.inf)
        weights = np.exp(log_kernel - log_kernel.max(axis=-1, keepdims=True))
    else:
        weights = np.where(allowed, fq @ np.swapaxes(fk, -1, -2), 0.0)
    weights /= weights.sum(axis=-1, keepdims=True)
    return np.transpose(weights @ v, (0, 2, 1, 3))  # (B, L, h, dv)


def make_core(name):
    config = {"name": name, **type(kt.attention.get(name)).example_config}
    if "seed" in kt.attention.get(name).get_config():
        config["seed"] = 0
    return kt.attention.get(config)


def large_inputs(seed=0):
    rng = np.random.default_rng(seed)
    return tuple((rng.normal(size=(B, L, H, DH)) * SCALE).astype("float32") for _ in range(3))


def check(out, expected, what):
    assert np.isfinite(out).all(), what
    assert (np.abs(out).max(axis=-1) > 0).all(), f"{what}: all-zero output rows"
    np.testing.assert_allclose(out, expected, rtol=2e-3, atol=2e-3 * SCALE, err_msg=what)


def test_every_kernelised_core_has_a_reference():
    assert KERNEL_CORES, "no kernelised core registered"
    for name in KERNEL_CORES:
        assert type(kt.attention.get(name)) in REFERENCE_FEATURES, name


@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
@pytest.mark.parametrize("name", KERNEL_CORES)
def test_large_norms_match_the_float64_estimator(name, causal):
    core = make_core(name)
    q, k, v = large_inputs()
    out = to_numpy(core(q, k, v, causal=causal))  # (B, L, h, dv)
    check(out, reference(core, q, k, v, causal), f"{name} causal={causal}")


@pytest.mark.parametrize("name", KERNEL_CORES)
def test_large_norms_cached_decoding(name):
    core = make_core(name)
    if not core.supports_cache:
        pytest.skip("no cache")
    q, k, v = large_inputs(seed=1)
    core(q, k, v, causal=True)  # build
    context = core.context(causal=True)
    cache = core.init_cache(B, L, H, H, DH, DH, "float32")
    prompt = 5
    out, cache = core.decode_step(q[:, :prompt], k[:, :prompt], v[:, :prompt], cache, 0, context)
    steps = [to_numpy(out)]
    for t in range(prompt, L):
        s = slice(t, t + 1)
        out, cache = core.decode_step(q[:, s], k[:, s], v[:, s], cache, t, context)
        steps.append(to_numpy(out))
    check(np.concatenate(steps, axis=1), reference(core, q, k, v, True), f"{name} cached")


def test_issue_17_causal_performer_layer_has_no_zero_rows():
    x = np.random.default_rng(0).standard_normal((2, 16, 16)).astype("float32") * SCALE
    for causal in (False, True):
        layer = kt.attention.MultiHeadAttention(2, 8, attention="performer", causal=causal)
        out = to_numpy(layer(x))  # (2, 16, 16)
        assert np.isfinite(out).all()
        assert (np.abs(out).max(axis=-1) > 1.0).all(), f"causal={causal}: vanishing rows"
