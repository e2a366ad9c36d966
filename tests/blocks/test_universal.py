"""Universal Transformer block: coordinate embedding, weight tying, ACT halting, ponder cost."""

import keras
import numpy as np
import pytest

from keras_transformers.blocks.encoder import TransformerEncoderBlock
from keras_transformers.blocks.universal import (
    UniversalTransformerBlock,
    act_halting_weights,
    coordinate_embedding,
)

RNG = np.random.default_rng(0)


def np_(x):
    return keras.ops.convert_to_numpy(x)


def np_coordinates(length, step, dim):
    """Independent numpy P^t: sin/cos of position plus sin/cos of step, interleaved."""
    out = np.zeros((length, dim))
    for i in range(length):
        for k in range(dim):
            j = k // 2
            freq = 1.0 / 10000 ** (2 * j / dim)
            f = np.sin if k % 2 == 0 else np.cos
            out[i, k] = f(i * freq) + f(step * freq)
    return out


def x_(b=2, length=6, d=8):
    return RNG.normal(size=(b, length, d)).astype("float32")


def test_act_weights_catalogue_example():
    p, n, r = act_halting_weights(np.array([[0.3, 0.3, 0.5], [0.995, 0.2, 0.2]]), epsilon=0.01)
    np.testing.assert_allclose(np_(p), [[0.3, 0.3, 0.4], [1.0, 0.0, 0.0]], atol=1e-6)
    np.testing.assert_allclose(np_(n), [3, 1])
    np.testing.assert_allclose(np_(r), [0.4, 1.0], atol=1e-6)
    np.testing.assert_allclose(np_(n + r), [3.4, 2.0], atol=1e-6)  # ponder cost N + R


def test_coordinate_embedding_matches_numpy_and_differs_per_step():
    for t in (1, 3):
        np.testing.assert_allclose(
            np_(coordinate_embedding(5, t, 8)), np_coordinates(5, t, 8), atol=1e-5
        )
    assert (
        np.abs(np_(coordinate_embedding(5, 1, 8)) - np_(coordinate_embedding(5, 2, 8))).max() > 1e-3
    )
    # t = 0: the sin columns are the plain positional sinusoid
    i, j = np.arange(5)[:, None], np.arange(4)[None]
    plain_sin = np.sin(i / 10000 ** (2 * j / 8))
    np.testing.assert_allclose(np_(coordinate_embedding(5, 0, 8))[:, ::2], plain_sin, atol=1e-6)


@pytest.mark.parametrize("act", [True, False])
def test_weight_count_independent_of_max_steps(act):
    counts = set()
    for steps in (1, 3, 6):
        block = UniversalTransformerBlock(2, 4, 16, max_steps=steps, act=act)
        block(x_())
        counts.add(sum(int(np.prod(w.shape)) for w in block.trainable_weights))
    assert len(counts) == 1


def copied_encoder(block, x):
    enc = TransformerEncoderBlock(2, 4, 16, norm_first=block.norm_first, activation="relu")
    enc(x)
    enc.set_weights(block.transition_block.get_weights())
    return enc


def test_fixed_steps_is_the_tied_layer_applied_t_times():
    x = x_()
    block = UniversalTransformerBlock(2, 4, 16, max_steps=3, act=False)
    y, details = block(x, return_act_details=True)
    enc = copied_encoder(block, x)
    h = x
    for t in range(1, 4):
        h = np_(enc(h + np_coordinates(6, t, 8)[None].astype("float32")))
    np.testing.assert_allclose(np_(y), h, atol=1e-5)
    np.testing.assert_allclose(np_(details["ponder_steps"]), 3.0)
    assert not block.losses


@pytest.mark.parametrize("max_steps,bias", [(1, 0.0), (4, 10.0)])
def test_one_halting_step_equals_one_encoder_block(max_steps, bias):
    x = x_()
    block = UniversalTransformerBlock(2, 4, 16, max_steps=max_steps, halting_bias_init=bias)
    y, details = block(x, return_act_details=True)
    enc = copied_encoder(block, x)
    ref = np_(enc(x + np_coordinates(6, 1, 8)[None].astype("float32")))
    np.testing.assert_allclose(np_(y), ref, atol=1e-5)
    np.testing.assert_allclose(np_(details["ponder_steps"]), 1.0)
    np.testing.assert_allclose(np_(details["remainders"]), 1.0, atol=1e-6)
    assert float(block.average_ponder_steps.numpy()) == 1.0


