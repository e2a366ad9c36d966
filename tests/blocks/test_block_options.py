"""Block parts of the checkpoint families (issue 15) against plain numpy references.

RMSNormalization, the tanh-GELU activations and bias-free FeedForward, QK-norm in
MultiHeadAttention, and the MixtureOfExperts (routing, output, auxiliary loss, gradients) on
both of its computations.
"""

import keras
import numpy as np
import pytest

import keras_transformers as kt
from keras_transformers.blocks import FeedForward, MixtureOfExperts, RMSNormalization

RNG = np.random.default_rng(0)
X = RNG.normal(size=(2, 5, 12)).astype("float32")  # (B, L, d)


def to_np(x):
    return np.asarray(keras.ops.convert_to_numpy(x), np.float64)


def np_rms(x, scale, eps):
    return x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + eps) * scale


def np_gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def np_silu(x):
    return x / (1.0 + np.exp(-x))


def randomize(layer, seed=1):
    rng = np.random.default_rng(seed)
    for v in layer.weights:
        v.assign(rng.normal(0.0, 0.5, v.shape).astype("float32"))


def test_rms_normalization_matches_numpy():
    layer = RMSNormalization(epsilon=1e-5)
    layer.build(X.shape)
    layer.scale.assign(RNG.normal(size=12).astype("float32"))
    np.testing.assert_allclose(
        to_np(layer(X)), np_rms(X.astype("float64"), to_np(layer.scale), 1e-5), atol=1e-5
    )
    config = layer.get_config()
    assert config["epsilon"] == 1e-5
    assert RMSNormalization.from_config(config).epsilon == 1e-5


def test_rms_normalization_computes_in_float32_under_bfloat16():
    layer = RMSNormalization(dtype="mixed_bfloat16")
    big = (X * 300.0).astype("float32")  # bfloat16 squares would lose the mean's precision
    out = layer(big)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    want = np_rms(
        keras.ops.convert_to_numpy(
            keras.ops.cast(keras.ops.cast(big, "bfloat16"), "float32")
        ).astype("float64"),
        1.0,
        1e-6,
    )
    np.testing.assert_allclose(to_np(out), want, atol=2e-2)


@pytest.mark.parametrize(
    "activation, fn",
    [("gelu_approximate", np_gelu_tanh), ("geglu_approximate", None), ("swiglu", None)],
)
def test_feedforward_activations_and_no_bias(activation, fn):
    ff = FeedForward(8, activation=activation, use_bias=False)
    ff.build(X.shape)
    randomize(ff)
    assert ff.inner.bias is None and ff.outer.bias is None
    hidden = X.astype("float64") @ to_np(ff.inner.kernel)
    if fn is None:  # gated: first half gate, second half up
        gate, up = np.split(hidden, 2, axis=-1)
        act = np_gelu_tanh if activation == "geglu_approximate" else np_silu
        hidden = act(gate) * up
    else:
        hidden = fn(hidden)
    np.testing.assert_allclose(to_np(ff(X)), hidden @ to_np(ff.outer.kernel), atol=1e-4)
    assert FeedForward.from_config(ff.get_config()).use_bias is False


