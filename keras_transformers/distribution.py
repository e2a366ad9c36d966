"""Model parallelism on Keras' own engine: a ``LayoutMap`` for every backbone of this package.

:func:`get_layout_map` returns a ``keras.distribution.LayoutMap`` that shards the backbone's
weights in the Megatron-LM way (Shoeybi et al., 2019, "Megatron-LM: Training Multi-Billion
Parameter Language Models Using Model Parallelism"): in each block the projections that fan out
(fused ``q, k, v``, cross-attention ``query`` / ``kv``, the feed-forward ``inner``) are split
column-wise over the ``model`` axis of the device mesh and the projections that fan in (attention
``output``, feed-forward ``outer``) row-wise, so a block needs one all-reduce per sub-layer in
the forward pass::

    h = x W_in          W_in  (d, n):  columns over "model"  -> each device holds n / M columns
    y = act(h) W_out    W_out (n, d):  rows over "model"     -> partial sums, one all-reduce

The token embedding ``(V, d)`` is split over the vocabulary (its reverse call, the tied LM head,
then yields logits split over ``V``). As keras-hub's backbones do, the other axis of each of these
matrices is split over the ``batch`` axis (ZeRO-3 / FSDP-style: a data-parallel replica holds
only its share of the weights and gathers them per step); give ``data_parallel_dim_name=None``
(or a mesh without that axis) for plain Megatron with those axes replicated. Norms, biases of
the fan-in projections, position tables, the classifier heads and every attention core's own
weights (random features, LSH rotations, routing centroids, relative-position tables, ...) are
replicated: they are ``O(d)``, ``O(h·dh)`` or ``O(L·dh)`` numbers, and splitting them would cost
a collective per use for no memory.

Keys are regular expressions ``re.fullmatch``-ed against ``variable.path``; a path matches at most
one (Keras refuses two). Optimizer slots take their variable's layout, so AdamW's moments are
sharded alike. The paths are those of :class:`~keras_transformers.models.BackboneModel` (every
builder's and every ``kt.models.from_keras_hub`` model's): ``token_embedding/embeddings``,
``<block>/self_attention/qkv/kernel``, ``<block>/feedforward/inner/kernel``, ... LoRA factors
(``lora_kernel_a`` / ``lora_kernel_b``) follow their kernel's split axis. A mixture-of-experts
feed-forward (``feedforward="moe"``) holds one FeedForward per expert
(``feedforward/expert_<e>/inner``, ``.../outer``): each expert is split column/row-wise like the
dense one (tensor parallel inside every expert), its router replicated.

Every split axis must divide by the mesh axis (``d_model``, ``ff_dim``, the fused projection
widths and the vocabulary by the ``model`` size; ``d_model`` by the ``batch`` size). Keras'
``ModelParallel`` then raises JAX's ``IndivisibleError``; :class:`ModelParallel` of this module
replicates such an axis instead (and says which) — use it when the sizes are not under your
control, e.g. a 260-token byte vocabulary on 8 devices.

Example (JAX, 4 devices as ``batch`` 2 x ``model`` 2)::

    import keras, keras_transformers as kt
    mesh = keras.distribution.DeviceMesh((2, 2), ("batch", "model"),
                                         keras.distribution.list_devices())
    distribution = keras.distribution.ModelParallel(
        layout_map=kt.distribution.get_layout_map(mesh), batch_dim_name="batch")
    with distribution.scope():
        lm = kt.models.build_decoder_lm(vocab_size=256, max_length=128, d_model=256,
                                        num_heads=4, num_layers=4)
        lm.compile(optimizer="adamw", loss=...)
        lm.fit(...)
    lm.save("lm.keras")   # loads on one device with keras.saving.load_model
"""

import warnings

import keras

# Fused-name alternatives of the attention shell's projections (MultiHeadAttention._dense names).
_FAN_OUT_ATTENTION = "(?:qkv|query|key|value|kv)"

