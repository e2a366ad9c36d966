"""Compressive Transformer (Rae et al., 2019, "Compressive transformers for long-range sequence
modelling").

Transformer-XL with a second, coarser memory. Each layer keeps a FIFO memory of ``m`` hidden
states and a FIFO *compressed* memory of ``cm`` slots. When a segment of ``L`` new states enters,
the ``L`` oldest states leave the memory; instead of being discarded they are compressed at rate
``c`` by ``f_c: R^{L×d} -> R^{(L/c)×d}`` and pushed into the compressed memory, whose oldest slots
drop out. Keys are ``[cmem; mem; segment]`` (oldest to newest; length ``cm + m + L``), queries the
segment, causal, with the Transformer-XL relative encoding.

Compression functions (``compression=``): ``conv`` — 1D convolution with kernel = stride = c (best
in the paper on EnWik8); ``mean_pool`` / ``max_pool`` with kernel = stride = c; ``most_used`` —
keep the ``L/c`` evicted states that received the most attention in this step (summed over heads
and queries), in temporal order. (The paper's dilated convolution is not implemented.)

Attention-reconstruction loss (the paper's lossy objective, used for ``conv``):
``L_ar = ‖attn(h, old_mem) - attn(h, f_c(old_mem))‖²`` — content-based attention of the layer
(its layer norm and ``W^q, W^k, W^v``, all with stopped gradients) from the segment's inputs ``h``
over the evicted states vs. over their compression. It is added with ``add_loss`` (times
``reconstruction_loss_weight``) and trains only the compression network; the compressed memory
itself is stored with a stopped gradient, so the language-model loss never reaches ``f_c``.

Range ``(m + c·cm)·N`` for ``N`` layers at attention cost ``O(L² + L(m + cm))``.

Shapes: ``x (B, L, d)`` -> ``(B, L, d)``; memory ``(B, m, d)``; compressed memory
``(B, cm, d)``; conv kernel ``(c·d, d)``; scores ``(B, h, L, cm+m+L)``.

Example:
    >>> import numpy as np
    >>> from keras_transformers.memory.compressive import CompressiveTransformerBlock
    >>> block = CompressiveTransformerBlock(num_heads=2, key_dim=8, ff_dim=32, memory_length=4,
    ...                                     compressed_memory_length=3, compression_rate=2)
    >>> tuple(block(np.zeros((2, 6, 16), "float32"), np.zeros((2, 6), "int32")).shape)
    (2, 6, 16)
"""

import keras
from keras import ops

from keras_transformers.memory.segment import PACKAGE, TransformerXLBlock, _check_int

COMPRESSIONS = ("conv", "mean_pool", "max_pool", "most_used")


