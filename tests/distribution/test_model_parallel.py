"""kt.distribution: the layout map shards every backbone Megatron-style, on a real JAX mesh of 4
virtual CPU devices (a subprocess), one step equals the single-device step, and the checkpoint
of the sharded run loads on one device."""

import keras
import numpy as np
import pytest
from distribution_helpers import FOUR_DEVICES, finish, start_worker

import keras_transformers as kt
from keras_transformers import distribution

MESH = keras.distribution.DeviceMesh((2, 2), ("batch", "model"), np.array(["d"] * 4).reshape(2, 2))


FAST = ("lm", "moe_rms_qk_norm", "from_keras_hub_gpt2")


def families(names=None):
    """One small model of each family (built here, on the test's backend); ``names``: a subset."""
    kw = dict(d_model=16, num_heads=2)
    models = {
        "lm": kt.models.build_decoder_lm(32, 8, num_layers=1, position="rope", **kw),
        "lm_gated_untied_gqa": kt.models.build_decoder_lm(
            32,
            8,
            num_layers=1,
            activation="swiglu",
            tie_embeddings=False,
            num_key_value_heads=1,
            **kw,
        ),  # fmt: skip
        "classifier": kt.models.build_encoder_classifier(32, 3, 8, num_layers=1, **kw),
        "seq2seq": kt.models.build_seq2seq(30, 31, 8, 8, **kw),
        "vit": kt.models.build_vit(8, 4, 3, num_layers=1, **kw),
        "xl_position": kt.models.build_decoder_lm(32, 8, num_layers=1, position="xl", **kw),
        "performer": kt.models.build_decoder_lm(32, 8, num_layers=1, attention="performer", **kw),
        "moe_rms_qk_norm": kt.models.build_decoder_lm(
            32,
            8,
            num_layers=1,
            feedforward="moe",
            num_experts=2,
            norm="rms",
            qk_norm=True,
            **kw,
        ),  # fmt: skip
    }
    if hasattr(kt.models, "from_keras_hub") and (names is None or "from_keras_hub_gpt2" in names):
        import keras_hub

        hub = keras_hub.models.GPT2Backbone(
            vocabulary_size=32, num_layers=1, num_heads=2, hidden_dim=16,
            intermediate_dim=32, max_sequence_length=8,
        )  # fmt: skip
        models["from_keras_hub_gpt2"] = kt.models.from_keras_hub(hub)
    return {key: model for key, model in models.items() if names is None or key in names}


def check_rules(models):
    """The rules are exclusive (Keras refuses two matches) and cover the big matrices: in every
    family the sharded weights hold most parameters; what stays replicated is small."""
    layout_map = distribution.get_layout_map(MESH)
    for name, model in models.items():
        sharded = total = 0
        for variable in model.weights:
            rule = distribution.rule_for(variable.path)  # raises on two matches
            layout = layout_map[variable.path]
            assert (rule is None) == (layout is None), variable.path
            size = int(np.prod(variable.shape))
            total += size
            if layout is not None:
                assert len(layout.axes) == len(variable.shape), (variable.path, layout.axes)
                sharded += size
            elif len(variable.shape) == 2 and min(variable.shape) >= 16:
                # a replicated matrix must be a position table, a head or a core's own weight
                assert any(
                    word in variable.path
                    for word in ("position", "logits", "attention_", "mlm_head", "patch")
                ), (name, variable.path, variable.shape)
        assert sharded / total > 0.5, (name, sharded, total)


def test_every_weight_has_one_rule_and_the_large_matrices_are_sharded():
    """LM, MoE + RMSNorm + qk-norm, and a keras-hub GPT-2 through from_keras_hub."""
    check_rules(families(FAST))


@pytest.mark.slow
def test_rules_for_every_family():
    """Also GQA + SwiGLU + untied head, classifier, seq2seq, ViT, Transformer-XL positions,
    Performer (the core's random features replicated)."""
    check_rules(families())


