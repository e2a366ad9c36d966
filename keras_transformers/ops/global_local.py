"""Blocked kernels for attention that mixes a local band with global and random keys.

Used by the Longformer, ETC and BigBird cores. Every query block attends to the union of a few
*key segments* (its neighbour blocks, a handful of gathered global keys, a few random blocks); one
softmax runs over the concatenated segment scores, so the result equals dense masked attention with
the union pattern while memory stays ``O(L · keys_per_query)``.

Layouts:

* per-head tensors ``(B, h, L, dh)`` (heads first);
* blocked queries ``(B, h, *A, b, dh)`` where ``A`` are block axes, e.g. ``(d, n)`` for ``d``
  interleaved dilation classes of ``n`` blocks of ``b`` tokens;
* a segment's keys ``(B|1, h, *A|1, K, dh)``: they broadcast against the query's block axes.

Everything static (positions, band masks, random tables) is computed in numpy from Python-int
shapes, so the kernels trace under XLA (``jit_compile=True``) and run on every Keras backend.
"""

import numpy as np
from keras import ops

from keras_transformers.ops.blocks import neighbour_blocks, num_blocks, slice_axis

# Finite stand-in for -inf (as in ops.attention): exp(-1e9 - max) underflows to exactly 0.
_MASK_VALUE = -1e9

__all__ = [
    "BandPlan",
    "Segment",
    "band_diagonals",
    "band_keys",
    "check_int",
    "check_self_attention",
    "gather_global",
    "interleave_blocks",
    "lookup",
    "neighbour_blocks",
    "random_block_table",
    "scatter_global_rows",
    "segment_attention",
    "slice_axis",
    "select_global_positions",
    "soft_mask_logits",
    "static_length",
    "uninterleave_blocks",
]


def static_length(x, axis, name="sequence"):
    """The static size of ``axis``, or a clear error when it is unknown."""
    length = x.shape[axis]
    if length is None:
        raise ValueError(
            f"The {name} length must be static for blocked sparse attention; build the model "
            "with a fixed length (keras.Input(shape=(L, ...)))."
        )
    return int(length)


