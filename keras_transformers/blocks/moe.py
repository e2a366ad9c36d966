"""Mixture-of-experts feed-forward: a top-k router over ``E`` FeedForward experts.

Sparsely-gated MoE (Shazeer et al., 2017) as in Switch Transformer (Fedus et al., 2021) and
Mixtral (Jiang et al., 2024). For every token ``x``:

``p = softmax(x W_r)`` (``E`` router probabilities, float32; ``W_r`` is the bias-free
``router``), ``S = top-k(p)``, ``g_e = p_e / Σ_{e'∈S} p_{e'}`` for ``e ∈ S`` (the selected
weights renormalised to sum 1, Mixtral), ``y = Σ_{e∈S} g_e · FFN_e(x)``.

Each expert is a :class:`~keras_transformers.blocks.FeedForward` (``experts[e].inner`` holds the
fused gate|up projection for gated activations, ``experts[e].outer`` the down projection).

Load balancing (Switch / Mixtral, keras-hub's normalisation): with ``f_e`` the fraction of the
``T·k`` routing assignments that go to expert ``e`` and ``P_e`` the mean router probability of
``e`` over the ``T`` tokens (padding excluded), ``aux = E · Σ_e f_e · P_e`` (1 when perfectly
balanced); ``router_aux_loss_weight · aux`` is added with ``add_loss`` while training.

Computation (``compute=``): ``"routed"`` gathers the tokens each expert was chosen for, runs
the expert on those rows only and scatters the weighted rows back (``O(T·k·d·ff)``); this needs
dynamic shapes, so it is the default on TensorFlow (graph mode without XLA: the layer sets
``supports_jit = False`` so ``fit``'s ``jit_compile="auto"`` leaves XLA off) and PyTorch.
``"dense"`` runs every expert on every token and weights the outputs by ``g`` (0 for the experts
not selected; ``O(T·E·d·ff)``, the same result): the default on JAX, whose ``jit`` needs static
shapes, and the choice for TensorFlow under XLA.

Shapes: ``(B, L, d) -> (B, L, d)``; ``padding_mask (B, L)`` (True = real token) only masks the
auxiliary loss.

Example:
    >>> import numpy as np, keras_transformers as kt
    >>> moe = kt.blocks.MixtureOfExperts(ff_dim=32, num_experts=4, num_experts_per_token=2,
    ...                                  activation="swiglu")
    >>> moe(np.zeros((2, 5, 16), "float32")).shape
    (2, 5, 16)
"""

import keras
from keras import ops

from keras_transformers.blocks.feedforward import FeedForward, check_activation

COMPUTE = ("auto", "routed", "dense")


def route(router_logits, num_experts_per_token):
    """Top-k routing of ``router_logits (T, E)``.

    Returns:
        ``(probs (T, E), selected (T, k) int, gates (T, E))`` in float32: the softmax, the chosen
        experts and the renormalised weight of each expert (0 where not chosen).
    """
    probs = ops.softmax(ops.cast(router_logits, "float32"), axis=-1)  # (T, E)
    top_p, selected = ops.top_k(probs, k=num_experts_per_token)  # (T, k)
    top_p = top_p / ops.sum(top_p, axis=-1, keepdims=True)
    one_hot = ops.one_hot(selected, ops.shape(probs)[-1], dtype="float32")  # (T, k, E)
    gates = ops.sum(one_hot * top_p[..., None], axis=1)  # (T, E)
    return probs, selected, gates


def load_balancing_loss(probs, selected, mask=None):
    """``E · Σ_e f_e P_e`` of ``probs (T, E)`` and ``selected (T, k)`` (``mask (T,)``: tokens
    that count)."""
    num_experts = ops.shape(probs)[-1]
    one_hot = ops.one_hot(selected, num_experts, dtype="float32")  # (T, k, E)
    weight = (
        ops.ones(ops.shape(probs)[:1], "float32") if mask is None else ops.cast(mask, "float32")
    )
    count = ops.maximum(ops.sum(weight), 1.0)
    fraction = ops.sum(ops.mean(one_hot, axis=1) * weight[:, None], axis=0) / count  # (E,)
    mean_prob = ops.sum(probs * weight[:, None], axis=0) / count  # (E,)
    return ops.cast(num_experts, "float32") * ops.sum(fraction * mean_prob)


