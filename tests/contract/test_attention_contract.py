"""The shared contract every registered attention core must meet.

Each core runs with its ``example_config`` through ``kt.attention.MultiHeadAttention``:
output shapes, padding masks, causality, ``.keras`` round trip, finite gradients with one
``fit`` step (eager and ``jit_compile=True``), mixed precision, and the builders. What a core may
refuse is read from its capability attributes (``supports_causal``, ``supports_cross_attention``,
``supports_cache``, ``supports_attention_scores``, ...), never from its registered name: a core
that declares a capability must deliver it (cached decoding equals the full pass), one that does
not must refuse it with a clear error.
"""

import os

import keras
import numpy as np
import pytest

import keras_transformers as kt
from keras_transformers.attention import AttentionCore

pytestmark = pytest.mark.backends

B, L, D, H = 2, 32, 16, 2
NAMES = kt.attention.available()


def make_layer(name, causal=False, **kwargs):
    cls = type(kt.attention.get(name))
    config = {"name": name, **cls.example_config}
    return kt.attention.MultiHeadAttention(
        num_heads=H, key_dim=D // H, attention=config, causal=causal, **kwargs
    )


def inputs(seed=0):
    return np.random.default_rng(seed).normal(size=(B, L, D)).astype("float32")


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def functional_model(name, causal=False):
    x = keras.Input((L, D))
    y = make_layer(name, causal=causal)(x)
    return keras.Model(x, y)


@pytest.mark.parametrize("name", NAMES)
def test_core_implements_compute_not_call(name):
    """One boundary: the base owns ``call`` (checks, GQA repeat, dropout gating); a core only
    implements ``compute``, and a caching core the cache protocol."""
    cls = type(kt.attention.get(name))
    assert cls.call is AttentionCore.call, f"{name} overrides call()"
    assert cls.compute is not AttentionCore.compute, f"{name} does not implement compute()"
    if cls.supports_cache:
        assert cls.init_cache is not AttentionCore.init_cache
        assert cls.decode_step is not AttentionCore.decode_step


