"""Block-sparse attention engine shared by the fixed-pattern cores.

The cores ``local``, ``local2d``, ``sliding_window``, ``strided``, ``fixed`` and ``blockwise`` (and
any other core that wants it) describe their sparsity pattern as one or more :class:`SparsePart`:
a group of queries ``(B, h, G, bq, dh)`` together with the small set of keys ``(B, h, G, m, dh)``
that every query of the group may look at, the static absolute positions of both and a static
boolean pattern ``(G, bq, m)``. :func:`sparse_attention` then computes one softmax *jointly* over
all parts of a query (the union of the parts' key sets) without ever forming an ``L x L`` tensor:
memory and time are ``O(L · Σ_parts m_part)``.

Patterns and positions are built with numpy at trace time from static Python ints, so they are
constants of the graph (XLA friendly); only the key padding mask is dynamic.

Shapes: ``B`` batch, ``h`` heads, ``L`` length, ``Lp`` length padded to the blocking, ``G`` query
groups (usually blocks), ``bq`` queries per group, ``m`` keys per group, ``dh``/``dv`` head sizes.
"""

import numpy as np
from keras import ops

from keras_transformers.ops.attention import heads_first, heads_last, repeat_kv_heads

_MASK_VALUE = -1e9


def ceil_div(a, b):
    """``ceil(a / b)`` for Python ints."""
    return -(-int(a) // int(b))


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


# --------------------------------------------------------------------------- layout helpers
def pad_axis(x, target, axis=2, value=0):
    """Pad ``axis`` of ``x`` at the end up to the static length ``target``."""
    pad = target - int(x.shape[axis])
    if pad <= 0:
        return x
    widths = [(0, 0)] * len(x.shape)
    widths[axis] = (0, pad)
    return ops.pad(x, widths, constant_values=value)


def to_blocks(x, block_size):
    """``(B, h, Lp, c) -> (B, h, Lp / block, block, c)``."""
    h, lp, c = x.shape[1], x.shape[2], x.shape[3]
    return ops.reshape(x, (-1, h, lp // block_size, block_size, c))


def to_columns(x, stride):
    """``(B, h, Lp, c) -> (B, h, stride, Lp / stride, c)``: column ``r`` holds ``r, r + ℓ, ...``."""
    return ops.transpose(to_blocks(x, stride), (0, 1, 3, 2, 4))


def neighbours(blocks, before, after):
    """``(B, h, n, b, c) -> (B, h, n, (before + 1 + after)·b, c)``: block ``i`` with its neighbours
    ``i - before .. i + after`` (zero blocks past either end)."""
    n = blocks.shape[2]
    if before or after:
        blocks = ops.pad(blocks, [(0, 0), (0, 0), (before, after), (0, 0), (0, 0)])
    parts = [blocks[:, :, o : o + n] for o in range(before + after + 1)]
    return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=3)


def gather_positions(x, positions):
    """``x (B, h, Lp, c)`` at static positions ``(G, m)`` -> ``(B, h, G, m, c)``.

    Positions outside ``[0, Lp)`` are clipped (callers mask them out).
    """
    positions = np.asarray(positions)
    lp = x.shape[2]
    flat = np.clip(positions, 0, lp - 1).reshape(-1).astype("int32")
    out = ops.take(x, ops.convert_to_tensor(flat), axis=2)  # (B, h, G·m, c)
    return ops.reshape(out, (-1, x.shape[1]) + tuple(positions.shape) + (x.shape[3],))


def row_layout(length):
    """``to_flat``/``from_flat`` pair for groups that are consecutive blocks of ``Lp``."""

    def to_flat(x):  # (B, h, G, bq, c) -> (B, h, G·bq, c)
        return ops.reshape(x, (-1, x.shape[1], x.shape[2] * x.shape[3], x.shape[4]))

    def from_flat(x, groups):  # (B, h, Lp, c) -> (B, h, G, Lp/G, c)
        return ops.reshape(x, (-1, x.shape[1], groups, length // groups, x.shape[3]))

    return to_flat, from_flat


def column_layout(length):
    """``to_flat``/``from_flat`` for groups that are the columns ``r, r + ℓ, ...`` (``G = ℓ``)."""

    def to_flat(x):  # (B, h, ℓ, n, c) -> (B, h, n·ℓ, c)
        x = ops.transpose(x, (0, 1, 3, 2, 4))
        return ops.reshape(x, (-1, x.shape[1], x.shape[2] * x.shape[3], x.shape[4]))

    def from_flat(x, groups):  # (B, h, Lp, c) -> (B, h, ℓ, n, c)
        x = ops.reshape(x, (-1, x.shape[1], length // groups, groups, x.shape[3]))
        return ops.transpose(x, (0, 1, 3, 2, 4))

    return to_flat, from_flat


# --------------------------------------------------------------------------- parts and engine
class SparsePart:
    """One key set per query group.

    Args:
        query: ``(B, h, G, bq, dh)``.
        key: ``(B, h or 1, G or 1, m, dh)``.
        value: ``(B, h or 1, G or 1, m, dv)``.
        query_positions: numpy int ``(G, bq)``, absolute positions in the unpadded sequence.
        key_positions: numpy int ``(G, m)`` (or ``(1, m)``); positions outside ``[0, L)`` are
            masked out automatically.
        pattern: numpy bool broadcastable to ``(G, bq, m)`` or ``(h, G, bq, m)``: which of the
            gathered keys each query may attend (causality, band, dedup across parts, heads).
        layout: ``(to_flat, from_flat)``; ``to_flat`` maps ``(B, h, G, bq, c)`` to the sequence
            layout ``(B, h, Lp, c)`` and ``from_flat(x, G)`` back. Defaults to :func:`row_layout`.
    """

    def __init__(self, query, key, value, query_positions, key_positions, pattern, layout=None):
        self.query = query
        self.key = key
        self.value = value
        self.query_positions = np.asarray(query_positions, "int64")
        self.key_positions = np.asarray(key_positions, "int64")
        self.pattern = np.asarray(pattern, bool)
        if layout is None:
            layout = row_layout(int(query.shape[2]) * int(query.shape[3]))
        self.layout = layout

    def relative_positions(self):
        """``key_pos - query_pos`` as int32 ``(G, bq, m)``."""
        rel = self.key_positions[:, None, :] - self.query_positions[:, :, None]
        return ops.convert_to_tensor(rel.astype("int32"))


def static_mask(part, length):
    """Numpy bool mask of a part, including key validity: ``(G, bq, m)`` or ``(h, G, bq, m)``."""
    k = part.key_positions
    valid = np.logical_and(k >= 0, k < length)[:, None, :]  # (G, 1, m)
    return np.logical_and(part.pattern, valid)


def sparse_attention(
    parts,
    length,
    key_valid=None,
    position=None,
    causal=False,
    dropout=None,
    scale=None,
    value_channels=None,
):
    """Softmax attention over the union of the parts' key sets.

    The softmax is joint across parts and runs in float32 whatever the compute dtype. Masks are
    folded into one additive ``0 / -1e9`` float32 term per part (static pattern + key padding),
    and, unless the weights themselves are needed (dropout, positional value terms), the
    normalisation is applied once to the output instead of to every weight.

    Args:
        parts: list of :class:`SparsePart`, all covering the same padded sequence ``Lp``.
        length: unpadded sequence length ``L`` (keys at ``>= L`` are masked).
        key_valid: bool ``(B, Lp)`` key padding mask (True = keep) or None.
        position: score-side positional encoding or None; its ``score_bias``/``value_term`` get
            each part's relative positions ``(G, bq, m)``.
        causal: forwarded to ``position.score_bias``.
        dropout: callable applied to each part's attention weights, or None.
        scale: score scale, default ``1/sqrt(dh)``.
        value_channels: when the values carry extra channels (the debug path appends an identity),
            the positional value term is added to the first ``value_channels`` only.

    Returns:
        ``(B, h, Lp, dv)``. A query with nothing to attend gets zeros.
    """
    dh = parts[0].query.shape[-1]
    if scale is None:
        scale = 1.0 / float(dh) ** 0.5
    use_bias = position is not None and position.has_score_bias
    use_values = position is not None and position.has_value_term
    normalise_weights = use_values or dropout is not None

    def flat(part, x):
        return part.layout[0](x)

    def unflat(part, x):
        return part.layout[1](x, part.query.shape[2])

    scores, rels = [], []
    row_max = None
    for part in parts:
        q = part.query * ops.cast(scale, part.query.dtype)
        s = ops.matmul(q, ops.swapaxes(part.key, -1, -2))  # (B, h, G, bq, m)
        s = ops.cast(s, "float32")
        rel = part.relative_positions() if (use_bias or use_values) else None
        if use_bias:
            bias = position.score_bias(rel, part.query, part.key, causal)
            if bias is not None:
                s = s + ops.cast(bias, "float32")
        mask_bias = _mask_bias(part, length, key_valid)
        if mask_bias is not None:
            s = s + mask_bias
        scores.append(s)
        rels.append(rel)
        m = flat(part, ops.max(s, axis=-1, keepdims=True))  # (B, h, Lp, 1)
        row_max = m if row_max is None else ops.maximum(row_max, m)
    # Rows with no key keep a max near -1e9; the floor sends all their exps to exactly 0.
    row_max = ops.maximum(ops.stop_gradient(row_max), _MASK_VALUE / 2)
    exps, denom = [], None
    for part, s in zip(parts, scores):
        e = ops.exp(s - unflat(part, row_max))  # (B, h, G, bq, m) float32
        exps.append(e)
        d = flat(part, ops.sum(e, axis=-1, keepdims=True))  # (B, h, Lp, 1)
        denom = d if denom is None else denom + d
    # Empty rows (denominator 0) have all-zero numerators: divide them by 1 (finite gradients).
    denom = ops.where(denom > 0, denom, 1.0)
    out = None
    for part, e, rel in zip(parts, exps, rels):
        dtype = part.query.dtype
        if normalise_weights:
            # Layouts may pad cells (local2d's grid) with zeros: floor again after unflat.
            d = unflat(part, denom)
            e = e / ops.where(d > 0, d, 1.0)  # the attention weights
        w = ops.cast(e, dtype)
        if dropout is not None:
            w = dropout(w)
        o = ops.matmul(w, ops.cast(part.value, dtype))  # (B, h, G, bq, dv)
        if use_values:
            term = position.value_term(w, rel)
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
    return out


def _mask_bias(part, length, key_valid):
    """Additive float32 ``0 / -1e9`` mask of a part (pattern, key validity, padding) or None."""
    static = static_mask(part, length)
    static = static[None] if static.ndim == 4 else static[None, None]  # (1, 1|h, G, bq, m)
    bias = None
    if not static.all():
        bias = ops.convert_to_tensor(np.where(static, 0.0, _MASK_VALUE).astype("float32"))
    if key_valid is not None:
        kv = gather_positions(
            ops.cast(key_valid, "float32")[:, None, :, None], part.key_positions
        )  # (B, 1, G, m, 1)
        pad = (1.0 - ops.swapaxes(kv, -1, -2)) * _MASK_VALUE  # (B, 1, G, 1, m)
        bias = pad if bias is None else bias + pad
    return bias


def run_sparse_core(
    core,
    query,
    key,
    value,
    build_parts,
    padded_length,
    padding_mask=None,
    attention_mask=None,
    causal=False,
    position=None,
    query_offset=0,
    weights_dropout=None,
    training=None,
    return_attention_scores=False,
):
    """The shared ``call`` of a sparse-pattern core (self-attention, static length).

    Args:
        core: the calling :class:`AttentionCore` (for its name in errors).
        query: ``(B, L, h, dh)``; key/value ``(B, L, h_kv, dh|dv)``.
        build_parts: ``f(q, k, v, L, Lp, causal) -> list[SparsePart]`` on heads-first padded
            tensors ``(B, h, Lp, ·)``.
        padded_length: ``f(L) -> Lp``.
        return_attention_scores: also return the dense equivalent ``(B, h, L, L)`` weights
            (debug path: the values are extended with an identity so that the output carries
            the weights; this builds ``L x L`` tensors on purpose).

    Returns:
        ``(B, L, h, dv)`` (and ``(B, h, L, L)`` weights).
    """
    name = getattr(core, "registry_name", type(core).__name__)
    if attention_mask is not None:
        raise ValueError(
            f"attention={name!r} does not accept an arbitrary attention_mask (B, Lq, Lk); use "
            "padding_mask (B, Lk) and causal=True."
        )
    if not (isinstance(query_offset, int) and query_offset == 0):
        raise ValueError(f"attention={name!r} does not support a KV cache (query_offset > 0).")
    length = static_length(query, 1, name)
    key_length = static_length(key, 1, name)
    if key_length != length:
        raise ValueError(
            f"attention={name!r} is self-attention only: key length {key_length} must equal the "
            f"query length {length}."
        )
    num_heads = query.shape[2]
    key = repeat_kv_heads(key, num_heads)
    value = repeat_kv_heads(value, num_heads)
    lp = int(padded_length(length))
    q = pad_axis(heads_first(query), lp)  # (B, h, Lp, dh)
    k = pad_axis(heads_first(key), lp)  # (B, h, Lp, dh)
    v = pad_axis(heads_first(value), lp)  # (B, h, Lp, dv)
    dv = v.shape[-1]
    if return_attention_scores:
        eye = ops.eye(lp, dtype=v.dtype)[None, None]  # (1, 1, Lp, Lp)
        eye = ops.broadcast_to(eye, (ops.shape(v)[0], num_heads, lp, lp))
        v = ops.concatenate([v, eye], axis=-1)  # (B, h, Lp, dv + Lp)
    key_valid = None
    if padding_mask is not None:
        key_valid = pad_axis(ops.cast(padding_mask, "bool"), lp, axis=1, value=False)  # (B, Lp)
    parts = build_parts(q, k, v, length, lp, causal)
    dropout = weights_dropout if (weights_dropout is not None and training) else None
    out = sparse_attention(
        parts,
        length,
        key_valid,
        position,
        causal,
        dropout,
        value_channels=dv if return_attention_scores else None,
    )
    # out: (B, h, Lp, dv [+ Lp])
    result = heads_last(out[:, :, :length, :dv])  # (B, L, h, dv)
    if return_attention_scores:
        weights = out[:, :, :length, dv : dv + length]  # (B, h, L, L)
        return result, weights
    return result


# --------------------------------------------------------------------------- pattern helpers
def band_part(q, k, v, length, lp, block, before, after, pattern_fn, heads=None):
    """A :class:`SparsePart` where query block ``i`` sees key blocks ``i - before .. i + after``.

    ``pattern_fn(qpos (n, b, 1), kpos (n, 1, m)) -> bool`` gives the allowed pairs; ``heads``
    (numpy bool ``(h,)``) restricts the part to some heads.
    """
    n = lp // block
    qb = to_blocks(q, block)  # (B, h, n, b, dh)
    kb = neighbours(to_blocks(k, block), before, after)  # (B, h, n, m, dh)
    vb = neighbours(to_blocks(v, block), before, after)  # (B, h, n, m, dv)
    qpos = np.arange(lp).reshape(n, block)  # (n, b)
    span = (before + 1 + after) * block
    kpos = (np.arange(n)[:, None] - before) * block + np.arange(span)[None, :]  # (n, m)
    pattern = with_heads(pattern_fn(qpos[:, :, None], kpos[:, None, :]), heads)  # (n, b, m)
    return SparsePart(qb, kb, vb, qpos, kpos, pattern, layout=row_layout(lp))


def dense_pattern(build_parts, length, padded_length, causal, num_heads=1):
    """The numpy bool ``(h, L, L)`` union pattern of a parts builder (for tests and pictures).

    Runs only the static part of the builder (positions and patterns) on placeholder zeros.
    """
    lp = int(padded_length(length))
    zeros = ops.zeros((1, num_heads, lp, 1))
    parts = build_parts(zeros, zeros, zeros, length, lp, causal)
    pattern = np.zeros((num_heads, length, length), bool)
    for part in parts:
        mask = static_mask(part, length)
        if mask.ndim == 3:
            mask = np.broadcast_to(mask[None], (num_heads,) + mask.shape)
        qpos = np.broadcast_to(part.query_positions[:, :, None], mask.shape[1:])
        kpos = np.broadcast_to(part.key_positions[:, None, :], mask.shape[1:])
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
