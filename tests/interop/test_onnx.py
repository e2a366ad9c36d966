"""ONNX through Keras' own ``model.export(path, format="onnx")``, run with onnxruntime: the
full-attention decoder LM and the encoder classifier serve the same logits; a core whose ops
tf2onnx cannot convert (``lsh``, ``routing``: ``keras.ops.argmax`` lowers to ``Bitcast``) is
named in a ValueError instead of a file onnxruntime refuses.

TensorFlow backend (Keras converts with tf2onnx). JAX: Keras converts with the ``jax2onnx``
package, not a dependency here. PyTorch: Keras' ``torch.onnx`` path needs ``onnxscript`` for
the dynamo exporter, and its TorchScript fallback refuses the tied embedding's parameter
("Cannot insert a Tensor that requires grad as a constant"); see docs/guide/fine-tuning.md.
"""

import keras
import numpy as np
import pytest

import keras_transformers as kt

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")

if keras.backend.backend() != "tensorflow":
    pytest.skip(
        "ONNX export is tested on TensorFlow (tf2onnx); JAX needs jax2onnx (not installed), "
        "PyTorch's torch.onnx refuses the tied embedding",
        allow_module_level=True,
    )

SMALL = dict(vocab_size=40, max_length=12, d_model=16, num_heads=2, num_layers=1, ff_dim=32)


def _serve(path, x):
    session = ort.InferenceSession(str(path))
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize(
    "build",
    [
        lambda: kt.models.build_decoder_lm(**SMALL),
        pytest.param(
            lambda: kt.models.build_encoder_classifier(num_classes=3, **SMALL),
            marks=pytest.mark.slow,
        ),
    ],
    ids=["decoder_lm", "classifier"],
)
def test_onnx_serves_the_same_logits(build, tmp_path):
    model = build()
    x = np.random.default_rng(0).integers(1, 40, size=(3, 12)).astype("int32")
    want = keras.ops.convert_to_numpy(model(x))
    path = tmp_path / "model.onnx"
    model.export(str(path), format="onnx", verbose=False)
    np.testing.assert_allclose(_serve(path, x), want, atol=1e-4)
    # the batch is dynamic in the exported graph
    np.testing.assert_allclose(_serve(path, x[:1]), want[:1], atol=1e-4)


@pytest.mark.slow
def test_a_core_that_cannot_export_is_named(tmp_path):
    model = kt.models.build_decoder_lm(
        attention=kt.attention.REGISTRY.get("lsh", num_buckets=4, num_hashes=1, chunk_size=4),
        **SMALL,
    )
    model(np.ones((1, 12), "int32"))  # Keras exports models that have been called
    path = tmp_path / "lsh.onnx"
    with pytest.raises(ValueError, match="attention='lsh' cannot be exported to ONNX.*Bitcast"):
        model.export(str(path), format="onnx", verbose=False)
    assert not path.exists()


def test_the_graph_check_names_the_core_of_an_unknown_op(tmp_path):
    """The check itself, on a hand-made graph: a node outside the ONNX operator set, inside the
    name scope of a core layer (as tf2onnx writes it), names that core."""
    import onnx
    from onnx import TensorProto, helper

    from keras_transformers.models.export import check_onnx_graph

    model = kt.models.build_decoder_lm(attention="local", **SMALL)
    core = next(
        layer for layer in model._flatten_layers() if isinstance(layer, kt.attention.AttentionCore)
    )
    node = helper.make_node("Bitcast", ["x"], ["y"], name=f"decoder_lm/b_0/{core.name}_1/Bitcast")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [1])],
    )
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)]), str(path))
    with pytest.raises(ValueError, match="attention='local' cannot be exported to ONNX"):
        check_onnx_graph(model, path)
