"""Reversible residual blocks and chunked feed-forward (Reformer: Kitaev et al., 2020; RevNet:
Gomez et al., 2017).

A reversible block keeps two activation streams and computes

``y_1 = x_1 + F(x_2)``,   ``y_2 = x_2 + G(y_1)``

with ``F`` the attention sublayer (pre-LayerNorm, multi-head attention, dropout) and ``G`` the
feed-forward sublayer (pre-LayerNorm, chunked feed-forward, dropout). The inputs can be recomputed
exactly from the outputs,

``x_2 = y_2 - G(y_1)``,   ``x_1 = y_1 - F(x_2)``,

so the backward pass does not need any stored activation: it reconstructs each block's inputs from
its outputs and recomputes ``F`` and ``G`` to get their gradients. :class:`ReversibleBlock` wraps
one block in such a custom gradient (only its outputs are kept for the backward pass, none of the
attention or feed-forward intermediates); :class:`ReversibleStack` wraps a whole stack of blocks in
*one* custom gradient, so only the stack's output is kept and activation memory does not grow with
the depth ``N``.

Backends: the custom gradient uses ``keras.ops.custom_gradient`` on TensorFlow and JAX, with the
vector-Jacobian products of the recomputed sublayers taken by ``tf.GradientTape`` / ``jax.vjp`` and
the sublayers run with ``Layer.stateless_call`` on the weights given to the gradient function.
Random state (dropout seeds, Performer redraws, routing centroids) is snapshotted before the
forward pass and reused by the recomputation, so the recomputed dropout masks are identical. On
PyTorch, ``keras.ops.custom_gradient`` supports only single-output functions and passes its saved
inputs back in, so the blocks fall back to ordinary autograd there (same values and gradients,
activations stored as in a normal residual block); ``recompute=False`` selects that path on every
backend.

The chunked feed-forward (:class:`ChunkedFeedForward`) applies the position-wise network to
``num_chunks`` consecutive slices of the length axis one after the other, so the
``(B, L, ff_dim)`` hidden activation need not exist all at once in the forward pass:
``Y_2 = [X_2^(1) + FF(Y_1^(1)); ...; X_2^(c) + FF(Y_1^(c))]``.

Shapes: streams ``x_1, x_2 (B, L, d)``; a single input ``(B, L, 2d)`` is split in two halves and
the output is concatenated back. Cost: one extra forward pass of ``F`` and ``G`` per block in the
backward pass.

Example:
    >>> import numpy as np
    >>> from keras_transformers.blocks.reversible import ReversibleBlock
    >>> block = ReversibleBlock(num_heads=2, key_dim=8, ff_dim=32, attention="lsh", causal=True)
    >>> x = np.random.rand(2, 16, 32).astype("float32")   # (B, L, 2d): two streams of d = 16
    >>> tuple(block(x).shape)
    (2, 16, 32)
"""

import keras
from keras import ops

from keras_transformers.attention.multi_head import MultiHeadAttention

PACKAGE = "keras_transformers"


def _check_int(name, value, minimum=1):
    if isinstance(value, bool) or int(value) != value or int(value) < minimum:
        raise ValueError(f"{name}={value!r}: must be an integer >= {minimum}.")
    return int(value)


def _check_rate(name, value):
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name}={value!r}: must be in [0, 1).")
    return value


