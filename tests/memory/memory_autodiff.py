"""Backend-neutral gradients for the memory tests (TensorFlow, JAX and PyTorch).

``gradients(fn, arrays, variables)`` differentiates the scalar ``fn(*tensors)`` with respect to the
given numpy ``arrays`` and Keras ``variables``. ``fn`` runs inside a ``keras.StatelessScope`` in
which each listed variable reads as a differentiable tensor and every variable assignment (memory
writes) is recorded in the scope instead of applied, so the same function can be traced by
``jax.grad`` and the layers' state is unchanged afterwards. Losses added with ``add_loss`` during
``fn`` are available as ``scope_losses()``.

Returns numpy gradients, zeros where no gradient flows (a disconnected input gives ``None`` on
TensorFlow and PyTorch and zeros on JAX; both mean "no gradient").
"""

import keras
import numpy as np
from keras.src.backend.common.stateless_scope import get_stateless_scope


def scope_losses():
    """Losses added with ``add_loss`` inside the ``fn`` being differentiated."""
    return list(get_stateless_scope().losses)


def gradients(fn, arrays=(), variables=()):
    """``[d fn / d a for a in arrays] + [d fn / d v for v in variables]`` as numpy arrays."""
    backend = keras.backend.backend()
    arrays = [np.asarray(a, "float32") for a in arrays]
    variables = list(variables)

    def run(array_tensors, variable_tensors):
        mapping = list(zip(variables, variable_tensors))
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True):
            return fn(*array_tensors)

    if backend == "jax":
        import jax

        values = [keras.ops.convert_to_tensor(v) for v in variables]
        grads = jax.grad(lambda a, v: run(a, v), argnums=(0, 1))(
            [keras.ops.convert_to_tensor(a) for a in arrays], values
        )
        out = list(grads[0]) + list(grads[1])
    elif backend == "tensorflow":
        import tensorflow as tf

        a_t = [tf.constant(a) for a in arrays]
        v_t = [tf.identity(keras.ops.convert_to_tensor(v)) for v in variables]
        with tf.GradientTape() as tape:
            tape.watch(a_t + v_t)
            loss = run(a_t, v_t)
        out = tape.gradient(loss, a_t + v_t)
    elif backend == "torch":
        import torch

        # convert_to_tensor puts the tensors on Keras's torch device
        a_t = [keras.ops.convert_to_tensor(a).requires_grad_(True) for a in arrays]
        v_t = [
            keras.ops.convert_to_tensor(v).detach().clone().requires_grad_(True) for v in variables
        ]
        loss = run(a_t, v_t)
        out = torch.autograd.grad(loss, a_t + v_t, allow_unused=True)
    else:
        raise NotImplementedError(backend)
    shapes = [a.shape for a in arrays] + [tuple(v.shape) for v in variables]
    return [
        np.zeros(shape, "float32") if g is None else np.asarray(keras.ops.convert_to_numpy(g))
        for g, shape in zip(out, shapes)
    ]