@keras.saving.register_keras_serializable(package="keras_transformers")
class MixtureOfExperts(keras.layers.Layer):
    """Top-k routed mixture of FeedForward experts with a load-balancing auxiliary loss.

    Args:
        ff_dim: hidden width of each expert.
        num_experts: ``E``.
        num_experts_per_token: ``k`` experts per token (``1 <= k <= E``).
        activation: the experts' activation (``swiglu`` for Mixtral; any FeedForward one).
        use_bias: biases in the experts' Dense layers (the router has none).
        dropout: the experts' dropout.
        router_aux_loss_weight: weight of the auxiliary loss (0 adds none).
        compute: ``"auto"``, ``"routed"`` (gather/scatter) or ``"dense"`` (see module docstring).
        output_dim: output width (the input width by default).
    """

    #: the layer reads ``padding_mask=`` (the blocks pass theirs)
    uses_padding_mask = True

    def __init__(
        self,
        ff_dim,
        num_experts=8,
        num_experts_per_token=2,
        activation="swiglu",
        use_bias=True,
        dropout=0.0,
        router_aux_loss_weight=0.01,
        compute="auto",
        output_dim=None,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.ff_dim = int(ff_dim)
        self.num_experts = int(num_experts)
        self.num_experts_per_token = int(num_experts_per_token)
        if self.num_experts < 1:
            raise ValueError(f"num_experts={num_experts}: must be >= 1.")
        if not 1 <= self.num_experts_per_token <= self.num_experts:
            raise ValueError(
                f"num_experts_per_token={num_experts_per_token}: must be in [1, num_experts="
                f"{self.num_experts}]."
            )
        self.activation = check_activation(activation)
        self.use_bias = bool(use_bias)
        self.dropout = float(dropout)
        self.router_aux_loss_weight = float(router_aux_loss_weight)
        if self.router_aux_loss_weight < 0:
            raise ValueError(f"router_aux_loss_weight={router_aux_loss_weight}: must be >= 0.")
        if compute not in COMPUTE:
            raise ValueError(f"compute={compute!r}: allowed values are {', '.join(COMPUTE)}.")
        if compute == "routed" and keras.config.backend() == "jax":
            raise ValueError(
                "compute='routed' needs dynamic shapes, which JAX's jit does not have; use "
                "compute='dense' (or 'auto') on the JAX backend."
            )
        self.compute = compute
        self.output_dim = output_dim
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.router = keras.layers.Dense(
            self.num_experts,
            use_bias=False,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name="router",
        )
        self.experts = [
            FeedForward(
                self.ff_dim,
                activation=self.activation,
                dropout=self.dropout,
                output_dim=output_dim,
                use_bias=self.use_bias,
                kernel_initializer=self.kernel_initializer,
                dtype=self.dtype_policy,
                name=f"expert_{e}",
            )
            for e in range(self.num_experts)
        ]
        self.supports_jit = self.computation != "routed"

    @property
    def computation(self):
        """The path ``call`` takes: ``"routed"`` or ``"dense"`` (``compute="auto"`` resolved)."""
        if self.compute != "auto":
            return self.compute
        return "dense" if keras.config.backend() == "jax" else "routed"

    def build(self, input_shape):
        token_shape = (None, int(input_shape[-1]))
        self.router.build(token_shape)
        for expert in self.experts:
            expert.build(token_shape)
        self.built = True

    def call(self, x, padding_mask=None, training=None):
        width = int(self.output_dim or x.shape[-1])
        tokens = ops.reshape(x, (-1, x.shape[-1]))  # (T, d)
        probs, selected, gates = route(self.router(tokens), self.num_experts_per_token)
        # probs, gates (T, E); selected (T, k)
        if self.computation == "dense":
            out = 0.0
            for e, expert in enumerate(self.experts):
                y = expert(tokens, training=training)  # (T, d)
                out = out + y * ops.cast(gates[:, e : e + 1], y.dtype)
        else:
            chosen = ops.any(
                ops.equal(selected[..., None], ops.arange(self.num_experts, dtype=selected.dtype)),
                axis=1,
            )  # (T, E) bool
            out = ops.zeros((ops.shape(tokens)[0], width), self.compute_dtype)
            for e, expert in enumerate(self.experts):
                rows = ops.where(chosen[:, e])[0]  # (n_e,) the tokens routed to e
                y = expert(ops.take(tokens, rows, axis=0), training=training)  # (n_e, d)
                g = ops.cast(ops.take(gates[:, e], rows, axis=0), y.dtype)[:, None]  # (n_e, 1)
                out = ops.scatter_update(out, rows[:, None], y * g, reduction="add")  # (T, d)
        if training and self.router_aux_loss_weight:
            mask = None if padding_mask is None else ops.reshape(padding_mask, (-1,))
            self.add_loss(self.router_aux_loss_weight * load_balancing_loss(probs, selected, mask))
        return ops.reshape(out, tuple(ops.shape(x)[:-1]) + (width,))  # (B, L, d)

    def compute_output_shape(self, x_shape, padding_mask_shape=None):
        return tuple(x_shape[:-1]) + (int(self.output_dim or x_shape[-1]),)

    def get_config(self):
        return {
            **super().get_config(),
            "ff_dim": self.ff_dim,
            "num_experts": self.num_experts,
            "num_experts_per_token": self.num_experts_per_token,
            "activation": self.activation,
            "use_bias": self.use_bias,
            "dropout": self.dropout,
            "router_aux_loss_weight": self.router_aux_loss_weight,
            "compute": self.compute,
            "output_dim": self.output_dim,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
