"""kt.models.from_keras_hub: tiny random keras-hub backbones of every family give the same
logits from our builder (float32, within 1e-4); the conventions that differ are pinned; an
overridden model carries the weights that fit, lists the new ones and trains; a converted model
round-trips through .keras in a fresh process."""

import os
import subprocess
import sys
import textwrap

import keras
import keras_hub
import numpy as np
import pytest

import keras_transformers as kt

TOL = 1e-4
HUB = keras_hub.models


def randomize(backbone, seed=0, std=0.2):
    """Spread the backbone's weights (keras-hub initializes some at zero or one) so that a wrong
    convention shows in the logits: N(0, std), norm scales 1 + N(0, std)."""
    rng = np.random.default_rng(seed)
    for variable in backbone.weights:
        value = rng.normal(0.0, std, tuple(variable.shape))
        if variable.path.endswith(("gamma", "scale")):
            value += 1.0
        variable.assign(value.astype("float32"))
    return backbone


def hub_logits(backbone, token_ids):
    """keras-hub's logits: its backbone's sequence output through its (reverse) embedding
    (which applies Gemma's final logit soft-cap)."""
    hidden = backbone({"token_ids": token_ids, "padding_mask": np.ones_like(token_ids)})
    return keras.ops.convert_to_numpy(backbone.token_embedding(hidden, reverse=True))


def tokens(vocab=60, shape=(2, 12), seed=1):
    return np.random.default_rng(seed).integers(1, vocab, shape).astype("int32")


def assert_same_logits(backbone, model, token_ids):
    ours = keras.ops.convert_to_numpy(model(token_ids))
    ref = hub_logits(backbone, token_ids)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=TOL, rtol=0)
    assert model.conversion_report.new == []
    return ours


def gpt2(layers=2):
    return randomize(
        HUB.GPT2Backbone(
            vocabulary_size=60,
            num_layers=layers,
            num_heads=2,
            hidden_dim=16,
            intermediate_dim=32,
            max_sequence_length=24,
            dropout=0.0,
        )
    )


def llama(cls=HUB.LlamaBackbone, layers=2, **kwargs):
    return randomize(
        cls(
            vocabulary_size=60,
            num_layers=layers,
            num_query_heads=4,
            num_key_value_heads=2,
            hidden_dim=16,
            intermediate_dim=24,
            **kwargs,
        )
    )


def test_gpt2_logits_equal():  # on TensorFlow; the Llama case below runs on every backend
    backbone = gpt2(layers=1)
    model = kt.models.from_keras_hub(backbone)
    assert isinstance(model, kt.models.DecoderLM)
    assert model.get_config()["activation"] == "gelu_approximate"  # tanh GELU, not the exact one
    assert_same_logits(backbone, model, tokens())
    report = model.conversion_report
    assert report.family == "gpt2" and report.skipped == [] and report.complete


@pytest.mark.backends
def test_llama_gqa_untied_head_logits_equal():
    backbone = llama(layers=1)
    model = kt.models.from_keras_hub(backbone)
    assert model.get_config()["tie_embeddings"] is False
    assert_same_logits(backbone, model, tokens())


def test_llama3_rope_scaling_logits_equal():
    backbone = llama(
        HUB.Llama3Backbone,
        layers=1,
        rope_max_wavelength=500000,
        rope_frequency_adjustment_factor=8.0,
        rope_low_freq_factor=1.0,
        rope_high_freq_factor=4.0,
        rope_pretraining_sequence_length=8,
    )
    model = kt.models.from_keras_hub(backbone)
    scaling = model.get_config()["position"]["scaling"]
    assert scaling["type"] == "llama3" and scaling["original_max_length"] == 8
    assert_same_logits(backbone, model, tokens(shape=(2, 20)))


@pytest.mark.slow
def test_linear_rope_scaling_mistral_applies_it_llama_does_not(caplog):
    """Mistral's rope_scaling_factor divides the positions; keras-hub's Llama stores
    rope_position_scaling_factor but its rotary layer ignores it: we match both (and warn)."""
    backbone = llama(HUB.MistralBackbone, layers=1, rope_scaling_factor=4.0, sliding_window=None)
    model = kt.models.from_keras_hub(backbone)
    assert model.get_config()["position"]["scaling"] == {"type": "linear", "factor": 4.0}
    assert_same_logits(backbone, model, tokens())
    backbone = llama(layers=1, rope_position_scaling_factor=4.0)
    with caplog.at_level("WARNING", logger="keras_transformers"):
        model = kt.models.from_keras_hub(backbone)
    assert "scaling" not in model.get_config()["position"]
    assert "does not apply it" in caplog.text
    assert_same_logits(backbone, model, tokens())