def check_int(name, value, minimum):
    """Validate an integer constructor argument (``ValueError: window=0: must be ...``)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}={value!r}: must be an integer >= {minimum}.")
    return int(value)


def check_self_attention(core, query, key, attention_mask, query_offset):
    """Checks shared by the local+global cores; returns the static sequence length."""
    name = core.registry_name
    if attention_mask is not None:
        raise ValueError(
            f"attention={name!r} does not accept an arbitrary attention_mask (B, Lq, Lk); use "
            "padding_mask (B, Lk) and causal=True."
        )
    if not (isinstance(query_offset, int) and query_offset == 0):
        raise ValueError(f"attention={name!r} does not support a KV cache (query_offset != 0).")
    length = static_length(query, 1, "query")
    if static_length(key, 1, "key") != length:
        raise ValueError(
            f"attention={name!r} is self-attention only: query length {length} != key length "
            f"{key.shape[1]}."
        )
    return length


# ----------------------------------------------------------------------------- segments
class Segment:
    """One group of keys that a block of queries attends to.

    Args:
        key: ``(B|1, h, *A|1, K, dh)``, or ``(B|1, h, K, dh)`` with ``shared=True`` (the same
            keys for every query block, e.g. gathered global tokens).
        value: like ``key`` with ``dv`` features.
        mask: bool broadcastable to the scores ``(B, h, *A, Lq, K)`` (True = attend) or None.
        rel: relative positions ``key_pos - query_pos``: int ``(*A, Lq, K)`` (numpy or tensor,
            broadcastable over ``A``), or ``(B, *A, Lq, K)`` with ``per_batch=True`` when the key
            positions differ between sequences (dynamic global tokens). Needed only with a
            score-side position bias.
        per_batch: ``rel`` carries a leading batch axis.
        shared: ``key``/``value`` have no block axes; the query blocks are flattened into one
            matmul instead of broadcasting the keys over the blocks.
    """

    def __init__(self, key, value, mask=None, rel=None, per_batch=False, shared=False):
        self.key = key
        self.value = value
        self.mask = mask
        self.rel = rel
        self.per_batch = bool(per_batch)
        self.shared = bool(shared)


def _as_int_tensor(rel):
    if isinstance(rel, np.ndarray):
        return ops.convert_to_tensor(rel.astype("int32"))
    return ops.cast(rel, "int32")


def _batch_inside(x):
    """``(B, h, ...) -> (1, h, B, ...)``: moves the batch among the block axes so that a
    per-batch relative-position tensor ``(B, ..., Lq, Lk)`` fits the positional hooks, which
    broadcast ``rel`` ``(...)`` against ``(B, h, ...)``."""
    return ops.expand_dims(ops.swapaxes(x, 0, 1), 0)


def _batch_outside(x):
    """Inverse of :func:`_batch_inside` for a result ``(1, h, B, ...)``."""
    return ops.swapaxes(x[0], 0, 1)


def _select_heads(term, axis, heads, position):
    """Keep the heads ``heads`` of a per-head positional term computed for all heads (ALiBi
    slopes, T5 tables) when the query holds only a subset of the heads."""
    if heads is None or term is None or axis < 0:
        return term
    total = position.num_heads
    if total is None or term.shape[axis] != total or total == len(heads):
        return term
    return ops.take(term, ops.convert_to_tensor(np.asarray(heads, "int32")), axis=axis)


def _segment_bias(position, segment, query, causal, heads):
    rel = _as_int_tensor(segment.rel)
    if segment.per_batch:
        bias = position.score_bias(rel, _batch_inside(query), _batch_inside(segment.key), causal)
    else:
        bias = position.score_bias(rel, query, segment.key, causal)
    if bias is None:
        return None
    # the head axis sits just before rel's axes: (h, *rel) or (B|1, h, *rel)
    return _select_heads(bias, len(bias.shape) - len(rel.shape) - 1, heads, position)


def _flat(x):
    """``(B, h, *A, Lq, e) -> (B, h, prod(A)·Lq, e)``."""
    rows = int(np.prod(x.shape[2:-1]))
    return ops.reshape(x, (-1, x.shape[1], rows, x.shape[-1]))


def _scores(query, seg, scale):
    """``q kᵀ · scale`` ``(B, h, *A, Lq, K)`` for one segment."""
    key_t = ops.swapaxes(seg.key, -1, -2)
    if seg.shared and len(query.shape) > 4:
        s = ops.matmul(_flat(query), key_t)  # (B, h, prod(A)·Lq, K)
        s = ops.reshape(s, (-1,) + tuple(query.shape[1:-1]) + (seg.key.shape[-2],))
    else:
        s = ops.matmul(query, key_t)
    return s * ops.cast(scale, s.dtype)


def _weighted_values(w, seg):
    """``w v`` ``(B, h, *A, Lq, dv)`` for one segment."""
    value = ops.cast(seg.value, w.dtype)
    if seg.shared and len(w.shape) > 4:
        out = ops.matmul(_flat(w), value)  # (B, h, prod(A)·Lq, dv)
        return ops.reshape(out, (-1,) + tuple(w.shape[1:-1]) + (value.shape[-1],))
    return ops.matmul(w, value)


def segment_attention(
    query, segments, position=None, causal=False, dropout=None, scale=None, heads=None
):
    """Softmax attention of ``query`` over the union of key segments.

    ``out = Σ_s softmax_all(q k_sᵀ · scale + bias_s, mask_s) v_s`` where the softmax normalises
    over the keys of all segments together. Like ``ops.attention.masked_softmax`` it runs in
    float32 whatever the input dtype (mixed precision safe), masks by exclusion (never NaN) and
    gives zero weights (so zero output) to a query with no key left. The segments are never
    concatenated: one running maximum and one denominator are shared across them.

    Args:
        query: ``(B, h, *A, Lq, dh)``.
        segments: list of :class:`Segment`.
        position: score-side positional encoding (its ``score_bias``/``value_term`` hooks are
            applied per segment with the segment's ``rel``) or None.
        causal: forwarded to the hooks (it selects e.g. T5's unidirectional buckets).
        dropout: callable on the weights (applied per segment), or None.
        scale: defaults to ``1 / sqrt(dh)``.
        heads: indices of the query's heads among the positional encoding's heads, when
            ``query`` holds a subset of them (Longformer's dilation groups); None = all.

    Returns:
        ``(output (B, h, *A, Lq, dv), [weights (B, h, *A, Lq, K_s) per segment])``.
    """
    if scale is None:
        scale = 1.0 / float(query.shape[-1]) ** 0.5
    use_bias = position is not None and position.has_score_bias
    use_value_term = position is not None and position.has_value_term
    dtype = query.dtype
    scores = []
    for seg in segments:
        if (use_bias or use_value_term) and seg.rel is None:
            raise ValueError("A positional bias needs the relative positions of every segment.")
        s = _scores(query, seg, scale)
        if use_bias:
            bias = _segment_bias(position, seg, query, causal, heads)
            if bias is not None:
                if seg.per_batch:
                    s = _batch_outside(_batch_inside(s) + ops.cast(bias, s.dtype))
                else:
                    s = s + ops.cast(bias, s.dtype)
        s = ops.cast(s, "float32")
        if seg.mask is not None:
            s = ops.where(seg.mask, s, _MASK_VALUE)
        scores.append(s)
    peak = None
    for s in scores:
        m = ops.max(s, axis=-1, keepdims=True)
        peak = m if peak is None else ops.maximum(peak, m)
    peak = ops.stop_gradient(peak)  # (B, h, *A, Lq, 1)
    exps, denom = [], None
    for seg, s in zip(segments, scores):
        e = ops.exp(s - peak)
        if seg.mask is not None:
            e = ops.where(seg.mask, e, 0.0)
        exps.append(e)
        total = ops.sum(e, axis=-1, keepdims=True)
        denom = total if denom is None else denom + total
    inv = 1.0 / ops.maximum(denom, 1e-30)
    out, parts = None, []
    for seg, e in zip(segments, exps):
        w = ops.cast(e * inv, dtype)  # (B, h, *A, Lq, K_s)
        if dropout is not None:
            w = dropout(w)
        parts.append(w)
        term = _weighted_values(w, seg)  # (B, h, *A, Lq, dv)
        if use_value_term:
            rel = _as_int_tensor(seg.rel)
            if seg.per_batch:
                extra = position.value_term(_batch_inside(w), rel)
                extra = None if extra is None else _batch_outside(extra)
            else:
                extra = position.value_term(w, rel)
            extra = _select_heads(extra, 1, heads, position)
            if extra is not None:
                term = term + ops.cast(extra, term.dtype)
        out = term if out is None else out + term
    return out, parts


def soft_mask_logits(scores, mask, constant=10000.0):
    """ETC's additive masking ``a - (1 - M) · C`` (Ainslie et al., 2020; ``C = 10000``).

    Kept for reference and tests: the cores use the hard mask of ``masked_softmax``, which equals
    this up to ``exp(-C) ≈ 0`` on rows with at least one key and gives zeros on empty rows.
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


def lookup(mask, positions, length):
    """Read a ``(B, L)`` bool mask at static ``positions`` (any shape) -> ``(B, *positions)``;
    positions outside ``[0, length)`` read False."""
    positions = np.asarray(positions)
    inside = (positions >= 0) & (positions < length)
    flat = np.clip(positions, 0, length - 1).reshape(-1).astype("int32")
    got = ops.take(ops.cast(mask, "bool"), ops.convert_to_tensor(flat), axis=1)  # (B, P)
    got = ops.reshape(got, (-1,) + positions.shape)
    return ops.logical_and(got, ops.convert_to_tensor(inside)[None])


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
