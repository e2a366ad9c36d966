"""Softmax attention math shared by every attention core.

The kernels here work on any number of leading axes, so the same code serves full attention
``(B, h, L, dh)`` and blocked attention ``(B, h, n_blocks, block, dh)``.
"""

from keras import ops

# Finite stand-in for -inf: exp(-1e9 - max) underflows to exactly 0 in float32.
_MASK_VALUE = -1e9


def masked_softmax(scores, mask=None, axis=-1):
    """Softmax over ``axis`` that respects a boolean mask and never yields NaN.

    The softmax runs in float32 whatever the input dtype (mixed precision safe) and the result is
    cast back. A row whose mask is all False gives all-zero weights.

    Args:
        scores: float tensor ``(..., Lk)``.
        mask: bool tensor broadcastable to ``scores`` (True = keep) or None.

    Returns:
        weights with the dtype and shape of ``scores``.
    """
    dtype = scores.dtype
    s = ops.cast(scores, "float32")
    if mask is not None:
        s = ops.where(mask, s, _MASK_VALUE)
    s = s - ops.stop_gradient(ops.max(s, axis=axis, keepdims=True))
    e = ops.exp(s)
    if mask is not None:
        e = ops.where(mask, e, 0.0)
    denom = ops.sum(e, axis=axis, keepdims=True)
    weights = e / ops.maximum(denom, 1e-30)
    return ops.cast(weights, dtype)


def attend(query, key, value, mask=None, bias=None, scale=None, dropout=None):
    """``softmax(q kᵀ · scale + bias, mask) v`` over the last two axes.

    Args:
        query: ``(..., Lq, dh)``.
        key: ``(..., Lk, dh)``.
        value: ``(..., Lk, dv)``.
        mask: bool, broadcastable to ``(..., Lq, Lk)``; True = attend.
        bias: float, broadcastable to ``(..., Lq, Lk)``, added to the scaled scores.
        scale: defaults to ``1/sqrt(dh)``.
        dropout: optional callable applied to the attention weights.

    Returns:
        ``(output (..., Lq, dv), weights (..., Lq, Lk))``.
    """
    if scale is None:
        scale = 1.0 / float(query.shape[-1]) ** 0.5
    scores = ops.matmul(query, ops.swapaxes(key, -1, -2)) * ops.cast(scale, query.dtype)
    if bias is not None:
        scores = scores + ops.cast(bias, scores.dtype)
    weights = masked_softmax(scores, mask)
    if dropout is not None:
        weights = dropout(weights)
    return ops.matmul(weights, value), weights


def repeat_kv_heads(x, num_query_heads, axis=2):
    """Repeat grouped key/value heads so their count matches the query heads (GQA / MQA).

    ``(B, L, h_kv, dh) -> (B, L, h, dh)`` for ``axis=2``.
    """
    num_kv = x.shape[axis]
    if num_kv == num_query_heads:
        return x
    if num_query_heads % num_kv:
        raise ValueError(f"num_key_value_heads={num_kv} must divide num_heads={num_query_heads}.")
    return ops.repeat(x, num_query_heads // num_kv, axis=axis)


def heads_first(x):
    """``(B, L, h, dh) -> (B, h, L, dh)``."""
    return ops.transpose(x, (0, 2, 1, 3))


def heads_last(x):
    """``(B, h, L, dh) -> (B, L, h, dh)``."""
    return ops.transpose(x, (0, 2, 1, 3))


def zero_empty_rows(output, mask):
    """Zero the output rows of queries whose mask row is all False.

    Args:
        output: ``(B, Lq, h, dh)``.
        mask: bool ``(B or 1, 1 or h, Lq, Lk)`` or None.
    """
    if mask is None:
        return output
    has_key = ops.any(mask, axis=-1)  # (B|1, 1|h, Lq)
    has_key = ops.transpose(has_key, (0, 2, 1))[..., None]  # (B|1, Lq, 1|h, 1)
    return output * ops.cast(has_key, output.dtype)
