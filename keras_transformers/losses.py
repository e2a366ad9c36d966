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

``ignore_class=c`` is Keras' ``ignore_class``: a target equal to ``c`` (padding, usually ``0``)
gives loss 0 and gradient 0, and the per-token losses carry a Keras mask of the other tokens, so
the default ``"sum_over_batch_size"`` reduction divides by the number of kept tokens (with
``sample_weight``: ``sum(w·loss) / #kept``; a batch with every target ignored gives 0, not NaN)::

    loss = Σ_{y_i ≠ c} w_i (logsumexp(z_i) - z_i[y_i]) / #{i : y_i ≠ c}

Ignored targets are replaced by ``0`` before the gather and their logits read as zeros (Keras
does the same), so ``c`` may lie outside ``[0, V)`` (``-1``, ``255``) and non-finite logits at
ignored positions do not reach the loss or the gradient. On TensorFlow this select is fused into
the two XLA loops (Keras adds a ``where`` over the whole ``(N, V)`` logits).

Other targets must lie in ``[0, V)``: on TensorFlow an out-of-range target raises (as
TensorFlow's own kernel does on CPU).

Example:
    >>> import numpy as np, keras, keras_transformers as kt
    >>> loss = kt.losses.SparseSoftmaxCrossEntropy()
    >>> float(loss(np.array([[1, 0]]), np.zeros((1, 2, 4), "float32")))  # ln 4
    1.3862943649291992
"""

import functools

import keras
import numpy as np
from keras import ops

# The mask a Loss reads from its per-token losses (Keras' own losses set it the same way).
from keras.src.backend.common.masking import set_keras_mask


@keras.saving.register_keras_serializable(package="keras_transformers")
class SparseSoftmaxCrossEntropy(keras.losses.Loss):
    """Cross-entropy of integer targets under logits (``from_logits`` only), float32 statistics.

    A drop-in for ``keras.losses.SparseCategoricalCrossentropy(from_logits=True,
    ignore_class=...)``: ``y_true (...)`` ints, ``y_pred (..., V)`` logits -> per-token losses
    ``(...)``, reduced by Keras (``reduction``, ``sample_weight``, the ``ignore_class`` mask) in
    float32. Faster on TensorFlow (see the module docstring).

    Args:
        ignore_class: ``None`` (every target counts, the default) or an integer class id whose
            targets give loss 0 and are left out of the ``"sum_over_batch_size"`` mean, as in
            Keras (e.g. ``0`` for padding).
        reduction: as ``keras.losses.Loss``.
        name: as ``keras.losses.Loss``.
    """

    def __init__(
        self,
        ignore_class=None,
        reduction="sum_over_batch_size",
        name="sparse_softmax_cross_entropy",
        **kw,
    ):
        super().__init__(reduction=reduction, name=name, **kw)
        self.ignore_class = _check_ignore_class(ignore_class)

    def call(self, y_true, y_pred):
        return sparse_softmax_cross_entropy(y_true, y_pred, ignore_class=self.ignore_class)

    def get_config(self):
        return {**super().get_config(), "ignore_class": self.ignore_class}


def _check_ignore_class(value):
    """``None`` or a Python/numpy integer (not a bool), returned as ``int``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(
            f"ignore_class={value!r}: must be None or an integer class id (e.g. 0 for padding)."
        )
    return int(value)


def sparse_softmax_cross_entropy(labels, logits, ignore_class=None):
    """Per-token ``logsumexp(logits) - logits[labels]`` in float32.

    Args:
        labels: ``(...)`` integer targets in ``[0, V)`` (floats holding integers are accepted,
            as Keras passes them; a trailing axis of 1, ``(..., 1)``, is squeezed as Keras does).
        logits: ``(..., V)`` float logits (any float dtype).
        ignore_class: ``None`` or an integer: targets equal to it give loss 0 and gradient 0,
            and the result carries the Keras mask ``labels != ignore_class`` (see the module
            docstring).

    Returns:
        ``(...)`` float32 losses; differentiable in ``logits``.
    """
    ignore_class = _check_ignore_class(ignore_class)
    logits = ops.convert_to_tensor(logits)
    labels = ops.convert_to_tensor(labels)
    if len(labels.shape) == len(logits.shape) and labels.shape[-1] == 1:
        labels = ops.squeeze(labels, axis=-1)  # (...)
    labels = ops.cast(labels, "int32")
    if len(labels.shape) != len(logits.shape) - 1:
        raise ValueError(
            f"labels of shape {labels.shape}: must have one axis less than logits "
            f"{logits.shape} (integer targets, not one-hot)."
        )
    valid = None
    if ignore_class is not None:
        valid = ops.not_equal(labels, ignore_class)  # (...) bool
        labels = ops.where(valid, labels, 0)  # ignored -> class 0, in range for the gather
    if keras.backend.backend() != "tensorflow":
        x = ops.cast(logits, "float32")  # (..., V)
        if valid is not None:
            x = ops.where(valid[..., None], x, 0.0)  # ignored rows read as zeros, as in Keras
        picked = ops.take_along_axis(x, labels[..., None], axis=-1)[..., 0]  # (...)
        loss = ops.logsumexp(x, axis=-1) - picked  # (...)
        if valid is not None:
            loss = ops.where(valid, loss, 0.0)
    else:
        loss = _tf_cross_entropy(labels, logits, valid)
    if valid is not None:
        set_keras_mask(loss, valid)  # Loss.__call__ divides by the kept tokens
    return loss


def _tf_cross_entropy(labels, logits, valid=None):
    """TensorFlow: the flattened ``(N, V)`` problem through the custom-gradient XLA pair."""
    import tensorflow as tf

    forward, backward = _tf_kernels()
    shape = tf.shape(labels)
    vocab = tf.shape(logits)[-1]
    flat_labels = tf.reshape(labels, [-1])  # (N,)
    flat_logits = tf.reshape(logits, [-1, vocab])  # (N, V)
    flat_valid = None if valid is None else tf.reshape(valid, [-1])  # (N,) bool
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
        loss, lse = forward(z, flat_labels, flat_valid)  # (N,), (N,) float32

        def grad(dy):
            return backward(z, flat_labels, lse, dy, flat_valid)  # (N, V) in z's dtype

        return loss, grad

    return tf.reshape(loss_fn(flat_logits), shape)


@functools.lru_cache(maxsize=1)
def _tf_kernels():
    """The forward and backward loops, compiled by XLA (one fusion each).

    ``valid`` (``(N,)`` bool, or ``None`` when nothing is ignored: a separate trace) zeroes the
    logits, the loss and the gradient of ignored rows inside the same fusion.
    """
    import tensorflow as tf

    @tf.function(jit_compile=True, reduce_retracing=True)
    def forward(logits, labels, valid):
        x = tf.cast(logits, tf.float32)  # (N, V)
        if valid is not None:
            x = tf.where(valid[:, None], x, 0.0)  # ignored rows read as zeros (N, V)
        top = tf.reduce_max(x, axis=-1)  # (N,)
        lse = tf.math.log(tf.reduce_sum(tf.exp(x - top[:, None]), axis=-1)) + top  # (N,)
        picked = tf.gather(x, labels, batch_dims=1)  # (N,)
        loss = lse - picked  # (N,)
        if valid is not None:
            loss = tf.where(valid, loss, 0.0)
        return loss, lse

    @tf.function(jit_compile=True, reduce_retracing=True)
    def backward(logits, labels, lse, dy, valid):
        x = tf.cast(logits, tf.float32)  # (N, V)
        if valid is not None:
            x = tf.where(valid[:, None], x, 0.0)
            dy = tf.where(valid, dy, 0.0)  # (N,)
        probs = tf.exp(x - lse[:, None])  # softmax (N, V)
        columns = tf.range(tf.shape(x)[-1], dtype=labels.dtype)  # (V,)
        onehot = tf.cast(tf.equal(columns[None, :], labels[:, None]), tf.float32)  # (N, V)
        return tf.cast((probs - onehot) * dy[:, None], logits.dtype)

    return forward, backward
