"""BLOOM (BigScience, 2022) from a keras-hub ``BloomBackbone``.

Pre-norm decoder with LayerNorm, a LayerNorm right after the token embedding, ALiBi (Press et
al., 2022) instead of position embeddings, tanh-approximated GELU, biases everywhere, tied head.

Conventions mapped: keras-hub adds ``m_h · (j - (L_k - 1))`` to the scores (key position only);
our ``alibi`` adds ``-m_h · |i - j|`` = ``m_h · (j - i)`` on the causal side. The two differ by
``m_h · (i - L_k + 1)``, a constant along each query row, which the softmax removes: the same
slopes ``2^(-8k/h)`` (and interleaving for ``h`` not a power of two) give the same attention.
"""

from keras_transformers.models.hub.common import Conversion, attention_weights
from keras_transformers.models.hub.llama import DEFAULT_MAX_LENGTH


def convert(backbone, weights):
    """:class:`Conversion` of a ``BloomBackbone``."""
    config = backbone.get_config()
    arguments = dict(
        vocab_size=config["vocabulary_size"],
        max_length=DEFAULT_MAX_LENGTH,
        d_model=config["hidden_dim"],
        num_heads=config["num_heads"],
        num_layers=config["num_layers"],
        ff_dim=config["intermediate_dim"],
        position="alibi",
        dropout=float(config.get("dropout") or 0.0),
        activation="gelu_approximate",
        norm="layer",
        layer_norm_epsilon=float(config["layer_norm_epsilon"]),
        embedding_norm=True,
        norm_first=True,
        tie_embeddings=True,
        name="bloom",
    )
    ours = {"token_embedding.embeddings": weights["token_embedding/embeddings"]}
    for ours_name, theirs in (
        ("embedding_norm", "embedding_layernorm"),
        ("final_norm", "final_layernorm"),
    ):
        for kind in ("gamma", "beta"):
            ours[f"{ours_name}.{kind}"] = weights[f"{theirs}/{kind}"]
    for i in range(config["num_layers"]):
        src = f"transformer_layer_{i}/"
        att = src + "self_attention/"
        ours.update(
            attention_weights(
                i,
                *(weights[f"{att}{role}_dense/kernel"] for role in ("query", "key", "value")),
                weights[att + "output_dense/kernel"],
                biases=[
                    weights[f"{att}{role}_dense/bias"]
                    for role in ("query", "key", "value", "output")
                ],
            )
        )
        block = f"transformer_layers.{i}."
        for ours_name, theirs in (
            ("self_attention_norm", "pre_attention_layernorm"),
            ("feedforward_norm", "post_attention_layernorm"),
        ):
            for kind in ("gamma", "beta"):
                ours[f"{block}{ours_name}.{kind}"] = weights[f"{src}{theirs}/{kind}"]
        for ours_name, theirs in (
            ("inner", "mlp_intermediate_dense"),
            ("outer", "mlp_output_dense"),
        ):
            for kind in ("kernel", "bias"):
                ours[f"{block}feedforward.{ours_name}.{kind}"] = weights[f"{src}{theirs}/{kind}"]
    return Conversion("bloom", "decoder_lm", arguments, ours)
