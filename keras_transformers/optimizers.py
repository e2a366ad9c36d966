"""Optimizers that ``.keras`` checkpoints written by the examples name.

* :class:`AdamW` -- ``keras.optimizers.AdamW`` (Loshchilov & Hutter, 2019) whose global-norm
  clipping sees the all-reduced gradient under ``tf.distribute``.
* :func:`adamw` -- that optimizer configured the way the examples train: global-norm clipping at
  1 and no weight decay on norms, biases and embeddings.

Registered under the package ``keras_transformers`` on ``import keras_transformers``, so
``keras.saving.load_model`` restores a checkpoint's optimizer with no ``custom_objects``.
"""

import keras

# Variable names AdamW leaves out of weight decay: LayerNorm scale/offset, biases, embeddings.
NO_DECAY = ("bias", "gamma", "beta", "embedding", "embeddings")


@keras.saving.register_keras_serializable(package="keras_transformers")
class AdamW(keras.optimizers.AdamW):
    """``keras.optimizers.AdamW`` whose global-norm clipping sees the all-reduced gradient.

    Under ``tf.distribute.MirroredStrategy`` Keras clips each replica's local gradient before
    the cross-replica sum, so a clipped distributed step differs from the single-device step on
    the same global batch. Here every replica scales its local gradient by the factor
    ``min(1, c / ||g||)`` computed from the norm of the summed gradient ``g``, and the sum Keras
    then takes is the clipped global gradient. Outside a multi-replica context it is plain AdamW.

    Example:
        >>> optimizer = AdamW(learning_rate=1e-3, weight_decay=0.01, global_clipnorm=1.0)
    """

    def _clip_gradients(self, grads):
        if not self.global_clipnorm or keras.backend.backend() != "tensorflow":
            return super()._clip_gradients(grads)
        import tensorflow as tf

        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return super()._clip_gradients(grads)
        present = [g for g in grads if g is not None]
        total = context.all_reduce(tf.distribute.ReduceOp.SUM, present)  # the global gradient
        norm = tf.linalg.global_norm(total)
        factor = tf.minimum(1.0, self.global_clipnorm / tf.maximum(norm, 1e-12))
        return [None if g is None else g * tf.cast(factor, g.dtype) for g in grads]


def adamw(learning_rate, weight_decay=0.01, global_clipnorm=1.0, no_decay=NO_DECAY):
    """:class:`AdamW` with global-norm clipping and no decay on the variables named ``no_decay``.

    Args:
        learning_rate: a float or a ``LearningRateSchedule`` (see ``kt.schedules``).
        weight_decay: decoupled weight decay of the other variables.
        global_clipnorm: clip the gradient to this global norm (``None``: no clipping).
        no_decay: substrings of the variable names kept out of weight decay.
    """
    optimizer = AdamW(
        learning_rate=learning_rate, weight_decay=weight_decay, global_clipnorm=global_clipnorm
    )
    optimizer.exclude_from_weight_decay(var_names=list(no_decay))
    return optimizer
