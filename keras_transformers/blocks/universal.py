"""Universal Transformer block with Adaptive Computation Time (ACT) halting.

Idea: recurrence over depth (Dehghani et al., 2019, "Universal Transformers"). One transition
block (self-attention + position-wise feed-forward) with a single set of weights is applied
``T`` times to every position in parallel; before each step a *coordinate embedding* ``P^t``
(position ``i`` and time step ``t``, both sinusoidal, added element-wise) tells the shared block
where and when it is. With ``act=True`` each position decides how many steps it needs with the
halting unit of Adaptive Computation Time (Graves, 2016): once a position halts, its state is
copied unchanged to later steps while the other positions keep refining theirs.

Equations (UT paper, with the post's erratum ``A^{t-1} -> A^t`` fixed; ``norm_first=False``)::

    A^t = LayerNorm((h^{t-1} + P^t) + MultiHeadAttention(h^{t-1} + P^t))
    h^t = LayerNorm(A^t + Transition(A^t))
    P^t[i, 2j]   = sin(i / 10000^{2j/d}) + sin(t / 10000^{2j/d})
    P^t[i, 2j+1] = cos(i / 10000^{2j/d}) + cos(t / 10000^{2j/d})          t = 1..T, i = 0..L-1

ACT halting per position (Graves 2016, eqs. in the catalogue's appendix A1), at step ``n``::

    h_n  = sigmoid(w_h · s^n + b_h)                       (halting unit on the new state s^n)
    N    = min(min{n' : sum_{n<=n'} h_n >= 1 - eps}, T)
    p_n  = h_n for n < N,   p_N = R = 1 - sum_{n<N} h_n    (so sum_n p_n = 1)
    y    = sum_n p_n s^n                                   (mean-field output)
    loss += tau * mean over real positions of (N + R)      (ponder cost, add_loss)

``N`` is piecewise constant, so the ponder gradient reaches the halting unit through ``R``.

Static shapes / XLA: the ``max_steps`` iterations are unrolled with the *same* sub-layers (weights
tied) and every step runs on every position; a halted position is frozen by ``ops.where`` masks.
Inside a compiled graph the compute of halted positions is therefore *masked, not skipped*: ACT
here saves nothing in FLOPs, it changes the function (per-position depth). The number of steps
each position used is returned with ``return_act_details=True`` and kept, after an eager call, in
``last_ponder_steps``; the non-trainable scalar ``average_ponder_steps`` holds the mean over the
real tokens of the latest call (also updated inside ``fit``/``predict``).

Shapes: ``x (B, L, d) -> (B, L, d)``; ``padding_mask (B, L)`` bool, True = real token. Details:
``ponder_steps (B, L)`` = N, ``remainders (B, L)`` = R, ``halting_weights (B, L, T)`` = p_n,
``step_states (B, T, L, d)`` = the recurrent state after each step.

Cost: ``O(T·L²·d)`` for full attention (``T = max_steps``), parameters of one encoder block plus
``d + 1`` for the halting unit, independent of ``T``.

Example:
    >>> import numpy as np
    >>> from keras_transformers.blocks.universal import UniversalTransformerBlock
    >>> block = UniversalTransformerBlock(num_heads=2, key_dim=8, ff_dim=32, max_steps=4)
    >>> y, details = block(np.zeros((2, 6, 16), "float32"), return_act_details=True)
    >>> y.shape, details["ponder_steps"].shape
    ((2, 6, 16), (2, 6))
"""

import keras
from keras import ops

from keras_transformers.blocks.encoder import TransformerEncoderBlock
from keras_transformers.blocks.residual import block_arguments
from keras_transformers.positional.sinusoidal import sinusoid_table


def coordinate_embedding(length, step, dim, max_wavelength=10000.0, dtype="float32"):
    """UT coordinate embedding ``P^t``: ``(L, d)`` = sinusoid(position i) + sinusoid(step t).

    ``step`` is the 1-based recurrence step ``t`` (the UT paper counts ``t = 1..T``).
    """
    positions = ops.arange(length, dtype="float32")  # (L,)
    pos = sinusoid_table(positions, dim, max_wavelength, "float32")  # (L, d)
    time = sinusoid_table(ops.convert_to_tensor([float(step)]), dim, max_wavelength)  # (1, d)
    return ops.cast(pos + time, dtype)


