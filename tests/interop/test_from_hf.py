"""kt.models.from_keras_hub on Hugging Face checkpoint folders: a tiny random transformers model
saved with save_pretrained (config.json + model.safetensors) gives the torch model's logits
(float32, within 1e-4). keras-hub's own converters read the folder; nothing is downloaded."""

import keras
import numpy as np
import pytest

import keras_transformers as kt

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOL = 1e-4


def save_random(model, folder, seed=0, std=0.2):
    """Spread the weights (HF initializes at std 0.02) and save them as safetensors."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator) * std
            parameter.copy_(noise + (1.0 if parameter.ndim == 1 and "norm" in name else 0.0))
    model.eval()
    model.save_pretrained(folder, safe_serialization=True)
    return model


def compare(model, folder, token_ids, **overrides):
    with torch.no_grad():
        ref = model(torch.tensor(token_ids, dtype=torch.long)).logits.numpy()
    ours = kt.models.from_keras_hub(str(folder), **overrides)
    logits = keras.ops.convert_to_numpy(ours(token_ids))
    np.testing.assert_allclose(logits, ref, atol=TOL, rtol=0)
    assert ours.conversion_report.new == []
    return ours, float(np.abs(logits - ref).max())


@pytest.mark.slow
def test_hf_gpt2_folder_logits_equal(tmp_path):
    config = transformers.GPT2Config(
        vocab_size=64,
        n_positions=32,
        n_embd=16,
        n_layer=2,
        n_head=2,  # n_inner: keras-hub assumes 4·d
    )
    model = save_random(transformers.GPT2LMHeadModel(config), tmp_path)
    token_ids = np.random.default_rng(0).integers(0, 64, (2, 10)).astype("int32")
    ours, _ = compare(model, tmp_path, token_ids)
    assert ours.conversion_report.family == "gpt2"


def test_hf_llama_folder_logits_equal(tmp_path):
    config = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    )
    model = save_random(transformers.LlamaForCausalLM(config), tmp_path)
    token_ids = np.random.default_rng(0).integers(0, 64, (2, 10)).astype("int32")
    ours, _ = compare(model, tmp_path, token_ids)
    assert ours.get_config()["layer_norm_epsilon"] == 1e-5
