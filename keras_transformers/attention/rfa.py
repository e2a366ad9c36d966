"""Random feature attention, RFA (Peng et al., 2021, "Random feature attention"; random Fourier
features from Rahimi & Recht, 2007).

Queries and keys are normalised to unit length, ``q̂ = q/‖q‖``, ``k̂ = k/‖k‖``. For unit vectors
``exp(q̂·k̂ / σ²) = exp(1/σ²) · exp(-‖q̂ - k̂‖² / (2σ²))`` and the Gaussian kernel is estimated by
random Fourier features

``φ(x) = [sin(x W), cos(x W)] / sqrt(D)``,  columns of ``W (dh, D)`` i.i.d. ``N(0, σ⁻² I)``,
``E[φ(x)·φ(y)] = exp(-‖x - y‖² / (2σ²))``,

so ``RFA(q_t) = φ(q̂_t)ᵀ Σ_i φ(k̂_i) v_iᵀ / φ(q̂_t)ᵀ Σ_j φ(k̂_j)`` approximates
``softmax(q̂_t·k̂ / σ²) V`` (the constant ``exp(1/σ²)`` cancels). Variance convention: the survey
writes ``w ~ N(0, σ² I)``; that is an erratum (its expectation is ``exp(-σ²‖x - y‖²/2)``), and this
core uses ``w = ω / σ`` with ``ω ~ N(0, I)``, i.e. ``w ~ N(0, σ⁻² I)``, which makes the identity hold.
The temperature ``σ`` is one number per head, initialised to ``sigma`` and trained when
``learn_sigma=True``.

Causal RFA is the recurrence ``S_t = S_{t-1} + φ(k̂_t) v_tᵀ``, ``z_t = z_{t-1} + φ(k̂_t)``,
``out_t = φ(q̂_t)ᵀ S_t / φ(q̂_t)·z_t``, computed with chunked prefix sums. With ``gating=True``
(causal only) a learned forget gate ``g_t = sigmoid(k_t·w_g + b_g)`` per head (from the key, the
per-head stand-in for the paper's ``x_t``) gives ``S_t = g_t S_{t-1} + (1 - g_t) φ(k̂_t) v_tᵀ`` and
the same for ``z_t``: a recency bias.

Note that the estimate of each ``φ(q̂)·φ(k̂)`` can be negative, so the normaliser is not guaranteed
positive (Performer's positive features fix this); use ``num_features >= dh``.

Shapes: ``q (B, Lq, h, dh)``, ``k, v (B, Lk, h_kv, dh)`` -> ``(B, Lq, h, dv)``; ``W (dh, D)``;
features ``(B, h, L, 2D)``; causal state ``(B, h, 2D, dv)``.
Cost: ``O(L·D·dh)`` time and memory.

Example:
    >>> import numpy as np, keras_transformers as kt
    >>> mha = kt.attention.MultiHeadAttention(
    ...     num_heads=2, key_dim=16, causal=True,
    ...     attention={"name": "rfa", "num_features": 32, "gating": True})
    >>> tuple(mha(np.random.rand(1, 64, 32).astype("float32")).shape)
    (1, 64, 32)
"""

import math

from keras import ops

from keras_transformers.attention.performer import RandomFeatureCore
from keras_transformers.attention.registry import register
from keras_transformers.ops.feature_maps import random_fourier_features


