"""LoRA on every projection: kt.models.lora.enable_lora freezes everything else, trains a small
fraction of the parameters, its weights save and load on their own and merge for serving."""

import keras
import numpy as np
import pytest

import keras_transformers as kt
from keras_transformers.models.lora import (
    enable_lora,
    load_lora_weights,
    lora_layers,
    merge_lora,
    save_lora_weights,
)

pytestmark = pytest.mark.backends


def _lm(seed=0):
    keras.utils.set_random_seed(seed)
    return kt.models.build_decoder_lm(
        vocab_size=24, max_length=16, d_model=32, num_heads=4, num_layers=2, ff_dim=64
    )


def _count(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


def _data():
    x = np.tile(np.arange(4, 20), (32, 2))[:, :17]  # a periodic sequence is easy to learn
    return x[:, :-1], x[:, 1:]


def test_lora_trains_a_small_fraction_and_the_loss_falls():
    model = _lm()
    layers = enable_lora(model, rank=4, targets=("query", "value", "output"))
    assert len(layers) == 4  # fused qkv + output, two blocks
    trainable = model.trainable_weights
    assert trainable and all("lora_kernel" in w.path for w in trainable)
    assert _count(trainable) < 0.2 * _count(model.weights)
    frozen = [keras.ops.convert_to_numpy(w).copy() for w in model.non_trainable_weights]
    model.compile(
        keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    x, y = _data()
    history = model.fit(x, y, epochs=12, batch_size=8, verbose=0).history["loss"]
    assert history[-1] < 0.8 * history[0]
    for before, w in zip(frozen, model.non_trainable_weights):
        np.testing.assert_array_equal(before, keras.ops.convert_to_numpy(w))


def test_every_projection_accepts_lora():
    model = _lm()
    layers = enable_lora(model, 2, targets=("query", "key", "value", "output", "feedforward"))
    assert len(layers) == 8  # qkv, output, inner, outer per block
    assert all(layer.lora_enabled for layer in layers)


def test_unknown_target_lists_the_accepted_names():
    with pytest.raises(ValueError, match="query, key, value, output, feedforward"):
        enable_lora(_lm(), 2, targets=("q_proj",))
    with pytest.raises(ValueError, match="rank=0"):
        enable_lora(_lm(), 0)


def test_lora_weights_round_trip_and_merge(tmp_path):
    model = _lm()
    enable_lora(model, 2)
    rng = np.random.default_rng(0)
    for layer in lora_layers(model):  # a trained update (B starts at zero)
        layer.lora_kernel_b.assign(rng.normal(size=layer.lora_kernel_b.shape) * 0.1)
    x, _ = _data()
    want = keras.ops.convert_to_numpy(model(x[:4]))
    path = str(tmp_path / "adapter.npz")
    save_lora_weights(model, path)

    fresh = _lm()  # same base weights (same seed), LoRA enabled from the file
    assert not np.allclose(keras.ops.convert_to_numpy(fresh(x[:4])), want, atol=1e-4)
    load_lora_weights(fresh, path)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(fresh(x[:4])), want, atol=1e-4)

    merge_lora(fresh)
    assert lora_layers(fresh) == []
    assert not any("lora" in w.path for w in fresh.weights)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(fresh(x[:4])), want, atol=1e-4)
    saved = str(tmp_path / "merged.keras")
    fresh.save(saved)
    loaded = keras.saving.load_model(saved)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x[:4])), want, atol=1e-4)
