"""Performer attention, FAVOR+ (Choromanski et al., 2021, "Rethinking attention with Performers").

The softmax kernel ``exp(q·k / sqrt(dh))`` is estimated without bias by *positive orthogonal random
features*: with ``x' = x / dh^{1/4}`` and rows ``w_i`` of ``W (m, dh)`` drawn from ``N(0, I)`` in
orthogonal blocks,

``φ⁺(x) = exp(W x' - ‖x'‖²/2) / sqrt(m)``,   ``E[φ⁺(q)·φ⁺(k)] = exp(q·k / sqrt(dh))``,

and attention is computed in linear time, ``φ⁺(Q) (φ⁺(K)ᵀ V) / φ⁺(Q) φ⁺(K)ᵀ 1``. Positive
features make the estimated normaliser positive (sin/cos features can make it vanish or turn
negative); orthogonal rows lower the estimator's variance. The causal form uses chunked prefix
sums. Attention is computed from the log-features ``log φ⁺`` (``log_features = True``, see
:mod:`keras_transformers.ops.linear_attention`): keys are summarised per feature by a log-mass
and a mean value, merged across chunks like the running max of online softmax, and every query
row divides by the largest term it can see (only keys ``j <= i`` when causal). So large
query/key norms never underflow every term to zero in float32 (issue 17: the former
data-independent key bound did from ``x12`` inputs on). Exact in log space are the per-feature
sums over earlier chunks and each query's own key; the other pairs inside one chunk use per-row
shifts with ``HEADROOM`` to spare, which loses a pair only when its query and key features are
misaligned by more than about 160 nats (norms far beyond ``x30``); ``chunk_size=1`` makes the
causal form exact at any norm (memory ``O(L·m·dv)``).

Redraw schedule: the projection ``W`` is a non-trainable weight (saved with the model). With
``redraw_every=n > 0`` a fresh ``W`` is drawn (``keras.random`` and a ``SeedGenerator``) on every
``n``-th training call, counted by a non-trainable ``step`` weight; inference calls always use the
stored ``W``, so predictions are deterministic.

Decoding with a cache keeps the log-space state ``[μ | λ]`` ``(B, h, m, dv + 1)`` (per feature
the mean value and the log-mass of the keys so far); it uses the stored ``W``, so cached and
uncached decoding compute the same estimator.

Shapes: ``q (B, Lq, h, dh)``, ``k, v (B, Lk, h_kv, dh)`` -> ``(B, Lq, h, dv)``;
``W (m, dh)``; features ``(B, h, L, m)``.
Cost: ``O(L·m·dh)`` time and memory (causal: plus ``O(L·c·m + L/c·m·dv)``, ``c = chunk_size``).

Example:
    >>> import numpy as np, keras_transformers as kt
    >>> mha = kt.attention.MultiHeadAttention(
    ...     num_heads=2, key_dim=16, attention={"name": "performer", "num_features": 64})
    >>> tuple(mha(np.random.rand(1, 128, 32).astype("float32")).shape)
    (1, 128, 32)
"""

import random

import keras
from keras import ops

from keras_transformers.attention.linear import KernelAttentionCore, check_int
from keras_transformers.attention.registry import register
from keras_transformers.ops.feature_maps import gaussian_random_matrix, positive_random_log_features


