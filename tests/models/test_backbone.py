"""One backbone under every model family: parts as attributes, save/load in a fresh process."""

import os
import pickle
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_transformers as kt
from keras_transformers.models.backbone import PARTS, BackboneModel

V, L, B = 23, 8, 2
TINY = dict(d_model=16, num_heads=2)
RNG = np.random.default_rng(0)
IDS = RNG.integers(1, V, size=(B, L)).astype("int32")
PROMPT = IDS[:, :3]

#: family -> (builder, inputs, attributes that must be layers, generates)
FAMILIES = {
    "decoder_lm": (
        lambda: kt.models.build_decoder_lm(V, L, num_layers=2, position="rope", **TINY),
        IDS,
        True,
    ),
    "transformer_xl": (
        lambda: kt.models.build_decoder_lm(
            V, L, num_layers=2, memory_length=4, batch_size=B, **TINY
        ),
        IDS,
        True,
    ),
    "memorizing_lm": (
        lambda: kt.models.build_memorizing_lm(
            V, L, B, memory_size=16, top_k=2, num_layers=2, **TINY
        ),
        IDS,
        True,
    ),
    "universal_lm": (
        lambda: kt.models.build_universal_transformer_lm(V, L, max_steps=2, **TINY),
        IDS,
        True,
    ),
    "early_exit_lm": (
        lambda: kt.models.build_early_exit_lm(V, L, num_layers=2, **TINY),
        IDS,
        True,
    ),
    "encoder_classifier": (
        lambda: kt.models.build_encoder_classifier(V, 3, L, num_layers=2, **TINY),
        IDS,
        False,
    ),
    "universal_classifier": (
        lambda: kt.models.build_universal_transformer_classifier(V, 3, L, max_steps=2, **TINY),
        IDS,
        False,
    ),
    "early_exit_classifier": (
        lambda: kt.models.build_early_exit_classifier(V, 3, L, num_layers=2, **TINY),
        IDS,
        False,
    ),
    "seq2seq": (
        lambda: kt.models.build_seq2seq(V, V + 1, L, L - 2, **TINY),
        {"encoder_token_ids": IDS, "decoder_token_ids": IDS[:, : L - 2]},
        False,
    ),
    "bert_pretrainer": (
        lambda: kt.models.build_bert_pretrainer(V, L, max_selections=2, num_layers=1, **TINY),
        {"token_ids": IDS, "mask_positions": np.array([[1, 2], [0, 5]], "int32")},
        False,
    ),
    "decision_transformer": (
        lambda: kt.models.build_decision_transformer(3, 4, 4, 10, num_layers=1, **TINY),
        {
            "returns_to_go": RNG.normal(size=(B, 4, 1)).astype("float32"),
            "states": RNG.normal(size=(B, 4, 3)).astype("float32"),
            "actions": RNG.integers(0, 4, size=(B, 4)).astype("int32"),
            "timesteps": RNG.integers(0, 10, size=(B, 4)).astype("int32"),
        },
        False,
    ),
    "vit": (
        lambda: kt.models.build_vit(8, 4, 3, channels=1, num_layers=1, **TINY),
        RNG.normal(size=(B, 8, 8, 1)).astype("float32"),
        False,
    ),
}


def _stacks(model):
    """``(holder, prefix)`` of each backbone stack (a task model's ``backbone``; seq2seq's
    ``encoder_`` and ``decoder_`` stacks)."""
    core = getattr(model, "backbone", model)
    if hasattr(core, "encoder_transformer_layers"):
        return [(core, "encoder_"), (core, "decoder_")]
    return [(core, "")]


def _parts(model):
    """What a loaded model must keep: its class and each stack's part layers by attribute."""
    stacks = []
    for core, prefix in _stacks(model):
        present = {
            part: type(getattr(core, prefix + part)).__name__
            for part in ("token_embedding", "position_embedding", "final_norm", "embedding_norm")
            if getattr(core, prefix + part) is not None
        }
        blocks = [type(block).__name__ for block in getattr(core, prefix + "transformer_layers")]
        stacks.append((type(core).__name__, prefix, present, blocks))
    return type(model).__name__, stacks


def _np(x):
    if isinstance(x, dict):
        return {k: _np(v) for k, v in x.items()}
    return np.asarray(keras.ops.convert_to_numpy(x))


@pytest.mark.backends
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_is_a_backbone_model_with_its_parts(family):
    build, inputs, generates = FAMILIES[family]
    model = build()
    assert isinstance(model, BackboneModel)
    for core, prefix in _stacks(model):
        assert isinstance(core, BackboneModel)
        blocks = getattr(core, prefix + "transformer_layers")
        assert blocks and all(isinstance(layer, keras.layers.Layer) for layer in blocks)
        parts = [getattr(core, prefix + part) for part in PARTS if part != "transformer_layers"]
        assert all(layer is None or isinstance(layer, keras.layers.Layer) for layer in parts)
        # every part is a layer of the model graph (not a stray copy)
        in_graph = {id(layer) for layer in core._flatten_layers()}
        assert all(layer is None or id(layer) in in_graph for layer in blocks + parts), family
    assert isinstance(model, kt.models.DecoderLM) == generates
    model(inputs)


