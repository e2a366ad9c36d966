"""Mixtral (Jiang et al., 2024) from a keras-hub ``MixtralBackbone``.

Llama-shaped blocks (RMSNorm, GQA, RoPE, untied head, sliding window ``W`` mapped as for
Mistral: ``window = W - 1``) whose feed-forward is a sparse mixture of ``E`` SwiGLU experts:
``p = softmax(x W_r)``, the top-``k`` experts' weights renormalised to sum 1,
``y = Σ_e g_e · FFN_e(x)`` (our ``feedforward="moe"``, :class:`kt.blocks.MixtureOfExperts`).

keras-hub stacks the experts' kernels as ``(E, d, ff)`` / ``(E, ff, d)``; ours are ``E``
FeedForward layers, ``experts[e].inner = [W_g | W_u]`` (gate first) and ``experts[e].outer``.
keras-hub's ``router_aux_loss_coef`` becomes ``router_aux_loss_weight``; its
``router_jitter_noise`` (training-time noise on the router input) has no counterpart and must be
0.
"""

import numpy as np

from keras_transformers.models.hub.common import Conversion
from keras_transformers.models.hub.llama import (
    attention_and_norms,
    decoder_arguments,
    embeddings_and_final_norm,
    window_adjust,
)


def moe_prefix(weights, i):
    """Block ``i``'s mixture path (keras-hub names it ``mixtral_sparse_moe_block`` in the first
    block, ``mixtral_sparse_moe_block_<n>`` in the others)."""
    block = f"transformer_layer_{i}/"
    for name in weights:
        if name.startswith(block) and name.endswith("/sparse_feedforward_gate_dense/kernel"):
            return name[: -len("sparse_feedforward_gate_dense/kernel")]
    raise KeyError(f"no mixture-of-experts router under {block!r} in the backbone's weights")


def convert(backbone, weights):
    """:class:`Conversion` of a ``MixtralBackbone``."""
    config = backbone.get_config()
    if config.get("router_jitter_noise"):
        raise NotImplementedError(
            f"router_jitter_noise={config['router_jitter_noise']}: router noise has no "
            "counterpart in kt.blocks.MixtureOfExperts; use a backbone with 0."
        )
    arguments = decoder_arguments(config, "mixtral")
    arguments.update(
        feedforward="moe",
        num_experts=config["num_experts"],
        num_experts_per_token=config["top_k"],
        router_aux_loss_weight=float(config["router_aux_loss_coef"]),
    )
    ours = embeddings_and_final_norm(weights)
    for i in range(config["num_layers"]):
        ours.update(attention_and_norms(i, weights))
        src = moe_prefix(weights, i)
        moe = f"transformer_layers.{i}.feedforward."
        ours[moe + "router.kernel"] = weights[src + "sparse_feedforward_gate_dense/kernel"]
        gate = weights[src + "experts/expert_feedforward_gate_dense"]  # (E, d, ff)
        up = weights[src + "experts/expert_feedforward_intermediate_dense"]  # (E, d, ff)
        down = weights[src + "experts/expert_feedforward_output_dense"]  # (E, ff, d)
        for e in range(config["num_experts"]):
            ours[f"{moe}experts.{e}.inner.kernel"] = np.concatenate([gate[e], up[e]], axis=-1)
            ours[f"{moe}experts.{e}.outer.kernel"] = down[e]
    return Conversion("mixtral", "decoder_lm", arguments, ours, adjust=window_adjust(config))
