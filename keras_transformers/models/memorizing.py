"""Memorizing Transformer language model (Wu, Rabe, Hutchins & Szegedy, ICLR 2022).

A decoder-only LM over fixed-length segments whose one kNN-augmented layer, near the top, attends
over the current segment and over a non-differentiable memory of the keys/values of all earlier
segments of the same stream (see :mod:`keras_transformers.memory.memorizing`). The batch size is
fixed (one memory per batch row); feed consecutive segments with :func:`segment_batches` and
``shuffle=False``, and clear the memory each epoch with the shared
``keras_transformers.memory.state.MemoryReset`` callback (former name ``KNNMemoryReset``).

``token_ids (B, L) -> embeddings (+ positions) -> N blocks (block ``memory_layer_index`` is a
MemorizingDecoderBlock) -> LN -> logits (B, L, V)``.

Example:
    >>> import numpy as np
    >>> from keras_transformers.models.memorizing import build_memorizing_lm, segment_batches
    >>> model = build_memorizing_lm(vocab_size=50, segment_length=8, batch_size=2,
    ...                             memory_size=32, top_k=4, d_model=16, num_heads=2)
    >>> x, y = segment_batches(np.arange(100) % 50, batch_size=2, segment_length=8)
    >>> model.predict(x, batch_size=2, verbose=0).shape
    (12, 8, 50)
"""

import keras
import numpy as np

from keras_transformers.blocks.residual import SelfAttentionBlock
from keras_transformers.memory.knn import _check_positive_int
from keras_transformers.memory.memorizing import KNNAugmentedAttention
from keras_transformers.models.backbone import builder_arguments, check_model_sizes
from keras_transformers.models.decoder_lm import DecoderLM


@keras.saving.register_keras_serializable(package="keras_transformers")
class MemorizingDecoderBlock(SelfAttentionBlock):
    """Pre-/post-norm decoder block whose self-attention is :class:`KNNAugmentedAttention`.

    ``x = x + KNNAttn(LN(x)); x = x + FFN(LN(x))`` (pre-norm). Shapes ``(B, L, d) -> (B, L, d)``.

    Args:
        num_heads, key_dim, ff_dim: sizes.
        memory_size, batch_size, top_k, normalize, gate_bias_initializer, chunk_size, index:
            passed to
            the kNN-augmented attention.
        norm_first, dropout, attention_dropout, activation, layer_norm_epsilon: as in
            ``TransformerDecoderBlock``.
    """

    #: The arguments passed on to the :class:`KNNAugmentedAttention`.
    knn_keys = (
        "memory_size",
        "batch_size",
        "top_k",
        "normalize",
        "gate_bias_initializer",
        "chunk_size",
        "index",
    )
    config_keys = (*SelfAttentionBlock.common_keys, *knn_keys, "norm_first")

    def __init__(
        self,
        num_heads,
        key_dim,
        ff_dim,
        memory_size,
        batch_size,
        top_k=32,
        normalize=True,
        gate_bias_initializer=0.0,
        chunk_size=4096,
        index="exact",
        norm_first=True,
        dropout=0.0,
        attention_dropout=0.0,
        activation="gelu",
        layer_norm_epsilon=1e-5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_positive_int("ff_dim", ff_dim)
        self.store_arguments(locals())
        self.attention = KNNAugmentedAttention(
            num_heads,
            key_dim,
            **{name: getattr(self, name) for name in self.knn_keys},
            dropout=attention_dropout,
            dtype=self.dtype_policy,
            name="knn_attention",
        )
        self.attention_norm = self.make_norm("attention_norm")
        self.feedforward = self.make_feedforward()
        self.feedforward_norm = self.make_norm("feedforward_norm")
        self.residual_dropout = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)

    def build(self, input_shape):
        for layer in (self.attention_norm, self.attention, self.feedforward_norm, self.feedforward):
            layer.build(input_shape)
        self.built = True

    def call(self, x, padding_mask=None, training=None):
        x, _ = self.residual(
            x,
            lambda h: self.attention(h, padding_mask=padding_mask, training=training),
            self.attention_norm,
            training,
        )  # (B, L, d)
        x, _ = self.residual(
            x, lambda h: self.feedforward(h, training=training), self.feedforward_norm, training
        )  # (B, L, d)
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def attention_config(self):
        return {}  # the kNN attention's arguments are config_keys of the block


