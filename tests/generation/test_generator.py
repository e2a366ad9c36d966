"""KV-cached generation equals full recomputation."""

import keras
import numpy as np
import pytest

import keras_transformers as kt


def recompute_greedy(model, prompt, max_length):
    ids = [list(p) for p in prompt]
    for row in ids:
        while len(row) < max_length:
            logits = keras.ops.convert_to_numpy(model(np.array([row], "int32")))
            row.append(int(np.argmax(logits[0, -1])))
    return np.array(ids)


@pytest.mark.parametrize("position", ["learned", "rope", "alibi", "sinusoidal"])
def test_cached_greedy_equals_recomputation(position):
    model = kt.models.build_decoder_lm(
        vocab_size=30, max_length=16, d_model=16, num_heads=2, num_layers=2, position=position
    )
    prompt = np.array([[5, 9, 3], [7, 2, 11]], "int32")
    cached = kt.generation.Generator(model).generate(prompt, max_length=10)
    np.testing.assert_array_equal(cached, recompute_greedy(model, prompt, 10))


def test_ragged_prompts_keep_their_tokens_and_samplers_work():
    model = kt.models.build_decoder_lm(
        vocab_size=30, max_length=16, d_model=16, num_heads=2, num_layers=1, num_key_value_heads=1
    )
    gen = kt.generation.Generator(model, jit=False)
    out = gen.generate([[5, 9, 3, 4], [7]], max_length=8)
    assert out.shape == (2, 8)
    np.testing.assert_array_equal(out[0, :4], [5, 9, 3, 4])
    assert out[1, 0] == 7
    out = gen.generate([[5, 9]], max_length=6, sampler=kt_top_k())
    assert out.shape == (1, 6) and (out >= 0).all() and (out < 30).all()


def kt_top_k():
    import keras_hub

    return keras_hub.samplers.TopKSampler(k=3, seed=0)


def test_errors():
    model = kt.models.build_decoder_lm(
        vocab_size=30, max_length=16, d_model=16, num_heads=2, num_layers=1
    )
    gen = kt.generation.Generator(model)
    with pytest.raises(ValueError, match="max_length=3"):
        gen.generate([[1, 2, 3]], max_length=3)
    with pytest.raises(ValueError, match="Generator needs a model"):
        kt.generation.Generator(keras.Sequential([keras.layers.Dense(2)]))