def test_table_entries():
    """Column-parallel fan-out, row-parallel fan-in, vocabulary-split embedding, norms replicated."""
    layout_map = distribution.get_layout_map(MESH)
    expect = {
        "token_embedding/embeddings": ("model", "batch"),
        "decoder_block_3/self_attention/qkv/kernel": ("batch", "model"),
        "decoder_block_3/self_attention/qkv/bias": ("model",),
        "decoder_block_0/cross_attention/kv/kernel": ("batch", "model"),
        "decoder_block_0/cross_attention/query/kernel": ("batch", "model"),
        "encoder_block_1/self_attention/output/kernel": ("model", "batch"),
        "encoder_block_1/feedforward/inner/kernel": ("batch", "model"),
        "encoder_block_1/feedforward/outer/kernel": ("model", "batch"),
        "decoder_block_0/self_attention/qkv/lora_kernel_b": (None, "model"),
        "decoder_block_0/feedforward/outer/lora_kernel_a": ("model", None),
        "decoder_block_0/feedforward/expert_1/inner/kernel": ("batch", "model"),
        "decoder_block_0/feedforward/expert_1/outer/kernel": ("model", "batch"),
        "decoder_block_0/feedforward/router/kernel": None,
        "decoder_block_0/feedforward/outer/bias": None,
        "decoder_block_0/self_attention_norm/gamma": None,
        "final_norm/scale": None,
        "decoder_block_0/self_attention/query_norm/scale": None,
        "decoder_block_0/self_attention/performer_attention_0/projection": None,
    }
    for path, axes in expect.items():
        layout = layout_map[path]
        assert (None if layout is None else tuple(layout.axes)) == axes, path
    plain = distribution.get_layout_map(MESH, data_parallel_dim_name=None)
    assert tuple(plain["token_embedding/embeddings"].axes) == ("model", None)


def test_bad_mesh_arguments_are_named():
    with pytest.raises(ValueError, match="device_mesh="):
        distribution.get_layout_map((2, 2))
    with pytest.raises(ValueError, match="model_parallel_dim_name='tensor'"):
        distribution.get_layout_map(MESH, model_parallel_dim_name="tensor")
    with pytest.raises(ValueError, match="data_parallel_dim_name='data'"):
        distribution.get_layout_map(MESH, data_parallel_dim_name="data")


def test_indivisible_axes_are_replicated():
    layout = keras.distribution.TensorLayout(("model", "batch"), MESH)
    axes, dropped = distribution._dividing_axes(layout, (33, 16), MESH)
    assert axes == [None, "batch"] and "33" in dropped[0]


def test_sharded_step_equals_single_device_step_and_loads_on_one_device(tmp_path):
    """JAX, 2 x 2 mesh of virtual CPU devices: the weights are really split (the live
    ``NamedSharding`` and the per-device shard shapes), one SGD step equals the single-device
    step within 1e-4, and the ``.keras`` written there loads here on one device (this process's
    backend) with exactly the sharded run's weights."""
    pytest.importorskip("jax")
    process, out = start_worker(tmp_path, "model_parallel", "jax", "mp", "lm", **FOUR_DEVICES)
    result = finish(process, out)
    sharded = 0
    for path, shape, axes, spec in result["rows"]:
        shard = result["shards"][path]
        if axes is None:
            assert shard == shape, path  # replicated: every device holds all of it
            continue
        sharded += 1
        assert spec == "P(" + ", ".join(repr(a) for a in axes) + (",)" if len(axes) == 1 else ")")
        assert shard == [dim // 2 if axis else dim for dim, axis in zip(shape, axes)], path
    assert sharded >= 7  # embedding + 1 block x (qkv k/b, output, inner k/b, outer)
    assert result["diff"] < 1e-4 and abs(result["loss"] - result["ref_loss"]) < 1e-4
    loaded = keras.saving.load_model(result["saved"])  # on one device, this backend
    for variable, expected in zip(loaded.weights, result["weights"]):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable.value), expected)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gated", "moe", "seq2seq"])
