"""Short sequences with a positions-only bias (ALiBi, T5) on the backend's fused kernel.

``fused_biased_attention`` (PyTorch SDPA with a float ``attn_mask``, JAX ``dot_product_attention``
with ``bias=``; TensorFlow runs the same op's reference path) against a dense numpy reference, with
a padding mask, causality and a row with no key; and ``MultiHeadAttention(full, alibi|t5)`` gives
the same output through the fused kernel as through the explicit path.
"""

import keras
import numpy as np
import pytest

import keras_transformers as kt
from keras_transformers.attention.full import fused_biased_attention


def numpy_biased_attention(q, k, v, bias, keep):
    """``softmax(q kᵀ / sqrt(dh) + bias, keep) v`` in numpy; rows with no key give zeros."""
    s = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1]) + bias
    s = np.where(keep, s, -np.inf)
    m = s.max(-1, keepdims=True)
    e = np.where(keep, np.exp(s - np.where(np.isfinite(m), m, 0.0)), 0.0)
    p = e / np.maximum(e.sum(-1, keepdims=True), 1e-30)  # (B, h, Lq, Lk)
    return np.einsum("bhqk,bkhd->bqhd", p, v)


@pytest.mark.backends
def test_fused_biased_attention_matches_numpy():
    rng = np.random.default_rng(0)
    b, lq, lk, h, d = 2, 7, 9, 2, 8
    q = rng.normal(size=(b, lq, h, d)).astype("float32")
    k, v = (rng.normal(size=(b, lk, h, d)).astype("float32") for _ in range(2))
    bias = rng.normal(size=(1, h, lq, lk)).astype("float32")
    keep = (rng.random((b, 1, lq, lk)) > 0.3) & (
        np.arange(lk)[None, :] <= np.arange(lq)[:, None] + 2
    )
    keep[1, 0, 3] = False  # a query with no key: zeros
    got = keras.ops.convert_to_numpy(fused_biased_attention(q, k, v, bias, keep))
    np.testing.assert_allclose(got, numpy_biased_attention(q, k, v, bias, keep), atol=1e-5)
    assert np.all(got[1, 3] == 0.0)


@pytest.mark.backends
def test_full_with_position_bias_fused_equals_explicit(position="t5"):
    x = np.random.default_rng(1).normal(size=(2, 12, 16)).astype("float32")
    pm = np.ones((2, 12), bool)
    pm[1, 9:] = False
    layer = kt.attention.MultiHeadAttention(
        num_heads=2, key_dim=8, position=position, causal=True, attention="full"
    )
    fused = keras.ops.convert_to_numpy(layer(x, padding_mask=pm))
    layer.attention_core.fused_bias = False
    explicit = keras.ops.convert_to_numpy(layer(x, padding_mask=pm))
    np.testing.assert_allclose(fused, explicit, atol=1e-5)
