"""Llama (Touvron et al., 2023), Llama 3 (Grattafiori et al., 2024) and Mistral (Jiang et al.,
2023) from keras-hub's ``LlamaBackbone`` / ``Llama3Backbone`` / ``MistralBackbone``.

Pre-norm decoder with RMSNorm (``x / sqrt(mean(x²) + eps) · w``), SwiGLU feed-forward
``(silu(x W_g) ⊙ x W_u) W_2``, no biases, grouped-query attention, RoPE in the rotate-half layout
(dimension ``t`` with ``t + dh/2``, our ``pairing="half"``), an untied output head (keras-hub's
``reverse_embeddings``). Conventions mapped:

- RoPE scaling: Mistral's ``rope_scaling_factor`` (positions divided by ``s``) ->
  ``{"type": "linear", "factor": s}``. Llama's ``rope_position_scaling_factor`` is stored by
  keras-hub 0.32 but its ``LlamaRotaryEmbedding`` never applies it (its inverse frequencies
  ignore the factor); the converted model computes what keras-hub computes (no linear scaling)
  and logs a warning: pass ``position={"name": "rope", ..., "scaling": {"type": "linear",
  "factor": s}}`` to apply it. Llama 3's
  ``rope_frequency_adjustment_factor``, ``rope_low_freq_factor``, ``rope_high_freq_factor`` and
  ``rope_pretraining_sequence_length`` -> ``{"type": "llama3", "factor", "low_freq_factor",
  "high_freq_factor", "original_max_length"}``.
- Sliding window (Mistral): keras-hub keeps key ``j`` for query ``i`` when ``i - j < W`` (``W``
  keys, the query's own included); our ``sliding_window`` core keeps ``i - w <= j <= i``
  (``w + 1`` keys), so ``window = W - 1``. When ``max_length <= W`` every key is in the window
  and the model uses ``full`` attention (same function, no fixed input length).
- Fused feed-forward: our ``inner`` kernel is ``[W_g | W_u]`` (gate first).
"""

import numpy as np

from keras_transformers.models.hub.common import Conversion, attention_weights, logger

#: max_length given to the builder when the source has no position table (RoPE): the longest
#: generation; override with ``max_length=``
DEFAULT_MAX_LENGTH = 2048


def rope_position(config):
    """Our ``position=`` config dict for keras-hub's RoPE arguments."""
    position = {"name": "rope", "max_wavelength": float(config["rope_max_wavelength"])}
    ignored = config.get("rope_position_scaling_factor")  # Llama: never applied by keras-hub
    if ignored not in (None, 1.0):
        logger.warning(
            "rope_position_scaling_factor=%s: keras-hub's LlamaRotaryEmbedding does not apply "
            "it, so neither does the converted model (to apply it, pass position={'name': "
            "'rope', 'max_wavelength': %s, 'scaling': {'type': 'linear', 'factor': %s}}).",
            ignored,
            position["max_wavelength"],
            ignored,
        )
    linear = config.get("rope_scaling_factor", 1.0)  # Mistral, Mixtral
    llama3 = config.get("rope_frequency_adjustment_factor")
    if llama3 is not None:
        position["scaling"] = {
            "type": "llama3",
            "factor": float(llama3),
            "low_freq_factor": float(config["rope_low_freq_factor"]),
            "high_freq_factor": float(config["rope_high_freq_factor"]),
            "original_max_length": int(config["rope_pretraining_sequence_length"]),
        }
    elif linear not in (None, 1.0):
        position["scaling"] = {"type": "linear", "factor": float(linear)}
    return position


def sliding_window_attention(window, max_length):
    """Our ``attention=`` for keras-hub's ``sliding_window`` ``W`` (``i - j < W``): ``window =
    W - 1`` (``i - w <= j``), or ``"full"`` when ``W`` covers ``max_length``."""
    if window is None or int(window) >= int(max_length):
        return "full"
    return {"name": "sliding_window", "window": int(window) - 1}


def decoder_arguments(config, family):
    """Builder arguments shared by the Llama-shaped families (Llama, Mistral, Mixtral)."""
    hidden = config["hidden_dim"]
    heads = config["num_query_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    arguments = dict(
        vocab_size=config["vocabulary_size"],
        max_length=DEFAULT_MAX_LENGTH,
        d_model=hidden,
        num_heads=heads,
        num_layers=config["num_layers"],
        ff_dim=config["intermediate_dim"],
        num_key_value_heads=config["num_key_value_heads"],
        position=rope_position(config),
        dropout=float(config.get("dropout") or 0.0),
        activation="swiglu",
        norm="rms",
        layer_norm_epsilon=float(config["layer_norm_epsilon"]),
        use_bias=False,
        norm_first=True,
        tie_embeddings=False,
        name=family,
    )
    if head_dim != hidden // heads:
        arguments["head_dim"] = head_dim
    return arguments


def window_adjust(config):
    """The :class:`Conversion` ``adjust`` that sets the sliding window for the final
    ``max_length`` (None when the source has no window)."""
    window = config.get("sliding_window")
    if window is None:
        return None

    def adjust(arguments):
        attention = sliding_window_attention(window, arguments["max_length"])
        return {**arguments, "attention": attention}

    return adjust


def attention_and_norms(i, weights):
    """Block ``i``'s attention and RMSNorm scales (keras-hub Llama/Mistral/Mixtral names)."""
    src = f"transformer_layer_{i}/"
    att = src + "self_attention/"
    ours = attention_weights(
        i,
        *(weights[f"{att}{role}/kernel"] for role in ("query", "key", "value")),
        weights[f"{att}attention_output/kernel"],
    )
    block = f"transformer_layers.{i}."
    ours[block + "self_attention_norm.scale"] = weights[src + "self_attention_layernorm/scale"]
    ours[block + "feedforward_norm.scale"] = weights[src + "feedforward_layernorm/scale"]
    return ours


def embeddings_and_final_norm(weights):
    """Token embedding, the untied head and the final RMSNorm."""
    return {
        "token_embedding.embeddings": weights["token_embedding/embeddings"],
        "token_embedding.reverse_embeddings": weights["token_embedding/reverse_embeddings"],
        "final_norm.scale": weights["sequence_output_layernorm/scale"],
    }


def convert(backbone, weights):
    """:class:`Conversion` of a Llama, Llama 3 or Mistral backbone."""
    config = backbone.get_config()
    family = "mistral" if "sliding_window" in config else "llama"
    arguments = decoder_arguments(config, family)
    ours = embeddings_and_final_norm(weights)
    for i in range(config["num_layers"]):
        src = f"transformer_layer_{i}/"
        ours.update(attention_and_norms(i, weights))
        ours[f"transformer_layers.{i}.feedforward.inner.kernel"] = np.concatenate(
            [
                weights[src + "feedforward_gate_dense/kernel"],
                weights[src + "feedforward_intermediate_dense/kernel"],
            ],
            axis=-1,
        )
        ours[f"transformer_layers.{i}.feedforward.outer.kernel"] = weights[
            src + "feedforward_output_dense/kernel"
        ]
    return Conversion(family, "decoder_lm", arguments, ours, adjust=window_adjust(config))
