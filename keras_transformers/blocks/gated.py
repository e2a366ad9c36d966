"""GTrXL: gated residual connections and the identity-map reordering (Parisotto et al., 2019,
"Stabilizing Transformers for Reinforcement Learning").

Two changes to a Transformer(-XL) layer make it trainable in RL:

1. **Identity-map reordering.** Layer norm is applied only to the *input* of each sub-layer, never
   to the residual stream, and a ReLU follows the sub-layer, so the block input can flow
   unchanged from the first layer to the last:
   ``Y = MHA(LN(E))``, ``E' = g(E, ReLU(Y))``, ``Ŷ = FFN(LN(E'))``, ``E'' = g(E', ReLU(Ŷ))``.
2. **Gating.** The residual add ``x + y`` is replaced by a gate ``g(x, y)``, ``x`` the residual
   stream and ``y`` the sub-layer output. The GRU-type gate (the paper's best) is

   ``r = σ(W_r y + U_r x)``
   ``z = σ(W_z y + U_z x − b_g)``
   ``ĥ = tanh(W_g y + U_g (r ⊙ x))``
   ``g(x, y) = (1 − z) ⊙ x + z ⊙ ĥ``

   with a learned bias ``b_g`` initialised to ``gate_bias > 0`` (2 in the paper), so ``z`` starts
   near 0 and each gate, hence the whole block, starts close to the identity map. The paper's
   other gates are options (``gate=``):

   - ``"input"``: ``g = σ(W_g x) ⊙ x + y``
   - ``"output"``: ``g = x + σ(W_g x − b_g) ⊙ y``
   - ``"highway"``: ``g = σ(W_g x + b_g) ⊙ x + (1 − σ(W_g x + b_g)) ⊙ y``
   - ``"sigmoid_tanh"``: ``g = x + σ(W_g y − b_g) ⊙ tanh(U_g y)``
   - ``"residual"``: ``g = x + y`` (the ungated TrXL-I reordering, for ablations).

Shapes: ``x, y (B, L, d) -> (B, L, d)``; ``W_*, U_* (d, d)``, ``b_g (d,)``.
Cost: the GRU gate adds ``6·d²`` multiply-adds per token and gate (two gates per block), on top
of the attention's cost.

Example:
    >>> import numpy as np, keras_transformers as kt
    >>> from keras_transformers.blocks.gated import GTrXLBlock
    >>> block = GTrXLBlock(num_heads=2, key_dim=8, ff_dim=32, causal=True, position="rope")
    >>> block(np.zeros((2, 6, 16), "float32")).shape
    (2, 6, 16)
"""

import keras
from keras import ops

from keras_transformers.blocks.residual import SelfAttentionBlock

GATES = ("gru", "input", "output", "highway", "sigmoid_tanh", "residual")
#: Gates whose equation has the bias b_g.
_BIASED = ("gru", "output", "highway", "sigmoid_tanh")