def test_mistral_sliding_window_is_one_less():
    """keras-hub's window W keeps ``i - j < W`` (W keys); ours keeps ``i - w <= j`` (w + 1)."""
    backbone = llama(HUB.MistralBackbone, layers=1, sliding_window=4)
    model = kt.models.from_keras_hub(backbone, max_length=12)
    core = model.transformer_layers[0].self_attention.attention_core
    assert core.window == 3
    assert_same_logits(backbone, model, tokens(shape=(2, 12)))
    # a window that covers max_length is full attention: no fixed input length
    wide = kt.models.from_keras_hub(backbone, max_length=4, verbose=False)
    assert wide.get_config()["attention"] == "full"


def test_gemma_norm_offset_soft_cap_head_dim_logits_equal():
    backbone = randomize(
        HUB.GemmaBackbone(
            vocabulary_size=60,
            num_layers=2,
            num_query_heads=4,
            num_key_value_heads=1,
            hidden_dim=16,
            intermediate_dim=48,
            head_dim=8,  # != 16 / 4
            final_logit_soft_cap=2.0,
        )
    )
    model = kt.models.from_keras_hub(backbone)
    config = model.get_config()
    assert config["head_dim"] == 8 and config["logit_soft_cap"] == 2.0
    # Gemma's RMSNorm scale is (1 + w): we hold 1 + w
    theirs = keras.ops.convert_to_numpy(backbone.layer_norm.scale)
    ours = keras.ops.convert_to_numpy(model.final_norm.scale)
    np.testing.assert_allclose(ours, 1.0 + theirs, atol=1e-7)
    logits = assert_same_logits(backbone, model, tokens())
    assert np.abs(logits).max() < 2.0


@pytest.mark.slow
def test_gemma_query_normalisation_is_folded_into_the_query_kernel():
    """A Gemma attention layer that scales scores by 1/sqrt(d_model / h) (not 1/sqrt(head_dim)):
    the ratio goes into W_q. (keras-hub's backbone argument does not reach its blocks, so the
    flag is set on the layers here.)"""
    backbone = HUB.GemmaBackbone(
        vocabulary_size=60,
        num_layers=1,
        num_query_heads=4,
        num_key_value_heads=1,
        hidden_dim=16,
        intermediate_dim=32,
        head_dim=8,
    )
    randomize(backbone)
    for block in backbone.transformer_layers:
        block.attention.query_head_dim_normalize = False
    model = kt.models.from_keras_hub(backbone)
    assert_same_logits(backbone, model, tokens())


def test_gemma2_options_raise_a_clear_error():
    backbone = HUB.GemmaBackbone(
        vocabulary_size=60,
        num_layers=1,
        num_query_heads=2,
        num_key_value_heads=1,
        hidden_dim=8,
        intermediate_dim=16,
        head_dim=4,
        use_post_ffw_norm=True,
    )
    with pytest.raises(NotImplementedError, match="use_post_ffw_norm"):
        kt.models.from_keras_hub(backbone)


def test_bloom_alibi_row_constant_logits_equal():
    """keras-hub's ALiBi bias m·(j - L + 1) and ours -m·|i - j| differ by a row constant; with
    3 heads (not a power of two) the interleaved slopes agree too."""
    backbone = randomize(
        HUB.BloomBackbone(
            vocabulary_size=60, num_layers=2, num_heads=3, hidden_dim=12, intermediate_dim=24
        )
    )
    model = kt.models.from_keras_hub(backbone)
    assert model.embedding_norm is not None
    assert_same_logits(backbone, model, tokens())


def test_bert_text_encoder_cls_state_equal():
    backbone = randomize(
        HUB.BertBackbone(
            vocabulary_size=60,
            num_layers=2,
            num_heads=2,
            hidden_dim=16,
            intermediate_dim=32,
            max_sequence_length=32,
            dropout=0.0,
        )
    )
    model = kt.models.from_keras_hub(backbone, max_length=12, verbose=False)
    token_ids = tokens()
    token_ids[1, 9:] = 0  # padding (id 0, BERT's [PAD]) is masked out
    segment_ids = np.zeros_like(token_ids)
    segment_ids[:, 6:] = 1
    ours = keras.ops.convert_to_numpy(model({"token_ids": token_ids, "segment_ids": segment_ids}))
    ref = backbone(
        {
            "token_ids": token_ids,
            "segment_ids": segment_ids,
            "padding_mask": (token_ids != 0).astype("int32"),
        }
    )["sequence_output"]
    np.testing.assert_allclose(ours, keras.ops.convert_to_numpy(ref)[:, 0], atol=TOL, rtol=0)
    report = model.conversion_report
    skipped = dict(report.skipped)
    assert "pooled_dense/kernel" in skipped  # keras-hub's pooler has no counterpart
    assert "position_embedding.table" in skipped  # rows 12..31 dropped for max_length=12
    assert report.new == []


def test_mixtral_moe_logits_equal():
    backbone = llama(HUB.MixtralBackbone, layers=1, num_experts=4, top_k=2, sliding_window=64)
    model = kt.models.from_keras_hub(backbone, max_length=12)
    assert model.get_config()["feedforward"] == "moe"
    assert_same_logits(backbone, model, tokens())