@register("rfa")
class RandomFeatureAttention(RandomFeatureCore):
    """Random feature attention with sin/cos features.

    Under ``model.quantize("int8")`` the random frequencies, ``log_sigma`` and the gate weights
    stay float32 (raw weights of the core; only the shell's projections are quantized).

    Args:
        num_features: ``D`` random frequencies (features have size ``2D``; default 128).
        sigma: initial temperature ``σ > 0``; ``w ~ N(0, σ⁻² I)``.
        learn_sigma: train ``σ`` (one per head) as ``exp(log_sigma)`` (default True).
        gating: learned forget gates in the causal recurrence (causal calls only).
        orthogonal: draw the frequencies in orthogonal blocks (default False: i.i.d.).
        redraw_every: draw new frequencies every this many training calls (0 = never).
        seed: int seed (None: random).
        chunk_size: chunk length of the causal prefix-sum form (default 64).
    """

    # Many features on the short contract sequences: single kernel estimates φ(q̂)·φ(k̂) can be
    # negative, and the dense debug weights show that (see ``signed_attention_weights``).
    example_config = {"num_features": 1024, "chunk_size": 8}
    #: The equivalent dense weights can have (small) negative entries: sin/cos features give an
    #: unbiased but signed estimate of the kernel. Rows still sum to 1.
    signed_attention_weights = True
    benchmark_config = {"num_features": 64}
    quick_benchmark_config = {"num_features": 16, "chunk_size": 16}

    def __init__(
        self,
        num_features=128,
        sigma=1.0,
        learn_sigma=True,
        gating=False,
        orthogonal=False,
        redraw_every=0,
        seed=None,
        chunk_size=64,
        **kwargs,
    ):
        super().__init__(
            num_features=num_features,
            redraw_every=redraw_every,
            orthogonal=orthogonal,
            scaling="chi",
            seed=seed,
            chunk_size=chunk_size,
            **kwargs,
        )
        try:
            sigma = float(sigma)
        except (TypeError, ValueError):
            sigma = -1.0
        if not sigma > 0 or not math.isfinite(sigma):
            raise ValueError(f"sigma={sigma!r}: must be a finite number > 0.")
        self.sigma = sigma
        self.learn_sigma = bool(learn_sigma)
        self.gating = bool(gating)

    def build(self, query_shape, key_shape=None):
        super().build(query_shape, key_shape)
        heads = int(query_shape[2])
        self.log_sigma = self.add_weight(
            name="log_sigma",
            shape=(heads,),
            dtype="float32",
            trainable=self.learn_sigma,
            initializer=lambda shape, dtype=None: ops.full(shape, math.log(self.sigma)),
            autocast=False,
        )
        if self.gating:
            self.gate_kernel = self.add_weight(
                name="gate_kernel",
                shape=(heads, self.head_dim),
                initializer="zeros",
                autocast=False,
                dtype="float32",
            )
            # bias 2: gates start near sigmoid(2) = 0.88, a slow decay
            self.gate_bias = self.add_weight(
                name="gate_bias",
                shape=(heads,),
                initializer=lambda shape, dtype=None: ops.full(shape, 2.0),
                autocast=False,
                dtype="float32",
            )
        self.built = True

    def feature_maps(self, query, key, key_mask=None, causal=False, training=None):
        if self.gating and not causal:
            raise ValueError(
                "attention='rfa' with gating=True is the gated *causal* recurrence; use "
                "causal=True or gating=False."
            )
        omega = self.current_projection(training)  # (D, dh), rows ~ N(0, I)
        sigma = ops.exp(ops.convert_to_tensor(self.log_sigma))  # (h,)
        heads = query.shape[1]
        if sigma.shape[0] != heads:
            raise ValueError(f"attention='rfa' was built for {sigma.shape[0]} heads; got {heads}.")
        # w = ω / σ: (h, dh, D), each column ~ N(0, σ⁻² I)
        projection = ops.transpose(omega)[None] / sigma[:, None, None]
        q = _unit(ops.cast(query, "float32"))  # (B, h, Lq, dh)
        k = _unit(ops.cast(key, "float32"))  # (B, h, Lk, dh)
        phi_q = random_fourier_features(q, projection[None])  # (B, h, Lq, 2D)
        phi_k = random_fourier_features(k, projection[None])  # (B, h, Lk, 2D)
        return phi_q, phi_k

    def gates(self, key, causal=False):
        if not (self.gating and causal):
            return None
        kernel = ops.convert_to_tensor(self.gate_kernel)  # (h, dh)
        bias = ops.convert_to_tensor(self.gate_bias)  # (h,)
        logits = ops.einsum("bhld,hd->bhl", ops.cast(key, "float32"), kernel)
        return ops.sigmoid(logits + bias[None, :, None])  # (B, h, L)

    def get_config(self):
        config = super().get_config()
        config.pop("scaling", None)
        config.update(sigma=self.sigma, learn_sigma=self.learn_sigma, gating=self.gating)
        return config


def _unit(x, eps=1e-6):
    """``x / ‖x‖`` over the last axis."""
    return x / ops.sqrt(ops.sum(x * x, axis=-1, keepdims=True) + eps)
