"""Position-wise feed-forward network, with plain and gated (GLU) activations.

Plain: ``FFN(x) = act(x W_1 + b_1) W_2 + b_2`` (Vaswani et al., 2017; ``act`` = relu/gelu/...).
Gated: ``FFN(x) = (act(x W_g) ⊙ x W_u) W_2`` (Shazeer, 2020, "GLU variants improve
Transformer"): ``swiglu`` uses SiLU, ``geglu`` GELU, ``reglu`` ReLU, ``geglu_approximate`` the tanh
GELU (Gemma). Gate and up projections are one fused ``(d, 2·ff)`` matmul whose first ``ff``
columns are the gate, the last ``ff`` the up projection.

``gelu`` is the exact ``x Φ(x)``; ``gelu_approximate`` the tanh form
``0.5 x (1 + tanh(sqrt(2/π) (x + 0.044715 x³)))`` (Hendrycks & Gimpel, 2016) of GPT-2 and Bloom.
``use_bias=False`` drops the biases of both projections (Llama, Mistral, Gemma).

Shapes: ``(B, L, d) -> (B, L, d)``; cost ``O(L·d·ff)``.
"""

import keras
from keras import ops

from keras_transformers.blocks.fused import FUSED, fused_activation

#: gated activation -> the activation of its gate
GATED = {
    "swiglu": "silu",
    "geglu": "gelu",
    "reglu": "relu",
    "geglu_approximate": "gelu_approximate",
}
ACTIVATIONS = ("gelu", "gelu_approximate", "relu", "silu", "swish", "tanh", *GATED)


def gelu_approximate(x):
    """The tanh approximation of GELU (GPT-2, Bloom, Gemma)."""
    return keras.activations.gelu(x, approximate=True)


def activation_function(name):
    """The elementwise function of a (gate) activation name."""
    if name == "gelu_approximate":
        return gelu_approximate
    return keras.activations.get(name)


#: activations whose elementwise cost is transcendental (erf, tanh, exp): computed in float32
#: under a 16-bit compute dtype (see :func:`apply_activation`); ReLU stays in the compute dtype
FLOAT32_ACTIVATIONS = ("gelu", "gelu_approximate", "silu", "swish", "tanh")


def apply_activation(name, x, training=None):
    """``name``'s function on ``x``; computed in float32 (and cast back) when ``x`` is 16-bit and
    the function is transcendental (:data:`FLOAT32_ACTIVATIONS`).

    On TensorFlow-CPU the ``bfloat16`` kernels of ``Erfc``/``Tanh`` and of GELU's gradient are
    scalar conversions: GELU forward + backward on a ``(4096, 1024)`` bfloat16 tensor took
    84 ms against 43 ms for cast -> float32 GELU -> cast (2-core Xeon, AVX512-BF16). Float32 is
    also the more accurate result; JAX/XLA fuses the casts into the elementwise loop.
    Training calls on TensorFlow take the fused form of GELU and SiLU
    (:func:`~keras_transformers.blocks.fused.fused_activation`: one XLA loop forward, one
    backward; 11 ms for the same tensor).
    """
    if training and name in FUSED and keras.backend.backend() == "tensorflow":
        return fused_activation(name, x)
    fn = activation_function(name)
    if name in FLOAT32_ACTIVATIONS and keras.backend.standardize_dtype(x.dtype) in (
        "bfloat16",
        "float16",
    ):
        return ops.cast(fn(ops.cast(x, "float32")), x.dtype)
    return fn(x)


def check_activation(activation):
    """Validate an ``activation=`` option (one of :data:`ACTIVATIONS`)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r}: allowed values are {', '.join(ACTIVATIONS)}.")
    return activation


@keras.saving.register_keras_serializable(package="keras_transformers")
class FeedForward(keras.layers.Layer):
    """Two-layer MLP applied at every position.

    Args:
        ff_dim: hidden width.
        activation: one of ``gelu, gelu_approximate, relu, silu, swish, tanh, swiglu, geglu,
            reglu, geglu_approximate``.
        dropout: dropout after the activation.
        output_dim: output width (defaults to the input width).
        use_bias: biases on the ``inner`` and ``outer`` Dense layers.
    """

    def __init__(
        self,
        ff_dim,
        activation="gelu",
        dropout=0.0,
        output_dim=None,
        kernel_initializer="glorot_uniform",
        use_bias=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(ff_dim) < 1:
            raise ValueError(f"ff_dim={ff_dim}: must be >= 1.")
        check_activation(activation)
        self.use_bias = bool(use_bias)
        self.ff_dim = int(ff_dim)
        self.activation = activation
        self.dropout = float(dropout)
        self.output_dim = output_dim
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        gated = activation in GATED
        self.inner = keras.layers.Dense(
            self.ff_dim * (2 if gated else 1),
            use_bias=self.use_bias,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name="inner",
        )
        self.drop = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)
        self.outer = None

    def build(self, input_shape):
        self.inner.build(input_shape)
        out = int(self.output_dim or input_shape[-1])
        self.outer = keras.layers.Dense(
            out,
            use_bias=self.use_bias,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name="outer",
        )
        self.outer.build(tuple(input_shape[:-1]) + (self.ff_dim,))
        self.built = True

    def call(self, x, training=None):
        hidden = self.inner(x)  # (B, L, ff) or (B, L, 2ff)
        if self.activation in GATED:
            gate, up = ops.split(hidden, 2, axis=-1)
            hidden = apply_activation(GATED[self.activation], gate, training) * up  # (B, L, ff)
        else:
            hidden = apply_activation(self.activation, hidden, training)
        return self.outer(self.drop(hidden, training=training))  # (B, L, d)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (int(self.output_dim or input_shape[-1]),)

    def get_config(self):
        return {
            **super().get_config(),
            "ff_dim": self.ff_dim,
            "activation": self.activation,
            "dropout": self.dropout,
            "output_dim": self.output_dim,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "use_bias": self.use_bias,
        }