def test_swapped_attention_carries_weights_lists_new_ones_and_trains(caplog):
    """Llama -> sliding-window attention with QK-norm: every source weight is copied, the
    QK-norm scales are new (reported and logged), and fit() lowers the loss."""
    backbone = llama(layers=1)
    with caplog.at_level("WARNING", logger="keras_transformers"):
        model = kt.models.from_keras_hub(
            backbone, attention={"name": "sliding_window", "window": 4}, qk_norm=True, max_length=16
        )
    report = model.conversion_report
    assert len(report.copied) == len(kt.models.hub.convert(backbone).weights)
    assert report.skipped == []
    assert report.new and all("norm" in path for path in report.new)
    assert "new (initialized" in caplog.text
    assert model.transformer_layers[0].self_attention.attention_core.window == 4
    x = np.tile(np.arange(1, 17), (16, 2))[:, :17].astype("int32")
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        run_eagerly=True,  # 6 tiny steps: tracing the blocked core costs more than it saves
    )
    history = model.fit(x[:, :-1], x[:, 1:], batch_size=8, epochs=3, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < losses[0]


@pytest.mark.slow
def test_position_override_reports_the_skipped_table():
    model = kt.models.from_keras_hub(gpt2(layers=1), position="rope", verbose=False)
    assert dict(model.conversion_report.skipped)["position_embedding.table"].startswith(
        "the model has no position_embedding"
    )
    assert model.position_embedding is None and model.conversion_report.new == []


def test_sources_task_and_preset_directory(tmp_path):
    backbone = gpt2(layers=1)
    token_ids = tokens()
    task = HUB.GPT2CausalLM(backbone=backbone, preprocessor=None)
    logits = keras.ops.convert_to_numpy(kt.models.from_keras_hub(task)(token_ids))
    np.testing.assert_allclose(logits, hub_logits(backbone, token_ids), atol=TOL)
    backbone.save_to_preset(str(tmp_path / "preset"))
    model = kt.models.from_keras_hub(str(tmp_path / "preset"))
    logits = keras.ops.convert_to_numpy(model(token_ids))
    np.testing.assert_allclose(logits, hub_logits(backbone, token_ids), atol=TOL)
    with pytest.raises(ValueError, match="no config.json"):
        kt.models.from_keras_hub(str(tmp_path))
    with pytest.raises(TypeError, match="keras_hub Backbone"):
        kt.models.from_keras_hub(3)


def test_converted_model_round_trips_through_keras_file(tmp_path):
    backbone = gpt2(layers=1)
    model = kt.models.from_keras_hub(backbone)
    model.save(tmp_path / "gpt2.keras")
    loaded = keras.saving.load_model(tmp_path / "gpt2.keras")
    assert isinstance(loaded, kt.models.DecoderLM)
    token_ids = tokens()
    logits = keras.ops.convert_to_numpy(loaded(token_ids))
    np.testing.assert_allclose(logits, hub_logits(backbone, token_ids), atol=TOL)


@pytest.mark.slow
def test_converted_model_round_trips_in_a_fresh_process(tmp_path):
    backbone = llama(layers=1)
    model = kt.models.from_keras_hub(backbone)
    token_ids = tokens()
    path = tmp_path / "llama.keras"
    model.save(path)
    np.save(tmp_path / "logits.npy", hub_logits(backbone, token_ids))
    np.save(tmp_path / "tokens.npy", token_ids)
    script = textwrap.dedent(
        f"""
        import keras, numpy as np
        import keras_transformers as kt
        model = keras.saving.load_model({str(path)!r})
        assert isinstance(model, kt.models.DecoderLM), type(model)
        tokens = np.load({str(tmp_path / "tokens.npy")!r})
        ref = np.load({str(tmp_path / "logits.npy")!r})
        out = keras.ops.convert_to_numpy(model(tokens))
        print("max_abs_diff", float(np.abs(out - ref).max()))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    diff = float(result.stdout.split("max_abs_diff")[-1])
    assert diff < TOL


@pytest.mark.parametrize(
    "make", [gpt2, pytest.param(llama, marks=pytest.mark.slow)], ids=["gpt2", "llama"]
)
def test_to_keras_hub_round_trip(make):
    """from_keras_hub then to_keras_hub gives back a keras-hub backbone with the same logits."""
    backbone = make(layers=1)
    back = kt.models.hub.to_keras_hub(kt.models.from_keras_hub(backbone))
    assert type(back) is type(backbone)
    token_ids = tokens()
    np.testing.assert_allclose(
        hub_logits(back, token_ids), hub_logits(backbone, token_ids), atol=1e-5
    )


def test_to_keras_hub_refuses_an_architecture_keras_hub_lacks():
    swapped = kt.models.from_keras_hub(gpt2(layers=1), activation="gelu", verbose=False)
    with pytest.raises(ValueError, match="activation='gelu'"):
        kt.models.hub.to_keras_hub(swapped)
