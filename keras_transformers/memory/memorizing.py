"""kNN-augmented attention of the Memorizing Transformer (Wu, Rabe, Hutchins & Szegedy, ICLR 2022).

One attention layer near the top of a decoder sees, besides causal local attention over the current
segment, the top-k (key, value) pairs retrieved from a non-differentiable external memory of all
earlier segments of the same document. Both branches use the same queries, keys and values; their
outputs are mixed by a learned per-head gate, and afterwards the segment's own keys and values are
written into the memory (FIFO, gradients stopped), so the memory persists from batch to batch in
``fit()``, ``evaluate()`` and ``predict()``:

``O_local = softmax(s·q̂ k̂ᵀ + causal mask) V``,
``O_mem = softmax_{top-k}(s·q̂ k̂_memᵀ) V_mem``,
``g = σ(b_g)`` (one scalar per head), ``O = g ⊙ O_mem + (1 − g) ⊙ O_local``.

With ``normalize=True`` (the paper's remedy for stale keys) queries and keys are L2-normalised
(``q̂``, ``k̂``, so stored keys have unit norm and top-k by dot product = nearest neighbours by L2
distance) and the score scale ``s`` is a learned per-head temperature initialised at ``sqrt(dh)``
(this gives unit-variance logits at initialisation); with ``normalize=False``, ``s = 1/sqrt(dh)``.
``b_g → −∞`` reduces the layer to plain local causal attention; with ``k ≥ m`` the memory branch is
full attention over the memory.

Shapes: ``x (B, L, d) -> (B, L, d)``; memory ``(B, h, m, dh)``; retrieved ``(B, L, h, k, dh)``.
Cost per segment: ``O(B·h·L²·dh)`` local + ``O(B·h·L·m·dh)`` exact search + ``O(B·h·L·k·dh)``.

Batches must be laid out so that row ``b`` of consecutive batches holds consecutive segments of one
stream (see ``keras_transformers.models.memorizing.segment_batches``), with ``shuffle=False``; the
batch size is fixed (one memory per row). Clear the memory between epochs/documents with the
shared :class:`keras_transformers.memory.state.MemoryReset` callback or
:func:`keras_transformers.memory.state.reset_memory` (old names: ``KNNMemoryReset``,
``clear_memories``).

Example:
    >>> import numpy as np
    >>> from keras_transformers.memory.memorizing import KNNAugmentedAttention
    >>> layer = KNNAugmentedAttention(num_heads=2, key_dim=8, memory_size=32, batch_size=2,
    ...                               top_k=4)
    >>> x = np.random.rand(2, 6, 16).astype("float32")
    >>> tuple(layer(x).shape)     # writes the 6 keys/values of each row into the memory
    (2, 6, 16)
    >>> int(np.asarray(layer.memory.size())[0])
    6
"""

import math

import keras
from keras import ops

from keras_transformers.attention.multi_head import MultiHeadAttention
from keras_transformers.memory.knn import KNNMemory, _check_positive_int
from keras_transformers.memory.state import MemoryReset, memory_layers, reset_memory
from keras_transformers.ops.attention import attend, masked_softmax


def _l2_normalize(x, epsilon=1e-6):
    x32 = ops.cast(x, "float32")
    norm = ops.sqrt(ops.maximum(ops.sum(ops.square(x32), axis=-1, keepdims=True), epsilon**2))
    return ops.cast(x32 / norm, x.dtype)