class RandomFeatureCore(KernelAttentionCore):
    """Base of random-feature cores: a stored ``(m, dh)`` Gaussian projection and its redraws.

    The random projection stays float under ``model.quantize("int8")`` (only the shell's
    projections are quantized): it is a sample of ``N(0, I)`` redrawn during training, not a
    trained kernel, and the feature map's ``exp``/``sin`` amplify its rounding errors.

    Args:
        num_features: number of random features ``m``.
        redraw_every: draw a new projection every this many training calls (0 = never).
        orthogonal: draw rows in orthogonal blocks of ``dh`` (True) or i.i.d. (False).
        scaling: row norms of orthogonal rows, ``"chi"`` (exactly ``N(0, I)`` marginals) or
            ``"sqrt_dim"``.
        seed: int seed of the initial projection and of the redraws; None picks one at random.
        chunk_size: chunk length of the causal prefix-sum form.
    """

    def __init__(
        self,
        num_features=128,
        redraw_every=0,
        orthogonal=True,
        scaling="chi",
        seed=None,
        chunk_size=64,
        **kwargs,
    ):
        super().__init__(chunk_size=chunk_size, **kwargs)
        self.num_features = check_int("num_features", num_features)
        self.redraw_every = check_int("redraw_every", redraw_every, minimum=0)
        if scaling not in ("chi", "sqrt_dim"):
            raise ValueError(f"scaling={scaling!r}: allowed values are 'chi', 'sqrt_dim'.")
        self.orthogonal = bool(orthogonal)
        self.scaling = scaling
        if seed is not None:
            seed = check_int("seed", seed, minimum=0)
        self.seed = seed
        self._seed = seed if seed is not None else random.randrange(2**31 - 1)
        self.seed_generator = keras.random.SeedGenerator(self._seed + 1)

    def _draw(self, seed):
        return gaussian_random_matrix(
            self.num_features,
            self.head_dim,
            seed=seed,
            orthogonal=self.orthogonal,
            scaling=self.scaling,
        )  # (m, dh)

    def build(self, query_shape, key_shape=None):
        self.head_dim = int(query_shape[-1])

        def initializer(shape, dtype=None):
            return self._draw(self._seed)

        self.projection = self.add_weight(
            name="projection",
            shape=(self.num_features, self.head_dim),
            dtype="float32",
            initializer=initializer,
            trainable=False,
            autocast=False,
        )
        self.step = self.add_weight(
            name="step",
            shape=(),
            dtype="int32",
            initializer="zeros",
            trainable=False,
            autocast=False,
        )
        self.built = True

    def current_projection(self, training=None):
        """The projection ``W (m, dh)`` for this call, redrawn on schedule in training."""
        if not training or self.redraw_every == 0:
            return ops.convert_to_tensor(self.projection)
        step = ops.convert_to_tensor(self.step) + 1
        fresh = self._draw(self.seed_generator)
        redraw = ops.equal(step % self.redraw_every, 0)
        projection = ops.where(redraw, fresh, ops.convert_to_tensor(self.projection))
        self.projection.assign(projection)
        self.step.assign(step)
        return projection

    def get_config(self):
        return {
            **super().get_config(),
            "num_features": self.num_features,
            "redraw_every": self.redraw_every,
            "orthogonal": self.orthogonal,
            "scaling": self.scaling,
            "seed": self.seed,
        }


@register("performer")
class PerformerAttention(RandomFeatureCore):
    """FAVOR+ attention with positive orthogonal random features.

    Args:
        num_features: random features ``m`` (default 128; ``m ≈ dh·log(dh)`` is a common choice).
        redraw_every: draw a fresh projection every this many training calls (0 = never,
            default 1000).
        orthogonal: orthogonal blocks of rows (default True) or i.i.d. rows.
        scaling: ``"chi"`` or ``"sqrt_dim"`` row norms of orthogonal rows.
        seed: int seed (None: random).
        chunk_size: chunk length of the causal prefix-sum form (default 64).
    """

    supports_cache = True
    log_features = True
    example_config = {"num_features": 32, "chunk_size": 8}
    benchmark_config = {"num_features": 128}
    quick_benchmark_config = {"num_features": 16, "chunk_size": 16}

    def __init__(
        self,
        num_features=128,
        redraw_every=1000,
        orthogonal=True,
        scaling="chi",
        seed=None,
        chunk_size=64,
        **kwargs,
    ):
        super().__init__(
            num_features=num_features,
            redraw_every=redraw_every,
            orthogonal=orthogonal,
            scaling=scaling,
            seed=seed,
            chunk_size=chunk_size,
            **kwargs,
        )

    def feature_maps(self, query, key, key_mask=None, causal=False, training=None):
        """Log-features ``log φ⁺`` of queries and keys, ``(B, h, L, m)`` (``log_features``)."""
        projection = self.current_projection(training)  # (m, dh)
        scale = float(query.shape[-1]) ** -0.25
        q = ops.cast(query, "float32") * scale  # (B, h, Lq, dh)
        k = ops.cast(key, "float32") * scale  # (B, h, Lk, dh)
        log_q = positive_random_log_features(q, projection)  # (B, h, Lq, m)
        log_k = positive_random_log_features(k, projection)  # (B, h, Lk, m)
        return log_q, log_k
