"""BERT (Devlin et al., 2019) from a keras-hub ``BertBackbone`` into our text encoder.

Post-norm encoder (``x = LN(x + sublayer(x))``, no final norm), token + learned position +
segment embeddings followed by a LayerNorm, LayerNorm ``eps = 1e-12``, tanh-approximated GELU
(keras-hub's BERT activation), biases everywhere. The model is a
:class:`~keras_transformers.models.TextEncoder` with ``pooling="cls"``: its output is the first
token's final hidden state, keras-hub's ``sequence_output[:, 0]``. Token id 0 is padding (masked
out of attention), as BERT's ``[PAD]``. keras-hub's pooler (``pooled_dense``, a tanh Dense on the
``[CLS]`` state) has no counterpart and is reported as not copied.

The input length is ``max_length`` (our text encoder takes a fixed length): pass
``max_length=128`` (say) to use the first 128 rows of the 512-row position table.
"""

from keras_transformers.models.hub.common import Conversion
from keras_transformers.models.hub.gpt2 import transformer_layer_weights


def convert(backbone, weights):
    """:class:`Conversion` of a ``BertBackbone``."""
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
        pooling="cls",
        activation="gelu_approximate",
        norm="layer",
        layer_norm_epsilon=1e-12,
        embedding_norm=True,
        num_segments=config["num_segments"],
        norm_first=False,
        name="bert",
    )
    ours = {
        "token_embedding.embeddings": weights["token_embedding/embeddings"],
        "position_embedding.table": weights["position_embedding/embeddings"],
        "segment_embedding.embeddings": weights["segment_embedding/embeddings"],
        "embedding_norm.gamma": weights["embeddings_layer_norm/gamma"],
        "embedding_norm.beta": weights["embeddings_layer_norm/beta"],
    }
    for i in range(config["num_layers"]):
        ours.update(transformer_layer_weights(i, weights, "self_attention_layer"))
    dropped = [name for name in weights if name.startswith("pooled_dense/")]
    return Conversion(
        "bert",
        "text_encoder",
        arguments,
        ours,
        dropped=dropped,
        truncatable=("position_embedding.table",),
    )
