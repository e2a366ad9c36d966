"""Routing attention (Roy et al., 2021, "Efficient content-based sparse attention with Routing
Transformers").

Each head keeps ``k`` centroids ``μ (k, dh)`` of an *online spherical k-means*. Queries and keys are
normalised, each token is routed to its nearest centroid, and a query attends only to keys routed
to the same centroid: content-based sparsity learned from the data. The centroids are a
non-trainable weight, saved with the model, and are updated during training only (``training=True``)
by an exponential moving average of the (normalised) vectors assigned to them:

``μ_c ← normalise(λ μ_c + (1 - λ) mean{x̂_t : c(t) = c})``,   ``c(t) = argmax_c μ_c·x̂_t``

(clusters that receive no token keep their centroid). Cost ``O(L·k·dh)`` for routing plus
``O(L·w·dh)`` for attention, ``O(L^{1.5})`` overall for ``k ≈ sqrt(L)``, ``w ≈ L/k``.

Static shapes: clusters have data-dependent sizes, so tokens are sorted by ``(cluster, position)``
and the sorted sequence is cut into equal chunks of ``chunk_size`` (``w``); a chunk attends to
itself and the previous chunk, restricted to keys of the query's cluster (the same kernel as LSH
attention, :func:`keras_transformers.ops.hashing.bucketed_attention`). A cluster larger than
``chunk_size`` is thus covered by overlapping windows (each query sees up to ``w`` to ``2w``
same-cluster keys around it) and every query gets an output. Causal attention sees the (up to)
``w`` most recent earlier tokens of its cluster, which keeps it strictly causal. (Balanced top-k
routing, where each centroid picks its ``w`` nearest tokens, leaves some queries unrouted and
leaks future information under causality, so it is not used.)

Shared-QK (default): like Reformer, keys are the normalised queries and a token does not attend to
itself unless it has no other key; required for ``causal=True``. ``shared_qk=False`` routes the
normalised queries and keys separately with the same centroids (non-causal only).

Shapes: ``q (B, L, h, dh)``, ``v (B, L, h_kv, dv)`` -> ``(B, L, h, dv)``; centroids
``(h, k, dh)``; cluster ids ``(B, h, 1, L)``; scores ``(B, h, 1, L/w, w, 2w)``.

Example:
    >>> import numpy as np, keras_transformers as kt
    >>> mha = kt.attention.MultiHeadAttention(
    ...     num_heads=2, key_dim=8, causal=True,
    ...     attention={"name": "routing", "num_clusters": 4, "chunk_size": 8})
    >>> tuple(mha(np.random.rand(1, 64, 16).astype("float32")).shape)
    (1, 64, 16)
"""

import random

import keras
from keras import ops

from keras_transformers.attention.base import AttentionCore
from keras_transformers.attention.linear import check_int
from keras_transformers.attention.lsh import check_bucketed_call, unit
from keras_transformers.attention.registry import register
from keras_transformers.ops.attention import heads_first, heads_last
from keras_transformers.ops.hashing import (
    bucketed_attention,
    bucketed_attention_dense,
    nearest_centroid,
)


