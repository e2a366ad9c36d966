"""ONNX export of the models through Keras' own ``model.export(path, format="onnx")``.

Keras converts a TensorFlow-backend model with tf2onnx. Two things stop the plain conversion of
these models, and :meth:`BackboneModel.export <keras_transformers.models.BackboneModel.export>`
deals with both before and after calling Keras:

- the exact GELU of the feed-forward and the classifier head, ``gelu(x) = x/2 · erfc(-x/√2)`` in
  TensorFlow, lowers to the ``Erfc`` op, which ONNX does not have and tf2onnx 1.17 leaves in the
  graph unconverted (onnxruntime then refuses the file: "No Op registered for Erfc").
  :func:`register_onnx_conversions` teaches tf2onnx ``erfc(x) = 1 - erf(x)`` (ONNX ``Erf``,
  opset >= 9); the difference is far below float32 rounding for the GELU's arguments.
- ``keras.ops.argmax`` of a float tensor lowers on TensorFlow to ``Bitcast`` + ``BitwiseAnd``
  (Keras' negative-zero fix), which tf2onnx cannot convert. The content-routed cores that pick a
  bucket with ``argmax`` (``lsh`` and ``routing``) therefore do not export to ONNX:
  :func:`check_onnx_graph` reads the written graph and raises an error naming the core instead of
  leaving a file onnxruntime refuses.

Every other core exports from TensorFlow (full, local, sliding_window, blockwise, strided, fixed,
longformer, bigbird, etc, linear, performer, rfa, linformer, adaptive_span, distance_aware: tested
with a one-layer model, onnxruntime logits within 2e-6 of Keras'). On PyTorch Keras uses
``torch.onnx``; on JAX it needs the ``jax2onnx`` package, which is not a dependency here
(``docs/guide/fine-tuning.md`` lists what exports where).
"""

import functools

import numpy as np

#: TensorFlow ops that tf2onnx cannot convert, and the Keras op that emits them in these models.
UNCONVERTIBLE_TF_OPS = {
    "Bitcast": "keras.ops.argmax of a float tensor",
    "BitwiseAnd": "keras.ops.argmax of a float tensor",
}


@functools.cache
def register_onnx_conversions():
    """Register with tf2onnx the conversions these models need (once per process)."""
    from tf2onnx import utils
    from tf2onnx.handler import tf_op

    @tf_op("Erfc")
    class Erfc:  # noqa: F841 - registered by the decorator
        @classmethod
        def version_9(cls, ctx, node, **kwargs):
            """``erfc(x) = 1 - erf(x)``: ONNX has ``Erf`` (opset 9) and no ``Erfc``."""
            dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
            erf = ctx.make_node("Erf", [node.input[0]], op_name_scope=node.name)
            one = ctx.make_const(utils.make_name(node.name + "_one"), np.array(1, dtype))
            node.type = "Sub"
            ctx.replace_inputs(node, [one.output[0], erf.output[0]])


def _cores(model):
    from keras_transformers.attention.base import AttentionCore

    return [
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, AttentionCore)
    ]


def check_onnx_graph(model, filepath):
    """Raise a ValueError naming the cores whose ops did not convert to ONNX.

    tf2onnx writes a graph even when some TensorFlow ops have no ONNX conversion (it keeps them
    as unknown nodes); onnxruntime then refuses the whole file. This reads the graph, finds the
    nodes outside the ONNX operator set and names the core layer they belong to.
    """
    import onnx

    proto = onnx.load(str(filepath), load_external_data=False)
    opset = max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))

    def known(op_type):
        try:
            onnx.defs.get_schema(op_type, opset)
        except onnx.defs.SchemaError:
            return False
        return True

    bad = [n for n in proto.graph.node if n.domain in ("", "ai.onnx") and not known(n.op_type)]
    if not bad:
        return
    ops = sorted({node.op_type for node in bad})
    # node names are TensorFlow name scopes: ".../<core layer name>_<n>/<op>"
    scopes = {part for node in bad for part in node.name.split("/")}
    named = sorted(
        {
            core.variant
            for core in _cores(model)
            if any(s == core.name or s.startswith(core.name + "_") for s in scopes)
        }
    )
    why = "; ".join(f"{op}: {UNCONVERTIBLE_TF_OPS.get(op, 'no tf2onnx conversion')}" for op in ops)
    where = (
        f"attention={named[0]!r} cannot be exported to ONNX"
        if len(named) == 1
        else f"attention cores {named} cannot be exported to ONNX"
        if named
        else f"{type(model).__name__} cannot be exported to ONNX"
    )
    raise ValueError(
        f"{where}: its graph uses TensorFlow ops tf2onnx cannot convert ({why}); onnxruntime "
        f"would refuse {str(filepath)!r}. Export it with format='tf_saved_model' instead, or "
        "build the model with a core that exports (every core except 'lsh' and 'routing')."
    )


def export_onnx(model, filepath, export, **kwargs):
    """``export(filepath, format="onnx", **kwargs)`` (Keras' own) with the conversions above and
    the graph check; a file that does not pass the check is removed."""
    import os

    import keras

    if keras.backend.backend() == "tensorflow":
        register_onnx_conversions()
    result = export(filepath, format="onnx", **kwargs)
    if keras.backend.backend() == "tensorflow" and os.path.exists(filepath):
        try:
            check_onnx_graph(model, filepath)
        except ValueError:
            os.remove(filepath)
            raise
    return result
