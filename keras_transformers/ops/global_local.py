"""Global-local attention on the blocked engine: the pieces that Longformer, ETC and BigBird add.

Every query block attends to the union of a few key sets (its neighbour blocks, a handful of
global keys, a few random blocks); each set is a
:class:`~keras_transformers.ops.sparse_patterns.SparsePart` and
:func:`~keras_transformers.ops.sparse_patterns.sparse_attention`, the one engine of all the sparse
cores, runs one softmax over their union, so the result equals dense masked attention with the
union pattern while memory stays ``O(L · keys_per_query)``. This module adds what the fixed
patterns do not need:

* :class:`BandPlan`: a (dilated) band laid out as ``d`` interleaved classes of ``n`` blocks of
  ``b`` tokens, queries ``(B, h, d, n, b, dh)`` and keys ``(B, h, d, n, K, dh)``;
* global rows (:func:`global_rows`): a few queries that attend to every key;
* per-sequence global sets (:func:`select_global_positions`, :func:`gather_global`,
  :func:`scatter_global_rows`) with static shapes;
* BigBird's seeded random key blocks (:func:`random_block_table`);
* the dense debug path of these cores (:func:`dense_attention`).

Everything static (positions, band masks, random tables) is computed in numpy from Python-int
shapes, so the kernels trace under XLA (``jit_compile=True``) and run on every Keras backend.
"""

import numpy as np
from keras import ops

from keras_transformers.ops.attention import heads_first, repeat_kv_heads
from keras_transformers.ops.blocks import neighbour_blocks, num_blocks, slice_axis
from keras_transformers.ops.sparse_patterns import (
    SparsePart,
    check_self_attention,
    sparse_attention,
)

__all__ = [
    "BandPlan",
    "band_diagonals",
    "band_keys",
    "dense_attention",
    "gather_global",
    "global_rows",
    "heads_first_qkv",
    "interleave_blocks",
    "random_block_table",
    "scatter_global_rows",
    "select_global_positions",
    "soft_mask_logits",
    "uninterleave_blocks",
]


def heads_first_qkv(core, query, key, value, context):
    """The shared start of the global-local cores: checks, then heads-first ``q, k, v``.

    Returns ``(L, q (B, h, L, dh), k (B, h, L, dh), v (B, h, L, dv), padding_mask (B, L) bool or
    None)``; grouped key/value heads are repeated to ``h``.
    """
    length = check_self_attention(core, query, key, context.query_offset)
    num_heads = query.shape[2]
    q = heads_first(query)  # (B, h, L, dh)
    k = heads_first(repeat_kv_heads(key, num_heads))  # (B, h, L, dh)
    v = heads_first(repeat_kv_heads(value, num_heads))  # (B, h, L, dv)
    padding_mask = context.padding_mask
    if padding_mask is not None:
        padding_mask = ops.cast(padding_mask, "bool")  # (B, L)
    return length, q, k, v, padding_mask


def global_rows(q, k, v, positions, length, context, padding_mask=None):
    """Queries at static ``positions (G,)`` attend to every key: ``(B, h, G, dv)``, ``O(G·L)``.

    ``q (B, h, G, dh)`` are those queries; ``k, v (B, h, L, ·)`` all the keys; with causal keys
    ``j <= position`` only.
    """
    positions = np.asarray(positions)
    kpos = np.arange(length)
    pattern = (kpos[None, :] <= positions[:, None]) if context.causal else None  # (G, L)
    part = SparsePart(q, k, v, positions, kpos, pattern)
    return sparse_attention(
        [part], length, padding_mask, context.position, context.causal, context.dropout
    )


def dense_attention(q, k, v, mask, length, context, padding_mask=None):
    """The dense equivalent of a global-local core (debug path of ``return_attention_scores``).

    Args:
        q, k, v: heads-first ``(B, h, L, ·)``.
        mask: the core's pattern: numpy bool ``(L, L)`` / ``(h, L, L)``, or a bool tensor
            ``(B, h|1, L, L)`` (per-sequence global tokens).

    Returns:
        ``(output (B, h, L, dv), weights (B, h, L, L))``; builds ``L x L`` tensors on purpose.
    """
    pos = np.arange(length)
    static = isinstance(mask, np.ndarray)
    part = SparsePart(
        q, k, v, pos, pos, pattern=mask if static else None, mask=None if static else mask
    )
    out, weights = sparse_attention(
        [part],
        length,
        padding_mask,
        context.position,
        context.causal,
        context.dropout,
        return_weights=True,
    )
    return out, weights[0]


def soft_mask_logits(scores, mask, constant=10000.0):
    """ETC's additive masking ``a - (1 - M) · C`` (Ainslie et al., 2020; ``C = 10000``).

    Kept for reference and tests: the cores drop masked logits exactly, which equals this up to
    ``exp(-C) ≈ 0`` on rows with at least one key and gives zeros on empty rows.
    """
    penalty = (1.0 - ops.cast(mask, scores.dtype)) * ops.cast(constant, scores.dtype)
    return scores - penalty