@pytest.mark.backends
def test_families_save_and_load_in_a_fresh_process(tmp_path):
    """Each family saves to ``.keras``; a new Python process that imports only
    ``keras_transformers`` loads it with ``keras.saving.load_model`` (no custom_objects) into the
    same class with the same parts, the same outputs and (LMs) the same greedy generation."""
    expected = {}
    for family, (build, inputs, generates) in FAMILIES.items():
        model = build()
        path = str(tmp_path / f"{family}.keras")
        model.save(path)
        generated = (
            model.generate(PROMPT, max_length=L, sampler="greedy", jit=False) if generates else None
        )
        # after save: a stateful model's memory then moves on identically in both processes
        outputs = _np(model(inputs, training=False))
        expected[family] = dict(
            path=path, inputs=inputs, outputs=outputs, parts=_parts(model), generated=generated
        )
    with open(tmp_path / "cases.pkl", "wb") as f:
        pickle.dump({k: dict(path=v["path"], inputs=v["inputs"]) for k, v in expected.items()}, f)
    script = textwrap.dedent(
        f"""
        import pickle, sys
        import numpy as np
        import keras
        import keras_transformers  # noqa: F401  (registers the classes)
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_backbone import PROMPT, L, _np, _parts

        cases = pickle.load(open({str(tmp_path / "cases.pkl")!r}, "rb"))
        results = {{}}
        for family, case in cases.items():
            model = keras.saving.load_model(case["path"])
            generated = None
            if isinstance(model, keras_transformers.models.DecoderLM):  # as in the parent
                generated = model.generate(PROMPT, max_length=L, sampler="greedy", jit=False)
            results[family] = dict(
                outputs=_np(model(case["inputs"], training=False)),
                parts=_parts(model),
                generated=generated,
            )
        pickle.dump(results, open({str(tmp_path / "results.pkl")!r}, "wb"))
        """
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    with open(tmp_path / "results.pkl", "rb") as f:
        results = pickle.load(f)
    for family, want in expected.items():
        got = results[family]
        assert got["parts"] == want["parts"], family
        np.testing.assert_allclose(got["outputs"], want["outputs"], atol=1e-5, err_msg=family)
        if want["generated"] is None:
            assert got["generated"] is None, family
        else:
            np.testing.assert_array_equal(got["generated"], want["generated"], err_msg=family)


def test_backbone_docs_page_runs():
    """The example of docs/models/backbone.md runs as written."""
    import pathlib
    import re

    page = pathlib.Path(__file__).resolve().parents[2] / "docs" / "models" / "backbone.md"
    blocks = re.findall(r"^```python\n(.*?)^```", page.read_text(), re.DOTALL | re.MULTILINE)
    assert blocks
    for source in blocks:
        exec(compile(source, str(page), "exec"), {"__name__": "__docs__"})  # noqa: S102


@pytest.mark.backends
@pytest.mark.parametrize("family", ["decoder_lm", "transformer_xl", "early_exit_lm"])
def test_generate_compiled_matches_recomputation_and_keeps_memories(family):
    """``generate`` (compiled loop) equals greedy recomputation with the model's own call; a
    memory model's memories are the same before and after."""
    model = FAMILIES[family][0]()
    model(IDS)  # fill the memories of a memory model
    state = [_np(v) for v in model.non_trainable_variables]
    out = model.generate(PROMPT, max_length=L - 2, sampler="greedy")
    for variable, before in zip(model.non_trainable_variables, state):
        np.testing.assert_array_equal(_np(variable), before)
    tokens = np.zeros((B, L), "int32")
    tokens[:, :3] = PROMPT
    for t in range(3, L - 2):
        trainable = [v.value for v in model.trainable_variables]
        frozen = [v.value for v in model.non_trainable_variables]
        logits, _ = model.stateless_call(trainable, frozen, tokens)
        logits = _np(model.generation_logits(logits))
        tokens[:, t] = logits[:, t - 1].argmax(-1)
    np.testing.assert_array_equal(out, tokens[:, : L - 2])


def test_a_functional_config_written_before_the_backbone_still_loads():
    """Files written when DecoderLM held a Functional config load as a plain Functional model."""
    lm = kt.models.build_decoder_lm(V, L, num_layers=1, **TINY)
    config = keras.Model(lm.inputs, lm.outputs).get_config()
    revived = kt.models.DecoderLM.from_config(config)
    assert type(revived).__name__ == "Functional"
    assert revived(IDS).shape == (B, L, V)


def test_mixed_precision_model_loads_back_mixed(tmp_path):
    keras.config.set_dtype_policy("mixed_float16")
    lm = kt.models.build_decoder_lm(V, L, num_layers=1, **TINY)
    path = str(tmp_path / "lm.keras")
    lm.save(path)
    keras.config.set_dtype_policy("float32")
    loaded = keras.saving.load_model(path)
    assert loaded.transformer_layers[0].dtype_policy.name == "mixed_float16"
    assert loaded.token_embedding.compute_dtype == "float16"
    np.testing.assert_allclose(_np(loaded(IDS)), _np(lm(IDS)), atol=1e-3)
    assert kt.models.build_decoder_lm(V, L, num_layers=1, **TINY).dtype_policy.name == "float32"
