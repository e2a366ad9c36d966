"""Reformer LSH attention (Kitaev et al., 2020, "Reformer: the efficient transformer").

Full attention is dominated by the few keys most similar to each query. Reformer finds them with
angular locality-sensitive hashing: with a random rotation ``R (dh, b/2)``,

``h(x) = argmax([x R ; -x R])`` in ``[0, b)``,   ``S_i = {j : h(q_i) = h(k_j)}``,

so vectors at a small angle likely share a bucket. Shared-QK attention uses the normalised queries
as keys, ``k_j = q_j / ‖q_j‖``, so every bucket holds as many queries as keys. Positions are sorted
by ``(bucket, position)`` and cut into chunks of ``chunk_size``; a chunk attends to itself and the
previous chunk, keeping same-bucket keys only, so the score tensor is ``(n, c, 2c)``, never
``L × L``. A token never attends to itself unless it has no other key (its score becomes ``-1e5``
instead of being masked). ``num_hashes`` rounds with independent rotations run in parallel and are
merged with their log-sum-exp weights (one softmax over the union of the rounds' keys; keys found
in several rounds are counted once). ``causal=True`` attends to the (up to) ``chunk_size`` most
recent earlier same-bucket tokens, which keeps the output strictly causal (see
:mod:`keras_transformers.ops.hashing`). Padded positions (``padding_mask``) are moved out of every
bucket: they never change the chunks of real tokens, and their own outputs are zeros.

Random rotations: ``num_hashes`` rotations are drawn once from ``seed`` at build time and stored as
a non-trainable weight (saved with the model); inference uses them, so outputs are deterministic.
With ``redraw_rotations=True`` (default) every *training* call draws fresh rotations from
``keras.random`` with a ``SeedGenerator`` (as Reformer re-hashes every step), which makes training
robust to unlucky hashes.

The MultiHeadAttention key projection is unused under shared-QK (keys come from the queries);
``shared_qk=False`` hashes queries and keys separately (non-causal only).

Shapes: ``q (B, L, h, dh)`` (``k`` ignored under shared-QK), ``v (B, L, h_kv, dv)`` ->
``(B, L, h, dv)``; rotations ``(num_hashes, dh, b/2)``; buckets ``(B, h, num_hashes, L)``.
Cost: ``O(L log L)`` for sorting plus ``O(num_hashes · L · c · dh)`` for attention.

Example:
    >>> import numpy as np, keras_transformers as kt
    >>> mha = kt.attention.MultiHeadAttention(
    ...     num_heads=2, key_dim=8, causal=True,
    ...     attention={"name": "lsh", "num_buckets": 4, "num_hashes": 2, "chunk_size": 8})
    >>> tuple(mha(np.random.rand(1, 64, 16).astype("float32")).shape)
    (1, 64, 16)
"""

import random

import keras
from keras import ops

from keras_transformers.attention.base import AttentionCore
from keras_transformers.attention.linear import check_int
from keras_transformers.attention.registry import register
from keras_transformers.ops.attention import heads_first, heads_last
from keras_transformers.ops.hashing import bucketed_attention, bucketed_attention_dense, lsh_hash


def check_bucketed_call(core, query, key, causal, query_offset):
    """Argument checks shared by the content-based (bucketed) cores (the masks and the position
    are checked against the capability attributes by :meth:`AttentionCore.call`)."""
    name = core.variant
    if not (isinstance(query_offset, int) and query_offset == 0):
        raise ValueError(f"attention={name!r} does not support a KV cache (query_offset).")
    if query.shape[1] != key.shape[1]:
        raise ValueError(
            f"attention={name!r} is self-attention only: queries and keys are sorted together; "
            f"got Lq={query.shape[1]}, Lk={key.shape[1]}."
        )
    if causal and not core.shared_qk:
        raise ValueError(
            f"attention={name!r} with causal=True needs shared_qk=True: with separately bucketed "
            "queries and keys the chunk a query lands in depends on later tokens."
        )


def unit(x, eps=1e-6):
    """``x / ‖x‖`` over the last axis."""
    return x / ops.sqrt(ops.sum(x * x, axis=-1, keepdims=True) + eps)


