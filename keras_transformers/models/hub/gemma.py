"""Gemma (Gemma Team, 2024) from a keras-hub ``GemmaBackbone``.

Pre-norm decoder, RMSNorm, GeGLU with the tanh GELU, ``head_dim`` independent of
``d_model / h``, multi-query / grouped attention, RoPE, token embeddings multiplied by
``sqrt(d_model)``, tied head, optional final logit soft-cap ``c · tanh(z / c)``. Conventions mapped:

- Norm scale: Gemma's RMSNorm multiplies by ``(1 + w)``; ours by ``w``: we load ``1 + w``.
- Query scaling: an attention layer with ``query_head_dim_normalize=False`` scales scores by
  ``1 / sqrt(d_model / h)`` instead of ``1 / sqrt(head_dim)``; the ratio is folded into the
  query kernel (RoPE is linear, so scaling ``q`` before or after it is the same). The flag is
  read from each block's attention layer: keras-hub 0.32's ``GemmaBackbone`` stores the
  backbone argument but does not pass it to its blocks, which keep ``True``.
- RoPE layout: keras-hub rotates in the rotate-half layout then interleaves the two halves of
  ``q`` and ``k`` alike; the same permutation on both leaves every score unchanged, so our
  ``pairing="half"`` matches.
- Kernels: keras-hub's ``(h, d, dh)`` query/key/value become ``(d, h, dh)``; its
  ``intermediate_dim`` is the width of gate + up, so ``ff_dim = intermediate_dim / 2``.

Gemma 2 features (post-attention/feed-forward norms, attention soft-cap, alternating sliding
windows) are not options of our builder; such a backbone raises ``NotImplementedError``.
"""

import numpy as np

from keras_transformers.models.hub.common import Conversion, attention_weights
from keras_transformers.models.hub.llama import DEFAULT_MAX_LENGTH

GEMMA2_OPTIONS = (
    "use_post_ffw_norm",
    "use_post_attention_norm",
    "attention_logit_soft_cap",
    "use_sliding_window_attention",
)


def convert(backbone, weights):
    """:class:`Conversion` of a ``GemmaBackbone`` (Gemma 1 layout)."""
    config = backbone.get_config()
    unsupported = [name for name in GEMMA2_OPTIONS if config.get(name)]
    if unsupported:
        raise NotImplementedError(
            f"GemmaBackbone with {', '.join(f'{n}={config[n]!r}' for n in unsupported)}: these "
            "Gemma 2 options have no counterpart in kt.models.build_decoder_lm yet."
        )
    hidden, heads, head_dim = config["hidden_dim"], config["num_query_heads"], config["head_dim"]
    arguments = dict(
        vocab_size=config["vocabulary_size"],
        max_length=DEFAULT_MAX_LENGTH,
        d_model=hidden,
        num_heads=heads,
        num_layers=config["num_layers"],
        ff_dim=config["intermediate_dim"] // 2,
        num_key_value_heads=config["num_key_value_heads"],
        head_dim=head_dim,
        position={"name": "rope", "max_wavelength": 10000.0},
        dropout=float(config.get("dropout") or 0.0),
        activation="geglu_approximate",
        norm="rms",
        layer_norm_epsilon=float(config["layer_norm_epsilon"]),
        use_bias=False,
        norm_first=True,
        tie_embeddings=True,
        scale_embeddings=True,
        logit_soft_cap=config.get("final_logit_soft_cap"),
        name="gemma",
    )
    ours = {
        "token_embedding.embeddings": weights["token_embedding/embeddings"],
        "final_norm.scale": 1.0 + weights["final_normalization/scale"],
    }
    for i in range(config["num_layers"]):
        src = f"decoder_block_{i}/"
        # scores use 1/sqrt(head_dim) here; the layer's other normalisation folds into W_q
        query_factor = 1.0
        if not getattr(backbone.transformer_layers[i].attention, "query_head_dim_normalize", True):
            query_factor = float(np.sqrt(head_dim) / np.sqrt(hidden // heads))

        def heads_last(role, src=src):
            return np.transpose(weights[f"{src}attention/{role}/kernel"], (1, 0, 2))

        ours.update(
            attention_weights(
                i,
                heads_last("query") * query_factor,
                heads_last("key"),
                heads_last("value"),
                weights[src + "attention/attention_output/kernel"],
            )
        )
        block = f"transformer_layers.{i}."
        ours[block + "self_attention_norm.scale"] = 1.0 + weights[src + "pre_attention_norm/scale"]
        ours[block + "feedforward_norm.scale"] = 1.0 + weights[src + "pre_ffw_norm/scale"]
        ours[block + "feedforward.inner.kernel"] = np.concatenate(
            [weights[src + "ffw_gating/kernel"], weights[src + "ffw_gating_2/kernel"]], axis=-1
        )
        ours[block + "feedforward.outer.kernel"] = weights[src + "ffw_linear/kernel"]
    return Conversion("gemma", "decoder_lm", arguments, ours)
