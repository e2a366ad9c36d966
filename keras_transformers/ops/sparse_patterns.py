"""The one blocked attention engine of the sparse cores.

Every sparse core, fixed-pattern (``local``, ``local2d``, ``sliding_window``, ``strided``,
``fixed``, ``blockwise``, ``adaptive_span``) or global-local (``longformer``, ``etc``,
``bigbird``), describes its pattern as a list of :class:`SparsePart`: a group of queries
``(B, h, *A, bq, dh)`` together with the small set of keys ``(B, h, *A, m, dh)`` that every query
of the group may look at (``A`` are block axes: ``(G,)`` blocks, ``(d, n)`` dilation classes of
blocks, or none). :func:`sparse_attention` computes one softmax *jointly* over all the parts of
a query (the union of their key sets) without ever forming an ``L x L`` tensor: memory and time
are ``O(L · Σ_parts m_part)``.

Besides ``q, k, v`` a part may carry static numpy positions of its queries and keys (keys outside
``[0, L)`` are masked, the key padding mask is read at them and the relative positions of a
position bias come from them), a static numpy pattern, a dynamic bool mask and dynamic relative
positions (per-sequence global tokens), and a layout mapping its query groups to the sequence
rows when the parts group the queries differently (rows, columns, 2D blocks).

Patterns and positions are built with numpy at trace time from static Python ints, so they are
constants of the graph (XLA friendly). :mod:`keras_transformers.ops.global_local` adds the
global-token pieces (dilated band plans, per-sequence global sets, random blocks) on top.

Shapes: ``B`` batch, ``h`` heads, ``L`` length, ``Lp`` length padded to the blocking, ``G`` query
groups (usually blocks), ``bq`` queries per group, ``m`` keys per group, ``dh``/``dv`` head sizes.
"""

import numpy as np
from keras import ops

from keras_transformers.ops.attention import heads_first, heads_last, repeat_kv_heads
from keras_transformers.ops.blocks import (
    ceil_div,
    gather_positions,
    neighbour_blocks,
    pad_axis,
    split_blocks,
    to_columns,
)

# Finite stand-in for -inf: exp(-1e9 - max) underflows to exactly 0 in float32.
MASK_VALUE = -1e9

__all__ = [
    "FACTORIZED_MODES",
    "MASK_VALUE",
    "SparsePart",
    "band_part",
    "band_pattern",
    "block_pattern",
    "ceil_div",
    "check_int",
    "check_mode",
    "check_self_attention",
    "column_layout",
    "dense_pattern",
    "factorized_parts",
    "sparse_attention",
    "sparse_compute",
    "static_length",
    "static_mask",
    "to_columns",
    "window_part",
    "with_heads",
]