@keras.saving.register_keras_serializable(package=PACKAGE)
class ChunkedFeedForward(keras.layers.Layer):
    """Position-wise feed-forward ``W_2 act(W_1 x + b_1) + b_2`` computed chunk by chunk.

    Args:
        ff_dim: hidden size.
        output_dim: output size (default: the input size ``d``).
        activation: hidden activation (default ``"gelu"``).
        num_chunks: number of consecutive length chunks processed one after the other (a length
            that is not a multiple is padded internally and the padding removed).
        dropout: dropout rate on the output.
        use_bias, kernel_initializer, bias_initializer: of the two dense layers.

    Shapes: ``(B, L, d) -> (B, L, output_dim or d)``; hidden ``(B, L/num_chunks, ff_dim)`` at a time.
    """

    def __init__(
        self,
        ff_dim,
        output_dim=None,
        activation="gelu",
        num_chunks=1,
        dropout=0.0,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.ff_dim = _check_int("ff_dim", ff_dim)
        self.output_dim = None if output_dim is None else _check_int("output_dim", output_dim)
        self.activation = keras.activations.get(activation)
        self.num_chunks = _check_int("num_chunks", num_chunks)
        self.dropout = _check_rate("dropout", dropout)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.supports_masking = True

    def build(self, input_shape):
        out = self.output_dim or int(input_shape[-1])
        common = dict(
            use_bias=self.use_bias,
            kernel_initializer=self.kernel_initializer,
            bias_initializer=self.bias_initializer,
            dtype=self.dtype_policy,
        )
        self.inner = keras.layers.Dense(
            self.ff_dim, activation=self.activation, name="inner", **common
        )
        self.outer = keras.layers.Dense(out, name="outer", **common)
        self.inner.build(input_shape)
        self.outer.build(tuple(input_shape[:-1]) + (self.ff_dim,))
        self.drop = keras.layers.Dropout(self.dropout) if self.dropout else None
        self.built = True

    def _ff(self, x):
        return self.outer(self.inner(x))

    def call(self, inputs, training=None):
        length = inputs.shape[1]
        if self.num_chunks == 1 or length is None or length <= 1:
            out = self._ff(inputs)
        else:
            chunk = -(-length // self.num_chunks)
            n = -(-length // chunk)
            padded = n * chunk
            x = inputs
            if padded != length:
                x = ops.pad(x, [(0, 0), (0, padded - length), (0, 0)])
            parts = [self._ff(x[:, i * chunk : (i + 1) * chunk]) for i in range(n)]  # (B, c, d')
            y = ops.concatenate(parts, axis=1)  # (B, n·c, d_out)
            out = y[:, :length]
        if self.drop is not None:
            out = self.drop(out, training=training)
        return out

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_dim or input_shape[-1],)

    def get_config(self):
        return {
            **super().get_config(),
            "ff_dim": self.ff_dim,
            "output_dim": self.output_dim,
            "activation": keras.activations.serialize(self.activation),
            "num_chunks": self.num_chunks,
            "dropout": self.dropout,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        }


class _AttentionBranch(keras.layers.Layer):
    """``F(x) = Dropout(MultiHeadAttention(LayerNorm(x)))`` (self-attention)."""

    def __init__(self, attention_kwargs, dropout, epsilon, **kwargs):
        super().__init__(**kwargs)
        self.norm = keras.layers.LayerNormalization(
            epsilon=epsilon, dtype=self.dtype_policy, name="norm"
        )
        self.attention = MultiHeadAttention(
            **attention_kwargs, dtype=self.dtype_policy, name="attention"
        )
        self.drop = keras.layers.Dropout(dropout) if dropout else None

    def build(self, input_shape):
        self.norm.build(input_shape)
        self.attention.build(input_shape)
        self.built = True

    def call(self, x, padding_mask=None, training=None):
        h = self.attention(self.norm(x), padding_mask=padding_mask, training=training)
        return h if self.drop is None else self.drop(h, training=training)


class _FeedForwardBranch(keras.layers.Layer):
    """``G(x) = ChunkedFeedForward(LayerNorm(x))`` (dropout inside)."""

    def __init__(self, ff_kwargs, epsilon, **kwargs):
        super().__init__(**kwargs)
        self.norm = keras.layers.LayerNormalization(
            epsilon=epsilon, dtype=self.dtype_policy, name="norm"
        )
        self.feed_forward = ChunkedFeedForward(
            **ff_kwargs, dtype=self.dtype_policy, name="feed_forward"
        )

    def build(self, input_shape):
        self.norm.build(input_shape)
        self.feed_forward.build(input_shape)
        self.built = True

    def call(self, x, padding_mask=None, training=None):
        return self.feed_forward(self.norm(x), training=training)


# ---------------------------------------------------------------------------------------------
# The reversible custom gradient


def _vjp(fn, primals):
    """``(fn(*primals), vjp)`` where ``vjp(cotangent)`` returns the gradients w.r.t. ``primals``."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        out, pullback = jax.vjp(fn, *primals)
        return out, lambda ct: list(pullback(ct))
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            for p in primals:
                tape.watch(p)
            out = fn(*primals)

        def pullback(ct):
            return list(
                tape.gradient(
                    out,
                    primals,
                    output_gradients=ct,
                    unconnected_gradients=tf.UnconnectedGradients.ZERO,
                )
            )

        return out, pullback
    raise NotImplementedError(f"No vector-Jacobian product for backend {backend!r}.")


def _read(variable):
    """The current value of a variable as a plain tensor (TF: a recorded read, so the outer tape
    still routes gradients to the variable)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.convert_to_tensor(variable.value)
    return ops.convert_to_tensor(variable)


def recompute_supported():
    """True where the blocks use the memory-saving custom gradient (TensorFlow, JAX)."""
    return keras.backend.backend() in ("tensorflow", "jax")


def _reversible_apply(blocks, x1, x2, padding_mask, training):
    """Run ``blocks`` (ReversibleBlock list) under one custom gradient; returns ``(y1, y2)``."""
    branches = [branch for block in blocks for branch in (block.f, block.g)]
    weights = [[_read(v) for v in b.trainable_variables] for b in branches]
    states = [[_read(v) for v in b.non_trainable_variables] for b in branches]
    sizes = [len(w) for w in weights]

    def run(i, branch_weights, x):
        out, new_state = branches[i].stateless_call(
            list(branch_weights), states[i], x, padding_mask=padding_mask, training=training
        )
        return out, new_state

    def split(flat):
        parts, start = [], 0
        for size in sizes:
            parts.append(list(flat[start : start + size]))
            start += size
        return parts

    @ops.custom_gradient
    def reversible(a, b, *flat):
        ws = split(flat)
        new_states = []
        for n in range(len(blocks)):
            f_out, f_state = run(2 * n, ws[2 * n], b)
            a = a + f_out  # y1 = x1 + F(x2)
            g_out, g_state = run(2 * n + 1, ws[2 * n + 1], a)
            b = b + g_out  # y2 = x2 + G(y1)
            new_states += [f_state, g_state]
        y1, y2 = a, b

        def grad(*upstream, **unused):
            if len(upstream) == 1 and isinstance(upstream[0], list | tuple):
                upstream = tuple(upstream[0])  # JAX passes the output structure as one tuple
            dy1 = upstream[0] if upstream[0] is not None else ops.zeros_like(y1)
            dy2 = upstream[1] if upstream[1] is not None else ops.zeros_like(y2)
            out1, out2 = ops.stop_gradient(y1), ops.stop_gradient(y2)
            grads = [None] * len(branches)
            for n in reversed(range(len(blocks))):
                gi, fi = 2 * n + 1, 2 * n
                g_out, pull_g = _vjp(lambda y, *w, i=gi: run(i, w, y)[0], [out1, *ws[gi]])
                in2 = out2 - g_out  # x2 = y2 - G(y1)
                d_y1, *grads[gi] = pull_g(dy2)
                dy1 = dy1 + d_y1
                f_out, pull_f = _vjp(lambda x, *w, i=fi: run(i, w, x)[0], [in2, *ws[fi]])
                in1 = out1 - f_out  # x1 = y1 - F(x2)
                d_x2, *grads[fi] = pull_f(dy1)
                dy2 = dy2 + d_x2
                out1, out2 = ops.stop_gradient(in1), ops.stop_gradient(in2)
            return (dy1, dy2, *[g for gs in grads for g in gs])

        flat_states = [s for state in new_states for s in state]
        return (y1, y2, *flat_states), grad

    flat_weights = [w for ws in weights for w in ws]
    outputs = reversible(x1, x2, *flat_weights)
    y1, y2, new_flat = outputs[0], outputs[1], list(outputs[2:])
    start = 0
    for branch in branches:
        variables = branch.non_trainable_variables
        for variable, value in zip(variables, new_flat[start : start + len(variables)]):
            variable.assign(value)
        start += len(variables)
    return y1, y2


# ---------------------------------------------------------------------------------------------
# Layers


@keras.saving.register_keras_serializable(package=PACKAGE)
class ReversibleBlock(keras.layers.Layer):
    """Reversible transformer block: ``y_1 = x_1 + Attention(x_2)``, ``y_2 = x_2 + FF(y_1)``.

    Args:
        num_heads, key_dim: multi-head attention size.
        ff_dim: hidden size of the feed-forward sublayer.
        attention: any registered attention core (name, config dict or instance), e.g. ``"lsh"``.
        position: score-side positional encoding or None.
        causal: causal self-attention.
        dropout: dropout rate after each sublayer and on the attention weights.
        activation: feed-forward activation.
        ff_chunks: number of length chunks of the chunked feed-forward.
        value_dim, num_key_value_heads: passed to :class:`MultiHeadAttention`.
        epsilon: LayerNorm epsilon.
        recompute: use the memory-saving custom gradient where the backend supports it
            (TensorFlow, JAX); False or PyTorch: ordinary autodiff.

    Call:
        ``block([x1, x2])`` -> ``[y1, y2]`` with each ``(B, L, d)``, or ``block(x)`` with
        ``x (B, L, 2d)`` -> ``(B, L, 2d)`` (halves are the two streams). ``padding_mask (B, L)``.
    """

    def __init__(
        self,
        num_heads,
        key_dim,
        ff_dim,
        attention="full",
        position=None,
        causal=False,
        dropout=0.0,
        activation="gelu",
        ff_chunks=1,
        value_dim=None,
        num_key_value_heads=None,
        epsilon=1e-5,
        recompute=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = _check_int("num_heads", num_heads)
        self.key_dim = _check_int("key_dim", key_dim)
        self.ff_dim = _check_int("ff_dim", ff_dim)
        self.attention = attention
        self.position = position
        self.causal = bool(causal)
        self.dropout = _check_rate("dropout", dropout)
        self.activation = activation
        self.ff_chunks = _check_int("ff_chunks", ff_chunks)
        self.value_dim = value_dim
        self.num_key_value_heads = num_key_value_heads
        self.epsilon = float(epsilon)
        self.recompute = bool(recompute)
        self.f = _AttentionBranch(
            dict(
                num_heads=self.num_heads,
                key_dim=self.key_dim,
                value_dim=value_dim,
                dropout=self.dropout,
                attention=attention,
                position=position,
                causal=self.causal,
                num_key_value_heads=num_key_value_heads,
            ),
            self.dropout,
            self.epsilon,
            dtype=self.dtype_policy,
            name="attention_branch",
        )
        self.g = _FeedForwardBranch(
            dict(
                ff_dim=self.ff_dim,
                activation=activation,
                num_chunks=self.ff_chunks,
                dropout=self.dropout,
            ),
            self.epsilon,
            dtype=self.dtype_policy,
            name="feed_forward_branch",
        )
        self.supports_masking = True

    @staticmethod
    def _stream_shape(input_shape):
        if (
            isinstance(input_shape, list | tuple)
            and len(input_shape) == 2
            and isinstance(input_shape[0], list | tuple)
        ):
            return tuple(input_shape[0]), True
        shape = tuple(input_shape)
        if shape[-1] is None or shape[-1] % 2:
            raise ValueError(
                f"ReversibleBlock input of shape {shape}: a single tensor must have an even last "
                "axis (the two streams concatenated); or pass [x1, x2]."
            )
        return shape[:-1] + (shape[-1] // 2,), False

    def build(self, input_shape):
        stream, _ = self._stream_shape(input_shape)
        for branch in (self.f, self.g):
            if not branch.built:
                branch.build(stream)
        self.built = True

    def _split(self, inputs):
        if isinstance(inputs, list | tuple):
            if len(inputs) != 2:
                raise ValueError(f"ReversibleBlock takes [x1, x2]; got {len(inputs)} tensors.")
            return inputs[0], inputs[1], True
        x1, x2 = ops.split(inputs, 2, axis=-1)
        return x1, x2, False

    def call(self, inputs, padding_mask=None, training=None, mask=None):
        x1, x2, pair = self._split(inputs)
        if padding_mask is None and mask is not None:
            padding_mask = mask[0] if isinstance(mask, list | tuple) else mask
        y1, y2 = self.forward(x1, x2, padding_mask=padding_mask, training=training)
        return [y1, y2] if pair else ops.concatenate([y1, y2], axis=-1)

    def forward(self, x1, x2, padding_mask=None, training=None):
        """``(y1, y2)`` from ``(x1, x2)``, each ``(B, L, d)``."""
        if self.recompute and recompute_supported():
            return _reversible_apply([self], x1, x2, padding_mask, training)
        y1 = x1 + self.f(x2, padding_mask=padding_mask, training=training)
        y2 = x2 + self.g(y1, training=training)
        return y1, y2

    def inverse(self, y1, y2, padding_mask=None, training=None):
        """Reconstruct ``(x1, x2)`` from the outputs: ``x2 = y2 - G(y1)``, ``x1 = y1 - F(x2)``."""
        x2 = y2 - self.g(y1, training=training)
        x1 = y1 - self.f(x2, padding_mask=padding_mask, training=training)
        return x1, x2

    def compute_output_shape(self, input_shape):
        if isinstance(input_shape, list | tuple) and isinstance(input_shape[0], list | tuple):
            return [tuple(input_shape[0]), tuple(input_shape[1])]
        return tuple(input_shape)

    def compute_mask(self, inputs, mask=None):
        return mask

    def get_config(self):
        def serialize(obj):
            if obj is None or isinstance(obj, str | dict):
                return obj
            return keras.saving.serialize_keras_object(obj)

        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "ff_dim": self.ff_dim,
            "attention": serialize(self.attention),
            "position": serialize(self.position),
            "causal": self.causal,
            "dropout": self.dropout,
            "activation": self.activation
            if isinstance(self.activation, str)
            else (keras.activations.serialize(self.activation)),
            "ff_chunks": self.ff_chunks,
            "value_dim": self.value_dim,
            "num_key_value_heads": self.num_key_value_heads,
            "epsilon": self.epsilon,
            "recompute": self.recompute,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class ReversibleStack(keras.layers.Layer):
    """A stack of :class:`ReversibleBlock` under one custom gradient.

    Only the stack's output is kept for the backward pass; every block's inputs are reconstructed
    from its outputs on the way back, so activation memory is independent of the depth.

    Args:
        blocks: a list of ReversibleBlock instances (or their serialized configs).
        recompute: as in ReversibleBlock.

    Call: as :class:`ReversibleBlock` (``[x1, x2]`` or ``(B, L, 2d)``).
    """

    def __init__(self, blocks, recompute=True, **kwargs):
        super().__init__(**kwargs)
        self.blocks = [
            b if isinstance(b, ReversibleBlock) else keras.saving.deserialize_keras_object(b)
            for b in blocks
        ]
        if not self.blocks:
            raise ValueError("blocks=[]: a ReversibleStack needs at least one ReversibleBlock.")
        self.recompute = bool(recompute)
        self.supports_masking = True

    def build(self, input_shape):
        for block in self.blocks:
            if not block.built:
                block.build(input_shape)
        self.built = True

    def call(self, inputs, padding_mask=None, training=None, mask=None):
        x1, x2, pair = self.blocks[0]._split(inputs)
        if padding_mask is None and mask is not None:
            padding_mask = mask[0] if isinstance(mask, list | tuple) else mask
        if self.recompute and recompute_supported():
            y1, y2 = _reversible_apply(self.blocks, x1, x2, padding_mask, training)
        else:
            y1, y2 = x1, x2
            for block in self.blocks:
                y1 = y1 + block.f(y2, padding_mask=padding_mask, training=training)
                y2 = y2 + block.g(y1, training=training)
        return [y1, y2] if pair else ops.concatenate([y1, y2], axis=-1)

    def compute_output_shape(self, input_shape):
        return self.blocks[0].compute_output_shape(input_shape)

    def compute_mask(self, inputs, mask=None):
        return mask

    def get_config(self):
        return {
            **super().get_config(),
            "blocks": [keras.saving.serialize_keras_object(b) for b in self.blocks],
            "recompute": self.recompute,
        }
