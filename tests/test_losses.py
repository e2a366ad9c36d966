"""kt.losses.SparseSoftmaxCrossEntropy against a plain numpy log-sum-exp: values, gradients,
16-bit logits, sample weights, ignore_class (values, gradients and reductions equal to Keras'
loss), errors, serialization, and one training step equal to Keras' loss."""

import functools

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


def loss_and_grad(labels, logits, fn=None):
    """``fn(labels, z)`` (default: the mean per-token loss) and its gradient in the logits ``z``,
    on the current backend."""
    if fn is None:

        def fn(y, z):
            return keras.ops.mean(sparse_softmax_cross_entropy(y, z))

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        z = tf.constant(logits)
        with tf.GradientTape() as tape:
            tape.watch(z)
            loss = fn(labels, z)
        return loss.numpy(), tape.gradient(loss, z).numpy()
    if backend == "jax":
        import jax

        loss, grad = jax.value_and_grad(lambda z: fn(labels, z))(jax.numpy.asarray(logits))
        return np.asarray(loss), np.asarray(grad)
    import torch

    z = torch.tensor(logits, requires_grad=True)
    loss = fn(torch.tensor(labels), z)
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


def numpy_ignored_cross_entropy(labels, logits, ignore, weights=None):
    """Keras' ``ignore_class`` mean: ``Σ_kept w·loss / #kept`` (0 when nothing is kept), and its
    gradient in the logits (0 on ignored rows), float64."""
    kept = labels != ignore
    safe = np.where(kept, labels, 0)
    per_token, _ = numpy_cross_entropy(safe, np.where(kept[..., None], logits, 0))
    w = np.ones(labels.shape) if weights is None else weights.astype("float64")
    count = max(kept.sum(), 1)
    loss = (np.where(kept, per_token, 0) * w).sum() / count
    z = np.where(kept[..., None], logits, 0).astype("float64")
    probs = np.exp(z - z.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    grad = (probs - np.eye(z.shape[-1])[safe]) * (kept * w / count)[..., None]
    return loss, grad


def padded_batch(seed, ignore):
    """Logits (2, 6, 13) and targets with a padded tail (= ``ignore``) and a non-finite logit
    in one ignored row (Keras zeroes ignored rows' logits: no NaN may leak)."""
    rng = np.random.default_rng(seed)
    logits = (3 * rng.standard_normal((2, 6, 13))).astype("float32")
    labels = rng.integers(1, 13, (2, 6)).astype("int32")
    labels[0, 4:] = ignore
    labels[1, 1] = ignore
    logits[0, 5, 2] = np.inf
    return labels, logits


@pytest.mark.backends
@pytest.mark.parametrize("ignore", [0, -1])
def test_ignore_class_values_and_gradients_match_keras_and_numpy(ignore):
    """``ignore_class``: every reduction, with and without ``sample_weight``, equals Keras'
    ``SparseCategoricalCrossentropy(from_logits=True, ignore_class=...)``; the default mean and
    its gradient equal a numpy reference (ignored tokens: loss 0, gradient 0, not counted)."""
    labels, logits = padded_batch(4, ignore)
    weights = np.random.default_rng(5).uniform(size=labels.shape).astype("float32")
    for reduction in ("sum_over_batch_size", "sum", "mean_with_sample_weight", None):
        ours = SparseSoftmaxCrossEntropy(ignore_class=ignore, reduction=reduction)
        theirs = keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, ignore_class=ignore, reduction=reduction
        )
        for kwargs in ({}, {"sample_weight": weights}):
            got = keras.ops.convert_to_numpy(ours(labels, logits, **kwargs))
            want = keras.ops.convert_to_numpy(theirs(labels, logits, **kwargs))
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=reduction)
    ours = SparseSoftmaxCrossEntropy(ignore_class=ignore)
    theirs = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=ignore)
    for w in (None, weights):
        ref_loss, ref_grad = numpy_ignored_cross_entropy(labels, logits, ignore, w)
        loss, grad = loss_and_grad(labels, logits, functools.partial(ours, sample_weight=w))
        keras_loss, keras_grad = loss_and_grad(
            labels, logits, functools.partial(theirs, sample_weight=w)
        )
        assert np.isfinite(grad).all()
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
        np.testing.assert_allclose(loss, keras_loss, rtol=1e-5)
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(grad, keras_grad, rtol=1e-4, atol=1e-7)


