"""Feature maps for kernelised (linear-time) attention.

A kernelised attention core replaces ``exp(q·k)`` by ``φ(q)·φ(k)`` for a feature map ``φ`` so that
``softmax(Q Kᵀ) V`` factorises as ``φ(Q) (φ(K)ᵀ V)`` and costs ``O(L·r·dh)`` instead of
``O(L²·dh)`` (see :mod:`keras_transformers.ops.linear_attention`). The maps here:

* :func:`elu_plus_one` -- ``φ(x) = elu(x) + 1`` (Katharopoulos et al., 2020); deterministic, positive.
* :func:`random_fourier_features` -- ``φ(x) = [sin(xW), cos(xW)] / sqrt(D)`` (Rahimi & Recht, 2007;
  RFA, Peng et al., 2021). With the columns of ``W`` drawn from ``N(0, σ⁻² I)``,
  ``E[φ(x)·φ(y)] = exp(-‖x - y‖² / (2σ²))``. (The survey writes ``N(0, σ² I)``, an erratum: with that
  variance the expectation is ``exp(-σ²‖x - y‖²/2)``.)
* :func:`positive_random_features` -- FAVOR+ (Choromanski et al., 2021):
  ``φ⁺(x) = exp(W x - ‖x‖²/2) / sqrt(m)`` with rows of ``W`` from ``N(0, I)``, so that
  ``E[φ⁺(x)·φ⁺(y)] = exp(x·y)``; the features are strictly positive.
  :func:`positive_random_log_features` gives ``log φ⁺`` for the log-space attention forms.
* :func:`gaussian_random_matrix` -- i.i.d. or block-orthogonal Gaussian projections.

Shapes use ``B`` batch, ``h`` heads, ``L`` length, ``dh`` head size, ``r``/``m``/``D`` features.
"""

import math

import keras
from keras import ops


def elu_plus_one(x):
    """``φ(x) = elu(x) + 1``, elementwise; strictly positive. ``(..., dh) -> (..., dh)``."""
    return ops.elu(x) + 1.0