@keras.saving.register_keras_serializable(package=PACKAGE)
class MemoryCompressor(keras.layers.Layer):
    """``f_c``: ``(B, L, d)`` evicted states -> ``(B, L/c, d)`` compressed slots.

    Also maps the document id of each state to one id per slot: a slot keeps its id when all of
    its states share it, else ``-1`` (never attended). ``most_used`` keeps the ids of the kept
    states.

    Args:
        compression_rate: ``c`` (divides ``L``).
        compression: one of ``conv``, ``mean_pool``, ``max_pool``, ``most_used``.
    """

    def __init__(self, compression_rate=2, compression="conv", **kwargs):
        super().__init__(**kwargs)
        self.compression_rate = _check_int("compression_rate", compression_rate, 1)
        if compression not in COMPRESSIONS:
            raise ValueError(
                f"compression={compression!r}: allowed values are {', '.join(COMPRESSIONS)}."
            )
        self.compression = compression

    def build(self, states_shape, documents_shape=None, usage_shape=None):
        length, d = states_shape[1], int(states_shape[-1])
        c = self.compression_rate
        if length is not None and length % c:
            raise ValueError(
                f"compression_rate={c}: must divide the number of evicted states per segment "
                f"(the segment length {length})."
            )
        if self.compression == "conv":
            # a strided 1D convolution (kernel = stride = c) is one matmul on (B, L/c, c·d)
            self.kernel = self.add_weight(
                name="kernel", shape=(c * d, d), initializer="glorot_uniform"
            )
            self.bias = self.add_weight(name="bias", shape=(d,), initializer="zeros")
        self.built = True

    def call(self, states, documents, usage=None):
        batch, length, d = states.shape
        c = self.compression_rate
        slots = length // c
        docs = ops.reshape(ops.cast(documents, "int32"), (batch, slots, c))  # (B, L/c, c)
        same = ops.equal(ops.min(docs, axis=-1), ops.max(docs, axis=-1))
        slot_docs = ops.where(same, docs[..., 0], -1)  # (B, L/c)
        groups = ops.reshape(states, (batch, slots, c, d))  # (B, L/c, c, d)
        if self.compression == "mean_pool":
            return ops.mean(groups, axis=2), slot_docs
        if self.compression == "max_pool":
            return ops.max(groups, axis=2), slot_docs
        if self.compression == "conv":
            flat = ops.reshape(states, (batch, slots, c * d))  # (B, L/c, c·d)
            kernel = ops.cast(self.kernel, states.dtype)
            return ops.matmul(flat, kernel) + ops.cast(self.bias, states.dtype), slot_docs
        if usage is None:
            raise ValueError("compression='most_used' needs the attention usage of the states.")
        _, idx = ops.top_k(ops.cast(usage, "float32"), slots)  # (B, L/c) most attended
        idx = ops.sort(idx, axis=-1)  # keep temporal order
        kept = ops.take_along_axis(states, ops.broadcast_to(idx[..., None], (batch, slots, d)), 1)
        kept_docs = ops.take_along_axis(ops.cast(documents, "int32"), idx, axis=1)
        return kept, kept_docs

    def get_config(self):
        return {
            **super().get_config(),
            "compression_rate": self.compression_rate,
            "compression": self.compression,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class CompressiveTransformerBlock(TransformerXLBlock):
    """Transformer-XL block with an extra compressed memory of evicted states.

    Args:
        compressed_memory_length: ``cm`` (>= 1).
        compression_rate: ``c``; divides the segment length.
        compression: ``conv``, ``mean_pool``, ``max_pool`` or ``most_used``.
        reconstruction_loss_weight: weight of the attention-reconstruction loss (``conv``).
        **kwargs: as :class:`~keras_transformers.memory.segment.TransformerXLBlock`.
    """

    def __init__(
        self,
        num_heads,
        key_dim,
        ff_dim,
        memory_length,
        compressed_memory_length=1,
        compression_rate=2,
        compression="conv",
        reconstruction_loss_weight=1.0,
        **kwargs,
    ):
        super().__init__(num_heads, key_dim, ff_dim, memory_length, **kwargs)
        self.compressed_memory_length = _check_int(
            "compressed_memory_length", compressed_memory_length, 1
        )
        self.reconstruction_loss_weight = float(reconstruction_loss_weight)
        if self.reconstruction_loss_weight < 0:
            raise ValueError(
                f"reconstruction_loss_weight={reconstruction_loss_weight}: must be >= 0."
            )
        self.compressor = MemoryCompressor(
            compression_rate, compression, dtype=self.dtype_policy, name="compressor"
        )
        self.compression_rate = self.compressor.compression_rate
        self.compression = compression

    @property
    def context_length(self):
        return self.compressed_memory_length + self.memory_length

    def _build_extra(self, x_shape):
        cm, d = self.compressed_memory_length, int(x_shape[-1])
        self.compressed_memory = self._state("compressed_memory", (self.batch_size, cm, d))
        self.compressed_documents = self._state(
            "compressed_documents", (self.batch_size, cm), "int32", -1
        )
        self.compressor.build((self.batch_size, x_shape[1], d), (self.batch_size, x_shape[1]))

    def _float_state(self):
        return [self.memory, self.compressed_memory]

    def _document_state(self):
        return [self.memory_documents, self.compressed_documents]

    def _prefix(self, dtype):
        cmem = ops.stop_gradient(ops.cast(self.compressed_memory, dtype))
        mem = ops.stop_gradient(ops.cast(self.memory, dtype))
        docs = ops.concatenate(
            [
                ops.cast(self.compressed_documents, "int32"),
                ops.cast(self.memory_documents, "int32"),
            ],
            axis=1,
        )
        return ops.concatenate([cmem, mem], axis=1), docs  # (B, cm+m, d), (B, cm+m)

    def _needs_attention_weights(self):
        return self.compression == "most_used"

    def _update_state(self, context, context_docs, x, weights, training):
        cm, m, length = self.compressed_memory_length, self.memory_length, x.shape[1]
        seq, seq_docs = context[:, cm:], context_docs[:, cm:]  # [mem; x]: (B, m+L, d)
        evicted = ops.stop_gradient(seq[:, :length])  # the L oldest leave the FIFO memory
        evicted_docs = seq_docs[:, :length]
        usage = None
        if weights is not None:  # (B, h, L, cm+m+L): attention each evicted state received
            usage = ops.sum(ops.cast(weights[..., cm : cm + length], "float32"), axis=(1, 2))
        compressed, compressed_docs = self.compressor(evicted, evicted_docs, usage)
        if training and self.compression == "conv" and self.reconstruction_loss_weight > 0:
            loss = self.attention_reconstruction_loss(x, evicted, compressed)
            self.add_loss(self.reconstruction_loss_weight * loss)
        new_cmem = ops.concatenate(
            [ops.cast(self.compressed_memory, compressed.dtype), compressed], axis=1
        )[:, -cm:]
        new_cdocs = ops.concatenate(
            [ops.cast(self.compressed_documents, "int32"), compressed_docs], axis=1
        )[:, -cm:]
        self.compressed_memory.assign(
            ops.cast(ops.stop_gradient(new_cmem), self.compressed_memory.dtype)
        )
        self.compressed_documents.assign(new_cdocs)
        self.memory.assign(ops.cast(ops.stop_gradient(seq[:, -m:]), self.memory.dtype))
        self.memory_documents.assign(seq_docs[:, -m:])

    # ------------------------------------------------------------ auxiliary loss
    def _frozen_norm(self, x):
        """The block's attention layer norm with stopped gradients on gamma and beta."""
        norm = self.attention_norm
        x = ops.cast(x, "float32")
        mean = ops.mean(x, axis=-1, keepdims=True)
        var = ops.mean(ops.square(x - mean), axis=-1, keepdims=True)
        y = (x - mean) * ops.rsqrt(var + norm.epsilon)
        gamma = ops.stop_gradient(ops.cast(norm.gamma, "float32"))
        beta = ops.stop_gradient(ops.cast(norm.beta, "float32"))
        return y * gamma + beta

    @staticmethod
    def _frozen_kernel(projection):
        """The linear map a projection layer applies, as a float32 ``(d_in, d_out)`` matrix with
        a stopped gradient: ``W = P(I) - P(0)``. Asking the layer (not reading ``.kernel``) gives
        the kernel it really applies: after ``model.quantize("int8")`` the dequantized int8
        kernel (a one-hot row quantizes exactly), with LoRA ``W + (alpha/r) A B``."""
        d_in = int(projection.kernel.shape[0])
        eye = ops.eye(d_in, dtype=projection.compute_dtype)[None]  # (1, d_in, d_in)
        zero = ops.zeros_like(eye[:, :1])  # (1, 1, d_in)
        kernel = projection(eye)[0] - projection(zero)[0]  # (d_in, d_out)
        return ops.stop_gradient(ops.cast(kernel, "float32"))

    def content_attention(self, h, memory):
        """Content-based multi-head attention of ``h (B, L, d)`` over ``memory (B, M, d)`` with
        the block's projections frozen (no positions, no mask): ``(B, L, h·dh)``."""
        attention = self.attention  # the shell's projections, read frozen
        q = ops.matmul(self._frozen_norm(h), self._frozen_kernel(attention.query_dense))
        normed = self._frozen_norm(memory)
        k = ops.matmul(normed, self._frozen_kernel(attention.key_dense))
        v = ops.matmul(normed, self._frozen_kernel(attention.value_dense))
        heads = (self.batch_size, -1, self.num_heads, self.key_dim)
        q, k, v = (ops.transpose(ops.reshape(t, heads), (0, 2, 1, 3)) for t in (q, k, v))
        scores = ops.matmul(q, ops.swapaxes(k, -1, -2)) / float(self.key_dim) ** 0.5
        out = ops.matmul(ops.softmax(scores, axis=-1), v)  # (B, h, L, dh)
        return ops.reshape(
            ops.transpose(out, (0, 2, 1, 3)), (self.batch_size, -1, q.shape[1] * q.shape[3])
        )

    def attention_reconstruction_loss(self, h, old_memory, compressed):
        """``mean ‖attn(h, old_mem) - attn(h, f_c(old_mem))‖²``; gradient only into ``f_c``."""
        h = ops.stop_gradient(h)
        target = ops.stop_gradient(self.content_attention(h, ops.stop_gradient(old_memory)))
        recon = self.content_attention(h, compressed)
        return ops.mean(ops.square(target - recon))

    def get_config(self):
        return {
            **super().get_config(),
            "compressed_memory_length": self.compressed_memory_length,
            "compression_rate": self.compression_rate,
            "compression": self.compression,
            "reconstruction_loss_weight": self.reconstruction_loss_weight,
        }