def test_qk_norm_matches_numpy():
    h, dh = 3, 6  # h·dh = 18 != d = 12: the output projection maps 18 -> 12
    mha = kt.attention.MultiHeadAttention(h, dh, qk_norm=True, qk_norm_epsilon=1e-6, use_bias=False)
    mha.build(X.shape)
    randomize(mha)
    assert mha.qkv_dense.bias is None and tuple(mha.output_dense.kernel.shape) == (18, 12)
    x = X.astype("float64")
    q, k, v = (t.reshape(2, 5, h, dh) for t in np.split(x @ to_np(mha.qkv_dense.kernel), 3, -1))
    q = np_rms(q, to_np(mha.query_norm.scale), 1e-6)
    k = np_rms(k, to_np(mha.key_norm.scale), 1e-6)
    scores = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(dh)
    w = np.exp(scores - scores.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    ctx = np.einsum("bhqk,bkhd->bqhd", w, v).reshape(2, 5, h * dh)
    np.testing.assert_allclose(to_np(mha(X)), ctx @ to_np(mha.output_dense.kernel), atol=1e-4)
    restored = kt.attention.MultiHeadAttention.from_config(mha.get_config())
    assert restored.qk_norm and restored.query_norm is not None


# ------------------------------------------------------------------------------ mixture of experts
E, K, FF = 4, 2, 8


def numpy_moe(moe, x, mask=None):
    """Routing, output and auxiliary loss of ``moe`` recomputed in float64."""
    tokens = x.reshape(-1, x.shape[-1]).astype("float64")  # (T, d)
    logits = tokens @ to_np(moe.router.kernel)  # (T, E)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    top = np.argsort(-probs, axis=-1)[:, :K]  # (T, k)
    out = np.zeros_like(tokens)
    for t in range(tokens.shape[0]):
        chosen = probs[t, top[t]] / probs[t, top[t]].sum()
        for e, g in zip(top[t], chosen):
            ex = moe.experts[e]
            gate, up = np.split(tokens[t] @ to_np(ex.inner.kernel) + to_np(ex.inner.bias), 2)
            out[t] += g * ((np_silu(gate) * up) @ to_np(ex.outer.kernel) + to_np(ex.outer.bias))
    keep = np.ones(tokens.shape[0]) if mask is None else mask.reshape(-1).astype("float64")
    fraction = np.zeros(E)
    for t in range(tokens.shape[0]):
        for e in top[t]:
            fraction[e] += keep[t] / K
    fraction /= keep.sum()
    mean_prob = (probs * keep[:, None]).sum(0) / keep.sum()
    return out.reshape(x.shape), E * np.sum(fraction * mean_prob)


def make_moe(compute, weight=0.5):
    moe = MixtureOfExperts(
        FF,
        num_experts=E,
        num_experts_per_token=K,
        activation="swiglu",
        router_aux_loss_weight=weight,
        compute=compute,
    )
    moe.build(X.shape)
    randomize(moe)
    return moe


COMPUTES = ["dense"] + ([] if keras.config.backend() == "jax" else ["routed"])


def check_moe_against_numpy(compute):
    moe = make_moe(compute)
    mask = np.ones((2, 5), bool)
    mask[1, 3:] = False
    want, aux = numpy_moe(moe, X, mask)
    out = moe(X, padding_mask=mask, training=True)
    np.testing.assert_allclose(to_np(out), want, atol=1e-4)
    assert len(moe.losses) == 1
    np.testing.assert_allclose(to_np(moe.losses[0]), 0.5 * aux, rtol=1e-5)
    assert moe.computation == (compute if compute != "auto" else COMPUTES[-1])


def test_moe_dense_computation_matches_numpy():
    check_moe_against_numpy("dense")


@pytest.mark.backends
def test_moe_backend_computation_matches_numpy():
    """``compute="auto"``: routed (gather/scatter) on TensorFlow and PyTorch, dense on JAX."""
    check_moe_against_numpy("auto")


def test_moe_gradient_steps_reduce_the_loss():
    compute = COMPUTES[-1]  # routed where the backend allows
    moe = make_moe(compute, weight=0.01)
    target = RNG.normal(size=X.shape).astype("float32")
    inputs = keras.Input((5, 12))
    model = keras.Model(inputs, moe(inputs))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse", run_eagerly=True)
    losses = [float(model.train_on_batch(X, target)) for _ in range(4)]  # before each step
    assert losses[-1] < losses[0]
    # the router and every expert that was chosen received gradients (moved from their start)
    assert not np.allclose(to_np(moe.router.kernel), to_np(make_moe(compute).router.kernel))


def test_moe_config_and_bad_arguments():
    moe = MixtureOfExperts(FF, num_experts=E, num_experts_per_token=K, use_bias=False)
    restored = MixtureOfExperts.from_config(moe.get_config())
    assert (restored.num_experts, restored.num_experts_per_token, restored.use_bias) == (
        E,
        K,
        False,
    )
    with pytest.raises(ValueError, match="num_experts_per_token=5"):
        MixtureOfExperts(FF, num_experts=4, num_experts_per_token=5)
    with pytest.raises(ValueError, match="compute='sparse'"):
        MixtureOfExperts(FF, compute="sparse")
    with pytest.raises(ValueError, match="feedforward='experts'"):
        kt.models.build_decoder_lm(
            20, 8, d_model=8, num_heads=2, num_layers=1, feedforward="experts"
        )


def test_moe_language_model_round_trips(tmp_path):
    lm = kt.models.build_decoder_lm(
        29,
        8,
        d_model=16,
        num_heads=2,
        num_layers=1,
        ff_dim=16,
        feedforward="moe",
        num_experts=E,
        num_experts_per_token=K,
        activation="swiglu",
        use_bias=False,
        router_aux_loss_weight=0.1,
    )
    moe = lm.transformer_layers[0].feedforward
    assert isinstance(moe, MixtureOfExperts) and moe.router.bias is None
    assert moe.experts[0].inner.bias is None and tuple(moe.experts[0].inner.kernel.shape) == (
        16,
        32,
    )
    ids = np.random.default_rng(3).integers(0, 29, size=(4, 8)).astype("int32")
    lm(ids, training=True)
    assert len(lm.losses) == 1  # the auxiliary loss reaches the model's losses
    path = str(tmp_path / "moe.keras")
    lm.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(to_np(loaded(ids)), to_np(lm(ids)), atol=1e-6)
    assert loaded.get_config()["feedforward"] == "moe"
