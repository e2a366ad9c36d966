"""Reversible residual blocks and chunked feed-forward (Reformer, V30)."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from keras_transformers.blocks.reversible import (
    ChunkedFeedForward,
    ReversibleBlock,
    ReversibleStack,
)

RNG = np.random.default_rng(0)
TF_ONLY = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="uses tf.GradientTape")


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def tf_gradients(layer, x, training):
    import tensorflow as tf

    xt = tf.constant(x)
    weights = np.linspace(-1.0, 1.0, x.shape[-1]).astype(x.dtype)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        out = layer(xt, training=training)
        loss = tf.reduce_sum(out * weights) + 0.1 * tf.reduce_sum(out**2)
    grads = tape.gradient(loss, [xt] + layer.trainable_variables)
    return to_numpy(out), [to_numpy(g) for g in grads]


def twin(make):
    """Two identical layers: the reversible custom gradient and ordinary autodiff."""
    fast, plain = make(True), make(False)
    x = RNG.normal(size=(2, 12, 32)).astype("float32")
    fast(x)
    plain(x)
    plain.set_weights(fast.get_weights())
    for a, b in zip(fast.non_trainable_variables, plain.non_trainable_variables):
        b.assign(a)  # seed states too, so both draw the same dropout masks
    return fast, plain, x


@TF_ONLY
@pytest.mark.parametrize("attention", ["full", "lsh", "performer"])
def test_block_gradients_equal_an_ordinary_residual_block(attention):
    fast, plain, x = twin(
        lambda r: ReversibleBlock(
            num_heads=2,
            key_dim=8,
            ff_dim=48,
            attention=attention,
            causal=True,
            ff_chunks=3,
            recompute=r,
        )
    )
    out_fast, g_fast = tf_gradients(fast, x, training=False)
    out_plain, g_plain = tf_gradients(plain, x, training=False)
    np.testing.assert_allclose(out_fast, out_plain, atol=1e-6)
    assert len(g_fast) == len(g_plain) == 1 + len(fast.trainable_variables)
    for a, b in zip(g_fast, g_plain):
        np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4)


@TF_ONLY
def test_stack_gradients_with_dropout_equal_ordinary_autodiff():
    """The recomputation replays the forward dropout masks (seed state snapshot)."""
    fast, plain, x = twin(
        lambda r: ReversibleStack(
            [ReversibleBlock(2, 8, 48, dropout=0.3, attention="full") for _ in range(3)],
            recompute=r,
        )
    )
    out_fast, g_fast = tf_gradients(fast, x, training=True)
    out_plain, g_plain = tf_gradients(plain, x, training=True)
    np.testing.assert_allclose(out_fast, out_plain, atol=1e-5)
    for a, b in zip(g_fast, g_plain):
        np.testing.assert_allclose(a, b, atol=5e-5, rtol=1e-4)


def test_inputs_are_reconstructed_from_outputs():
    keras.config.set_dtype_policy("float64")  # reset to float32 by conftest
    block = ReversibleBlock(num_heads=2, key_dim=4, ff_dim=16, attention="full")
    x1 = RNG.normal(size=(2, 7, 8))
    x2 = RNG.normal(size=(2, 7, 8))
    y1, y2 = block([x1, x2])
    r1, r2 = block.inverse(y1, y2)
    np.testing.assert_allclose(to_numpy(r1), x1, atol=1e-12)
    np.testing.assert_allclose(to_numpy(r2), x2, atol=1e-12)
    np.testing.assert_allclose(  # y1 = x1 + F(x2), y2 = x2 + G(y1)
        to_numpy(y2), x2 + to_numpy(block.g(y1)), atol=1e-12
    )
    np.testing.assert_allclose(to_numpy(y1), x1 + to_numpy(block.f(x2)), atol=1e-12)


@pytest.mark.parametrize("num_chunks", [2, 3, 7])
def test_chunked_feed_forward_equals_unchunked(num_chunks):
    x = RNG.normal(size=(2, 10, 6)).astype("float32")
    whole = ChunkedFeedForward(ff_dim=12, num_chunks=1)
    chunked = ChunkedFeedForward(ff_dim=12, num_chunks=num_chunks)
    whole(x)
    chunked(x)
    chunked.set_weights(whole.get_weights())
    np.testing.assert_allclose(to_numpy(chunked(x)), to_numpy(whole(x)), atol=1e-6)
    assert chunked.compute_output_shape((2, 10, 6)) == (2, 10, 6)


def test_functional_model_fits_and_round_trips(tmp_path):
    inputs = keras.Input((16, 32))
    block = ReversibleBlock(
        num_heads=2, key_dim=8, ff_dim=32, attention="linear", causal=True, ff_chunks=2, dropout=0.1
    )
    model = keras.Model(inputs, keras.layers.Dense(4)(block(inputs)))
    model.compile(optimizer="adam", loss="mse")
    x = RNG.normal(size=(2, 16, 32)).astype("float32")
    history = model.fit(x, np.zeros((2, 16, 4), "float32"), epochs=1, batch_size=2, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    path = os.path.join(tmp_path, "rev.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(to_numpy(model(x)), to_numpy(loaded(x)), atol=1e-6)
    stack = ReversibleStack([ReversibleBlock(2, 8, 16) for _ in range(2)])
    clone = ReversibleStack.from_config(stack.get_config())
    assert len(clone.blocks) == 2


def test_pair_inputs_and_argument_errors():
    block = ReversibleBlock(num_heads=2, key_dim=4, ff_dim=16)
    x1 = RNG.normal(size=(1, 5, 8)).astype("float32")
    y = block([x1, x1])
    assert isinstance(y, list) and tuple(y[0].shape) == (1, 5, 8)
    with pytest.raises(ValueError, match="even"):
        ReversibleBlock(num_heads=2, key_dim=4, ff_dim=16)(np.zeros((1, 5, 7), "float32"))
    with pytest.raises(ValueError, match="ff_chunks=0"):
        ReversibleBlock(num_heads=2, key_dim=4, ff_dim=16, ff_chunks=0)
    with pytest.raises(ValueError, match="num_chunks=0"):
        ChunkedFeedForward(ff_dim=4, num_chunks=0)
    with pytest.raises(ValueError, match="dropout"):
        ReversibleBlock(num_heads=2, key_dim=4, ff_dim=16, dropout=1.5)


JAX_SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from jax._src.ad_checkpoint import saved_residuals
    from keras_transformers.blocks.reversible import ReversibleBlock, ReversibleStack
    x = np.random.default_rng(0).normal(size=(2, 32, 32)).astype("float32")
    for recompute in (True, False):
        sizes = []
        for depth in (1, 2, 4):
            stack = ReversibleStack([ReversibleBlock(2, 8, 64) for _ in range(depth)],
                                    recompute=recompute)
            stack(x)
            tv = [v.value for v in stack.trainable_variables]
            nt = [v.value for v in stack.non_trainable_variables]
            def loss(tv, x):
                return jnp.sum(stack.stateless_call(tv, nt, x, training=True)[0])
            shapes = {tuple(w.shape) for w in tv}
            sizes.append(sum(a.size * a.dtype.itemsize for a, _ in saved_residuals(loss, tv, x)
                             if tuple(a.shape) not in shapes))
        print(recompute, *sizes)
    """
)


@pytest.mark.slow
def test_activation_memory_does_not_grow_with_depth():
    """On JAX, the residuals saved for the backward pass (weights excluded) are counted.

    Runs in a subprocess on the JAX backend (about 30 s of imports): ``pytest -m slow``.
    """
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    env["PYTHONPATH"] = os.pathsep.join(
        [
            os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
            env.get("PYTHONPATH", ""),
        ]
    )
    try:
        import jax  # noqa: F401
    except ImportError:
        pytest.skip("jax is not installed")
    result = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {
        line.split()[0]: [int(v) for v in line.split()[1:]]
        for line in result.stdout.splitlines()
        if line.startswith(("True", "False"))
    }
    reversible, ordinary = rows["True"], rows["False"]
    assert reversible[0] == reversible[1] == reversible[2], reversible  # constant in depth
    assert ordinary[2] > 3 * ordinary[0], ordinary  # grows with depth without recomputation
    assert reversible[2] < ordinary[0]