def act_step(halting, halted, cumulative, is_last_step, epsilon):
    """One ACT bookkeeping step for per-position halting probabilities (all float32).

    Args:
        halting: ``h_n (…)`` halting probability of this step.
        halted: ``(…)`` bool, positions that halted at an earlier step.
        cumulative: ``(…)`` sum of ``h`` over the earlier steps that did not halt.
        is_last_step: Python bool, ``n == T`` (every running position halts).
        epsilon: halting threshold is ``1 - epsilon``.

    Returns:
        ``(weight p_n, halts_now, cumulative, remainder_or_zero)``.
    """
    running = ops.logical_not(halted)
    if is_last_step:
        halts_now = running
    else:
        halts_now = ops.logical_and(running, cumulative + halting >= 1.0 - epsilon)
    continues = ops.logical_and(running, ops.logical_not(halts_now))
    remainder = ops.where(halts_now, 1.0 - cumulative, ops.zeros_like(cumulative))
    weight = ops.where(continues, halting, remainder)  # 0 for positions halted earlier
    cumulative = cumulative + ops.where(continues, halting, ops.zeros_like(halting))
    return weight, halts_now, cumulative, remainder


def act_halting_weights(halting_probs, epsilon=0.01):
    """ACT weights from a given sequence of halting probabilities ``h (…, T)``.

    Returns ``(p (…, T), N (…), R (…))`` with ``sum p = 1`` and ponder cost ``N + R``.
    Example (catalogue A1): ``h = [0.3, 0.3, 0.5]``, ``eps = 0.01`` gives ``N = 3``, ``R = 0.4``,
    ``p = [0.3, 0.3, 0.4]``.
    """
    h = ops.cast(ops.convert_to_tensor(halting_probs), "float32")
    steps = h.shape[-1]
    halted = ops.zeros(ops.shape(h)[:-1], "bool")
    cumulative = ops.zeros(ops.shape(h)[:-1], "float32")
    n_steps = ops.zeros_like(cumulative)
    rem = ops.zeros_like(cumulative)
    weights = []
    for n in range(steps):
        n_steps = n_steps + ops.cast(ops.logical_not(halted), "float32")
        w, halts_now, cumulative, r = act_step(
            h[..., n], halted, cumulative, n == steps - 1, epsilon
        )
        rem = rem + r
        halted = ops.logical_or(halted, halts_now)
        weights.append(w)
    return ops.stack(weights, axis=-1), n_steps, rem


