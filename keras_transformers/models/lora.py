"""Low-rank adaptation (LoRA) of any model built from this package's layers.

LoRA (Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language Models") freezes a
pretrained kernel ``W (d_in, d_out)`` and trains a low-rank update beside it:
``W' = W + (alpha / r) · A B`` with ``A (d_in, r)``, ``B (r, d_out)``, ``B = 0`` at the start, so the
adapted model begins as the pretrained one and trains ``r (d_in + d_out)`` numbers per projection.

The attention shell's projections (:class:`kt.attention.MultiHeadAttention`, ``qkv_dense``,
``query_dense``, ``kv_dense``, ``key_dense``, ``value_dense``, ``output_dense``) and the
feed-forward's (:class:`kt.blocks.FeedForward`, ``inner`` and ``outer``) are Keras
``EinsumDense`` / ``Dense`` layers, so Keras' own ``layer.enable_lora(rank)`` works on each of
them. :func:`enable_lora` does it for a whole model, by role, and freezes everything else (as
keras-hub's ``Backbone.enable_lora``). Self-attention fuses ``q, k, v`` in ONE projection: a
target ``"query"``, ``"key"`` or ``"value"`` adapts that fused projection, whose single update
spans the three (one matmul kept, rank shared).

Example:
    >>> import keras_transformers as kt
    >>> from keras_transformers.models.lora import enable_lora
    >>> model = kt.models.build_decoder_lm(vocab_size=20, max_length=8, d_model=16,
    ...                                    num_heads=2, num_layers=1, ff_dim=32)
    >>> len(enable_lora(model, rank=2, targets=("query", "value")))  # one fused qkv per block
    1
"""

import json

import keras
import numpy as np

TARGETS = {
    # target name -> attribute names on MultiHeadAttention ("attention") or FeedForward ("ffn")
    "query": ("attention", ("qkv_dense", "query_dense")),
    "key": ("attention", ("qkv_dense", "kv_dense", "key_dense")),
    "value": ("attention", ("qkv_dense", "kv_dense", "value_dense")),
    "output": ("attention", ("output_dense",)),
    "feedforward": ("ffn", ("inner", "outer")),
}


def _walk(model):
    """Every layer inside ``model`` (depth first, deterministic order), the model excluded."""
    return list(model._flatten_layers(include_self=False))


def _owners():
    from keras_transformers.attention.multi_head import MultiHeadAttention
    from keras_transformers.blocks.feedforward import FeedForward

    return {"attention": MultiHeadAttention, "ffn": FeedForward}


def check_targets(targets):
    """``targets`` as a tuple of accepted names; a clear ValueError otherwise."""
    if isinstance(targets, str):
        targets = (targets,)
    targets = tuple(targets)
    unknown = [t for t in targets if t not in TARGETS]
    if not targets or unknown:
        raise ValueError(
            f"targets={targets!r}: accepted projection names are {', '.join(TARGETS)}."
        )
    return targets


def projection_layers(model, targets=tuple(TARGETS)):
    """The ``Dense`` / ``EinsumDense`` projections of ``model`` that ``targets`` name.

    Found by class (attention shells and feed-forwards anywhere in the model, memory blocks
    included), never by layer name; each layer once, in model order.
    """
    targets = check_targets(targets)
    owners = _owners()
    found, seen = [], set()
    for layer in _walk(model):
        for target in targets:
            kind, attributes = TARGETS[target]
            if not isinstance(layer, owners[kind]):
                continue
            for attribute in attributes:
                dense = getattr(layer, attribute, None)
                if dense is not None and id(dense) not in seen:
                    seen.add(id(dense))
                    found.append(dense)
    return found


def lora_layers(model):
    """The layers of ``model`` with LoRA enabled, in model order."""
    return [layer for layer in _walk(model) if getattr(layer, "lora_enabled", False)]


