"""Normalization layers of the blocks: RMSNorm, and the factory the blocks and builders use.

RMSNorm (Zhang & Sennrich, 2019, "Root Mean Square Layer Normalization"):
``y = x / sqrt(mean(x², axis=-1) + ε) · g`` with a learned scale ``g`` (ones at init) and no
centring and no bias. Llama, Mistral, Mixtral, Gemma (whose ``(1 + w)`` scale a converter loads as
``g = 1 + w``), OLMo-2 and Qwen use it. It is computed in float32 whatever the compute dtype and
cast back, so a bfloat16 model normalizes as a float32 one does.

Shapes: ``(..., d) -> (..., d)``, normalized over the last axis.

Example:
    >>> import numpy as np, keras_transformers as kt
    >>> kt.blocks.RMSNormalization(epsilon=1e-6)(np.ones((2, 3, 4), "float32")).shape
    (2, 3, 4)
"""

import keras
from keras import ops

#: Values of the ``norm=`` option of the blocks and builders.
NORMS = ("layer", "rms")


@keras.saving.register_keras_serializable(package="keras_transformers")
class RMSNormalization(keras.layers.Layer):
    """Root-mean-square normalization over the last axis with a learned scale.

    Args:
        epsilon: added to the mean square before the square root.
    """

    def __init__(self, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)
        if self.epsilon < 0:
            raise ValueError(f"epsilon={epsilon}: must be >= 0.")
        self.supports_masking = True

    def build(self, input_shape):
        dim = input_shape[-1]
        if dim is None:
            raise ValueError("RMSNormalization needs a known last axis (the features).")
        self.scale = self.add_weight(
            name="scale", shape=(int(dim),), initializer="ones", trainable=True
        )
        self.built = True

    def call(self, x):
        x32 = ops.cast(x, "float32")
        mean_square = ops.mean(ops.square(x32), axis=-1, keepdims=True)  # (..., 1)
        y = x32 * ops.rsqrt(mean_square + self.epsilon) * ops.cast(self.scale, "float32")
        return ops.cast(y, self.compute_dtype)  # (..., d)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="keras_transformers")
class LayerNormalization(keras.layers.LayerNormalization):
    """Keras' ``LayerNormalization`` (same weights, options and config) whose training calls on
    TensorFlow, over the last axis with scale and centre, take
    :func:`~keras_transformers.blocks.fused.fused_layer_norm` (forward and backward each one XLA
    loop instead of about ten elementwise kernels each; float32 statistics as before). Other
    calls, backends and options run Keras' own code."""

    def call(self, inputs, training=None):
        if (
            training
            and keras.backend.backend() == "tensorflow"
            and [axis % len(inputs.shape) for axis in self.axis] == [len(inputs.shape) - 1]
            and self.center
            and self.scale
            and not self.rms_scaling
        ):
            from keras_transformers.blocks.fused import fused_layer_norm

            gamma, beta = ops.convert_to_tensor(self.gamma), ops.convert_to_tensor(self.beta)
            outputs = fused_layer_norm(inputs, gamma, beta, self.epsilon)  # (..., d) float32
            return ops.cast(outputs, self.compute_dtype)
        return super().call(inputs)


def check_norm(norm):
    """Validate a ``norm=`` option (``"layer"`` or ``"rms"``)."""
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r}: allowed values are {', '.join(map(repr, NORMS))}.")
    return norm


def make_norm(norm, epsilon, name, dtype=None):
    """The normalization layer ``norm`` names: ``"layer"`` -> :class:`LayerNormalization` (Keras'
    with a fused TensorFlow training path),
    ``"rms"`` -> :class:`RMSNormalization`, both with ``epsilon``."""
    check_norm(norm)
    if norm == "rms":
        return RMSNormalization(epsilon=epsilon, dtype=dtype, name=name)
    return LayerNormalization(epsilon=epsilon, dtype=dtype, name=name)
