"""A learned position table cannot encode positions >= max_length (catalogue V5): a longer input
raises a clear error naming ``max_length`` and suggesting encodings that extrapolate, instead of a
backend slice/gather error."""

import keras
import numpy as np
import pytest

import keras_transformers as kt
from keras_transformers.positional.learned import LearnedPositionEmbedding

MESSAGE = r"max_length=8.*cannot extrapolate.*'rope', 'alibi' or 't5'"


def test_within_table_adds_the_first_rows():
    layer = LearnedPositionEmbedding(max_length=8)
    x = np.random.default_rng(0).normal(size=(2, 5, 4)).astype("float32")
    out = keras.ops.convert_to_numpy(layer(x))
    table = keras.ops.convert_to_numpy(layer.table)
    np.testing.assert_allclose(out, x + table[None, :5], atol=1e-6)
    full = keras.ops.convert_to_numpy(layer(np.zeros((1, 8, 4), "float32")))
    np.testing.assert_allclose(full[0], table, atol=1e-6)  # exactly max_length still works


def test_longer_input_raises_clear_value_error():
    layer = LearnedPositionEmbedding(max_length=8)
    with pytest.raises(ValueError, match=MESSAGE) as info:
        layer(np.zeros((2, 9, 4), "float32"))
    assert "reaches 9 positions" in str(info.value)
    layer = LearnedPositionEmbedding(max_length=8)
    with pytest.raises(ValueError, match="reaches 10 positions"):
        layer(np.zeros((1, 4, 4), "float32"), start_index=6)


def test_decoder_lm_called_past_its_table_raises_value_error():
    model = kt.models.build_decoder_lm(
        vocab_size=20, max_length=8, d_model=8, num_heads=2, num_layers=1, position="learned"
    )
    assert tuple(model(np.ones((1, 8), "int32")).shape) == (1, 8, 20)
    with pytest.raises(ValueError, match=MESSAGE):
        model(np.ones((1, 16), "int32"))


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TF graph with unknown length")
def test_tensorflow_graph_with_unknown_length_reports_the_same_message():
    """``evaluate`` retraces with an unknown length after seeing two lengths: the check then runs
    inside the graph and the error carries the same text."""
    model = kt.models.build_decoder_lm(
        vocab_size=20, max_length=8, d_model=8, num_heads=2, num_layers=1, position="learned"
    )
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ones = np.ones((2, 8), "int32")
    assert np.isfinite(model.evaluate(ones, ones, verbose=0))
    assert np.isfinite(model.evaluate(ones[:, :6], ones[:, :6], verbose=0))
    with pytest.raises(Exception, match="cannot extrapolate") as info:
        model.evaluate(np.ones((2, 12), "int32"), np.ones((2, 12), "int32"), verbose=0)
    assert "max_length=8" in str(info.value)