@keras.saving.register_keras_serializable(package="keras_transformers")
class MemorizingLM(DecoderLM):
    """Memorizing Transformer LM on the shared backbone, with ``generate``.

    ``MemorizingLM(**config)`` with the arguments of :func:`build_memorizing_lm` (the builder
    resolves ``memory_layer_index``). Parts as in :class:`DecoderLM`; ``transformer_layers``
    holds the :class:`MemorizingDecoderBlock` at ``memory_layer_index``.

    ``generate`` recomputes the whole segment for every token (the kNN layer has no KV cache)
    with ``stateless_call``: the memory of earlier segments is read, not written. The prompt
    batch must be ``batch_size`` and ``max_length`` at most ``segment_length``.
    """

    default_name = "memorizing_lm"
    stateful_memory = True

    def build_graph(self, segment_length, memory_layer_index, **config):
        knn = {name: config.pop(name) for name in MemorizingDecoderBlock.knn_keys}
        batch_size = knn["batch_size"]
        token_ids = keras.Input(
            shape=(segment_length,), batch_size=batch_size, dtype="int32", name="token_ids"
        )
        d_model, num_heads = config["d_model"], config["num_heads"]
        memory_block = MemorizingDecoderBlock(
            num_heads,
            d_model // num_heads,
            config["ff_dim"] or 4 * d_model,
            **knn,
            norm_first=config["norm_first"],
            dropout=config["dropout"],
            activation=config["activation"],
            name=f"memorizing_block_{memory_layer_index}",
        )
        x = self.assemble_stack(
            "decoder",
            token_ids,
            max_length=segment_length,
            cross_attention=False,
            replace={memory_layer_index: memory_block},
            **config,
        )  # (B, L, d)
        return token_ids, self.logits_output(x)


def default_memory_layer_index(num_layers):
    """The paper's placement, near the top: layer 9 of 12 (index 8); the top layer for N <= 3."""
    return max(0, num_layers - 1 - num_layers // 4)


def build_memorizing_lm(
    vocab_size,
    segment_length,
    batch_size,
    memory_size=1024,
    top_k=32,
    d_model=128,
    num_heads=4,
    num_layers=2,
    ff_dim=None,
    memory_layer_index=None,
    position="learned",
    attention="full",
    normalize=True,
    gate_bias_initializer=0.0,
    chunk_size=4096,
    index="exact",
    dropout=0.0,
    activation="gelu",
    norm_first=True,
    tie_embeddings=True,
    name="memorizing_lm",
):
    """Build a Memorizing Transformer LM (:class:`MemorizingLM`).

    Args:
        vocab_size: ``V``.
        segment_length: ``L``, the fixed length of every segment fed to the model.
        batch_size: ``B``, fixed: each batch row owns one memory.
        memory_size: capacity ``m`` of the memory (tokens per row; the paper uses up to 262K).
        top_k: neighbours retrieved per query and head (the paper: 32).
        d_model, num_heads, num_layers, ff_dim: sizes.
        memory_layer_index: which block (0-based) is the kNN-augmented one; default
            :func:`default_memory_layer_index` (near the top).
        position: positional encoding of the other blocks (embedding- or score-side name); the
            kNN layer itself uses none (the memory has no positions).
        attention: attention core of the other blocks.
        normalize, gate_bias_initializer, chunk_size: see :class:`KNNAugmentedAttention`.
        index: the memory's search: ``"exact"`` (default) or ``"faiss"`` (run eagerly).

    Returns:
        :class:`MemorizingLM` (a :class:`DecoderLM`): ``token_ids (B, L) int -> logits
        (B, L, V) float32``.
    """
    config = dict(locals())
    check_model_sizes(d_model, num_heads, num_layers)
    vocab_size = _check_positive_int("vocab_size", vocab_size)
    segment_length = _check_positive_int("segment_length", segment_length)
    batch_size = _check_positive_int("batch_size", batch_size)
    if memory_layer_index is None:
        memory_layer_index = default_memory_layer_index(num_layers)
    if not isinstance(memory_layer_index, int) or not 0 <= memory_layer_index < num_layers:
        raise ValueError(
            f"memory_layer_index={memory_layer_index!r}: must be an integer in "
            f"[0, num_layers={num_layers})."
        )
    return MemorizingLM(
        **builder_arguments(config, drop=("memory_layer_index",)),
        memory_layer_index=memory_layer_index,
    )


def segment_batches(tokens, batch_size, segment_length):
    """Cut a token stream into ``batch_size`` parallel streams of consecutive segments.

    The stream is split into ``batch_size`` contiguous parts; batch ``n`` (rows ``n·B ..
    n·B + B − 1`` of the result) holds segment ``n`` of every part, so that row ``b`` of
    consecutive batches continues the same text, which the per-row memory needs. Feed with
    ``fit(x, y, batch_size=batch_size, shuffle=False)``.

    Args:
        tokens: 1-D int sequence.

    Returns:
        ``(x, y)``, each ``(num_segments·B, L)`` int32, ``y`` = ``x`` shifted by one token.
    """
    tokens = np.asarray(tokens, dtype="int32").reshape(-1)
    batch_size = _check_positive_int("batch_size", batch_size)
    segment_length = _check_positive_int("segment_length", segment_length)
    per_row = (len(tokens) - 1) // batch_size
    num_segments = per_row // segment_length
    if num_segments < 1:
        raise ValueError(
            f"tokens has length {len(tokens)}: needs at least batch_size·segment_length + 1 = "
            f"{batch_size * segment_length + 1} tokens."
        )
    span = num_segments * segment_length
    rows = np.stack([tokens[b * per_row : b * per_row + span + 1] for b in range(batch_size)])
    x = rows[:, :-1].reshape(batch_size, num_segments, segment_length)
    y = rows[:, 1:].reshape(batch_size, num_segments, segment_length)
    x = x.transpose(1, 0, 2).reshape(-1, segment_length)
    y = y.transpose(1, 0, 2).reshape(-1, segment_length)
    return x, y