def check_int(name, value, minimum=None, allow_none=False):
    """Validate an integer constructor argument and return it as ``int``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(
            f"{name}={value!r}: must be an integer"
            + (f" >= {minimum}." if minimum is not None else ".")
        )
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}={value}: must be >= {minimum}.")
    return int(value)


def static_length(x, axis, name):
    """The static length of ``axis`` of ``x``, with a clear error when unknown."""
    length = x.shape[axis]
    if length is None:
        raise ValueError(
            f"attention={name!r} needs a static sequence length; build the model with a fixed "
            "max_length (keras.Input(shape=(L, ...)))."
        )
    return int(length)


def check_self_attention(core, query, key, query_offset=0):
    """Checks shared by the blocked cores (static-length self-attention, no KV cache); returns
    the static sequence length ``L``."""
    name = core.variant
    if not (isinstance(query_offset, int) and query_offset == 0):
        raise ValueError(f"attention={name!r} does not support a KV cache (query_offset > 0).")
    length = static_length(query, 1, name)
    key_length = static_length(key, 1, name)
    if key_length != length:
        raise ValueError(
            f"attention={name!r} is self-attention only: key length {key_length} must equal the "
            f"query length {length}."
        )
    return length


# --------------------------------------------------------------------------- layouts
def group_layout(query_shape):
    """``to_flat``/``from_flat`` for groups that are consecutive rows: ``(B, h, *A, bq, c)`` <->
    ``(B, h, prod(A)·bq, c)`` (reshapes only)."""
    groups = tuple(int(s) for s in query_shape[2:-1])
    rows = int(np.prod(groups))

    def to_flat(x):
        return ops.reshape(x, (-1, x.shape[1], rows, x.shape[-1]))

    def from_flat(x):
        return ops.reshape(x, (-1, x.shape[1]) + groups + (x.shape[-1],))

    return to_flat, from_flat


def column_layout(length, stride):
    """``to_flat``/``from_flat`` for groups that are the columns ``r, r + ℓ, ...`` (``G = ℓ``)."""
    n = length // stride

    def to_flat(x):  # (B, h, ℓ, n, c) -> (B, h, n·ℓ, c)
        x = ops.transpose(x, (0, 1, 3, 2, 4))
        return ops.reshape(x, (-1, x.shape[1], length, x.shape[4]))

    def from_flat(x):  # (B, h, Lp, c) -> (B, h, ℓ, n, c)
        x = ops.reshape(x, (-1, x.shape[1], n, stride, x.shape[3]))
        return ops.transpose(x, (0, 1, 3, 2, 4))

    return to_flat, from_flat


# --------------------------------------------------------------------------- parts
class SparsePart:
    """One key set per query group: a term of the joint softmax.

    Args:
        query: ``(B, h, *A, bq, dh)``.
        key: ``(B|1, h|1, *A|1, m, dh)``, or ``(B, h, m, dh)`` shared by every group (global
            keys: the groups are then flattened into one matmul).
        value: like ``key`` with ``dv`` features.
        query_positions: numpy int ``(*A, bq)``: absolute positions (for relative positions).
        key_positions: numpy int ``(*A|1, m)``: absolute key positions; those outside
            ``[0, L)`` are masked and the key padding mask is read at them. None: the caller
            masks the keys itself (``mask``).
        pattern: numpy bool broadcastable to ``(*A, bq, m)``, or ``(h, *A, bq, m)`` (one pattern
            per head, see :func:`with_heads`): which of the gathered keys each query may attend.
        layout: ``(to_flat, from_flat)`` between ``(B, h, *A, bq, c)`` and the sequence rows
            ``(B, h, R, c)``; default :func:`group_layout` (consecutive rows).
        mask: dynamic bool broadcastable to the scores ``(B, h, *A, bq, m)`` (True = attend).
        rel: relative positions ``key_pos - query_pos`` (numpy or int tensor broadcastable to
            ``(*A, bq, m)``; ``(B, *A, bq, m)`` with ``per_batch``) instead of the positions'.
        per_batch: ``rel`` has a leading batch axis (per-sequence key positions).
    """

    def __init__(
        self,
        query,
        key,
        value,
        query_positions=None,
        key_positions=None,
        pattern=None,
        layout=None,
        mask=None,
        rel=None,
        per_batch=False,
    ):
        self.query = query
        self.key = key
        self.value = value
        self.query_positions = _as_array(query_positions, "int64")
        self.key_positions = _as_array(key_positions, "int64")
        self.pattern = _as_array(pattern, bool)
        self.per_head = self.pattern is not None and self.pattern.ndim == len(query.shape) - 1
        self.mask = mask
        self.rel = rel
        self.per_batch = bool(per_batch)
        self.shared = len(key.shape) < len(query.shape)
        self.custom_layout = layout is not None
        self.layout = layout if layout is not None else group_layout(query.shape)

    def relative_positions(self):
        """``key_pos - query_pos`` as int32 ``(*A, bq, m)`` (``(B, *A, bq, m)`` per batch)."""
        rel = self.rel
        if rel is None:
            if self.query_positions is None or self.key_positions is None:
                raise ValueError("A positional bias needs the relative positions of every part.")
            rel = self.key_positions[..., None, :] - self.query_positions[..., :, None]
        if isinstance(rel, np.ndarray):
            return ops.convert_to_tensor(rel.astype("int32"))
        return ops.cast(rel, "int32")


def _as_array(x, dtype):
    return None if x is None else np.asarray(x, dtype)


def static_mask(part, length):
    """Numpy bool mask of a part: its pattern and the validity of its key positions, broadcastable
    to ``(*A, bq, m)`` (``(h, *A, bq, m)`` for per-head patterns); None when unconstrained."""
    if part.key_positions is None:
        return part.pattern
    k = part.key_positions
    valid = np.logical_and(k >= 0, k < length)[..., None, :]  # (*A, 1, m)
    return valid if part.pattern is None else np.logical_and(part.pattern, valid)


def _mask_bias(part, length, key_valid):
    """Additive float32 ``0 / -1e9`` mask of a part (pattern, key validity, padding) or None."""
    bias = None
    static = static_mask(part, length)
    if static is not None and not static.all():
        static = static[None] if part.per_head else static[None, None]  # (1, 1|h, *A, bq, m)
        bias = ops.convert_to_tensor(np.where(static, 0.0, MASK_VALUE).astype("float32"))
    if key_valid is not None and part.key_positions is not None:
        kv = gather_positions(
            ops.cast(key_valid, "float32")[:, None, :, None], part.key_positions
        )  # (B, 1, *A, m, 1)
        pad = (1.0 - ops.swapaxes(kv, -1, -2)) * MASK_VALUE  # (B, 1, *A, 1, m)
        missing = len(part.query.shape) - len(pad.shape)  # keys shared by all the groups
        if missing > 0:
            pad = ops.reshape(pad, (-1, 1) + (1,) * missing + tuple(pad.shape[2:]))
        bias = pad if bias is None else bias + pad
    if part.mask is not None:
        dyn = ops.where(part.mask, 0.0, MASK_VALUE)  # (B|1, 1|h, *A, bq|1, m)
        bias = dyn if bias is None else bias + dyn
    return bias


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


def _merge_groups(x):
    """``(B, h, *A, bq, e) -> (B, h, prod(A)·bq, e)``."""
    rows = int(np.prod(x.shape[2:-1]))
    return ops.reshape(x, (-1, x.shape[1], rows, x.shape[-1]))


def _matmul(x, y, shared):
    """``x (B, h, *A, bq, ·) @ y``; a ``shared`` ``y (B, h, ·, ·)`` takes the groups as rows."""
    if shared and len(x.shape) > 4:
        out = ops.matmul(_merge_groups(x), y)  # (B, h, prod(A)·bq, ·)
        return ops.reshape(out, (-1,) + tuple(x.shape[1:-1]) + (y.shape[-1],))
    return ops.matmul(x, y)


def _score_bias(position, part, rel, causal, heads):
    """The positional score bias of a part (float32, broadcastable to its scores) or None."""
    if part.per_batch:
        bias = position.score_bias(rel, _batch_inside(part.query), _batch_inside(part.key), causal)
    else:
        bias = position.score_bias(rel, part.query, part.key, causal)
    if bias is None:
        return None
    # the head axis sits just before rel's axes: (h, *rel) or (B|1, h, *rel)
    bias = _select_heads(bias, len(bias.shape) - len(rel.shape) - 1, heads, position)
    return ops.cast(bias, "float32")


def _value_term(position, part, weights, rel, heads):
    """The positional value term ``(B, h, *A, bq, dv)`` of a part's weights, or None."""
    if part.per_batch:
        term = position.value_term(_batch_inside(weights), rel)
        term = None if term is None else _batch_outside(term)
    else:
        term = position.value_term(weights, rel)
    return _select_heads(term, 1, heads, position)


