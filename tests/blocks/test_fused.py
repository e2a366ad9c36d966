"""Fused TensorFlow activations (kt.blocks.fused) against numpy: values and derivatives, float32
and bfloat16, and a FeedForward whose training call (fused) equals its inference call (plain)."""

import math

import keras
import numpy as np
import pytest

import keras_transformers as kt
from keras_transformers.blocks.feedforward import FeedForward
from keras_transformers.blocks.fused import FUSED, fused_activation

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="the fused form is TensorFlow's"
)


def numpy_value_and_slope(name, x):
    x = x.astype("float64")
    if name == "gelu":
        cdf = np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in x])
        pdf = np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
        return x * cdf, cdf + x * pdf
    if name == "gelu_approximate":
        c, a = math.sqrt(2 / math.pi), 0.044715
        t = np.tanh(c * (x + a * x**3))
        return 0.5 * x * (1 + t), 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * a * x * x)
    sig = 1 / (1 + np.exp(-x))
    return x * sig, sig * (1 + x * (1 - sig))


@pytest.mark.parametrize("name", FUSED)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fused_value_and_gradient_match_numpy(name, dtype):
    import tensorflow as tf

    x = tf.cast(np.linspace(-7, 7, 201).astype("float32"), dtype)
    dy = tf.cast(np.linspace(0.5, 1.5, 201).astype("float32"), dtype)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fused_activation(name, x)
    grad = tape.gradient(y, x, output_gradients=dy)
    assert y.dtype == x.dtype and grad.dtype == x.dtype
    value, slope = numpy_value_and_slope(name, tf.cast(x, "float32").numpy())
    # float32: the tanh form loses ~1e-6 absolute to the 1 + tanh cancellation for x << 0
    tol = dict(rtol=1e-5, atol=5e-6) if dtype == "float32" else dict(rtol=2**-7, atol=1e-3)
    np.testing.assert_allclose(tf.cast(y, "float32").numpy(), value, **tol)
    expected = tf.cast(dy, "float32").numpy() * slope
    np.testing.assert_allclose(tf.cast(grad, "float32").numpy(), expected, **tol)


def test_unknown_name_raises():
    with pytest.raises(ValueError, match="allowed values"):
        fused_activation("relu", np.zeros(3, "float32"))


@pytest.mark.parametrize("activation", ["gelu", "swiglu"])
def test_feedforward_training_call_equals_inference_call(activation):
    import tensorflow as tf

    layer = FeedForward(16, activation=activation)
    x = tf.constant(np.random.default_rng(0).standard_normal((2, 5, 8)).astype("float32"))
    np.testing.assert_allclose(
        layer(x, training=True).numpy(), layer(x, training=False).numpy(), rtol=1e-5, atol=1e-6
    )
    with tf.GradientTape(persistent=True) as tape:
        fused = tf.reduce_sum(tf.sin(layer(x, training=True)))
        plain = tf.reduce_sum(tf.sin(layer(x, training=False)))
    for a, b in zip(
        tape.gradient(fused, layer.trainable_variables),
        tape.gradient(plain, layer.trainable_variables),
        strict=True,
    ):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_layer_norm_training_call_equals_keras(policy, monkeypatch):
    """kt's LayerNormalization: the fused training call equals Keras' own layer (values and the
    gradients of x, gamma, beta), float32 and mixed_bfloat16."""
    import tensorflow as tf

    from keras_transformers.blocks import fused
    from keras_transformers.blocks.norms import LayerNormalization

    calls = []
    original = fused.fused_layer_norm
    monkeypatch.setattr(fused, "fused_layer_norm", lambda *args: calls.append(1) or original(*args))

    rng = np.random.default_rng(1)
    x = tf.constant((3 + 2 * rng.standard_normal((2, 7, 24))).astype("float32"))
    ours = LayerNormalization(epsilon=1e-5, dtype=policy)
    ref = keras.layers.LayerNormalization(epsilon=1e-5, dtype=policy)
    ours.build(x.shape), ref.build(x.shape)
    weights = [rng.standard_normal(24).astype("float32") for _ in range(2)]
    ours.set_weights(weights), ref.set_weights(weights)
    dy = tf.constant(rng.standard_normal((2, 7, 24)).astype("float32"))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y_ours = ours(x, training=True)
        y_ref = ref(x, training=True)
        loss_ours = tf.reduce_sum(tf.cast(y_ours, "float32") * dy)
        loss_ref = tf.reduce_sum(tf.cast(y_ref, "float32") * dy)
    assert y_ours.dtype == y_ref.dtype and calls == [1]  # the fused path was taken
    tol = dict(rtol=1e-5, atol=1e-5) if policy == "float32" else dict(rtol=2**-7, atol=2e-2)
    np.testing.assert_allclose(
        tf.cast(y_ours, "float32").numpy(), tf.cast(y_ref, "float32").numpy(), **tol
    )
    grads_ours = tape.gradient(loss_ours, [x, *ours.trainable_variables])
    grads_ref = tape.gradient(loss_ref, [x, *ref.trainable_variables])
    for a, b in zip(grads_ours, grads_ref, strict=True):
        np.testing.assert_allclose(
            tf.cast(a, "float32").numpy(), tf.cast(b, "float32").numpy(), **tol
        )
    np.testing.assert_allclose(
        tf.cast(ours(x, training=False), "float32").numpy(),
        tf.cast(y_ref, "float32").numpy(),
        **tol,
    )
    assert calls == [1]  # inference runs Keras' code


def test_block_norms_take_the_fused_path_in_fit(monkeypatch):
    """In a model's training step the block norms get training=True from the call context."""
    import tensorflow as tf

    from keras_transformers.blocks import fused

    calls = []
    original = fused.fused_layer_norm
    monkeypatch.setattr(fused, "fused_layer_norm", lambda *args: calls.append(1) or original(*args))
    lm = kt.models.build_decoder_lm(30, 8, d_model=16, num_heads=2, num_layers=1)
    tokens = tf.constant(np.random.default_rng(0).integers(0, 30, (2, 8)), "int32")
    lm(tokens, training=True)
    assert len(calls) == 3  # two block norms and the final norm