def varied_block(max_steps=5):
    """A block whose halting unit makes positions halt after different numbers of steps."""
    block = UniversalTransformerBlock(2, 4, 16, max_steps=max_steps, halting_bias_init=-1.0)
    x = x_(3, 8, 8)
    block(x)
    kernel = RNG.normal(size=(8, 1)).astype("float32") * 1.5
    block.halting_unit.kernel.assign(kernel)
    return block, x


def test_act_weights_sum_to_one_and_output_is_mean_field():
    block, x = varied_block()
    y, d = block(x, return_act_details=True)
    p, n, r = np_(d["halting_weights"]), np_(d["ponder_steps"]), np_(d["remainders"])
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-6)
    assert len(np.unique(n)) > 1  # the property is exercised with different depths
    last = np.take_along_axis(p, (n.astype(int) - 1)[..., None], -1)[..., 0]
    np.testing.assert_allclose(last, r, atol=1e-6)  # p_N = R
    states = np_(d["step_states"])  # (B, T, L, d)
    mean_field = np.einsum("blt,btld->bld", p, states)
    np.testing.assert_allclose(np_(y), mean_field, atol=1e-5)


def test_halted_positions_keep_their_state():
    block, x = varied_block()
    _, d = block(x, return_act_details=True)
    n, states = np_(d["ponder_steps"]).astype(int), np_(d["step_states"])
    early = 0
    for b in range(n.shape[0]):
        for i in range(n.shape[1]):
            for t in range(n[b, i], states.shape[1]):
                early += 1
                np.testing.assert_array_equal(states[b, t, i], states[b, n[b, i] - 1, i])
    assert early > 0


def test_ponder_loss_value_and_gradient_reach_halting_unit():
    if keras.backend.backend() != "tensorflow":
        pytest.skip("uses tf.GradientTape")
    import tensorflow as tf

    block = UniversalTransformerBlock(2, 4, 16, max_steps=3, ponder_cost_weight=0.1)
    x = x_()
    block(x)
    with tf.GradientTape() as tape:
        _, d = block(x, return_act_details=True)
        loss = tf.add_n(block.losses)
    expected = 0.1 * np.mean(np_(d["ponder_steps"]) + np_(d["remainders"]))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    grads = tape.gradient(loss, block.halting_unit.trainable_weights)
    assert all(g is not None and np.isfinite(np_(g)).all() for g in grads)
    assert np.abs(np_(grads[1])).sum() > 0  # bias gradient through the remainder R


def test_padding_excluded_from_ponder_statistics():
    block, x = varied_block()
    mask = np.ones(x.shape[:2], bool)
    mask[:, 5:] = False
    _, d = block(x, padding_mask=mask, return_act_details=True)
    n = np_(d["ponder_steps"])
    np.testing.assert_allclose(float(block.average_ponder_steps.numpy()), n[mask].mean(), rtol=1e-6)


def test_causal_universal_block():
    block = UniversalTransformerBlock(2, 4, 16, max_steps=3, causal=True, halting_bias_init=-1.0)
    x = x_(1, 8, 8)
    y1 = np_(block(x))
    x2 = x.copy()
    x2[:, 5:] = RNG.normal(size=(1, 3, 8))
    y2 = np_(block(x2))
    np.testing.assert_allclose(y1[:, :5], y2[:, :5], atol=1e-5)
    assert np.abs(y1[:, 5:] - y2[:, 5:]).max() > 1e-4


def test_config_round_trip_and_validation():
    block = UniversalTransformerBlock(
        2, 4, 16, max_steps=3, attention="full", position="rope", causal=True, act=True
    )
    clone = UniversalTransformerBlock.from_config(block.get_config())
    assert clone.get_config() == block.get_config()
    with pytest.raises(ValueError, match="max_steps=0"):
        UniversalTransformerBlock(2, 4, 16, max_steps=0)
    with pytest.raises(ValueError, match="halting_epsilon=1.5"):
        UniversalTransformerBlock(2, 4, 16, halting_epsilon=1.5)
    with pytest.raises(ValueError, match="ponder_cost_weight=-1"):
        UniversalTransformerBlock(2, 4, 16, ponder_cost_weight=-1)
