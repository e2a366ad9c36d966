"""The way back: ``kt.models.hub.to_keras_hub(model)`` for the architectures keras-hub has.

A :class:`~keras_transformers.models.DecoderLM` built with GPT-2's arguments (learned positions,
LayerNorm, ``gelu_approximate``, tied head, biases) becomes a ``keras_hub.models.GPT2Backbone``;
one with Llama's (RMSNorm, SwiGLU, no biases, RoPE without scaling, untied head) a
``LlamaBackbone``. The weights are split back: our fused ``[q | k | v]`` kernel into keras-hub's
``(d, h, dh)`` kernels, the fused ``[W_gate | W_up]`` into its two dense layers. Other
architectures (a swapped attention core, QK-norm, ...) have no keras-hub class and raise a
``ValueError`` naming the argument that differs.
"""

import keras
import numpy as np


def _array(variable):
    return np.asarray(keras.ops.convert_to_numpy(variable), "float32")


def _require(config, expected, family):
    for key, value in expected.items():
        if config.get(key) != value:
            raise ValueError(
                f"to_keras_hub: {key}={config.get(key)!r}; a keras-hub {family} needs "
                f"{key}={value!r}."
            )


def _split_qkv(block, d, heads, kv_heads, head_dim):
    """Block's fused projection as keras-hub's per-head ``(d, h, dh)`` q, k, v kernels (and
    ``(h, dh)`` biases when present)."""
    attention = block.self_attention
    sizes = np.cumsum([heads * head_dim, kv_heads * head_dim])
    kernel = _array(attention.qkv_dense.kernel)  # (d, (h + 2 h_kv) dh)
    q, k, v = np.split(kernel, sizes, axis=-1)
    kernels = [
        q.reshape(d, heads, head_dim),
        k.reshape(d, kv_heads, head_dim),
        v.reshape(d, kv_heads, head_dim),
    ]
    biases = None
    if attention.qkv_dense.bias is not None:
        bq, bk, bv = np.split(_array(attention.qkv_dense.bias), sizes)
        biases = [bq.reshape(heads, head_dim), bk.reshape(kv_heads, head_dim)]
        biases.append(bv.reshape(kv_heads, head_dim))
    output = _array(attention.output_dense.kernel).reshape(heads, head_dim, d)
    return kernels, biases, output


def _assign(backbone, arrays):
    """Assign ``{variable path without the backbone name: array}`` to ``backbone``."""
    prefix = backbone.name + "/"
    variables = {v.path[len(prefix) :] if v.path.startswith(prefix) else v.path: v
                 for v in backbone.weights}  # fmt: skip
    missing = sorted(set(variables) - set(arrays))
    if missing:
        raise ValueError(f"to_keras_hub: no value for {missing[:3]} of the keras-hub backbone.")
    for path, array in arrays.items():
        variables[path].assign(array)
    return backbone


def _attention(arrays, src, kernels, biases, output, names, output_bias=None):
    for name, kernel in zip(names[:3], kernels):
        arrays[f"{src}{name}/kernel"] = kernel
    arrays[f"{src}{names[3]}/kernel"] = output
    if biases is not None:
        for name, bias in zip(names[:3], biases):
            arrays[f"{src}{name}/bias"] = bias
        arrays[f"{src}{names[3]}/bias"] = output_bias