#: ``(pattern, kind, what)``: the sharding table. ``kind`` picks the axes in :func:`axes_for`;
#: patterns are ``re.fullmatch``-ed against ``variable.path`` and are mutually exclusive.
RULES = (
    (
        r"(?:.*/)?[^/]*token_embedding/embeddings",
        "vocab",
        "token embedding (V, d): rows (vocabulary) over model",
    ),
    (
        r"(?:.*/)?[^/]*token_embedding/reverse_embeddings",
        "column",
        "untied LM head (d, V): columns (vocabulary) over model",
    ),
    (
        rf"(?:.*/)?[^/]*attention[^/]*/{_FAN_OUT_ATTENTION}/kernel",
        "column",
        "attention q/k/v projections (d, n): column-parallel",
    ),
    (
        rf"(?:.*/)?[^/]*attention[^/]*/{_FAN_OUT_ATTENTION}/bias",
        "column_bias",
        "their biases (n,): over model",
    ),
    (
        r"(?:.*/)?[^/]*attention[^/]*/output/kernel",
        "row",
        "attention output projection (h·dv, d): row-parallel",
    ),
    (
        r"(?:.*/)?(?:ffn_)?inner/kernel",
        "column",
        "feed-forward inner (d, f or 2f gated): column-parallel",
    ),
    (
        r"(?:.*/)?(?:ffn_)?inner/bias",
        "column_bias",
        "its bias (f,): over model",
    ),
    (
        r"(?:.*/)?(?:ffn_)?outer/kernel",
        "row",
        "feed-forward outer (f, d): row-parallel",
    ),
    (
        rf"(?:.*/)?[^/]*attention[^/]*/{_FAN_OUT_ATTENTION}/lora_kernel_b",
        "lora_column",
        "LoRA B (r, n) of a column-parallel kernel: columns over model",
    ),
    (
        r"(?:.*/)?(?:ffn_)?inner/lora_kernel_b",
        "lora_column",
        "LoRA B (r, f) of the feed-forward inner: columns over model",
    ),
    (
        r"(?:.*/)?[^/]*attention[^/]*/output/lora_kernel_a",
        "lora_row",
        "LoRA A (n, r) of a row-parallel kernel: rows over model",
    ),
    (
        r"(?:.*/)?(?:ffn_)?outer/lora_kernel_a",
        "lora_row",
        "LoRA A (f, r) of the feed-forward outer: rows over model",
    ),
)

#: What stays replicated (no rule matches): for the docs table and the report of :func:`describe`.
REPLICATED = (
    "norms (LayerNorm gamma/beta, RMSNorm scale, qk-norm scales)",
    "biases of the row-parallel projections (added after the all-reduce)",
    "position tables (learned, ViT 2D, T5 buckets, Shaw, Transformer-XL u/v/W_R)",
    "attention cores' own weights (Performer/RFA features, LSH rotations, routing centroids, "
    "Linformer E/F, adaptive span, distance-aware scalars, ETC globals)",
    "classifier / regression heads, the mixture-of-experts router, ViT patch embedding and "
    "class token",
    "memories and buffers (kNN keys/values, Transformer-XL carry)",
)


def axes_for(kind, model, data):
    """The mesh axes (one per variable axis) of a rule ``kind`` (see :data:`RULES`)."""
    return {
        "vocab": (model, data),
        "column": (data, model),
        "column_bias": (model,),
        "row": (model, data),
        "lora_column": (None, model),
        "lora_row": (model, None),
    }[kind]


def _check_mesh(device_mesh, model_parallel_dim_name, data_parallel_dim_name):
    if not isinstance(device_mesh, keras.distribution.DeviceMesh):
        raise ValueError(
            f"device_mesh={device_mesh!r}: expected a keras.distribution.DeviceMesh, got "
            f"{type(device_mesh).__name__}."
        )
    names = tuple(device_mesh.axis_names)
    if model_parallel_dim_name not in names:
        raise ValueError(
            f"model_parallel_dim_name={model_parallel_dim_name!r} is not an axis of the device "
            f"mesh; its axis_names are {names}."
        )
    if data_parallel_dim_name is not None and data_parallel_dim_name not in names:
        raise ValueError(
            f"data_parallel_dim_name={data_parallel_dim_name!r} is not an axis of the device "
            f"mesh; its axis_names are {names} (None: weights are not split over batch)."
        )
    if data_parallel_dim_name == model_parallel_dim_name:
        raise ValueError(
            f"data_parallel_dim_name={data_parallel_dim_name!r} must differ from "
            f"model_parallel_dim_name={model_parallel_dim_name!r}."
        )


