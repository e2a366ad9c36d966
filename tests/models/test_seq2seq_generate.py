"""Seq2Seq.generate: cached encoder-decoder decoding equals the uncached decode, token for token."""

import keras
import keras_hub
import numpy as np
import pytest

import keras_transformers as kt

SRC_LEN, TGT_LEN, VOCAB = 9, 10, 31


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(3)
    return kt.models.build_seq2seq(
        VOCAB,
        VOCAB,
        SRC_LEN,
        TGT_LEN,
        d_model=16,
        num_heads=2,
        num_encoder_layers=2,
        num_decoder_layers=2,
        dropout=0.0,
    )


@pytest.fixture(scope="module")
def sources():
    src = np.random.default_rng(0).integers(3, VOCAB, size=(3, SRC_LEN)).astype("int32")
    src[1, 6:] = 0  # a padded source
    return src


def reference_greedy(model, src, max_length, start=1):
    """Greedy decode by the full model for every token (plain loop, numpy argmax)."""
    dec = np.zeros((src.shape[0], TGT_LEN), "int32")
    dec[:, 0] = start
    for t in range(max_length - 1):
        logits = keras.ops.convert_to_numpy(
            model({"encoder_token_ids": src, "decoder_token_ids": dec})
        )
        dec[:, t + 1] = logits[:, t].argmax(-1)
    return dec[:, :max_length]


@pytest.mark.backends
def test_greedy_cached_equals_uncached_and_reference(model, sources):
    """Token for token; and the cross-attention keys/values are projected once per call: the
    cross-attention layer's own call (which projects K, V) never runs while decoding."""
    block = model.decoder_transformer_layers[0]
    layer, original = block.cross_attention_layer, block.init_cross_cache
    counts, calls = [], []
    block.init_cross_cache = lambda encoded: counts.append(1) or original(encoded)
    original_call = layer.call
    layer.call = lambda *a, **k: calls.append(1) or original_call(*a, **k)
    try:
        cached = model.generate(sources, 6, start_token_id=1, use_cache=True, jit=False)
    finally:
        del block.init_cross_cache
        del layer.call
    assert len(counts) == 1 and not calls
    uncached = model.generate(sources, 6, start_token_id=1, use_cache=False, jit=False)
    np.testing.assert_array_equal(cached, uncached)
    np.testing.assert_array_equal(cached, reference_greedy(model, sources, 6))


@pytest.mark.slow
def test_greedy_compiled_full_length(model, sources):
    cached = model.generate(sources, TGT_LEN, start_token_id=1, use_cache=True)
    np.testing.assert_array_equal(cached, reference_greedy(model, sources, TGT_LEN))


def test_beam_cached_equals_uncached(model, sources):
    beam = keras_hub.samplers.BeamSampler(num_beams=3)
    cached = model.generate(sources, 4, sampler=beam, start_token_id=1, use_cache=True, jit=False)
    uncached = model.generate(
        sources, 4, sampler=beam, start_token_id=1, use_cache=False, jit=False
    )
    np.testing.assert_array_equal(cached, uncached)


@pytest.mark.slow
def test_decoder_prompt_prefill_and_suppress(model, sources):
    prompt = np.array([[1, 5, 6], [1, 7, 0], [1, 8, 9]], "int32")  # row 1 is shorter
    cached = model.generate(
        sources, 8, decoder_prompt=prompt, suppress_token_ids=[0, 1, 2], use_cache=True, jit=False
    )
    uncached = model.generate(
        sources, 8, decoder_prompt=prompt, suppress_token_ids=[0, 1, 2], use_cache=False, jit=False
    )
    np.testing.assert_array_equal(cached, uncached)
    np.testing.assert_array_equal(cached[:, :2], prompt[:, :2])
    assert not np.isin(cached[:, 3:], [0, 1, 2]).any()


def test_bad_arguments(model, sources):
    with pytest.raises(ValueError, match="start_token_id"):
        model.generate(sources, 5)
    with pytest.raises(ValueError, match="max_length=11"):
        model.generate(sources, 11, start_token_id=1)
    with pytest.raises(ValueError, match="src_length"):
        model.generate(np.ones((1, SRC_LEN + 2), "int32"), 5, start_token_id=1)


@pytest.mark.slow
def test_recipe_greedy_decode_uses_generate(model, sources):
    """examples/train_seq2seq.py's decode through the caches equals its recomputation loop."""
    from keras_transformers.recipes import seq2seq

    class NoGenerate:  # the same model without generate: the recipe's full-recompute loop
        def predict_on_batch(self, inputs):
            return model.predict_on_batch(inputs)

    cached = seq2seq.greedy_decode(model, sources, TGT_LEN)
    np.testing.assert_array_equal(cached, seq2seq.greedy_decode(NoGenerate(), sources, TGT_LEN))