@keras.saving.register_keras_serializable(package="keras_transformers")
class UniversalTransformerBlock(keras.layers.Layer):
    """One weight-tied transition block applied recurrently, with optional ACT halting.

    Args:
        num_heads, key_dim, ff_dim: sizes of the shared transition block.
        max_steps: recurrence steps ``T`` (the ACT step limit ``M`` when ``act=True``).
        act: per-position ACT halting (Adaptive UT). ``False``: exactly ``max_steps`` steps and
            the output is ``h^T`` (the plain UT, V16).
        halting_epsilon: ACT ``eps``; a position halts once its cumulative halting probability
            reaches ``1 - eps``. In ``(0, 1)``.
        ponder_cost_weight: ``tau``, weight of the ponder cost ``N + R`` added with ``add_loss``
            (``0`` disables the loss).
        halting_bias_init: initial bias of the halting unit (positive = halt sooner; 1.0 as in
            the UT reference code).
        coordinate_embedding: add ``P^t`` (position + step sinusoids) before every step.
        max_wavelength: sinusoid base.
        attention: attention core of the shared transition block (any registered name).
        position: score-side positional encoding of the transition block, or None.
        norm_first: ``False`` (default) is the paper's post-norm block.
        causal: ``True`` makes a decoder UT (causal self-attention).
        dropout, attention_dropout, activation, num_key_value_heads, layer_norm_epsilon: as in
            :class:`~keras_transformers.blocks.TransformerEncoderBlock`.
    """

    def __init__(
        self,
        num_heads,
        key_dim,
        ff_dim,
        max_steps=4,
        act=True,
        halting_epsilon=0.01,
        ponder_cost_weight=0.01,
        halting_bias_init=1.0,
        coordinate_embedding=True,
        max_wavelength=10000.0,
        attention="full",
        position=None,
        norm_first=False,
        dropout=0.0,
        attention_dropout=0.0,
        activation="relu",
        num_key_value_heads=None,
        causal=False,
        layer_norm_epsilon=1e-5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(max_steps) < 1:
            raise ValueError(f"max_steps={max_steps}: must be >= 1.")
        if not 0.0 < float(halting_epsilon) < 1.0:
            raise ValueError(f"halting_epsilon={halting_epsilon}: must be in (0, 1).")
        if float(ponder_cost_weight) < 0.0:
            raise ValueError(f"ponder_cost_weight={ponder_cost_weight}: must be >= 0.")
        block = block_arguments(locals(), TransformerEncoderBlock.config_keys)
        for name, value in block.items():  # the transition block's arguments, stored alike
            setattr(self, name, value)
        self.max_steps = int(max_steps)
        self.act = bool(act)
        self.halting_epsilon = float(halting_epsilon)
        self.ponder_cost_weight = float(ponder_cost_weight)
        self.halting_bias_init = float(halting_bias_init)
        self.use_coordinate_embedding = bool(coordinate_embedding)
        self.max_wavelength = float(max_wavelength)
        self.transition_block = TransformerEncoderBlock(
            **block,
            attention=attention,
            position=position,
            dtype=self.dtype_policy,
            name="transition_block",
        )
        self.halting_unit = None
        if self.act:
            self.halting_unit = keras.layers.Dense(
                1,
                bias_initializer=keras.initializers.Constant(self.halting_bias_init),
                dtype=self.dtype_policy,
                name="halting_unit",
            )
        self.last_ponder_steps = None
        self.supports_masking = True

    def build(self, input_shape):
        self.transition_block.build(input_shape)
        if self.halting_unit is not None:
            self.halting_unit.build(input_shape)
        self.average_ponder_steps = self.add_weight(
            name="average_ponder_steps",
            shape=(),
            initializer="zeros",
            trainable=False,
            dtype="float32",
        )
        self.built = True

    def _coordinates(self, x):
        length, dim = ops.shape(x)[1], x.shape[-1]
        if not self.use_coordinate_embedding:
            return [None] * self.max_steps
        return [
            coordinate_embedding(length, t + 1, dim, self.max_wavelength, x.dtype)[None]
            for t in range(self.max_steps)
        ]  # T x (1, L, d)

    def call(
        self,
        x,
        padding_mask=None,
        attention_mask=None,
        training=None,
        return_act_details=False,
        mask=None,
    ):
        if padding_mask is None:
            padding_mask = mask
        coords = self._coordinates(x)
        kwargs = dict(padding_mask=padding_mask, attention_mask=attention_mask, training=training)
        state = x  # (B, L, d)
        batch_len = ops.shape(x)[:2]
        halted = ops.zeros(batch_len, "bool")  # (B, L)
        cumulative = ops.zeros(batch_len, "float32")
        n_steps = ops.zeros(batch_len, "float32")
        remainders = ops.zeros(batch_len, "float32")
        output = ops.zeros_like(x)
        weights, states = [], []
        for step in range(self.max_steps):  # unrolled; the same sub-layers every step (tied)
            inputs = state if coords[step] is None else state + coords[step]
            new_state = self.transition_block(inputs, **kwargs)  # (B, L, d)
            running = ops.logical_not(halted)
            n_steps = n_steps + ops.cast(running, "float32")
            if not self.act:  # plain UT: all weight on the last step
                state = new_state
                states.append(state)
                last = float(step == self.max_steps - 1)
                weights.append(ops.full(batch_len, last, "float32"))
                continue
            halting = ops.sigmoid(ops.cast(self.halting_unit(new_state), "float32"))[..., 0]
            weight, halts_now, cumulative, rem = act_step(
                halting, halted, cumulative, step == self.max_steps - 1, self.halting_epsilon
            )
            remainders = remainders + rem
            keep = running[..., None]  # (B, L, 1)
            output = ops.where(
                keep, output + ops.cast(weight, x.dtype)[..., None] * new_state, output
            )
            state = ops.where(keep, new_state, state)  # halted positions are copied unchanged
            halted = ops.logical_or(halted, halts_now)
            weights.append(weight)
            states.append(state)
        if not self.act:
            output = state
        real = (
            ops.ones(batch_len, "float32")
            if padding_mask is None
            else ops.cast(padding_mask, "float32")
        )
        count = ops.maximum(ops.sum(real), 1.0)
        self.average_ponder_steps.assign(ops.sum(n_steps * real) / count)
        if self.act and self.ponder_cost_weight > 0:
            ponder = ops.sum((n_steps + remainders) * real) / count
            self.add_loss(self.ponder_cost_weight * ponder)
        self.last_ponder_steps = n_steps
        if not return_act_details:
            return output
        details = {
            "ponder_steps": n_steps,
            "remainders": remainders,
            "halting_weights": ops.stack(weights, axis=-1),
            "step_states": ops.stack(states, axis=1),
        }
        return output, details

    def compute_mask(self, x, mask=None):
        return mask

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        inner = self.transition_block.get_config()
        shared = (*TransformerEncoderBlock.config_keys, "attention", "position")
        return {
            **super().get_config(),
            **{name: inner[name] for name in shared},  # the transition block's arguments
            "max_steps": self.max_steps,
            "act": self.act,
            "halting_epsilon": self.halting_epsilon,
            "ponder_cost_weight": self.ponder_cost_weight,
            "halting_bias_init": self.halting_bias_init,
            "coordinate_embedding": self.use_coordinate_embedding,
            "max_wavelength": self.max_wavelength,
        }