@pytest.mark.parametrize("name", NAMES)
def test_output_shape_and_finite(name):
    layer = make_layer(name)
    out = to_numpy(layer(inputs()))
    assert out.shape == (B, L, D)
    assert np.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_padding_mask_respected(name):
    cls = type(kt.attention.get(name))
    layer = make_layer(name)
    x = inputs()
    mask = np.ones((B, L), bool)
    mask[0, 20:] = False
    mask[1, 27:] = False
    if cls.sparsity_depends_on_content:
        _, weights = layer(x, padding_mask=mask, return_attention_scores=True)
        weights = to_numpy(weights)  # (B, h, L, L)
        assert np.abs(weights[0, :, :, 20:]).max() == 0.0
        assert np.abs(weights[1, :, :, 27:]).max() == 0.0
        return
    x2 = x.copy()
    x2[~mask] = np.random.default_rng(1).normal(size=x2[~mask].shape)
    out1 = to_numpy(layer(x, padding_mask=mask))
    out2 = to_numpy(layer(x2, padding_mask=mask))
    np.testing.assert_allclose(out1[mask], out2[mask], atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_fully_masked_batch_row_gives_zeros(name):
    layer = make_layer(name, use_bias=False)
    mask = np.ones((B, L), bool)
    mask[1] = False  # sequence 1 has no key to attend to
    out = to_numpy(layer(inputs(), padding_mask=mask))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[1], 0.0, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_causality(name):
    cls = type(kt.attention.get(name))
    if not cls.supports_causal:
        with pytest.raises(ValueError, match="causal"):
            make_layer(name, causal=True)(inputs())
        return
    layer = make_layer(name, causal=True)
    x = inputs()
    i = 13
    x2 = x.copy()
    x2[:, i + 1 :] = np.random.default_rng(2).normal(size=x2[:, i + 1 :].shape)
    if cls.sparsity_depends_on_content:
        _, weights = layer(x, return_attention_scores=True)
        weights = to_numpy(weights)
        future = np.triu(np.ones((L, L), bool), k=1)
        assert np.abs(weights[..., future]).max() == 0.0
        return
    out1, out2 = to_numpy(layer(x)), to_numpy(layer(x2))
    np.testing.assert_allclose(out1[:, : i + 1], out2[:, : i + 1], atol=1e-5)
    assert np.abs(out1[:, i + 1 :] - out2[:, i + 1 :]).max() > 1e-4


@pytest.mark.parametrize("name", NAMES)
def test_debug_scores_are_a_distribution(name):
    layer = make_layer(name)
    if not type(layer.attention_core).supports_attention_scores:
        with pytest.raises(NotImplementedError, match="return_attention_scores"):
            layer(inputs(), return_attention_scores=True)
        return
    out, weights = layer(inputs(), return_attention_scores=True)
    weights = to_numpy(weights)
    assert weights.shape == (B, H, L, L)
    if not getattr(type(kt.attention.get(name)), "signed_attention_weights", False):
        assert (weights >= 0).all()  # RFA's random-feature weights may be slightly negative
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-4)
    np.testing.assert_allclose(to_numpy(out), to_numpy(layer(inputs())), atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_cross_attention_follows_the_capability(name):
    cls = type(kt.attention.get(name))
    layer = make_layer(name)
    memory = inputs(seed=3)[:, : L // 2]  # (B, L/2, D): another sequence, another length
    if not cls.supports_cross_attention:
        with pytest.raises(ValueError, match="cross-attention"):
            layer(inputs(), value=memory)
        return
    out = to_numpy(layer(inputs(), value=memory))
    assert out.shape == (B, L, D)
    assert np.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_cached_decoding_matches_the_full_pass(name):
    cls = type(kt.attention.get(name))
    layer = make_layer(name, causal=cls.supports_causal)
    x = inputs()
    if not cls.supports_cache:
        with pytest.raises(ValueError, match="KV cache"):
            layer.init_cache(B, L)
        return
    full = to_numpy(layer(x))
    prompt = 8
    out, cache = layer(x[:, :prompt], cache=layer.init_cache(B, L), cache_index=0)
    steps = [to_numpy(out)]
    for t in range(prompt, L):
        out, cache = layer(x[:, t : t + 1], cache=cache, cache_index=t)
        steps.append(to_numpy(out))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trip(name):
    layer = make_layer(name, causal=type(kt.attention.get(name)).supports_causal)
    clone = kt.attention.MultiHeadAttention.from_config(layer.get_config())
    assert type(clone.attention_core) is type(layer.attention_core)
    assert clone.attention_core.get_config() == layer.attention_core.get_config()


@pytest.mark.parametrize("name", NAMES)
def test_keras_save_load_identical(name, tmp_path):
    model = functional_model(name)
    x = inputs()
    path = os.path.join(tmp_path, f"{name}.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)  # no custom_objects
    np.testing.assert_allclose(
        to_numpy(model(x, training=False)), to_numpy(loaded(x, training=False)), atol=1e-6
    )


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("name", NAMES)
def test_fit_one_step_finite(name, jit):
    model = functional_model(name)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", jit_compile=jit)
    x = inputs()
    history = model.fit(x, np.zeros_like(x), epochs=1, batch_size=B, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    for w in model.trainable_weights:
        assert np.isfinite(to_numpy(w)).all(), w.path


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("name", NAMES)
def test_mixed_precision_no_nan(name, policy):
    if policy == "mixed_float16" and keras.backend.backend() == "jax":
        # CI time: eager calls are op-by-op on JAX; float16 runs on TensorFlow and PyTorch,
        # bfloat16 (the CPU's and TPU's 16-bit type) on all three.
        pytest.skip("mixed_float16 runs on TensorFlow and PyTorch")
    keras.config.set_dtype_policy(policy)
    layer = make_layer(name)
    mask = np.ones((B, L), bool)
    mask[1] = False
    out = to_numpy(keras.ops.cast(layer(inputs() * 10, padding_mask=mask), "float32"))
    assert np.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_builder_accepts_every_core(name):
    cls = type(kt.attention.get(name))
    attention = {"name": name, **cls.example_config}
    model = kt.models.build_encoder_classifier(
        vocab_size=50,
        num_classes=3,
        max_length=L,
        d_model=D,
        num_heads=H,
        num_layers=1,
        attention=attention,
        position=None,
    )
    ids = np.random.default_rng(0).integers(1, 50, size=(B, L))
    assert tuple(model(ids).shape) == (B, 3)
    if cls.supports_causal:
        lm = kt.models.build_decoder_lm(
            vocab_size=50,
            max_length=L,
            d_model=D,
            num_heads=H,
            num_layers=1,
            attention=attention,
            position="rope",
        )
        assert tuple(lm(ids).shape) == (B, L, 50)


def test_unknown_variant_lists_allowed_names():
    with pytest.raises(ValueError, match="Allowed values: .*full"):
        kt.attention.get("no_such_attention")
    with pytest.raises(ValueError, match="Allowed values"):
        kt.attention.MultiHeadAttention(num_heads=2, key_dim=4, attention="perfomer")
