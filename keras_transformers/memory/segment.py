"""Transformer-XL segment-level recurrence (Dai et al., 2019, "Transformer-XL: attentive language
models beyond a fixed-length context").

A long text is read as consecutive segments of length ``L``. Each layer keeps the hidden states it
received for the previous segment(s), ``m`` of them, and reuses them — with the gradient stopped —
as extra keys and values for the next segment:

``h̃^{n-1}_{τ+1} = [SG(mem^{n-1}_τ) ∘ h^{n-1}_{τ+1}]``   (concatenated along the length)
``q = h^{n-1}_{τ+1} W^q``,  ``k, v = h̃^{n-1}_{τ+1} W^k, h̃^{n-1}_{τ+1} W^v``
``h^n_{τ+1} = layer(q, k, v)``,  ``mem^{n-1}_{τ+1} = last m rows of h̃^{n-1}_{τ+1}``

(The survey's prose says the layer reads ``h^{(n)}_τ``; its equation, used here, reads
``h^{(n-1)}_τ``.) Attention uses the Transformer-XL relative encoding (``position="xl"``, see
:mod:`keras_transformers.positional.xl`): keys sit at positions ``0 .. m+L-1`` and queries at
``m .. m+L-1``, causal over memory + segment. The temporal range grows to ``N·m`` with ``N``
layers; attention costs ``O(L² + L·m)``.

State: the memory is non-trainable layer state (Keras variables, ``(B, m, d)`` per layer, updated
with ``assign`` inside ``call``), so the batch size ``B`` is fixed and row ``b`` of each batch must
continue row ``b`` of the previous one (:func:`keras_transformers.data.streams.make_segment_streams`
with ``fit(shuffle=False)``). It works inside ``fit()``/``evaluate()`` on TensorFlow, JAX (Keras
threads non-trainable variables through its stateless train step) and PyTorch. Memory slots that
hold nothing yet, or belong to an earlier document, are masked out: :class:`SegmentDocuments`
numbers the documents (a new one starts at ``document_start_id``) and each block keeps the document
id of every memory slot. The shared :class:`keras_transformers.memory.state.MemoryReset` callback
clears all memories (of any kind) at the start of every epoch, evaluation and prediction;
:func:`keras_transformers.memory.state.reset_memory` does it by hand (both are re-exported here).

Shapes: ``x (B, L, d)``, ``documents (B, L)`` int -> ``(B, L, d)``; memory ``(B, m, d)``; scores
``(B, h, L, m+L)``.

Example:
    >>> import numpy as np
    >>> from keras_transformers.memory.segment import TransformerXLBlock
    >>> block = TransformerXLBlock(num_heads=2, key_dim=8, ff_dim=32, memory_length=4)
    >>> x, docs = np.zeros((2, 6, 16), "float32"), np.zeros((2, 6), "int32")
    >>> tuple(block(x, docs).shape)
    (2, 6, 16)
"""

import keras
from keras import ops

from keras_transformers.attention.multi_head import MultiHeadAttention
from keras_transformers.memory.state import (  # noqa: F401  (re-exported: former home)
    MemoryReset,
    StatefulMemory,
    memory_layers,
    reset_memory,
)
from keras_transformers.positional.xl import XLRelativePosition

PACKAGE = "keras_transformers"


def _check_int(name, value, minimum):
    if value is None or int(value) != value or int(value) < minimum:
        raise ValueError(f"{name}={value}: must be an integer >= {minimum}.")
    return int(value)