@keras.saving.register_keras_serializable(package="keras_transformers")
class KNNAugmentedAttention(keras.layers.Layer):
    """Multi-head causal local attention + top-k attention over a kNN memory, gated per head.

    The query/key/value and output projections are those of a
    :class:`~keras_transformers.attention.MultiHeadAttention` sublayer (``attention``), reached
    through its ``project_qkv`` / ``project_output``.

    Args:
        num_heads: ``h``.
        key_dim: ``dh`` (queries, keys and values).
        memory_size: capacity ``m`` of the memory per batch row and head.
        batch_size: fixed batch size ``B`` (one memory per row).
        top_k: neighbours retrieved per query and head.
        output_dim: output features (defaults to the input's last axis).
        normalize: L2-normalise queries and keys, with a learned per-head temperature.
        gate_bias_initializer: initial ``b_g`` (0 gives ``g = 0.5``).
        update_memory: write each segment's keys/values after the call (set False to freeze the
            memory, e.g. to probe it).
        chunk_size: memory slots scored at once during the search.
        index: the memory's search, ``"exact"`` (default) or ``"faiss"`` (eager only; see
            :class:`~keras_transformers.memory.knn.KNNMemory`).
        dropout: dropout on both branches' attention weights.
        use_bias: biases on the projections.
    """

    def __init__(
        self,
        num_heads,
        key_dim,
        memory_size,
        batch_size,
        top_k=32,
        output_dim=None,
        normalize=True,
        gate_bias_initializer=0.0,
        update_memory=True,
        chunk_size=4096,
        dropout=0.0,
        use_bias=True,
        index="exact",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = _check_positive_int("num_heads", num_heads)
        self.key_dim = _check_positive_int("key_dim", key_dim)
        self.memory_size = _check_positive_int("memory_size", memory_size)
        self.batch_size = _check_positive_int("batch_size", batch_size)
        self.top_k = _check_positive_int("top_k", top_k)
        self.output_dim = (
            None if output_dim is None else _check_positive_int("output_dim", output_dim)
        )
        self.chunk_size = _check_positive_int("chunk_size", chunk_size)
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout={dropout!r}: must be in [0, 1).")
        self.normalize = bool(normalize)
        self.gate_bias_initializer = float(gate_bias_initializer)
        self.update_memory = bool(update_memory)
        self.dropout = float(dropout)
        self.use_bias = bool(use_bias)
        self.index = index
        self.memory = KNNMemory(
            memory_size,
            num_heads,
            key_dim,
            batch_size,
            chunk_size=chunk_size,
            index=index,
            dtype=self.dtype_policy,
            name="knn_memory",
        )
        self.weights_dropout = keras.layers.Dropout(dropout, dtype=self.dtype_policy)
        # the shell's fused q/k/v projection and output projection (self-attention form)
        self.attention = MultiHeadAttention(
            num_heads,
            key_dim,
            output_dim=output_dim,
            use_bias=use_bias,
            dtype=self.dtype_policy,
            name="attention",
        )

    def build(self, input_shape):
        h, dh = self.num_heads, self.key_dim
        self.attention.build(input_shape)
        self.gate_bias = self.add_weight(
            name="gate_bias",
            shape=(h,),
            initializer=keras.initializers.Constant(self.gate_bias_initializer),
        )
        if self.normalize:
            self.log_scale = self.add_weight(
                name="log_scale",
                shape=(h,),
                initializer=keras.initializers.Constant(0.5 * math.log(dh)),
            )
        self.memory.build()
        self.built = True

    def gate(self):
        """``g = σ(b_g)``, ``(h,)``: the weight of the memory branch per head."""
        return ops.sigmoid(self.gate_bias)

    def _scale(self, dtype):
        if self.normalize:
            return ops.cast(ops.exp(self.log_scale), dtype)[:, None]  # (h, 1)
        return ops.cast(1.0 / math.sqrt(self.key_dim), dtype) * ops.ones((self.num_heads, 1), dtype)

    def project(self, x):
        """``x (B, L, d) -> q, k, v (B, L, h, dh)``; q and k unit-norm when ``normalize``."""
        q, k, v = self.attention.project_qkv(x)  # (B, L, h, dh)
        if self.normalize:
            q, k = _l2_normalize(q), _l2_normalize(k)
        return q, k, v

    def call(self, x, padding_mask=None, training=None, return_parts=False):
        """Attend locally and over the memory, then write this segment into the memory.

        Args:
            x: ``(B, L, d)``.
            padding_mask: ``(B, L)`` bool (True = real token) or None; padded keys are neither
                attended locally nor stored as valid memory entries.
            return_parts: also return ``(O_local, O_mem)``, both ``(B, L, h, dh)``, before the
                gate and the output projection (for tests and analysis).
        """
        q, k, v = self.project(x)  # (B, L, h, dh)
        length = x.shape[1]
        scale = self._scale(q.dtype)  # (h, 1)
        qs = q * scale  # (B, L, h, dh) scaled queries
        # Local branch: dense causal attention inside the segment.
        mask = ops.tril(ops.ones((length, length), "bool"))[None, None]  # (1, 1, L, L)
        if padding_mask is not None:
            mask = ops.logical_and(mask, ops.cast(padding_mask, "bool")[:, None, None, :])
        dropout = (lambda w: self.weights_dropout(w, training=training)) if self.dropout else None
        local, _ = attend(
            ops.transpose(qs, (0, 2, 1, 3)),
            ops.transpose(k, (0, 2, 1, 3)),
            ops.transpose(v, (0, 2, 1, 3)),
            mask=mask,
            scale=1.0,
            dropout=dropout,
        )  # (B, h, L, dh)
        local = ops.transpose(local, (0, 2, 1, 3))  # (B, L, h, dh)
        # Memory branch: softmax over the top-k retrieved pairs of earlier segments.
        mem_k, mem_v, found = self.memory.retrieve(q, self.top_k)  # (B, L, h, k, dh)
        scores = ops.sum(qs[:, :, :, None, :] * mem_k, axis=-1)  # (B, L, h, k)
        weights = masked_softmax(scores, found)
        if dropout is not None:
            weights = dropout(weights)
        mem = ops.sum(weights[..., None] * mem_v, axis=3)  # (B, L, h, dh)
        g = ops.cast(self.gate(), mem.dtype)[:, None]  # (h, 1)
        out = g * mem + (1.0 - g) * local  # (B, L, h, dh)
        if self.update_memory:
            self.memory.write(k, v, padding_mask)
        y = self.attention.project_output(out)  # (B, L, output_dim or d)
        return (y, local, mem) if return_parts else y

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.output_dim or input_shape[-1])

    def reset_memory(self):
        """Empty this layer's kNN memory (shortcut for ``self.memory.clear()``)."""
        self.memory.clear()

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "memory_size": self.memory_size,
            "batch_size": self.batch_size,
            "top_k": self.top_k,
            "output_dim": self.output_dim,
            "normalize": self.normalize,
            "gate_bias_initializer": self.gate_bias_initializer,
            "update_memory": self.update_memory,
            "chunk_size": self.chunk_size,
            "index": self.index,
            "dropout": self.dropout,
            "use_bias": self.use_bias,
        }


def knn_memories(model):
    """All :class:`KNNMemory` layers inside ``model`` (recursively)."""
    return [layer for layer in memory_layers(model) if isinstance(layer, KNNMemory)]


# Former names of the shared reset mechanism of keras_transformers.memory.state, kept working:
# ``clear_memories(model)`` resets every memory of the model (kNN and segment memories alike) and
# returns how many layers it reset.
clear_memories = reset_memory


class KNNMemoryReset(MemoryReset):
    """Former name of :class:`keras_transformers.memory.state.MemoryReset`, with its old defaults:
    reset at the start of each epoch only (pass ``on_test``/``on_predict`` to reset there too).
    It resets every memory of the model, not only the kNN ones."""

    def __init__(self, on_epoch=True, on_test=False, on_predict=False):
        super().__init__(on_epoch=on_epoch, on_test=on_test, on_predict=on_predict)
