"""GPT-2 (Radford et al., 2019) from a keras-hub ``GPT2Backbone``.

Pre-norm decoder, learned absolute positions, tanh-approximated GELU, LayerNorm ``eps = 1e-5``,
biases everywhere, output head tied to the token embedding. keras-hub keeps q, k, v as separate
``(d, h, dh)`` kernels; ours is one fused ``(d, 3·h·dh)`` matmul ``[q | k | v]``.
"""

from keras_transformers.models.hub.common import Conversion, attention_weights


def convert(backbone, weights):
    """:class:`Conversion` of a ``GPT2Backbone`` (``weights``: its arrays by path)."""
    config = backbone.get_config()
    arguments = dict(
        vocab_size=config["vocabulary_size"],
        max_length=config["max_sequence_length"],
        d_model=config["hidden_dim"],
        num_heads=config["num_heads"],
        num_layers=config["num_layers"],
        ff_dim=config["intermediate_dim"],
        position="learned",
        dropout=config["dropout"],
        activation="gelu_approximate",
        norm_first=True,
        tie_embeddings=True,
        layer_norm_epsilon=1e-5,
        name="gpt2",
    )
    ours = {
        "token_embedding.embeddings": weights["token_embedding/embeddings"],
        "position_embedding.table": weights["position_embedding/embeddings"],
        "final_norm.gamma": weights["layer_norm/gamma"],
        "final_norm.beta": weights["layer_norm/beta"],
    }
    for i in range(config["num_layers"]):
        ours.update(transformer_layer_weights(i, weights, "self_attention"))
    return Conversion(
        "gpt2", "decoder_lm", arguments, ours, truncatable=("position_embedding.table",)
    )


def transformer_layer_weights(i, weights, attention):
    """Our weights of keras-hub's ``TransformerDecoder``/``Encoder`` block ``i`` (GPT-2, BERT):
    its biased ``query``/``key``/``value``/``attention_output`` projections (fused into ours) under
    the sub-layer named ``attention``, ``self_attention_layer_norm``, ``feedforward_layer_norm``
    and ``feedforward_*_dense``."""
    src = f"transformer_layer_{i}/"
    att = f"{src}{attention}/"
    ours = attention_weights(
        i,
        *(weights[f"{att}{role}/kernel"] for role in ("query", "key", "value")),
        weights[f"{att}attention_output/kernel"],
        biases=[
            weights[f"{att}{role}/bias"] for role in ("query", "key", "value", "attention_output")
        ],
    )
    block = f"transformer_layers.{i}."
    for ours_name, theirs in (
        ("self_attention_norm", "self_attention_layer_norm"),
        ("feedforward_norm", "feedforward_layer_norm"),
    ):
        for kind in ("gamma", "beta"):
            ours[f"{block}{ours_name}.{kind}"] = weights[f"{src}{theirs}/{kind}"]
    for ours_name, theirs in (("inner", "intermediate"), ("outer", "output")):
        for kind in ("kernel", "bias"):
            ours[f"{block}feedforward.{ours_name}.{kind}"] = weights[
                f"{src}feedforward_{theirs}_dense/{kind}"
            ]
    return ours