@register("routing")
class RoutingAttention(AttentionCore):
    """Routing Transformer attention with online k-means centroids.

    Args:
        num_clusters: number of centroids ``k`` per head (default 16; ``≈ sqrt(L)`` is optimal).
        chunk_size: window ``w`` of the sorted sequence (default 64; ``≈ L/k``).
        decay: EMA factor ``λ`` of the centroid update, in ``[0, 1)`` (default 0.999).
        shared_qk: keys are the normalised queries (default True, required for ``causal``).
        seed: int seed of the initial centroids (None: random).
    """

    supports_position_bias = False
    supports_attention_mask = False
    supports_cross_attention = False
    supports_causal = True
    supports_cache = False
    sparsity_depends_on_content = True
    example_config = {"num_clusters": 4, "chunk_size": 8}
    benchmark_config = {"num_clusters": 16, "chunk_size": 128}
    quick_benchmark_config = {"num_clusters": 4, "chunk_size": 16}

    def __init__(
        self, num_clusters=16, chunk_size=64, decay=0.999, shared_qk=True, seed=None, **kwargs
    ):
        super().__init__(**kwargs)
        self.num_clusters = check_int("num_clusters", num_clusters)
        self.chunk_size = check_int("chunk_size", chunk_size)
        try:
            decay = float(decay)
        except (TypeError, ValueError):
            decay = -1.0
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay={decay!r}: must be in [0, 1).")
        self.decay = decay
        self.shared_qk = bool(shared_qk)
        if seed is not None:
            seed = check_int("seed", seed, minimum=0)
        self.seed = seed
        self._seed = seed if seed is not None else random.randrange(2**31 - 1)

    def build(self, query_shape, key_shape=None):
        heads, dim = int(query_shape[2]), int(query_shape[3])

        def initializer(shape, dtype=None):
            return unit(keras.random.normal(shape, seed=self._seed, dtype="float32"))

        self.centroids = self.add_weight(
            name="centroids",
            shape=(heads, self.num_clusters, dim),
            dtype="float32",
            initializer=initializer,
            trainable=False,
            autocast=False,
        )
        self.built = True

    def update_centroids(self, vectors, clusters, valid=None):
        """One EMA step of spherical k-means.

        Args:
            vectors: unit vectors ``(B, h, L, dh)``.
            clusters: int ``(B, h, L)`` assigned centroid per vector.
            valid: bool ``(B, L)`` or None; invalid (padded) vectors are ignored.
        """
        x = ops.stop_gradient(ops.cast(vectors, "float32"))
        onehot = ops.one_hot(clusters, self.num_clusters, dtype="float32")  # (B, h, L, k)
        if valid is not None:
            onehot = onehot * ops.cast(valid, "float32")[:, None, :, None]
        sums = ops.einsum("bhlk,bhld->hkd", onehot, x)  # (h, k, dh)
        counts = ops.sum(onehot, axis=(0, 2))  # (h, k)
        means = sums / ops.maximum(counts, 1.0)[..., None]
        old = ops.convert_to_tensor(self.centroids)
        new = unit(self.decay * old + (1.0 - self.decay) * means)
        self.centroids.assign(ops.where((counts > 0)[..., None], new, old))

    def compute(self, query, key, value, context):
        """``query (B, L, h, dh)``, ``key/value (B, L, h, ·)`` -> ``(B, L, h, dv)``."""
        check_bucketed_call(self, query, key, context.causal, context.query_offset)
        causal, padding_mask, training = context.causal, context.padding_mask, context.training
        centroids = ops.convert_to_tensor(self.centroids)  # (h, k, dh)
        q = heads_first(query)  # (B, h, L, dh)
        v = heads_first(value)  # (B, h, L, dv)
        q_unit = unit(ops.cast(q, "float32"))  # (B, h, L, dh)
        q_clusters = nearest_centroid(q_unit, centroids)  # (B, h, 1, L)
        if self.shared_qk:
            k, k_unit, k_clusters = q_unit, q_unit, q_clusters
        else:
            k = heads_first(key)  # (B, h, L, dh)
            k_unit = unit(ops.cast(k, "float32"))
            k_clusters = nearest_centroid(k_unit, centroids)
        if training:
            if self.shared_qk:
                self.update_centroids(q_unit, q_clusters[:, :, 0], padding_mask)
            else:
                both = ops.concatenate([q_unit, k_unit], axis=2)  # (B, h, 2L, dh)
                assigned = ops.concatenate([q_clusters[:, :, 0], k_clusters[:, :, 0]], axis=2)
                valid = (
                    None
                    if padding_mask is None
                    else ops.concatenate(
                        [ops.ones_like(padding_mask, dtype="bool"), ops.cast(padding_mask, "bool")],
                        axis=1,
                    )
                )
                self.update_centroids(both, assigned, valid)
        args = (q, k, v, q_clusters, k_clusters, self.chunk_size, self.num_clusters)
        kwargs = {"causal": causal, "key_mask": padding_mask, "shared_qk": self.shared_qk}
        if context.return_scores:
            out, weights = bucketed_attention_dense(*args, **kwargs)  # (B,h,L,dv), (B,h,L,L)
            return heads_last(out), weights
        return heads_last(bucketed_attention(*args, **kwargs))  # (B, L, h, dv)

    def get_config(self):
        return {
            **super().get_config(),
            "num_clusters": self.num_clusters,
            "chunk_size": self.chunk_size,
            "decay": self.decay,
            "shared_qk": self.shared_qk,
            "seed": self.seed,
        }