def enable_lora(model, rank, targets=("query", "value"), lora_alpha=None):
    """Freeze ``model`` and add trainable rank-``rank`` LoRA updates to the projections named.

    Args:
        model: a built model (any builder of this package, or a model holding its layers).
        rank: LoRA rank ``r`` (>= 1).
        targets: projection roles: any of ``query, key, value, output, feedforward``.
        lora_alpha: scale numerator ``alpha`` (default ``rank``: scale 1).

    Returns:
        The list of adapted layers. Only their ``lora_kernel_a`` / ``lora_kernel_b`` train;
        every other weight (kernels, biases, norms, embeddings) is frozen. Compile after this.
    """
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
        raise ValueError(f"rank={rank!r}: must be an int >= 1.")
    targets = check_targets(targets)
    if not model.built:
        raise ValueError("enable_lora: build the model first (call it once or build it).")
    layers = projection_layers(model, targets)
    if not layers:
        raise ValueError(
            f"enable_lora: model {model.name!r} has no projection for targets={targets!r} "
            "(no kt.attention.MultiHeadAttention or kt.blocks.FeedForward inside)."
        )
    already = [layer.path for layer in layers if layer.lora_enabled]
    if already:
        raise ValueError(f"enable_lora: LoRA is already enabled on {', '.join(already)}.")
    model.trainable = True
    for layer in _walk(model):
        layer.trainable = False
    for layer in layers:
        layer.trainable = True
        layer.enable_lora(int(rank), lora_alpha=lora_alpha)
        if layer.bias is not None:
            layer.bias.trainable = False
    model._lora_targets = targets
    return layers


def save_lora_weights(model, filepath):
    """Write only the LoRA weights of ``model`` (``.npz``; rank, alpha and targets included)."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError(f"save_lora_weights: model {model.name!r} has no LoRA layer.")
    if not str(filepath).endswith(".npz"):
        raise ValueError(f"filepath={str(filepath)!r}: must end with '.npz'.")
    arrays = {}
    for i, layer in enumerate(layers):
        arrays[f"{i}/lora_kernel_a"] = keras.ops.convert_to_numpy(layer.lora_kernel_a)
        arrays[f"{i}/lora_kernel_b"] = keras.ops.convert_to_numpy(layer.lora_kernel_b)
    meta = {
        "rank": int(layers[0].lora_rank),
        "lora_alpha": float(layers[0].lora_alpha),
        "targets": list(getattr(model, "_lora_targets", ())),
        "paths": [layer.path for layer in layers],
    }
    np.savez(filepath, __meta__=np.array(json.dumps(meta)), **arrays)


def load_lora_weights(model, filepath):
    """Load LoRA weights written by :func:`save_lora_weights` into ``model``.

    When ``model`` has no LoRA layer yet, LoRA is first enabled with the file's rank, alpha and
    targets (the base weights come from the model, e.g. the pretrained checkpoint).
    """
    with np.load(filepath) as data:
        meta = json.loads(str(data["__meta__"]))
        arrays = {k: data[k] for k in data.files if k != "__meta__"}
    if not lora_layers(model):
        if not meta["targets"]:
            raise ValueError(f"{filepath}: the file names no targets; call enable_lora first.")
        enable_lora(model, meta["rank"], tuple(meta["targets"]), lora_alpha=meta["lora_alpha"])
    layers = lora_layers(model)
    if len(layers) * 2 != len(arrays):
        raise ValueError(
            f"{filepath} holds LoRA weights of {len(arrays) // 2} layers ({meta['paths']}); "
            f"model {model.name!r} has {len(layers)} LoRA layers."
        )
    for i, layer in enumerate(layers):
        for name in ("lora_kernel_a", "lora_kernel_b"):
            variable, value = getattr(layer, name), arrays[f"{i}/{name}"]
            if tuple(variable.shape) != value.shape:
                raise ValueError(
                    f"{filepath}: {name} of layer {i} ({meta['paths'][i]}) has shape "
                    f"{value.shape}; {layer.path} expects {tuple(variable.shape)}."
                )
            variable.assign(value)


def merge_lora(model):
    """Fold every LoRA update into its base kernel (``W <- W + (alpha/r) A B``) and drop ``A, B``.

    The merged model computes the same function with the original structure (no LoRA weights),
    saves and loads as a plain model of its builder, and is trainable again.
    """
    layers = lora_layers(model)
    for layer in layers:
        merged = keras.ops.convert_to_numpy(layer.kernel)  # W + (alpha/r) A B
        del layer.lora_kernel_a
        del layer.lora_kernel_b
        layer.lora_enabled = False
        layer.lora_rank = None
        layer._kernel.assign(merged)
    model.trainable = True
    if hasattr(model, "_lora_targets"):
        del model._lora_targets
    return layers