def test_sharded_step_other_families(tmp_path, kind):
    """Untied head + GQA + SwiGLU, and the encoder-decoder (cross-attention query/kv)."""
    pytest.importorskip("jax")
    process, out = start_worker(tmp_path, "model_parallel", "jax", kind, kind, **FOUR_DEVICES)
    result = finish(process, out)
    assert result["diff"] < 1e-4, result["diff"]
    assert any("cross_attention/kv/kernel" in row[0] and row[2] for row in result["rows"]) or (
        kind != "seq2seq"
    )


@pytest.mark.slow
def test_recipe_model_parallel_and_data_parallel_match_one_device_and_resume(tmp_path):
    """``train_lm.py`` on 4 virtual devices (JAX) vs one device, same flags (23 validation
    windows, batch 8):

    - ``--distribute model_parallel --mesh 2,2`` and ``--distribute data_parallel`` train to the
      one-device losses (1e-4); their validation keeps 22 / 20 of the 23 windows (what the 2- /
      4-way batch axis can split) and its loss is the exact mean over those (re-evaluated here,
      on one device, from ``last.keras``);
    - a model-parallel run SIGKILLed after the first step of epoch 1 and started again resumes
      from its backup and ends with bit-identical weights to the uninterrupted model-parallel
      run; its ``last.keras`` loads here on one device with those weights.
    """
    pytest.importorskip("jax")
    from distribution_helpers import RECIPE_ARGS, final_weights, start_example

    def start(name, *extra, logdir=None, **variables):
        args = [*RECIPE_ARGS, "--logdir", str(tmp_path / (logdir or name)), *extra]
        return start_example(tmp_path, "train_lm.py", name, args, "jax", **variables)

    mp = ["--distribute", "model_parallel", "--mesh", "2,2"]
    killed_process, _ = start("killed", *mp, kill_at="1,0", **FOUR_DEVICES)
    started = {
        "single": start("single"),
        "mesh": start("mesh", *mp, **FOUR_DEVICES),
        "dp": start("dp", "--distribute", "data_parallel", **FOUR_DEVICES),
    }
    killed_process.communicate(timeout=600)
    assert killed_process.returncode == -9  # SIGKILLed in epoch 1
    resumed = finish(*start("resumed", *mp, logdir="killed", **FOUR_DEVICES))
    results = {key: finish(*pair) for key, pair in started.items()}
    for key, kept in (("mesh", 22), ("dp", 20)):
        np.testing.assert_allclose(results[key]["loss"], results["single"]["loss"], atol=1e-4)
        assert f"validation: {kept} of 23 examples" in results[key]["stdout"], key
    assert "Resuming the interrupted run" in resumed["stdout"]
    assert len(resumed["loss"]) == 1  # epoch 1 only, from the backup of epoch 0
    uninterrupted = final_weights(tmp_path / "mesh.json")
    after_resume = final_weights(tmp_path / "resumed.json")
    for a, b in zip(uninterrupted, after_resume):
        np.testing.assert_array_equal(a, b)  # bit-identical
    loaded = keras.saving.load_model(str(tmp_path / "killed" / "last.keras"))
    for variable, expected in zip(loaded.weights, after_resume):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable.value), expected)
    # the data-parallel validation loss is the mean over the 20 windows kept, on one device
    with np.load(str(tmp_path / "dp.json") + ".val.npz") as val:
        x_val, y_val = val["x"][:20], val["y"][:20]
    dp = keras.saving.load_model(str(tmp_path / "dp" / "last.keras"))
    val_loss = dp.evaluate(x_val, y_val, batch_size=8, verbose=0, return_dict=True)["loss"]
    np.testing.assert_allclose(val_loss, results["dp"]["history"]["val_loss"][-1], rtol=1e-5)