# --------------------------------------------------------------------------- the engine
def sparse_attention(
    parts,
    length,
    key_valid=None,
    position=None,
    causal=False,
    dropout=None,
    scale=None,
    value_channels=None,
    heads=None,
    return_weights=False,
):
    """Softmax attention over the union of the parts' key sets.

    ``out_i = Σ_p softmax_{j ∈ ∪_p S_p(i)}(q_i k_jᵀ · scale + bias_ij) v_j``: the softmax is joint
    across parts (one running maximum and one denominator per query row; the parts' keys are never
    concatenated) and runs in float32 whatever the compute dtype. Masks are folded into one
    additive ``0 / -1e9`` float32 term per part (static pattern, key validity, padding, dynamic
    mask); unless the weights themselves are needed (dropout, positional value terms, returned
    weights), the normalisation is applied once to the output instead of to every weight.

    Args:
        parts: list of :class:`SparsePart`.
        length: sequence length ``L`` (key positions ``>= L`` are masked).
        key_valid: bool ``(B, Lk)`` key padding mask read at the key positions (True = keep).
        position: score-side positional encoding or None; its ``score_bias``/``value_term`` get
            each part's relative positions.
        causal: forwarded to the positional hooks (e.g. T5's unidirectional buckets).
        dropout: callable applied to each part's attention weights, or None.
        scale: score scale, default ``1/sqrt(dh)``.
        value_channels: when the values carry extra channels (the debug path appends an identity),
            the positional value term is added to the first ``value_channels`` only.
        heads: indices of the query's heads among the positional encoding's heads, when the
            queries hold a subset of them (Longformer's dilation groups); None = all.
        return_weights: also return the normalised weights of every part.

    Returns:
        ``(B, h, R, dv)`` in the sequence rows of the parts' layouts (``[weights (B, h, *A, bq,
        m) per part]`` too with ``return_weights``). A query with nothing to attend gets zeros.
    """
    dh = parts[0].query.shape[-1]
    if scale is None:
        scale = 1.0 / float(dh) ** 0.5
    use_bias = position is not None and position.has_score_bias
    use_values = position is not None and position.has_value_term
    normalise_weights = use_values or dropout is not None or return_weights
    # Parts that group the queries alike share their row reductions without any reshaping.
    aligned = len(parts) == 1 or all(
        not p.custom_layout and p.query.shape[2:-1] == parts[0].query.shape[2:-1] for p in parts
    )

    def flat(part, x):
        return x if aligned else part.layout[0](x)

    def unflat(part, x):
        return x if aligned else part.layout[1](x)

    scores, rels = [], []
    row_max = None
    for part in parts:
        q = part.query * ops.cast(scale, part.query.dtype)
        s = _matmul(q, ops.swapaxes(part.key, -1, -2), part.shared)  # (B, h, *A, bq, m)
        s = ops.cast(s, "float32")
        rel = part.relative_positions() if (use_bias or use_values) else None
        if use_bias:
            bias = _score_bias(position, part, rel, causal, heads)
            if bias is not None:
                s = _batch_outside(_batch_inside(s) + bias) if part.per_batch else s + bias
        mask_bias = _mask_bias(part, length, key_valid)
        if mask_bias is not None:
            s = s + mask_bias
        scores.append(s)
        rels.append(rel)
        m = flat(part, ops.max(s, axis=-1, keepdims=True))  # (B, h, R, 1)
        row_max = m if row_max is None else ops.maximum(row_max, m)
    # Rows with no key keep a max near -1e9; the floor sends all their exps to exactly 0.
    row_max = ops.maximum(ops.stop_gradient(row_max), MASK_VALUE / 2)
    exps, denom = [], None
    for part, s in zip(parts, scores):
        e = ops.exp(s - unflat(part, row_max))  # (B, h, *A, bq, m) float32
        exps.append(e)
        d = flat(part, ops.sum(e, axis=-1, keepdims=True))  # (B, h, R, 1)
        denom = d if denom is None else denom + d
    # Empty rows (denominator 0) have all-zero numerators: divide them by 1 (finite gradients).
    denom = ops.where(denom > 0, denom, 1.0)
    out, weights = None, []
    for part, e, rel in zip(parts, exps, rels):
        dtype = part.query.dtype
        if normalise_weights:
            # Layouts may pad cells (local2d's grid) with zeros: floor again after unflat.
            d = unflat(part, denom)
            e = e / ops.where(d > 0, d, 1.0)  # the attention weights
        w = ops.cast(e, dtype)
        if dropout is not None:
            w = dropout(w)
        weights.append(w)
        o = _matmul(w, ops.cast(part.value, dtype), part.shared)  # (B, h, *A, bq, dv)
        if use_values:
            term = _value_term(position, part, w, rel, heads)
            if term is not None:
                term = ops.cast(term, o.dtype)
                extra = o.shape[-1] - term.shape[-1]
                if value_channels is not None and extra > 0:  # debug identity channels
                    term = ops.concatenate([term, ops.zeros_like(o[..., :extra])], axis=-1)
                o = o + term
        o = flat(part, o)
        out = o if out is None else out + o
    if not normalise_weights:
        out = ops.cast(ops.cast(out, "float32") / denom, out.dtype)
    if aligned:
        out = parts[0].layout[0](out)  # (B, h, R, dv)
    return (out, weights) if return_weights else out