def get_layout_map(device_mesh, model_parallel_dim_name="model", data_parallel_dim_name="batch"):
    """A ``keras.distribution.LayoutMap`` sharding any backbone of this package (see the module).

    Args:
        device_mesh: a ``keras.distribution.DeviceMesh``, e.g. shape ``(2, 2)`` with axis names
            ``("batch", "model")``.
        model_parallel_dim_name: the mesh axis the weights are split over (Megatron).
        data_parallel_dim_name: the mesh axis the batch is split over; the other axis of the
            large matrices is split over it too (ZeRO-3 style). None: those axes replicated.

    Returns:
        the ``LayoutMap`` for ``keras.distribution.ModelParallel(layout_map=...,
        batch_dim_name=data_parallel_dim_name)`` (or :class:`ModelParallel`).

    Raises:
        ValueError: ``device_mesh`` is not a ``DeviceMesh`` or lacks an axis named here.
    """
    _check_mesh(device_mesh, model_parallel_dim_name, data_parallel_dim_name)
    layout_map = keras.distribution.LayoutMap(device_mesh)
    for pattern, kind, _ in RULES:
        layout_map[pattern] = axes_for(kind, model_parallel_dim_name, data_parallel_dim_name)
    return layout_map


def _dividing_axes(layout, shape, mesh):
    """``layout.axes`` with every mesh axis that does not divide its dimension set to None."""
    sizes = dict(zip(mesh.axis_names, mesh.shape))
    axes = list(layout.axes)
    if len(axes) != len(shape):
        return [None] * len(shape), [f"rank {len(shape)} != layout {tuple(axes)}"]
    dropped = []
    for i, (axis, dim) in enumerate(zip(axes, shape)):
        if axis is not None and (dim is None or int(dim) % sizes[axis]):
            dropped.append(f"axis {i} ({dim}) by {axis!r} ({sizes[axis]})")
            axes[i] = None
    return axes, dropped


class ModelParallel(keras.distribution.ModelParallel):
    """Keras' ``ModelParallel`` that replicates a variable axis its mesh axis does not divide.

    ``keras.distribution.ModelParallel`` hands the layout map's axes to JAX, which refuses a
    split that does not divide (a 260-token vocabulary over 8 devices). This subclass keeps
    every axis that divides, replicates the others and warns once per variable, naming it. The
    arguments are Keras' (``layout_map=``, ``batch_dim_name=``, ``auto_shard_dataset=``).
    """

    def get_variable_layout(self, variable):
        layout = super().get_variable_layout(variable)
        if getattr(variable, "_layout", None) is not None:
            return layout
        axes, dropped = _dividing_axes(layout, variable.shape, self.device_mesh)
        if not dropped:
            return layout
        warnings.warn(
            f"{variable.path} {tuple(variable.shape)}: replicated on {', '.join(dropped)}; "
            "it does not divide.",
            stacklevel=2,
        )
        return keras.distribution.TensorLayout(axes, self.device_mesh)


def rule_for(path):
    """The :data:`RULES` entry ``(pattern, kind, what)`` matching ``path``, or None (replicated).

    Raises:
        ValueError: when two rules match (the table must stay exclusive, as Keras requires).
    """
    import re

    found = [rule for rule in RULES if re.fullmatch(rule[0], path)]
    if len(found) > 1:
        raise ValueError(f"{path}: matched by {len(found)} rules {[r[0] for r in found]}.")
    return found[0] if found else None


def describe(model, layout_map=None):
    """Where each weight of ``model`` goes: rows ``(path, shape, axes or None, sharding)``.

    ``axes`` is the layout map's entry (None: replicated); ``sharding`` is the live placement
    of the variable's value when the backend reports one (JAX ``NamedSharding.spec``), else "".
    """
    rows = []
    for variable in model.weights:
        layout = None if layout_map is None else layout_map[variable.path]
        value = variable.value
        sharding = getattr(getattr(value, "sharding", None), "spec", "")
        rows.append(
            (
                variable.path,
                tuple(variable.shape),
                None if layout is None else tuple(layout.axes),
                str(sharding),
            )
        )
    return rows
