"""Model builders: shapes, validation, training signal, save/load."""

import keras
import numpy as np
import pytest

import keras_transformers as kt


def test_decoder_lm_tied_embeddings_and_loss_decreases():
    model = kt.models.build_decoder_lm(
        vocab_size=12, max_length=16, d_model=32, num_heads=2, num_layers=1, position="rope"
    )
    names = [w.path for w in model.weights]
    assert not any("reverse" in n for n in names)  # output shares the embedding matrix
    x = np.tile(np.arange(4, 12), (32, 2))[:, :16]  # a periodic sequence is easy to learn
    model.compile(
        keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    hist = model.fit(x[:, :-1], x[:, 1:], epochs=15, batch_size=8, verbose=0)
    assert hist.history["loss"][-1] < 0.5 * hist.history["loss"][0]


def test_untied_lm_has_separate_output_matrix():
    model = kt.models.build_decoder_lm(
        vocab_size=12, max_length=8, d_model=16, num_heads=2, num_layers=1, tie_embeddings=False
    )
    assert any("reverse" in w.path for w in model.weights)


def test_seq2seq_shapes():
    model = kt.models.build_seq2seq(
        20, 30, 7, 5, d_model=16, num_heads=2, num_encoder_layers=1, num_decoder_layers=1
    )
    out = model(
        {
            "encoder_token_ids": np.ones((2, 7), "int32"),
            "decoder_token_ids": np.ones((2, 5), "int32"),
        }
    )
    assert out.shape == (2, 5, 30)


def test_builder_validation_errors():
    with pytest.raises(ValueError, match="d_model=30 must be divisible by num_heads=4"):
        kt.models.build_encoder_classifier(10, 2, 8, d_model=30, num_heads=4)
    with pytest.raises(ValueError, match="pooling='first'"):
        kt.models.build_encoder_classifier(10, 2, 8, d_model=16, num_heads=2, pooling="first")
    with pytest.raises(ValueError, match="Unknown positional variant"):
        kt.models.build_decoder_lm(10, 8, d_model=16, num_heads=2, position="sinusoid")


def test_decoder_lm_with_memory_length_is_a_transformer_xl():
    model = kt.models.build_decoder_lm(50, 8, d_model=16, num_heads=2, num_layers=1,
                                       memory_length=4, batch_size=2)  # fmt: skip
    blocks = [layer for layer in model.layers if isinstance(layer, kt.memory.TransformerXLBlock)]
    assert len(blocks) == 1
    assert tuple(model.input_shape) == (2, 8)
    x = np.random.default_rng(0).integers(1, 50, size=(2, 8)).astype("int32")
    first = keras.ops.convert_to_numpy(model(x))
    second = keras.ops.convert_to_numpy(model(x))  # the memory now holds the first segment
    assert first.shape == (2, 8, 50)
    assert not np.allclose(first, second)
    with pytest.raises(ValueError, match="batch_size"):
        kt.models.build_decoder_lm(50, 8, memory_length=4)
    with pytest.raises(ValueError, match="attention='performer'"):
        kt.models.build_decoder_lm(50, 8, memory_length=4, batch_size=2, attention="performer")