def sparse_compute(core, query, key, value, context, build_parts, padded_length):
    """The ``compute`` of a fixed-pattern core (self-attention, static length).

    Args:
        core: the calling :class:`~keras_transformers.attention.base.AttentionCore`.
        query: ``(B, L, h, dh)``; key/value ``(B, L, h_kv, dh|dv)`` (grouped heads are repeated
            here).
        context: the call's :class:`~keras_transformers.attention.base.AttentionContext`.
        build_parts: ``f(q, k, v, L, Lp, causal) -> list[SparsePart]`` on heads-first padded
            tensors ``(B, h, Lp, ·)``.
        padded_length: ``f(L) -> Lp``.

    Returns:
        ``(B, L, h, dv)``; with ``context.return_scores`` also the dense equivalent weights
        ``(B, h, L, L)`` (debug path: the values are extended with an identity so that the output
        carries the weights; this builds ``L x L`` tensors on purpose).
    """
    length = check_self_attention(core, query, key, context.query_offset)
    num_heads = query.shape[2]
    key = repeat_kv_heads(key, num_heads)
    value = repeat_kv_heads(value, num_heads)
    lp = int(padded_length(length))
    q = pad_axis(heads_first(query), lp)  # (B, h, Lp, dh)
    k = pad_axis(heads_first(key), lp)  # (B, h, Lp, dh)
    v = pad_axis(heads_first(value), lp)  # (B, h, Lp, dv)
    dv = v.shape[-1]
    if context.return_scores:
        eye = ops.eye(lp, dtype=v.dtype)[None, None]  # (1, 1, Lp, Lp)
        eye = ops.broadcast_to(eye, (ops.shape(v)[0], num_heads, lp, lp))
        v = ops.concatenate([v, eye], axis=-1)  # (B, h, Lp, dv + Lp)
    key_valid = None
    if context.padding_mask is not None:
        key_valid = pad_axis(ops.cast(context.padding_mask, "bool"), lp, axis=1, value=False)
    parts = build_parts(q, k, v, length, lp, context.causal)
    out = sparse_attention(
        parts,
        length,
        key_valid,
        context.position,
        context.causal,
        context.dropout,
        value_channels=dv if context.return_scores else None,
    )  # (B, h, Lp, dv [+ Lp])
    result = heads_last(out[:, :, :length, :dv])  # (B, L, h, dv)
    if context.return_scores:
        return result, out[:, :, :length, dv : dv + length]  # (B, h, L, L)
    return result