@register("lsh")
class LSHAttention(AttentionCore):
    """Reformer LSH attention.

    The stored random rotations stay float32 under ``model.quantize("int8")`` (a random sample
    for hashing, not a trained kernel; only the shell's projections are quantized). The core
    does not export to ONNX (``keras.ops.argmax`` lowers to ``Bitcast`` on TensorFlow, which
    tf2onnx cannot convert; ``model.export(format="onnx")`` says so).

    Args:
        num_buckets: number of hash buckets ``b`` (even, or 1). None: ``2·ceil(L / chunk_size)``
            from the length seen at build time (about half a chunk per bucket).
        num_hashes: hashing rounds (default 2).
        chunk_size: chunk length ``c`` (default 64).
        shared_qk: keys are the normalised queries (default True, required for ``causal``).
        redraw_rotations: draw fresh rotations on every training call (default True).
        seed: int seed of the stored rotations and of the redraws (None: random).
    """

    supports_position_bias = False
    supports_attention_mask = False
    supports_cross_attention = False
    supports_causal = True
    supports_cache = False
    sparsity_depends_on_content = True
    example_config = {"num_buckets": 4, "num_hashes": 2, "chunk_size": 8}
    benchmark_config = {"num_hashes": 2, "chunk_size": 64}
    quick_benchmark_config = {"num_buckets": 4, "num_hashes": 2, "chunk_size": 16}

    def __init__(
        self,
        num_buckets=None,
        num_hashes=2,
        chunk_size=64,
        shared_qk=True,
        redraw_rotations=True,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if num_buckets is not None:
            num_buckets = check_int("num_buckets", num_buckets)
            if num_buckets > 1 and num_buckets % 2:
                raise ValueError(
                    f"num_buckets={num_buckets}: must be 1 or even (h(x) = argmax([xR; -xR]) "
                    "uses b/2 rotations)."
                )
        self.num_buckets = num_buckets
        self.num_hashes = check_int("num_hashes", num_hashes)
        self.chunk_size = check_int("chunk_size", chunk_size)
        self.shared_qk = bool(shared_qk)
        self.redraw_rotations = bool(redraw_rotations)
        if seed is not None:
            seed = check_int("seed", seed, minimum=0)
        self.seed = seed
        self._seed = seed if seed is not None else random.randrange(2**31 - 1)
        self.seed_generator = keras.random.SeedGenerator(self._seed + 1)

    def build(self, query_shape, key_shape=None):
        if self.num_buckets is None:
            length = query_shape[1]
            if length is None:
                raise ValueError(
                    "attention='lsh' with num_buckets=None needs a fixed sequence length at build "
                    "time; pass num_buckets=."
                )
            self.num_buckets = 2 * (-(-int(length) // self.chunk_size))
        self.head_dim = int(query_shape[-1])
        self._rotation_shape = (self.num_hashes, self.head_dim, max(self.num_buckets // 2, 1))
        self.rotations = self.add_weight(
            name="rotations",
            shape=self._rotation_shape,
            dtype="float32",
            trainable=False,
            autocast=False,
            initializer=lambda shape, dtype=None: keras.random.normal(
                shape, seed=self._seed, dtype="float32"
            ),
        )
        self.built = True

    def current_rotations(self, training=None):
        """Rotations ``(num_hashes, dh, b/2)`` for this call."""
        if training and self.redraw_rotations:
            return keras.random.normal(
                self._rotation_shape, seed=self.seed_generator, dtype="float32"
            )
        return ops.convert_to_tensor(self.rotations)

    def compute(self, query, key, value, context):
        """``query (B, L, h, dh)``, ``key/value (B, L, h, ·)`` -> ``(B, L, h, dv)``."""
        check_bucketed_call(self, query, key, context.causal, context.query_offset)
        causal, padding_mask, training = context.causal, context.padding_mask, context.training
        q = heads_first(query)  # (B, h, L, dh)
        v = heads_first(value)  # (B, h, L, dv)
        rotations = self.current_rotations(training)  # (R, dh, b/2)
        if self.shared_qk:
            k = unit(ops.cast(q, "float32"))  # (B, h, L, dh) normalised queries
            q_buckets = k_buckets = lsh_hash(k, rotations, self.num_buckets)  # (B, h, R, L)
        else:
            k = heads_first(key)  # (B, h, L, dh)
            q_buckets = lsh_hash(q, rotations, self.num_buckets)
            k_buckets = lsh_hash(k, rotations, self.num_buckets)
        args = (q, k, v, q_buckets, k_buckets, self.chunk_size, self.num_buckets)
        kwargs = {"causal": causal, "key_mask": padding_mask, "shared_qk": self.shared_qk}
        if context.return_scores:
            out, weights = bucketed_attention_dense(*args, **kwargs)  # (B,h,L,dv), (B,h,L,L)
            return heads_last(out), weights
        return heads_last(bucketed_attention(*args, **kwargs))  # (B, L, h, dv)

    def get_config(self):
        return {
            **super().get_config(),
            "num_buckets": self.num_buckets,
            "num_hashes": self.num_hashes,
            "chunk_size": self.chunk_size,
            "shared_qk": self.shared_qk,
            "redraw_rotations": self.redraw_rotations,
            "seed": self.seed,
        }
