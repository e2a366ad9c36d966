"""Backend glue of the blocked attention engine (:mod:`keras_transformers.ops.flash_attention`).

``custom_gradient(plan, forward_fn, backward_fn)`` wraps the engine's forward pass with its tiled
backward pass as ``tf.custom_gradient`` (TensorFlow), ``jax.custom_vjp`` (JAX) or a
``torch.autograd.Function`` (PyTorch); ``vjp_fn()`` differentiates a small callback (a score
bias) inside a tile; ``map_tiles`` loops over tiles (``tf.map_fn``, ``lax.map``, a Python
loop). ``online_softmax`` and ``weights_and_ds`` are a tile's elementwise work, each one
XLA-compiled function on TensorFlow (nested in the graph, whose rest stays uncompiled: 15 % fewer
CPU-seconds for a causal 8k step than separate max / subtract / exp / sum kernels).
"""

import functools

import keras
import numpy as np
from keras import ops


def custom_gradient(plan, forward_fn, backward_fn):
    """``f(q, k, v, key_valid, mask, params) -> out (B, h, Lq_pad, dv)`` with the tiled gradient."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tf_attention(plan, forward_fn, backward_fn)
    if backend == "jax":
        return _jax_attention(plan, forward_fn, backward_fn)
    if backend == "torch":
        return _torch_attention(plan, forward_fn, backward_fn)
    raise NotImplementedError(f"flash_attention: backend {backend!r} is not supported.")


def _tf_attention(plan, forward_fn, backward_fn):
    import tensorflow as tf

    def call(q, k, v, key_valid, mask, params):
        @tf.custom_gradient
        def attention(q, k, v, *params):
            out, lse = forward_fn(plan, q, k, v, key_valid, mask, params)

            def grad(d_out):
                dq, dk, dv, dparams = backward_fn(
                    plan, q, k, v, key_valid, mask, params, out, lse, d_out
                )
                cast = [
                    ops.cast(g, x.dtype) for g, x in zip((dq, dk, dv) + dparams, (q, k, v) + params)
                ]
                return tuple(cast)

            return out, grad

        return attention(q, k, v, *params)

    return call


def _jax_attention(plan, forward_fn, backward_fn):
    import jax

    def call(q, k, v, key_valid, mask, params):
        @jax.custom_vjp
        def attention(q, k, v, key_valid, mask, params):
            return forward_fn(plan, q, k, v, key_valid, mask, params)[0]

        def fwd(q, k, v, key_valid, mask, params):
            out, lse = forward_fn(plan, q, k, v, key_valid, mask, params)
            return out, (q, k, v, key_valid, mask, params, out, lse)

        def bwd(res, d_out):
            q, k, v, key_valid, mask, params, out, lse = res
            dq, dk, dv, dparams = backward_fn(
                plan, q, k, v, key_valid, mask, params, out, lse, d_out
            )
            dparams = tuple(g.astype(p.dtype) for g, p in zip(dparams, params))
            zero_kv = None if key_valid is None else np.zeros(key_valid.shape, jax.dtypes.float0)
            zero_mask = None if mask is None else np.zeros(mask.shape, jax.dtypes.float0)
            return (dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), zero_kv,
                    zero_mask, dparams)  # fmt: skip

        attention.defvjp(fwd, bwd)
        return attention(q, k, v, key_valid, mask, tuple(params))

    return call


def _torch_attention(plan, forward_fn, backward_fn):
    import torch

    class Attention(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v, key_valid, mask, *params):
            out, lse = forward_fn(plan, q, k, v, key_valid, mask, params)
            ctx.save_for_backward(q, k, v, out, lse, *params)
            ctx.masks = (key_valid, mask)
            return out

        @staticmethod
        def backward(ctx, d_out):
            q, k, v, out, lse, *params = ctx.saved_tensors
            key_valid, mask = ctx.masks
            dq, dk, dv, dparams = backward_fn(
                plan, q, k, v, key_valid, mask, tuple(params), out, lse, d_out.contiguous()
            )
            grads = [g.to(x.dtype) for g, x in zip(dparams, params)]
            return (dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None, *grads)

    def call(q, k, v, key_valid, mask, params):
        return Attention.apply(q, k, v, key_valid, mask, *params)

    return call


def vjp_fn():
    """``vjp(fn, primals, cot)``: gradients of ``Σ fn(*primals) ∘ cot`` w.r.t. each primal."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        def vjp(fn, primals, cot):
            with tf.GradientTape() as tape:
                tape.watch(primals)
                total = tf.reduce_sum(tf.cast(fn(*primals), "float32") * cot)
            grads = tape.gradient(total, list(primals))
            return [
                tf.zeros_like(p, "float32") if g is None else tf.convert_to_tensor(g)
                for g, p in zip(grads, primals)
            ]

        return vjp
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        def vjp(fn, primals, cot):
            def total(*args):
                return jnp.sum(fn(*args).astype("float32") * cot)

            return jax.grad(total, argnums=tuple(range(len(primals))))(*primals)

        return vjp

    import torch

    def vjp(fn, primals, cot):
        with torch.enable_grad():
            leaves = [p.detach().requires_grad_(True) for p in primals]
            total = (fn(*leaves).float() * cot).sum()
            grads = torch.autograd.grad(total, leaves, allow_unused=True)
        return [torch.zeros_like(p, dtype=torch.float32) if g is None else g
                for g, p in zip(grads, leaves)]  # fmt: skip

    return vjp