# --------------------------------------------------------------------------- pattern helpers
def band_part(q, k, v, length, lp, block, before, after, pattern_fn, heads=None):
    """A :class:`SparsePart` where query block ``i`` sees key blocks ``i - before .. i + after``.

    ``pattern_fn(qpos (n, b, 1), kpos (n, 1, m)) -> bool`` gives the allowed pairs; ``heads``
    (numpy bool ``(h,)``) restricts the part to some heads.
    """
    n = lp // block
    qb = split_blocks(q, block)  # (B, h, n, b, dh)
    kb = neighbour_blocks(split_blocks(k, block), before, after)  # (B, h, n, m, dh)
    vb = neighbour_blocks(split_blocks(v, block), before, after)  # (B, h, n, m, dv)
    qpos = np.arange(lp).reshape(n, block)  # (n, b)
    span = (before + 1 + after) * block
    kpos = (np.arange(n)[:, None] - before) * block + np.arange(span)[None, :]  # (n, m)
    pattern = with_heads(pattern_fn(qpos[:, :, None], kpos[:, None, :]), heads)  # (n, b, m)
    return SparsePart(qb, kb, vb, qpos, kpos, pattern)


def window_part(q, k, v, length, lp, block, reach, causal, pattern_fn, heads=None):
    """A :func:`band_part` over the ``reach`` key blocks before the query block and, unless
    ``causal``, the ``reach`` after it (capped at the sequence)."""
    reach = min(reach, lp // block - 1)
    return band_part(q, k, v, length, lp, block, reach, 0 if causal else reach, pattern_fn, heads)


def block_pattern(causal):
    """``f(qpos, kpos) -> bool``: every gathered key (only ``k <= q`` when causal)."""

    def pattern(qpos, kpos):
        allowed = np.ones(np.broadcast_shapes(qpos.shape, kpos.shape), bool)
        return np.logical_and(allowed, kpos <= qpos) if causal else allowed

    return pattern


def band_pattern(window, causal):
    """``f(qpos, kpos) -> bool``: ``|k - q| <= window`` (and ``k <= q`` when causal)."""

    def pattern(qpos, kpos):
        dist = kpos - qpos
        allowed = np.abs(dist) <= window
        if causal:
            allowed = np.logical_and(allowed, dist <= 0)
        return allowed

    return pattern


def dense_pattern(build_parts, length, padded_length, causal, num_heads=1):
    """The numpy bool ``(h, L, L)`` union pattern of a parts builder (for tests and pictures).

    Runs only the static part of the builder (positions and patterns) on placeholder zeros.
    """
    lp = int(padded_length(length))
    zeros = ops.zeros((1, num_heads, lp, 1))
    parts = build_parts(zeros, zeros, zeros, length, lp, causal)
    pattern = np.zeros((num_heads, length, length), bool)
    for part in parts:
        qpos = part.query_positions
        shape = qpos.shape + part.key_positions.shape[-1:]  # (G, bq, m)
        mask = static_mask(part, length)
        mask = np.broadcast_to(mask if part.per_head else mask[None], (num_heads,) + shape)
        qpos = np.broadcast_to(qpos[..., None], mask.shape[1:])
        kpos = np.broadcast_to(part.key_positions[..., None, :], mask.shape[1:])
        for head in range(num_heads):
            sel = mask[head] & (qpos < length)
            pattern[head, qpos[sel], kpos[sel]] = True
    return pattern


# --------------------------------------------------------------------------- factorized patterns
FACTORIZED_MODES = ("interleave", "merged", "multihead")


def check_mode(mode, layer_index):
    """Validate the Sparse Transformer combination ``mode`` and ``layer_index``."""
    if mode not in FACTORIZED_MODES:
        raise ValueError(
            f"mode={mode!r}: allowed values are {', '.join(repr(m) for m in FACTORIZED_MODES)}."
        )
    return mode, check_int("layer_index", layer_index, 0)


def factorized_parts(first, second, mode, layer_index, num_heads):
    """Combine the two patterns ``A(1)``/``A(2)`` of a factorized core (Child et al., 2019).

    Args:
        first, second: ``f(heads, dedupe) -> SparsePart`` building ``A(1)`` and ``A(2)``;
            ``heads`` is None (all heads) or a numpy bool ``(h,)``; ``dedupe`` asks ``A(2)`` to
            drop the keys ``A(1)`` already has, so the union counts every key once.
        mode: ``"interleave"`` (layer ``layer_index`` uses ``A(1)`` when even, ``A(2)`` when
            odd), ``"merged"`` (one softmax over ``A(1) ∪ A(2)``) or ``"multihead"`` (the first
            ``ceil(h/2)`` heads use ``A(1)``, the others ``A(2)``).
    """
    if mode == "interleave":
        return [first(None, False)] if layer_index % 2 == 0 else [second(None, False)]
    if mode == "merged":
        return [first(None, False), second(None, True)]
    if num_heads < 2:
        raise ValueError(
            f"mode='multihead' needs num_heads >= 2 (half the heads per pattern); got "
            f"num_heads={num_heads}. Use mode='merged' for a single head."
        )
    heads = np.arange(num_heads) < ceil_div(num_heads, 2)
    return [first(heads, False), second(~heads, False)]


def with_heads(pattern, heads):
    """Restrict a ``(G, bq, m)`` pattern to some heads: ``(h, G, bq, m)``."""
    if heads is None:
        return pattern
    return np.logical_and(np.asarray(heads, bool)[:, None, None, None], pattern[None])