@keras.saving.register_keras_serializable(package="keras_transformers")
class GatingLayer(keras.layers.Layer):
    """A GTrXL gate ``g(x, y)`` in place of the residual ``x + y``.

    Args:
        gate: ``"gru"`` (default), ``"input"``, ``"output"``, ``"highway"``, ``"sigmoid_tanh"``
            or ``"residual"`` (see the module docstring for the equations).
        gate_bias: initial value of the learned bias ``b_g`` (``> 0`` starts the gate near the
            identity; the paper uses 2). Unused by ``"input"`` and ``"residual"``.
        kernel_initializer: initializer of the ``W``/``U`` matrices.

    Call: ``gate(x, y)`` with ``x`` the residual stream and ``y`` the sub-layer output, both
    ``(B, L, d)``; returns ``(B, L, d)``.
    """

    def __init__(self, gate="gru", gate_bias=2.0, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        if gate not in GATES:
            raise ValueError(f"gate={gate!r}: allowed values are {', '.join(map(repr, GATES))}.")
        if isinstance(gate_bias, bool) or not isinstance(gate_bias, (int, float)):
            raise ValueError(f"gate_bias={gate_bias!r}: must be a number.")
        self.gate = gate
        self.gate_bias = float(gate_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.supports_masking = True

    def _kernel(self, name, d, width):
        return self.add_weight(name=name, shape=(d, width), initializer=self.kernel_initializer)

    def build(self, x_shape, y_shape=None):
        d = int(x_shape[-1])
        if y_shape is not None and y_shape[-1] is not None and int(y_shape[-1]) != d:
            raise ValueError(
                f"GatingLayer needs x and y of the same width; got {x_shape} and {y_shape}."
            )
        gate = self.gate
        if gate == "gru":
            self.y_kernel = self._kernel("y_kernel", d, 3 * d)  # [W_r | W_z | W_g]
            self.x_kernel = self._kernel("x_kernel", d, 2 * d)  # [U_r | U_z]
            self.reset_kernel = self._kernel("reset_kernel", d, d)  # U_g
        elif gate in ("input", "output", "highway"):
            self.x_kernel = self._kernel("x_kernel", d, d)  # W_g on x
        elif gate == "sigmoid_tanh":
            self.y_kernel = self._kernel("y_kernel", d, 2 * d)  # [W_g | U_g] on y
        if gate in _BIASED:
            self.gate_bias_weight = self.add_weight(
                name="gate_bias",
                shape=(d,),
                initializer=keras.initializers.Constant(self.gate_bias),
            )
        self.built = True

    @staticmethod
    def _mm(x, kernel):
        return ops.matmul(x, ops.cast(kernel, x.dtype))

    def call(self, x, y):
        gate = self.gate
        if gate == "residual":
            return x + y
        y = ops.cast(y, x.dtype)
        bias = ops.cast(self.gate_bias_weight, x.dtype) if gate in _BIASED else None
        if gate == "gru":
            wr, wz, wg = ops.split(self._mm(y, self.y_kernel), 3, axis=-1)  # 3 x (B, L, d)
            ur, uz = ops.split(self._mm(x, self.x_kernel), 2, axis=-1)  # 2 x (B, L, d)
            r = ops.sigmoid(wr + ur)
            z = ops.sigmoid(wz + uz - bias)
            h = ops.tanh(wg + self._mm(r * x, self.reset_kernel))
            return (1.0 - z) * x + z * h
        if gate == "input":
            return ops.sigmoid(self._mm(x, self.x_kernel)) * x + y
        if gate == "output":
            return x + ops.sigmoid(self._mm(x, self.x_kernel) - bias) * y
        if gate == "highway":
            s = ops.sigmoid(self._mm(x, self.x_kernel) + bias)
            return s * x + (1.0 - s) * y
        wg, ug = ops.split(self._mm(y, self.y_kernel), 2, axis=-1)  # sigmoid_tanh
        return x + ops.sigmoid(wg - bias) * ops.tanh(ug)

    def compute_output_shape(self, x_shape, y_shape=None):
        return x_shape

    def compute_mask(self, x, y=None, mask=None):
        return mask

    def get_config(self):
        return {
            **super().get_config(),
            "gate": self.gate,
            "gate_bias": self.gate_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


@keras.saving.register_keras_serializable(package="keras_transformers")
class GTrXLBlock(SelfAttentionBlock):
    """One GTrXL layer: gated, identity-map-reordered self-attention and feed-forward.

    ``E' = g₁(E, ReLU(MHA(LN(E))))``, ``E'' = g₂(E', ReLU(FFN(LN(E'))))``.

    Args:
        num_heads, key_dim: attention heads and per-head size.
        ff_dim: feed-forward width.
        attention: attention core name / dict / instance (``kt.attention.available()``).
        position: None or a score-side positional encoding (``"xl"``, ``"rope"``, ``"alibi"``...;
            the paper uses Transformer-XL relative positions).
        causal: causal self-attention (the paper's setting for RL agents).
        gate: gate type of both residuals (``"gru"``, ``"input"``, ``"output"``, ``"highway"``,
            ``"sigmoid_tanh"``, ``"residual"``).
        gate_bias: initial ``b_g`` (> 0 starts the block near the identity; paper: 2).
        sublayer_relu: apply the ReLU to the sub-layer outputs before the gates (paper: True).
        activation: feed-forward activation (paper: ``"relu"``).
        dropout: dropout on the sub-layer outputs and inside the feed-forward.
        attention_dropout: dropout on the attention weights.
        num_key_value_heads: grouped-query attention.
        layer_norm_epsilon: epsilon of the layer norms.

    Call: ``block(x, padding_mask=None, attention_mask=None, global_mask=None)``;
    ``(B, L, d) -> (B, L, d)``.
    """

    config_keys = (
        *SelfAttentionBlock.common_keys,
        "causal",
        "gate",
        "gate_bias",
        "sublayer_relu",
        "num_key_value_heads",
    )

    def __init__(
        self,
        num_heads,
        key_dim,
        ff_dim,
        attention="full",
        position=None,
        causal=False,
        gate="gru",
        gate_bias=2.0,
        sublayer_relu=True,
        activation="relu",
        dropout=0.0,
        attention_dropout=0.0,
        num_key_value_heads=None,
        layer_norm_epsilon=1e-5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, value in (("num_heads", num_heads), ("key_dim", key_dim), ("ff_dim", ff_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}: must be an integer >= 1.")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout={dropout}: must be in [0, 1).")
        self.store_arguments(locals())
        policy = self.dtype_policy
        self.self_attention = self.make_self_attention(attention, position, self.causal)
        self.feedforward = self.make_feedforward()
        self.attention_norm = self.make_norm("attention_norm")
        self.feedforward_norm = self.make_norm("feedforward_norm")
        self.attention_gate = GatingLayer(gate, gate_bias, dtype=policy, name="attention_gate")
        self.feedforward_gate = GatingLayer(gate, gate_bias, dtype=policy, name="feedforward_gate")
        self.output_dropout = keras.layers.Dropout(dropout, dtype=policy)
        self.supports_masking = True

    def build(self, input_shape):
        self.attention_norm.build(input_shape)
        self.self_attention.build(input_shape)
        self.attention_gate.build(input_shape, input_shape)
        self.feedforward_norm.build(input_shape)
        self.feedforward.build(input_shape)
        self.feedforward_gate.build(input_shape, input_shape)
        self.built = True

    def _sublayer_out(self, y, training):
        if self.sublayer_relu:
            y = ops.relu(y)
        return self.output_dropout(y, training=training)

    def call(
        self, x, padding_mask=None, attention_mask=None, global_mask=None, training=None, mask=None
    ):
        if padding_mask is None:
            padding_mask = mask
        kwargs = self.attention_kwargs(padding_mask, attention_mask, global_mask, training)
        y = self.self_attention(self.attention_norm(x), **kwargs)  # (B, L, d)
        x = self.attention_gate(x, self._sublayer_out(y, training))
        y = self.feedforward(self.feedforward_norm(x), training=training)  # (B, L, d)
        return self.feedforward_gate(x, self._sublayer_out(y, training))

    def compute_mask(self, x, mask=None):
        return mask

    def compute_output_shape(self, input_shape):
        return input_shape
