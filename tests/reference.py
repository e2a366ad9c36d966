"""Independent numpy references for the tests (import as ``from reference import ...``)."""

import math

import numpy as np


def numpy_attention(q, k, v, mask=None, bias=None):
    """Independent dense reference: masked softmax attention in float64 numpy.

    q (B, h, Lq, dh), k (B, h, Lk, dh), v (B, h, Lk, dv); mask bool broadcastable to
    (B, h, Lq, Lk), True = attend; rows with no key give zeros.
    """
    q, k, v = (np.asarray(t, np.float64) for t in (q, k, v))
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if bias is not None:
        scores = scores + bias
    if mask is None:
        mask = np.ones(scores.shape, bool)
    mask = np.broadcast_to(mask, scores.shape)
    scores = np.where(mask, scores, -np.inf)
    row_max = np.max(np.where(mask, scores, -1e300), axis=-1, keepdims=True)
    e = np.where(mask, np.exp(scores - row_max), 0.0)
    denom = e.sum(-1, keepdims=True)
    weights = np.divide(e, denom, out=np.zeros_like(e), where=denom > 0)
    return weights @ v, weights


def factorized_head_masks(a1, a2, mode, layer_index, heads):
    """(h, L, L) per-head masks of the Sparse Transformer's three ways to combine patterns A1, A2:
    merged (union), interleave (layer parity picks one), multihead (first ceil(h/2) heads A1)."""
    if mode == "merged":
        return np.broadcast_to(a1 | a2, (heads,) + a1.shape)
    if mode == "interleave":
        return np.broadcast_to(a1 if layer_index % 2 == 0 else a2, (heads,) + a1.shape)
    first = np.arange(heads) < math.ceil(heads / 2)
    return np.where(first[:, None, None], a1[None], a2[None])
