"""kt.losses.SparseSoftmaxCrossEntropy against a plain numpy log-sum-exp: values, gradients,
16-bit logits, sample weights, errors, serialization, and one training step equal to Keras' loss."""

import keras
import numpy as np
import pytest

import keras_transformers as kt
from keras_transformers.losses import SparseSoftmaxCrossEntropy, sparse_softmax_cross_entropy


def numpy_cross_entropy(labels, logits):
    """Per-token loss and d(mean loss)/d logits, float64."""
    z = logits.astype("float64")
    top = z.max(-1, keepdims=True)
    lse = np.log(np.exp(z - top).sum(-1)) + top[..., 0]
    picked = np.take_along_axis(z, labels[..., None], -1)[..., 0]
    probs = np.exp(z - lse[..., None])
    onehot = np.eye(z.shape[-1])[labels]
    return lse - picked, (probs - onehot) / labels.size


def loss_and_grad(labels, logits):
    """Mean loss and its gradient in the logits, on the current backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        z = tf.constant(logits)
        with tf.GradientTape() as tape:
            tape.watch(z)
            loss = tf.reduce_mean(sparse_softmax_cross_entropy(labels, z))
        return loss.numpy(), tape.gradient(loss, z).numpy()
    if backend == "jax":
        import jax

        def mean_loss(z):
            return sparse_softmax_cross_entropy(labels, z).mean()

        loss, grad = jax.value_and_grad(mean_loss)(jax.numpy.asarray(logits))
        return np.asarray(loss), np.asarray(grad)
    import torch

    z = torch.tensor(logits, requires_grad=True)
    loss = sparse_softmax_cross_entropy(torch.tensor(labels), z).mean()
    loss.backward()
    return loss.detach().numpy(), z.grad.numpy()


@pytest.mark.backends
def test_values_and_gradients_match_numpy():
    rng = np.random.default_rng(0)
    logits = (4 * rng.standard_normal((2, 5, 37))).astype("float32")
    labels = rng.integers(0, 37, (2, 5)).astype("int32")
    per_token = keras.ops.convert_to_numpy(sparse_softmax_cross_entropy(labels, logits))
    ref_loss, ref_grad = numpy_cross_entropy(labels, logits)
    assert per_token.shape == (2, 5) and per_token.dtype == np.float32
    np.testing.assert_allclose(per_token, ref_loss, rtol=1e-5, atol=1e-5)
    loss, grad = loss_and_grad(labels, logits)
    np.testing.assert_allclose(loss, ref_loss.mean(), rtol=1e-5)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-7)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's XLA path")
def test_bfloat16_logits_float32_statistics():
    """16-bit logits: float32 loss from the rounded logits, gradient in the logits' dtype."""
    import tensorflow as tf

    rng = np.random.default_rng(1)
    logits = (8 * rng.standard_normal((64, 300))).astype("float32")
    labels = rng.integers(0, 300, 64).astype("int32")
    z16 = tf.cast(logits, tf.bfloat16)
    rounded = tf.cast(z16, tf.float32).numpy()
    with tf.GradientTape() as tape:
        tape.watch(z16)
        loss = tf.reduce_mean(sparse_softmax_cross_entropy(labels, z16))
    grad = tape.gradient(loss, z16)
    assert loss.dtype == tf.float32 and grad.dtype == tf.bfloat16
    ref_loss, ref_grad = numpy_cross_entropy(labels, rounded)
    np.testing.assert_allclose(loss.numpy(), ref_loss.mean(), rtol=1e-6)
    np.testing.assert_allclose(tf.cast(grad, tf.float32).numpy(), ref_grad, rtol=1e-2, atol=1e-6)


def test_loss_class_weights_reduction_and_config():
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((3, 4, 11)).astype("float32")
    labels = rng.integers(0, 11, (3, 4))
    weights = rng.uniform(size=(3, 4)).astype("float32")
    ours = SparseSoftmaxCrossEntropy()
    keras_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for kwargs in ({}, {"sample_weight": weights}):
        np.testing.assert_allclose(
            float(ours(labels, logits, **kwargs)),
            float(keras_loss(labels, logits, **kwargs)),
            rtol=1e-5,
        )
    summed = SparseSoftmaxCrossEntropy(reduction="sum")
    np.testing.assert_allclose(
        float(summed(labels, logits)), numpy_cross_entropy(labels, logits)[0].sum(), rtol=1e-5
    )
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(summed))
    assert isinstance(restored, SparseSoftmaxCrossEntropy) and restored.reduction == "sum"
    assert kt.losses.SparseSoftmaxCrossEntropy is SparseSoftmaxCrossEntropy


def test_bad_labels_raise():
    logits = np.zeros((2, 3, 5), "float32")
    with pytest.raises(ValueError, match="one axis less"):
        sparse_softmax_cross_entropy(np.zeros((2, 3, 5), "int32"), logits)
    if keras.backend.backend() != "tensorflow":
        return  # JAX/torch gather clamps out-of-range targets, as Keras' own loss does there
    with pytest.raises(Exception, match="labels must be < V"):
        sparse_softmax_cross_entropy(np.full((2, 3), 5), logits)


@pytest.mark.slow  # two models traced and fitted (~10 s); the loss values are checked above
def test_training_step_equals_keras_loss():
    """A mixed_bfloat16 decoder LM: one fit step with this loss gives Keras' loss and weights."""
    keras.config.set_dtype_policy("mixed_bfloat16")
    tokens = np.random.default_rng(3).integers(0, 50, (4, 9)).astype("int32")
    results = []
    for loss in (
        SparseSoftmaxCrossEntropy(),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    ):
        keras.utils.set_random_seed(0)
        lm = kt.models.build_decoder_lm(50, 8, d_model=16, num_heads=2, num_layers=1)
        lm.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss)
        history = lm.fit(tokens[:, :-1], tokens[:, 1:], epochs=2, batch_size=4, verbose=0)
        results.append((history.history["loss"], lm.get_weights()))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-5)
    for a, b in zip(results[0][1], results[1][1], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