def test_ignore_class_all_ignored_batch_gives_zero():
    """Every target ignored: loss 0 and gradient 0 (Keras gives 0, not 0/0 = NaN)."""
    logits = np.random.default_rng(6).standard_normal((2, 3, 5)).astype("float32")
    labels = np.zeros((2, 3), "int32")
    ours = SparseSoftmaxCrossEntropy(ignore_class=0)
    theirs = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0)
    loss, grad = loss_and_grad(labels, logits, ours)
    assert float(loss) == 0.0 == float(theirs(labels, logits))
    assert not grad.any()


def test_ignore_class_mixed_bfloat16_logits():
    """bfloat16 logits (a mixed_bfloat16 LM head): the loss equals Keras' on the same logits and
    the numpy reference on the rounded logits; on TensorFlow the gradient stays bfloat16."""
    labels, logits = padded_batch(7, 0)
    logits[0, 5, 2] = 0.0
    z16 = keras.ops.cast(logits, "bfloat16")
    rounded = keras.ops.convert_to_numpy(keras.ops.cast(z16, "float32"))
    ours = SparseSoftmaxCrossEntropy(ignore_class=0)
    theirs = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0)
    ref_loss, ref_grad = numpy_ignored_cross_entropy(labels, rounded, 0)
    np.testing.assert_allclose(float(ours(labels, z16)), ref_loss, rtol=1e-5)
    np.testing.assert_allclose(float(ours(labels, z16)), float(theirs(labels, z16)), rtol=1e-5)
    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(z16)
        loss = tf.reduce_sum(sparse_softmax_cross_entropy(labels, z16, ignore_class=0)) / 9
    grad = tape.gradient(loss, z16)
    assert grad.dtype == tf.bfloat16
    np.testing.assert_allclose(tf.cast(grad, tf.float32).numpy(), ref_grad, rtol=1e-2, atol=1e-4)


def test_ignore_class_config_round_trip_and_errors():
    loss = SparseSoftmaxCrossEntropy(ignore_class=np.int64(0), reduction="sum")
    assert loss.get_config()["ignore_class"] == 0 and type(loss.ignore_class) is int
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert restored.ignore_class == 0 and restored.reduction == "sum"
    assert SparseSoftmaxCrossEntropy().get_config()["ignore_class"] is None
    for bad in ("pad", 1.5, True):
        with pytest.raises(ValueError, match="ignore_class=.*must be None or an integer"):
            SparseSoftmaxCrossEntropy(ignore_class=bad)
    # A trailing axis of 1 on the targets is squeezed, as in Keras.
    labels, logits = padded_batch(8, 0)
    np.testing.assert_allclose(
        float(SparseSoftmaxCrossEntropy(ignore_class=0)(labels[..., None], logits)),
        float(SparseSoftmaxCrossEntropy(ignore_class=0)(labels, logits)),
    )


def test_bad_labels_raise():
    logits = np.zeros((2, 3, 5), "float32")
    with pytest.raises(ValueError, match="one axis less"):
        sparse_softmax_cross_entropy(np.zeros((2, 3, 5), "int32"), logits)
    if keras.backend.backend() != "tensorflow":
        return  # JAX/torch gather clamps out-of-range targets, as Keras' own loss does there
    with pytest.raises(Exception, match="labels must be < V"):
        sparse_softmax_cross_entropy(np.full((2, 3), 5), logits)
    # An ignored target outside [0, V) never reaches the range check; a kept one still does.
    assert float(SparseSoftmaxCrossEntropy(ignore_class=255)(np.full((2, 3), 255), logits)) == 0
    with pytest.raises(Exception, match="labels must be < V"):
        sparse_softmax_cross_entropy(np.full((2, 3), 5), logits, ignore_class=255)


@pytest.mark.slow  # two models traced and fitted (~10 s); the loss values are checked above
@pytest.mark.parametrize("ignore", [None, 0])
def test_training_step_equals_keras_loss(ignore):
    """A mixed_bfloat16 decoder LM: fit steps with this loss give Keras' loss and weights (with
    ``ignore_class=0``: padded tails of 0s, as examples/train_lm.py trains)."""
    keras.config.set_dtype_policy("mixed_bfloat16")
    tokens = np.random.default_rng(3).integers(1, 50, (4, 9)).astype("int32")
    tokens[1, 6:] = tokens[3, 3:] = 0  # padding
    results = []
    for loss in (
        SparseSoftmaxCrossEntropy(ignore_class=ignore),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=ignore),
    ):
        keras.utils.set_random_seed(0)
        lm = kt.models.build_decoder_lm(50, 8, d_model=16, num_heads=2, num_layers=1)
        lm.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss)
        history = lm.fit(tokens[:, :-1], tokens[:, 1:], epochs=2, batch_size=4, verbose=0)
        results.append((history.history["loss"], lm.get_weights()))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-5)
    for a, b in zip(results[0][1], results[1][1], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
