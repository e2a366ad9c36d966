"""Transformer-XL (Dai et al., 2019) and Compressive Transformer (Rae et al., 2019) language models.

``token_ids (B, L) -> embedding -> N x memory block -> LN -> logits (B, L, V)``; each block keeps
``m`` hidden states of the previous segments (and, with ``compressed_memory_length > 0``, a
compressed memory of ``cm`` slots), so the model must be fed contiguous streams:
``keras_transformers.data.streams.make_segment_streams`` + ``fit(batch_size=B, shuffle=False,
callbacks=[MemoryReset()])``. No absolute positions: every block uses the XL relative encoding.

Save/load: the memories are non-trainable variables, so a ``.keras`` file stores them with the
weights and a loaded model continues from the saved memory; call
:func:`keras_transformers.memory.state.reset_memory` (or the ``MemoryReset`` callback of the
same module) to start fresh.

Example:
    >>> import numpy as np
    >>> from keras_transformers.models.transformer_xl import build_transformer_xl_lm
    >>> lm = build_transformer_xl_lm(vocab_size=40, segment_length=8, memory_length=8,
    ...                              batch_size=2, d_model=16, num_heads=2, num_layers=2)
    >>> tuple(lm(np.ones((2, 8), "int32")).shape)
    (2, 8, 40)
"""

import keras

from keras_transformers.memory.compressive import COMPRESSIONS, CompressiveTransformerBlock
from keras_transformers.memory.segment import SegmentDocuments, TransformerXLBlock
from keras_transformers.models.backbone import builder_arguments
from keras_transformers.models.decoder_lm import DecoderLM


@keras.saving.register_keras_serializable(package="keras_transformers")
class TransformerXLLM(DecoderLM):
    """Transformer-XL / Compressive Transformer LM on the shared backbone, with ``generate``.

    ``TransformerXLLM(**config)`` with the arguments of :func:`build_transformer_xl_lm`. Parts as
    in :class:`DecoderLM` (``transformer_layers`` are the memory blocks; ``position_embedding``
    is None) plus ``documents`` (the :class:`SegmentDocuments` layer).

    ``generate`` recomputes the whole segment for every token (no KV cache: the segment memory
    makes a per-position cache hard) with ``stateless_call``, so the memories of the previous
    segments are the context and are left as they were. The prompt batch must be ``batch_size``
    and ``max_length`` at most ``segment_length``.
    """

    default_name = "transformer_xl"
    stateful_memory = True

    def build_graph(
        self,
        vocab_size,
        segment_length,
        memory_length,
        batch_size,
        d_model,
        num_heads,
        num_layers,
        ff_dim,
        dropout,
        document_start_id,
        activation,
        tie_embeddings,
        **compressive,
    ):
        # compressive: compressed_memory_length, compression_rate, compression,
        # reconstruction_loss_weight (CompressiveTransformerBlock's own arguments)
        common = xl_block_arguments(
            num_heads, d_model, ff_dim, memory_length, batch_size, dropout, activation
        )
        if compressive["compressed_memory_length"] > 0:
            blocks = [
                CompressiveTransformerBlock(**compressive, **common, name=f"compressive_block_{i}")
                for i in range(num_layers)
            ]
        else:
            blocks = [TransformerXLBlock(**common, name=f"xl_block_{i}") for i in range(num_layers)]
        token_ids, x = self.assemble_segments(
            segment_length,
            batch_size,
            document_start_id,
            blocks,
            vocab_size=vocab_size,
            d_model=d_model,
            dropout=dropout,
            tie_embeddings=tie_embeddings,
        )  # (B, L, d)
        return token_ids, self.logits_output(x)

    def assemble_segments(self, segment_length, batch_size, document_start_id, blocks, **kwargs):
        """The fixed-batch segment input, its :class:`SegmentDocuments` tracker (``documents``)
        and :meth:`assemble` of the memory ``blocks`` (no position embedding: the blocks add
        relative positions). Returns ``(token_ids (B, L), hidden (B, L, d))``."""
        token_ids = keras.Input(
            batch_shape=(batch_size, segment_length), dtype="int32", name="token_ids"
        )
        self.documents = SegmentDocuments(batch_size, document_start_id, name="documents")
        documents = self.documents(token_ids)  # (B, L)
        hidden = self.assemble(token_ids, blocks, position=None, documents=documents, **kwargs)
        return token_ids, hidden


def xl_block_arguments(num_heads, d_model, ff_dim, memory_length, batch_size, dropout, activation):
    """The keyword arguments every Transformer-XL-style block of a builder shares."""
    return dict(
        num_heads=num_heads,
        key_dim=d_model // num_heads,
        ff_dim=ff_dim or 4 * d_model,
        memory_length=memory_length,
        batch_size=batch_size,
        dropout=dropout,
        activation=activation,
    )


def build_transformer_xl_lm(
    vocab_size,
    segment_length,
    memory_length,
    batch_size,
    d_model=128,
    num_heads=4,
    num_layers=2,
    ff_dim=None,
    dropout=0.0,
    compressed_memory_length=0,
    compression_rate=2,
    compression="conv",
    reconstruction_loss_weight=1.0,
    document_start_id=None,
    activation="gelu",
    tie_embeddings=True,
    name=None,
):
    """Build a Functional Transformer-XL (or Compressive Transformer) language model.

    Args:
        vocab_size: vocabulary size ``V``.
        segment_length: ``L``, tokens per segment (the fixed input length).
        memory_length: ``m``, hidden states remembered per layer (>= 1).
        batch_size: ``B``, number of parallel streams (fixed: the memory has one row per stream).
        d_model, num_heads, num_layers, ff_dim: sizes (``ff_dim`` defaults to ``4·d_model``).
        dropout: residual / FFN / embedding dropout.
        compressed_memory_length: ``cm``; > 0 makes it a Compressive Transformer.
        compression_rate: ``c``, evicted states per compressed slot (divides ``L``).
        compression: ``conv`` (strided 1D conv, trained by the attention-reconstruction loss),
            ``mean_pool``, ``max_pool`` or ``most_used``.
        reconstruction_loss_weight: weight of the attention-reconstruction loss (conv only).
        document_start_id: token that starts a new document (memory before it is masked).
        tie_embeddings: reuse the token embedding as the output projection.
        name: model name (``transformer_xl`` / ``compressive_transformer`` by default).

    Returns:
        :class:`TransformerXLLM` (a :class:`DecoderLM`): ``token_ids (B, L) int32 -> logits
        (B, L, V) float32``.
    """
    config = builder_arguments(locals(), drop=("name",))
    for arg, value, low in (
        ("vocab_size", vocab_size, 2),
        ("segment_length", segment_length, 1),
        ("memory_length", memory_length, 1),
        ("batch_size", batch_size, 1),
        ("d_model", d_model, 1),
        ("num_heads", num_heads, 1),
        ("num_layers", num_layers, 1),
        ("compressed_memory_length", compressed_memory_length, 0),
    ):
        if int(value) != value or int(value) < low:
            raise ValueError(f"{arg}={value}: must be an integer >= {low}.")
    if d_model % num_heads:
        raise ValueError(f"d_model={d_model}: must be divisible by num_heads={num_heads}.")
    compressive = compressed_memory_length > 0
    if compressive and compression not in COMPRESSIONS:
        raise ValueError(
            f"compression={compression!r}: allowed values are {', '.join(COMPRESSIONS)}."
        )
    return TransformerXLLM(
        **config,
        name=name or ("compressive_transformer" if compressive else "transformer_xl"),
    )