# ----------------------------------------------------------------------------- band plan
class BandPlan:
    """Static layout of a banded (optionally dilated) attention over a sequence of ``length``.

    Query ``i`` attends keys ``j = i + d·t`` for ``-left <= t <= right`` (``d`` = dilation). The
    sequence is split into ``d`` interleaved classes ``i mod d`` (a dilated window on the sequence
    is a contiguous window on its class), each class into ``n`` blocks of ``b`` tokens; query block
    ``k`` of a class attends to blocks ``k - before .. k + after`` of the same class.

    Attributes (numpy, static):
        block_size ``b``, num_blocks ``n``, before, after, padded_length ``n·b·d``.
        query_positions: ``(d, n, b)`` absolute positions of the blocked queries.
        key_positions: ``(d, n, K)``, ``K = (before + 1 + after)·b``; may lie outside
            ``[0, length)`` (then masked).
        band: bool ``(b, K)``: key column inside the band of a query row (the same for every
            block, since offsets inside a block do not depend on the block).
        real: bool ``(d, n, K)``: the key column is a real token (not off either end).
        rel: int ``(1, 1, b, K)``: ``key_pos - query_pos`` (block-independent, broadcasts over
            ``(d, n)``).
        mask: bool ``(d, n, b, K)`` = ``band & real`` (materialised on access; tests/debug).
    """

    def __init__(self, length, left, right, dilation=1, block_size=None):
        length, left, right, d = int(length), int(left), int(right), int(dilation)
        sub = num_blocks(length, d)  # tokens per dilation class
        b = int(block_size) if block_size else max(left, right, 1)
        b = max(1, min(b, sub))
        n = num_blocks(sub, b)
        before = min(num_blocks(left, b), n - 1)
        after = min(num_blocks(right, b), n - 1)
        m = n * b
        t_q = np.arange(m).reshape(n, b)  # (n, b) index inside the class
        span = (before + 1 + after) * b
        t_k = (np.arange(n)[:, None] - before) * b + np.arange(span)[None, :]  # (n, K)
        offset = (np.arange(span)[None, :] - before * b) - np.arange(b)[:, None]  # (b, K)
        classes = np.arange(d)[:, None, None]
        self.length, self.left, self.right, self.dilation = length, left, right, d
        self.block_size, self.num_blocks, self.before, self.after = b, n, before, after
        self.padded_length = m * d
        self.query_positions = t_q[None] * d + classes  # (d, n, b)
        self.key_positions = t_k[None] * d + classes  # (d, n, K)
        self.band = (offset >= -left) & (offset <= right)  # (b, K)
        self.real = (t_k[None] >= 0) & (t_k[None] < m) & (self.key_positions < length)
        self.rel = (offset * d)[None, None].astype("int32")  # (1, 1, b, K)

    @property
    def mask(self):
        return self.band[None, None] & self.real[:, :, None, :]  # (d, n, b, K)

    @property
    def keys_per_query(self):
        return self.left + self.right + 1


def interleave_blocks(x, plan):
    """``(B, h, L, e) -> (B, h, d, n, b, e)`` following ``plan`` (pads the end with zeros)."""
    heads, size = x.shape[1], x.shape[-1]
    pad = plan.padded_length - x.shape[2]
    if pad:
        x = ops.pad(x, ((0, 0), (0, 0), (0, pad), (0, 0)))
    d, n, b = plan.dilation, plan.num_blocks, plan.block_size
    if d > 1:
        x = ops.reshape(x, (-1, heads, n * b, d, size))  # (B, h, m, d, e)
        x = ops.transpose(x, (0, 1, 3, 2, 4))  # (B, h, d, m, e)
    return ops.reshape(x, (-1, heads, d, n, b, size))  # (B, h, d, n, b, e)


def uninterleave_blocks(x, plan):
    """Inverse of :func:`interleave_blocks`: ``(B, h, d, n, b, e) -> (B, h, L, e)``."""
    heads, size = x.shape[1], x.shape[-1]
    d, n, b = plan.dilation, plan.num_blocks, plan.block_size
    x = ops.reshape(x, (-1, heads, d, n * b, size))  # (B, h, d, m, e)
    if d > 1:
        x = ops.transpose(x, (0, 1, 3, 2, 4))  # (B, h, m, d, e)
    x = ops.reshape(x, (-1, heads, plan.padded_length, size))
    return slice_axis(x, 0, plan.length, axis=2)


def band_keys(x, plan):
    """Blocked neighbour keys ``(B, h, L, e) -> (B, h, d, n, K, e)``."""
    blocks = interleave_blocks(x, plan)
    return neighbour_blocks(blocks, plan.before, plan.after, axis=3)