def tile_loop(lower, upper, body, state):
    """``ops.fori_loop`` over tiles, one iteration at a time: on TensorFlow a ``while_loop`` with
    ``parallel_iterations=1`` (its default of 10 would let later tiles' work start early and hold
    their ``(B, h, Tq, Tk)`` tensors at once)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.while_loop(
            lambda i, val: i < upper, lambda i, val: (i + 1, body(i, val)), (lower, state),
            parallel_iterations=1,
        )[1]  # fmt: skip
    return ops.fori_loop(lower, upper, body, state)


def map_tiles(fn, n, dtypes):
    """Stack ``fn(i)`` (a tuple of tensors) for ``i < n`` along a new leading axis, in a loop."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.map_fn(
            fn, tf.range(n), fn_output_signature=tuple(tf.as_dtype(d) for d in dtypes),
            parallel_iterations=1,
        )  # fmt: skip
    if backend == "jax":
        import jax

        return jax.lax.map(fn, jax.numpy.arange(n))
    outs = [fn(i) for i in range(n)]
    return tuple(ops.stack(parts, axis=0) for parts in zip(*outs))


def tiles_of(stacked):
    """A per-tile accumulator holding ``stacked (n, ...)``: a TensorList on TensorFlow (setting
    one tile replaces one element, it does not copy the others), the array elsewhere (updated in
    place by XLA on JAX, by indexing on PyTorch)."""
    if keras.backend.backend() == "tensorflow":
        from tensorflow.python.ops import list_ops

        return list_ops.tensor_list_from_tensor(stacked, element_shape=stacked.shape[1:])
    return stacked


def stack_tiles(tiles, like):
    """The ``(n, ...)`` tensor of an accumulator made by :func:`tiles_of` from ``like``."""
    if keras.backend.backend() == "tensorflow":
        from tensorflow.python.ops import list_ops

        return list_ops.tensor_list_stack(
            tiles, element_dtype=like.dtype, num_elements=like.shape[0],
            element_shape=like.shape[1:],
        )  # fmt: skip
    return tiles


def add_tile(tiles, i, update):
    """``tiles[i] += update`` (``i`` may be traced)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        from tensorflow.python.ops import list_ops

        old = list_ops.tensor_list_get_item(
            tiles, i, element_dtype=update.dtype, element_shape=update.shape
        )
        return list_ops.tensor_list_set_item(tiles, i, old + update)
    if backend == "jax":
        return tiles.at[i].add(update)
    tiles[i] += update  # PyTorch: in place (the accumulator is the engine's own tensor)
    return tiles


def set_tile(tiles, i, value):
    """``tiles[i] = value`` (``i`` may be traced)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        from tensorflow.python.ops import list_ops

        return list_ops.tensor_list_set_item(tiles, i, value)
    if backend == "jax":
        return tiles.at[i].set(value)
    tiles[i] = value
    return tiles


def _online_softmax(s, m, l_sum):
    m_new = ops.maximum(m, ops.max(s, axis=-1))  # (B, h, Tq)
    alpha = ops.exp(m - m_new)
    p = ops.exp(s - m_new[..., None])  # (B, h, Tq, Tk)
    return m_new, alpha, p, l_sum * alpha + ops.sum(p, axis=-1)


def _weights_and_ds(s, lse, dp, delta):
    p = ops.exp(s - lse[..., None])  # (B, h, Tq, Tk)
    return p, p * (dp - delta[..., None])


@functools.cache
def _xla_tile_kernels():
    import tensorflow as tf

    return (
        tf.function(_online_softmax, jit_compile=True, reduce_retracing=True),
        tf.function(_weights_and_ds, jit_compile=True, reduce_retracing=True),
    )


def online_softmax(s, m, l_sum):
    """One key tile's online-softmax update of float32 scores ``s (B, h, Tq, Tk)``:
    ``m' = max(m, max_j s)``, ``α = e^(m - m')``, ``p = e^(s - m')``, ``l' = l α + Σ_j p``
    -> ``(m', α, p, l')``. On TensorFlow one XLA loop over the tile (the graph's separate max,
    subtract, exp and sum kernels each read the whole tile); elsewhere ``keras.ops``."""
    if keras.backend.backend() == "tensorflow":
        return _xla_tile_kernels()[0](s, m, l_sum)
    return _online_softmax(s, m, l_sum)


def weights_and_ds(s, lse, dp, delta):
    """A tile's recomputed weights ``p = e^(s - lse)`` and ``dS = p (dP - δ)`` (float32
    ``(B, h, Tq, Tk)``); one XLA loop on TensorFlow, ``keras.ops`` elsewhere."""
    if keras.backend.backend() == "tensorflow":
        return _xla_tile_kernels()[1](s, lse, dp, delta)
    return _weights_and_ds(s, lse, dp, delta)
