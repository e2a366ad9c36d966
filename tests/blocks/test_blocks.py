"""Encoder/decoder blocks and the feed-forward network."""

import keras
import numpy as np
import pytest

import keras_transformers as kt

RNG = np.random.default_rng(0)


def np_(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize("activation", ["gelu", "relu", "swiglu", "geglu"])
def test_feedforward_shapes_and_glu(activation):
    ff = kt.blocks.FeedForward(32, activation=activation)
    x = RNG.normal(size=(2, 5, 8)).astype("float32")
    assert ff(x).shape == (2, 5, 8)
    gated = activation in ("swiglu", "geglu")
    assert ff.inner.kernel.shape == (8, 64 if gated else 32)


def test_feedforward_rejects_unknown_activation():
    with pytest.raises(ValueError, match="activation='swishy'.*allowed"):
        kt.blocks.FeedForward(8, activation="swishy")


@pytest.mark.parametrize("norm_first", [True, False])
def test_encoder_block_pre_and_post_norm(norm_first):
    block = kt.blocks.TransformerEncoderBlock(2, 4, 16, norm_first=norm_first)
    x = RNG.normal(size=(2, 6, 8)).astype("float32")
    y = np_(block(x))
    assert y.shape == x.shape
    if not norm_first:  # post-norm output is layer-normalised
        np.testing.assert_allclose(y.mean(-1), 0.0, atol=1e-5)


def test_decoder_block_cache_matches_full_pass():
    block = kt.blocks.TransformerDecoderBlock(2, 4, 16, cross_attention=False, position="rope")
    x = RNG.normal(size=(1, 5, 8)).astype("float32")
    full = np_(block(x))
    cache = np.zeros((1, 2, 5, 2, 4), "float32")
    outs = []
    for t in range(5):
        y, cache = block(x[:, t : t + 1], cache=cache, cache_index=t)
        outs.append(np_(y))
    np.testing.assert_allclose(np.concatenate(outs, 1), full, atol=1e-5)


def test_decoder_block_cross_attention_requires_encoder_outputs():
    block = kt.blocks.TransformerDecoderBlock(2, 4, 16, cross_attention=True)
    x = RNG.normal(size=(1, 5, 8)).astype("float32")
    enc = RNG.normal(size=(1, 7, 8)).astype("float32")
    assert block(x, enc).shape == (1, 5, 8)
    block2 = kt.blocks.TransformerDecoderBlock(2, 4, 16, cross_attention=True)
    with pytest.raises(ValueError, match="encoder_outputs"):
        block2(x)


def test_block_config_round_trip():
    block = kt.blocks.TransformerEncoderBlock(
        2, 4, 16, attention="full", position="alibi", activation="swiglu"
    )
    clone = kt.blocks.TransformerEncoderBlock.from_config(block.get_config())
    assert clone.get_config() == block.get_config()