def band_diagonals(block_scores, plan):
    """Rearrange blocked band scores into the paper's ``(…, L, left + 1 + right)`` band tensor.

    ETC's l2l scores are the ``n_l × (2w+1)`` matrix whose column ``t`` holds the score of key
    ``i + (t - w)``. Args: ``block_scores (..., d, n, b, K)`` laid out as ``plan``. Returns
    ``(band (..., L, W), valid (L, W))`` with ``W = left + 1 + right`` (dilation 1 only).
    """
    if plan.dilation != 1:
        raise ValueError("band_diagonals supports dilation=1 only.")
    b, span = plan.block_size, plan.key_positions.shape[-1]
    offsets = np.arange(-plan.left, plan.right + 1)  # (W,)
    col = plan.before * b + np.arange(b)[:, None] + offsets[None, :]  # (b, W)
    inside = (col >= 0) & (col < span)
    flat = np.arange(b)[:, None] * span + np.clip(col, 0, span - 1)  # (b, W)
    lead = tuple(block_scores.shape[:-2])
    x = ops.reshape(block_scores, lead[:-1] + (-1, b * span))  # (..., d, n, b·K)
    x = ops.take(x, ops.convert_to_tensor(flat.astype("int32")), axis=-1)  # (..., d, n, b, W)
    x = ops.reshape(x, lead[:-2] + (plan.num_blocks * b, offsets.size))
    positions = np.arange(plan.num_blocks * b)[:, None] + offsets[None, :]
    valid = inside[None].repeat(plan.num_blocks, 0).reshape(-1, offsets.size)
    valid &= (positions >= 0) & (positions < plan.length)
    return x[..., : plan.length, :], valid[: plan.length]


# ----------------------------------------------------------------------------- global tokens
def select_global_positions(is_global, max_global):
    """Pick at most ``max_global`` global positions per sequence with static shapes.

    Args:
        is_global: bool ``(B, L)``.
        max_global: static capacity ``G``.

    Returns:
        ``(positions (B, G) int32, valid (B, G) bool, effective (B, L) bool)``: the first
        ``max_global`` global tokens by position (ascending), whether each slot holds one, and the
        global set actually used (tokens past the capacity are treated as local).
    """
    length = int(is_global.shape[1])
    is_global = ops.cast(is_global, "bool")
    rank = ops.cumsum(ops.cast(is_global, "int32"), axis=1)  # (B, L)
    effective = ops.logical_and(is_global, rank <= max_global)
    order = ops.cast(length - ops.arange(length), "float32")[None, :]  # earlier = larger
    score = ops.cast(effective, "float32") * (2.0 * length) + order
    _, positions = ops.top_k(score, k=int(max_global))  # (B, G)
    positions = ops.cast(positions, "int32")
    valid = ops.take_along_axis(effective, positions, axis=1)  # (B, G)
    return positions, valid, effective


def gather_global(x, positions):
    """``x (B, h, L, e)`` at per-sequence ``positions (B, G)`` -> ``(B, h, G, e)``.

    A one-hot contraction (``O(G·L·e)``), which has the same static shape on every backend.
    """
    one_hot = ops.one_hot(positions, x.shape[2], dtype=x.dtype)  # (B, G, L)
    return ops.einsum("bgl,bhle->bhge", one_hot, x)


def scatter_global_rows(out, rows, positions, valid):
    """Replace the rows of ``out (B, h, L, e)`` at ``positions (B, G)`` (where ``valid``) by
    ``rows (B, h, G, e)``."""
    one_hot = ops.one_hot(positions, out.shape[2], dtype=out.dtype)  # (B, G, L)
    one_hot = one_hot * ops.cast(valid, out.dtype)[:, :, None]
    placed = ops.einsum("bgl,bhge->bhle", one_hot, ops.cast(rows, out.dtype))
    hit = ops.sum(one_hot, axis=1)[:, None, :, None]  # (B, 1, L, 1): 1 at global rows
    return out * (1.0 - hit) + placed


# ----------------------------------------------------------------------------- random blocks
def random_block_table(num_blocks_total, num_random, seed, before, after, num_global, causal=False):
    """BigBird's random key blocks, drawn once from ``seed`` (reproducible).

    For each non-global query block ``i`` draw ``num_random`` distinct key blocks among those that
    are neither global (``< num_global``) nor in the window ``i - before .. i + after``; when
    ``causal`` only from the past (``j < i - before``). Rows with fewer candidates keep what exists
    and fill the rest with ``-1``; global query rows are all ``-1``.

    Uses ``numpy.random.RandomState(seed)`` (a stream numpy keeps stable across versions).

    Returns:
        int32 ``(n, num_random)``.
    """
    rng = np.random.RandomState(int(seed))
    n, r = int(num_blocks_total), int(num_random)
    table = -np.ones((n, r), "int32")
    if r == 0:
        return table
    for i in range(num_global, n):
        blocks = np.arange(num_global, n)
        keep = (blocks < i - before) | (blocks > i + after)
        if causal:
            keep &= blocks < i
        candidates = blocks[keep]
        if candidates.size:
            chosen = rng.permutation(candidates)[:r]
            table[i, : chosen.size] = np.sort(chosen)
    return table