def _to_gpt2(model, config):
    import keras_hub

    _require(
        config,
        {"position": "learned", "activation": "gelu_approximate", "tie_embeddings": True},
        "GPT2Backbone",
    )
    d, heads = config["d_model"], config["num_heads"]
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=config["vocab_size"],
        num_layers=config["num_layers"],
        num_heads=heads,
        hidden_dim=d,
        intermediate_dim=config["ff_dim"] or 4 * d,
        dropout=config["dropout"],
        max_sequence_length=config["max_length"],
    )
    arrays = {
        "token_embedding/embeddings": _array(model.token_embedding.embeddings),
        "position_embedding/embeddings": _array(model.position_embedding.table),
        "layer_norm/gamma": _array(model.final_norm.gamma),
        "layer_norm/beta": _array(model.final_norm.beta),
    }
    for i, block in enumerate(model.transformer_layers):
        src = f"transformer_layer_{i}/"
        kernels, biases, output = _split_qkv(block, d, heads, heads, d // heads)
        names = ("query", "key", "value", "attention_output")
        output_bias = _array(block.self_attention.output_dense.bias)
        _attention(arrays, src + "self_attention/", kernels, biases, output, names, output_bias)
        for mine, theirs in (
            (block.self_attention_norm, "self_attention_layer_norm"),
            (block.feedforward_norm, "feedforward_layer_norm"),
        ):
            arrays[f"{src}{theirs}/gamma"] = _array(mine.gamma)
            arrays[f"{src}{theirs}/beta"] = _array(mine.beta)
        for mine, theirs in (
            (block.feedforward.inner, "feedforward_intermediate_dense"),
            (block.feedforward.outer, "feedforward_output_dense"),
        ):
            arrays[f"{src}{theirs}/kernel"] = _array(mine.kernel)
            arrays[f"{src}{theirs}/bias"] = _array(mine.bias)
    return _assign(backbone, arrays)


def _to_llama(model, config):
    import keras_hub

    position = config["position"]
    if not isinstance(position, dict) or position.get("name") != "rope" or position.get("scaling"):
        raise ValueError(f"to_keras_hub: position={position!r}; a LlamaBackbone needs plain RoPE.")
    _require(
        config,
        {"activation": "swiglu", "tie_embeddings": False, "use_bias": False, "qk_norm": False},
        "LlamaBackbone",
    )
    if config.get("attention", "full") != "full" or config.get("head_dim") is not None:
        raise ValueError("to_keras_hub: a LlamaBackbone needs attention='full', head_dim=None.")
    d, heads = config["d_model"], config["num_heads"]
    kv_heads = config["num_key_value_heads"] or heads
    backbone = keras_hub.models.LlamaBackbone(
        vocabulary_size=config["vocab_size"],
        num_layers=config["num_layers"],
        num_query_heads=heads,
        num_key_value_heads=kv_heads,
        hidden_dim=d,
        intermediate_dim=config["ff_dim"] or 4 * d,
        rope_max_wavelength=position.get("max_wavelength", 10000.0),
        layer_norm_epsilon=config["layer_norm_epsilon"],
        dropout=config["dropout"],
    )
    arrays = {
        "token_embedding/embeddings": _array(model.token_embedding.embeddings),
        "token_embedding/reverse_embeddings": _array(model.token_embedding.reverse_embeddings),
        "sequence_output_layernorm/scale": _array(model.final_norm.scale),
    }
    for i, block in enumerate(model.transformer_layers):
        src = f"transformer_layer_{i}/"
        kernels, _, output = _split_qkv(block, d, heads, kv_heads, d // heads)
        names = ("query", "key", "value", "attention_output")
        _attention(arrays, src + "self_attention/", kernels, None, output, names)
        gate, up = np.split(_array(block.feedforward.inner.kernel), 2, axis=-1)
        arrays[src + "feedforward_gate_dense/kernel"] = gate
        arrays[src + "feedforward_intermediate_dense/kernel"] = up
        arrays[src + "feedforward_output_dense/kernel"] = _array(block.feedforward.outer.kernel)
        arrays[src + "self_attention_layernorm/scale"] = _array(block.self_attention_norm.scale)
        arrays[src + "feedforward_layernorm/scale"] = _array(block.feedforward_norm.scale)
    return _assign(backbone, arrays)


def to_keras_hub(model):
    """A keras-hub backbone computing ``model``'s function (GPT-2 or Llama architectures).

    Args:
        model: a :class:`~keras_transformers.models.DecoderLM` whose arguments are GPT-2's
            (``norm="layer"``) or Llama's (``norm="rms"``), e.g. one from
            :func:`~keras_transformers.models.from_keras_hub`.

    Returns:
        ``keras_hub.models.GPT2Backbone`` or ``LlamaBackbone`` with the weights.
    """
    config = model.get_config()
    if type(model).__name__ != "DecoderLM":
        raise ValueError(f"to_keras_hub: {type(model).__name__}; expected a DecoderLM.")
    if config.get("norm", "layer") == "rms":
        return _to_llama(model, config)
    return _to_gpt2(model, config)