def gaussian_random_matrix(num_rows, dim, seed=None, orthogonal=True, scaling="chi"):
    """A ``(num_rows, dim)`` matrix whose rows are marginally ``N(0, I_dim)``.

    Args:
        num_rows: number of random features ``m``.
        dim: input size ``dh``.
        seed: an int or a ``keras.random.SeedGenerator``.
        orthogonal: draw the rows in blocks of ``dim`` mutually orthogonal rows (the QR factor of a
            Gaussian matrix); ``ceil(m / dim)`` independent blocks, the last one truncated. Within
            a block ``W Wᵀ`` is diagonal. False gives i.i.d. rows.
        scaling: for orthogonal rows, ``"chi"`` gives each row the norm of an independent
            ``N(0, I_dim)`` vector (so every row is exactly ``N(0, I)`` distributed);
            ``"sqrt_dim"`` gives every row the norm ``sqrt(dim)``.

    Returns:
        float32 ``(num_rows, dim)``.
    """
    if scaling not in ("chi", "sqrt_dim"):
        raise ValueError(f"scaling={scaling!r}: allowed values are 'chi', 'sqrt_dim'.")
    seed_a, seed_b = (seed, seed) if not isinstance(seed, int) else (seed, seed + 7919)
    if not orthogonal:
        return keras.random.normal((num_rows, dim), seed=seed_a, dtype="float32")
    blocks = -(-num_rows // dim)
    gauss = keras.random.normal((blocks, dim, dim), seed=seed_a, dtype="float32")
    q, _ = ops.qr(gauss)  # (n_blocks, dim, dim), orthonormal columns
    rows = ops.reshape(ops.transpose(q, (0, 2, 1)), (blocks * dim, dim))[:num_rows]
    if scaling == "chi":
        norms = ops.norm(
            keras.random.normal((num_rows, dim), seed=seed_b, dtype="float32"), axis=-1
        )
    else:
        norms = ops.full((num_rows,), math.sqrt(dim), dtype="float32")
    return rows * norms[:, None]  # (m, dim)


def random_fourier_features(x, projection):
    """Random Fourier features ``φ(x) = [sin(x W), cos(x W)] / sqrt(D)``.

    Args:
        x: ``(..., dh)``.
        projection: ``W`` of shape ``(dh, D)``; draw its entries from ``N(0, σ⁻²)`` to estimate
            the Gaussian kernel ``exp(-‖x - y‖²/(2σ²))``.

    Returns:
        ``(..., 2D)`` in the dtype of ``x``.
    """
    num = projection.shape[-1]
    xw = ops.matmul(x, ops.cast(projection, x.dtype))  # (..., D)
    scale = ops.cast(1.0 / math.sqrt(num), x.dtype)
    return ops.concatenate([ops.sin(xw), ops.cos(xw)], axis=-1) * scale


def positive_random_features(x, projection, is_query, key_mask=None, stabilizer="data"):
    """FAVOR+ positive random features ``φ⁺(x) = exp(W x - ‖x‖²/2) / sqrt(m)``.

    ``x`` should already be scaled by ``dh^{-1/4}`` so that ``φ⁺(q)·φ⁺(k)`` estimates
    ``exp(q·k / sqrt(dh))``, the unnormalised softmax weight.

    Numerical stabilisation (the exponent can overflow): a constant subtracted from the exponent
    cancels between the numerator and the denominator of attention as long as it is the same for
    every *key* of a head (any value may be used per *query*). Queries subtract their own maximum
    over the features. Keys subtract either the maximum over all valid keys and features of the
    head (``stabilizer="data"``, the FAVOR+ reference) or the data-independent bound
    ``max_i ‖w_i‖²/2 >= w·x - ‖x‖²/2`` (``stabilizer="bound"``), which never looks at other
    positions and so keeps causal attention strictly causal. Both are wrapped in
    ``stop_gradient``. The bound underflows to zero features for large norms (issue 17): the
    ``performer`` core uses :func:`positive_random_log_features` and log-space attention.

    Args:
        x: ``(B, h, L, dh)`` already multiplied by ``dh^{-1/4}``.
        projection: ``W`` of shape ``(m, dh)``.
        is_query: whether ``x`` are queries (row-wise stabiliser) or keys.
        key_mask: bool ``(B, 1 or h, L)`` of valid keys (only used by the ``"data"`` stabiliser).
        stabilizer: ``"data"`` or ``"bound"`` (keys only).

    Returns:
        float32 ``(B, h, L, m)``, strictly positive where not underflowed.
    """
    x = ops.cast(x, "float32")
    w = ops.cast(projection, "float32")
    num = w.shape[0]
    logits = ops.einsum("bhld,md->bhlm", x, w) - 0.5 * ops.sum(x * x, axis=-1, keepdims=True)
    if not is_query and key_mask is not None:
        logits = ops.where(key_mask[..., None], logits, -1e30)  # masked keys: features 0
    if is_query:
        shift = ops.max(logits, axis=-1, keepdims=True)  # (B, h, L, 1)
    elif stabilizer == "bound":
        shift = 0.5 * ops.max(ops.sum(w * w, axis=-1))  # scalar
    elif stabilizer == "data":
        shift = ops.max(logits, axis=(2, 3), keepdims=True)  # (B, h, 1, 1)
        shift = ops.where(shift < -1e29, 0.0, shift)  # no valid key at all
    else:
        raise ValueError(f"stabilizer={stabilizer!r}: allowed values are 'data', 'bound'.")
    shift = ops.stop_gradient(shift)
    return ops.exp(logits - shift) * (1.0 / math.sqrt(num))


def positive_random_log_features(x, projection):
    """``log φ⁺(x) = W x - ‖x‖²/2 - log(m)/2``, the FAVOR+ features in log space.

    Attention from log-features (:func:`~keras_transformers.ops.linear_attention.
    log_kernel_attention` and its causal and decoding forms) needs no stabiliser: it subtracts
    per query the largest term that query can see, so no norm of ``x`` underflows every feature.

    Args:
        x: ``(B, h, L, dh)`` already multiplied by ``dh^{-1/4}``.
        projection: ``W`` of shape ``(m, dh)``.

    Returns:
        float32 ``(B, h, L, m)``.
    """
    x = ops.cast(x, "float32")
    w = ops.cast(projection, "float32")
    logits = ops.einsum("bhld,md->bhlm", x, w) - 0.5 * ops.sum(x * x, axis=-1, keepdims=True)
    return logits - 0.5 * math.log(w.shape[0])  # (B, h, L, m)