@keras.saving.register_keras_serializable(package=PACKAGE)
class SegmentDocuments(keras.layers.Layer, StatefulMemory):
    """Document id of every token of a segment, carried across segments.

    ``doc[b, i] = carry[b] + #{t <= i : token[b, t] == document_start_id}``; ``carry`` (the last
    id of the previous segment) is non-trainable state. Without ``document_start_id`` every token
    is in document 0. Blocks attend only to memory slots of the query's own document.

    Args:
        batch_size: the fixed batch size ``B``.
        document_start_id: token id that starts a new document (e.g. ``<bos>``), or None.
    """

    def __init__(self, batch_size, document_start_id=None, **kwargs):
        super().__init__(**kwargs)
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.document_start_id = None if document_start_id is None else int(document_start_id)

    def build(self, input_shape):
        self.carry = self.add_weight(
            name="document_carry",
            shape=(self.batch_size,),
            dtype="int32",
            initializer="zeros",
            trainable=False,
        )
        self.built = True

    def call(self, token_ids):
        if self.document_start_id is None:
            starts = ops.zeros_like(ops.cast(token_ids, "int32"))
        else:
            starts = ops.cast(ops.equal(token_ids, self.document_start_id), "int32")
        docs = ops.cumsum(starts, axis=1) + ops.cast(self.carry, "int32")[:, None]  # (B, L)
        self.carry.assign(docs[:, -1])
        return docs

    def reset_memory(self):
        """Start over at document 0."""
        self.carry.assign(ops.zeros(self.carry.shape, "int32"))

    reset_state = reset_memory

    def compute_output_spec(self, token_ids):
        return keras.KerasTensor(token_ids.shape, dtype="int32")

    def get_config(self):
        return {
            **super().get_config(),
            "batch_size": self.batch_size,
            "document_start_id": self.document_start_id,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class TransformerXLBlock(keras.layers.Layer, StatefulMemory):
    """Pre-norm decoder layer with a Transformer-XL segment memory.

    ``x = x + Attn(LN(x), LN([SG(mem); x])); x = x + FFN(LN(x))`` with the XL relative score; the
    memory then becomes the last ``m`` rows of ``[mem; x_in]`` (the block's input). The ``W^q``,
    ``W^k``, ``W^v`` and output projections are those of a
    :class:`~keras_transformers.attention.MultiHeadAttention` sublayer (``attention``, no biases),
    whose full-attention core (``core``) attends with the XL score and the query offset ``m``.

    Args:
        num_heads, key_dim, ff_dim: sizes (``h``, ``dh``, FFN width).
        memory_length: ``m``, number of remembered hidden states (>= 1).
        batch_size: fixed batch size ``B`` of the memory (None: taken from the input shape).
        dropout: residual and FFN dropout.
        activation: FFN activation.
        position: config of the relative encoding (``{"relative_dim": ...}``) or None.
    """

    def __init__(
        self,
        num_heads,
        key_dim,
        ff_dim,
        memory_length,
        batch_size=None,
        dropout=0.0,
        activation="gelu",
        layer_norm_epsilon=1e-5,
        position=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = _check_int("num_heads", num_heads, 1)
        self.key_dim = _check_int("key_dim", key_dim, 1)
        self.ff_dim = _check_int("ff_dim", ff_dim, 1)
        self.memory_length = _check_int("memory_length", memory_length, 1)
        self.batch_size = None if batch_size is None else _check_int("batch_size", batch_size, 1)
        self.dropout = float(dropout)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={dropout}: must be in [0, 1).")
        self.activation = activation
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.position_config = dict(position or {})
        policy = self.dtype_policy
        self.attention_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=policy, name="attention_norm"
        )
        self.feedforward_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=policy, name="feedforward_norm"
        )
        # the position-wise FFN act(x W_1 + b_1) W_2 + b_2 (memory/ sits below blocks/, so it is
        # written here rather than imported from blocks.feedforward)
        self.feedforward_inner = keras.layers.Dense(
            self.ff_dim, activation=activation, dtype=policy, name="ffn_inner"
        )
        self.feedforward_outer = None  # (ff, d): created in build, once d is known
        self.feedforward_dropout = keras.layers.Dropout(self.dropout, dtype=policy)
        self.position = XLRelativePosition(**self.position_config, dtype=policy, name="xl")
        # the shell's projections (W^q on the segment; W^k, W^v on [mem; x]) and its full core
        self.attention = MultiHeadAttention(
            self.num_heads, self.key_dim, use_bias=False, dtype=policy, name="attention"
        )
        self.residual_dropout = keras.layers.Dropout(self.dropout, dtype=policy)

    @property
    def core(self):
        """The full-attention core that attends with the XL score (the shell's core)."""
        return self.attention.attention_core

    # ------------------------------------------------------------------ state
    @property
    def context_length(self):
        """Keys before the segment: ``m`` (plus compressed slots in subclasses)."""
        return self.memory_length

    def _state(self, name, shape, dtype="float32", value="zeros"):
        init = "zeros" if value == "zeros" else keras.initializers.Constant(value)
        return self.add_weight(
            name=name, shape=shape, dtype=dtype, initializer=init, trainable=False
        )

    def build(self, x_shape, documents_shape=None):
        batch = self.batch_size or x_shape[0]
        if batch is None:
            raise ValueError(
                "TransformerXLBlock needs a fixed batch size for its memory: pass batch_size=... or "
                "build it on an input with a static batch (keras.Input(batch_shape=(B, L)))."
            )
        self.batch_size = int(batch)
        d = int(x_shape[-1])
        self.d_model = d
        m, h, dh = self.memory_length, self.num_heads, self.key_dim
        self.memory = self._state("memory", (self.batch_size, m, d))
        self.memory_documents = self._state("memory_documents", (self.batch_size, m), "int32", -1)
        length = x_shape[1]
        keys = None if length is None else self.context_length + length
        segment_shape = (self.batch_size, length, d)
        context_shape = (self.batch_size, keys, d)
        # cross-attention form: queries from the segment, keys/values from [mem; x]
        self.attention.build(segment_shape, value_shape=context_shape, key_shape=context_shape)
        self.attention_norm.build(x_shape)
        self.feedforward_norm.build(x_shape)
        self.feedforward_inner.build(x_shape)
        self.feedforward_outer = keras.layers.Dense(d, dtype=self.dtype_policy, name="ffn_outer")
        self.feedforward_outer.build(tuple(x_shape[:-1]) + (self.ff_dim,))
        self.position.build((self.batch_size, length, h, dh))
        self._build_extra(x_shape)
        self.built = True

    def _build_extra(self, x_shape):
        """Hook for subclasses (compressed memory)."""

    def reset_memory(self):
        """Forget everything: zero the memory and mark every slot as empty."""
        for var in self._float_state():
            var.assign(ops.zeros(var.shape, var.dtype))
        for var in self._document_state():
            var.assign(ops.full(var.shape, -1, dtype="int32"))

    def reset_state(self):
        """Same as :meth:`reset_memory` (former name)."""
        self.reset_memory()

    def _float_state(self):
        return [self.memory]

    def _document_state(self):
        return [self.memory_documents]

    # ------------------------------------------------------------------ call
    def _prefix(self, dtype):
        """``(states (B, P, d), documents (B, P))`` attended before the segment, oldest first."""
        memory = ops.stop_gradient(ops.cast(self.memory, dtype))
        return memory, ops.cast(self.memory_documents, "int32")

    def call(self, x, documents=None, training=None):
        length = x.shape[1]
        if documents is None:
            documents = ops.zeros((self.batch_size, length), "int32")
        documents = ops.cast(documents, "int32")
        prefix, prefix_docs = self._prefix(x.dtype)
        context = ops.concatenate([prefix, x], axis=1)  # (B, P+L, d)
        context_docs = ops.concatenate([prefix_docs, documents], axis=1)  # (B, P+L)
        offset = self.context_length
        normed = self.attention_norm(context)  # (B, P+L, d)
        q, k, v = self.attention.project_qkv(normed[:, offset:], value=normed, key=normed)
        # q (B, L, h, dh); k, v (B, P+L, h, dh)
        # a query sees keys of its own document only (empty slots have id -1); causality with the
        # query offset P is applied by the core: key j <= query i + P
        same_doc = ops.equal(context_docs[:, None, :], documents[:, :, None])  # (B, L, P+L)
        need_weights = self._needs_attention_weights()
        result = self.core(
            q,
            k,
            v,
            attention_mask=same_doc,
            causal=True,
            position=self.position,
            query_offset=offset,
            training=training,
            return_attention_scores=need_weights,
        )
        attended, weights = result if need_weights else (result, None)
        attended = self.attention.project_output(attended)  # (B, L, d)
        y = x + self.residual_dropout(attended, training=training)
        hidden = self.feedforward_inner(self.feedforward_norm(y))  # (B, L, ff)
        hidden = self.feedforward_dropout(hidden, training=training)
        y = y + self.residual_dropout(self.feedforward_outer(hidden), training=training)
        self._update_state(context, context_docs, x, weights, training)
        return y

    def _needs_attention_weights(self):
        return False

    def _update_state(self, context, context_docs, x, weights, training):
        m = self.memory_length
        # the last m rows of [mem; x]: the inputs of this block for the newest positions
        self.memory.assign(ops.cast(ops.stop_gradient(context[:, -m:]), self.memory.dtype))
        self.memory_documents.assign(context_docs[:, -m:])

    def compute_output_shape(self, x_shape, documents_shape=None):
        return x_shape

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "ff_dim": self.ff_dim,
            "memory_length": self.memory_length,
            "batch_size": self.batch_size,
            "dropout": self.dropout,
            "activation": self.activation,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "position": self.position_config or None,
        }
