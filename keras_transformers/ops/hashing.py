"""Content-based bucketing and sort-by-bucket chunked attention (Reformer LSH, Routing Transformer).

Both content-based cores give every token a bucket id per round -- a locality-sensitive hash
(:func:`lsh_hash`) or the nearest k-means centroid (:func:`nearest_centroid`) -- and then run the
same kernel, :func:`bucketed_attention`:

1. sort the positions of each round by ``(bucket, position)``;
2. cut the sorted sequence into chunks of ``c`` positions; each query chunk attends to its own and
   the previous key chunk, keeping only keys of the *same bucket* (``(n, c, 2c)`` scores, never
   ``L × L``);
3. causal (shared-QK only): a query at sorted index ``s`` sees same-bucket keys at sorted indices
   ``[s - c, s]``. Inside one bucket the sorted order is the position order, so these are the
   (up to) ``c`` most recent earlier tokens of the bucket -- a set that does not depend on any later
   token, so the result is strictly causal;
4. shared-QK (keys are the normalised queries): a token may not attend to itself unless it has no
   other key (its score is replaced by ``-1e5`` instead of masked), because ``q·q/‖q‖`` would
   otherwise dominate;
5. several rounds: each round returns its output and the log-sum-exp of its scores; the outputs
   are combined with weights ``softmax_r(lse_r)``, which equals one softmax over the union of the
   rounds' keys. A key found in ``n`` rounds is counted once by subtracting ``log n`` from its
   score (``n`` = number of rounds in which both tokens share a bucket);
6. unsort.

Padding (internal, to a multiple of ``c``, and the user's key padding mask) moves positions to a
sentinel bucket ``b`` that sorts after every real token, so a padded token's content never moves
the chunks of the others; under shared-QK its own (unused) output is zero.

Cost: sorting ``O(L log L)``, attention ``O(R·L·c·dh)`` time and memory for ``R`` rounds.
:func:`bucketed_attention_dense` computes the same result with dense ``(L, L)`` masks (debug path,
``return_attention_scores``).
"""

from keras import ops

from keras_transformers.ops.blocks import (
    block_positions,
    merge_blocks,
    neighbour_blocks,
    neighbour_positions,
    split_blocks,
)

#: Score given to the token itself under shared-QK: far below any real score, far above masked.
SELF_SCORE = -1e5
_MASKED = -1e9


def lsh_hash(x, rotations, num_buckets):
    """Angular LSH, ``h(x) = argmax([x R ; -x R])`` (Andoni et al., 2015; Reformer).

    Args:
        x: ``(B, h, L, dh)``.
        rotations: ``R`` of shape ``(rounds, dh, num_buckets // 2)``.
        num_buckets: ``b`` (even), or 1 (every token in bucket 0).

    Returns:
        int32 bucket ids ``(B, h, rounds, L)`` in ``[0, b)``.
    """
    rounds = rotations.shape[0]
    if num_buckets == 1:
        zeros = ops.zeros_like(x[:, :, None, :, 0], dtype="int32")  # (B, h, 1, L)
        return ops.repeat(zeros, rounds, axis=2)
    rotated = ops.einsum(
        "bhld,rdk->bhrlk", ops.cast(x, "float32"), ops.cast(rotations, "float32")
    )  # (B, h, R, L, b/2)
    return ops.cast(ops.argmax(ops.concatenate([rotated, -rotated], axis=-1), axis=-1), "int32")


def nearest_centroid(x, centroids):
    """Index of the most similar centroid (max dot product) per token.

    Args:
        x: ``(B, h, L, dh)`` (unit vectors for spherical k-means).
        centroids: ``(h, k, dh)``.

    Returns:
        int32 ``(B, h, 1, L)`` cluster ids in ``[0, k)`` (one "round").
    """
    sims = ops.einsum("bhld,hkd->bhlk", ops.cast(x, "float32"), ops.cast(centroids, "float32"))
    return ops.cast(ops.argmax(sims, axis=-1), "int32")[:, :, None, :]


def _gather_rows(x, idx):
    """``x (P, L, d)``, ``idx (P, M)`` int -> ``(P, M, d)`` with ``out[p, m] = x[p, idx[p, m]]``."""
    length, width = x.shape[1], x.shape[2]
    flat = ops.reshape(x, (-1, width))  # (P·L, d)
    offsets = ops.arange(ops.shape(idx)[0], dtype="int32")[:, None] * length  # (P, 1)
    rows = ops.take(flat, ops.reshape(ops.cast(idx, "int32") + offsets, (-1,)), axis=0)
    return ops.reshape(rows, (-1, idx.shape[1], width))


def _gather_per_round(x, perm):
    """``x (B, h, L, d)`` gathered by ``perm (B, h, R, L)`` -> ``(B, h, R, L, d)``."""
    heads, rounds, length, width = x.shape[1], perm.shape[2], perm.shape[3], x.shape[3]
    out = _gather_rows(
        ops.reshape(x, (-1, x.shape[2], width)), ops.reshape(perm, (-1, rounds * length))
    )
    return ops.reshape(out, (-1, heads, rounds, length, width))


def _gather_in_round(x, perm):
    """``x (B, h, R, L, d)`` gathered by ``perm (B, h, R, L)`` along ``L``."""
    heads, rounds, length, width = x.shape[1], x.shape[2], x.shape[3], x.shape[4]
    out = _gather_rows(ops.reshape(x, (-1, length, width)), ops.reshape(perm, (-1, length)))
    return ops.reshape(out, (-1, heads, rounds, length, width))


def _pad_axis(x, pad, axis, value):
    if not pad:
        return x
    widths = [(0, 0)] * len(x.shape)
    widths[axis] = (0, pad)
    return ops.pad(x, widths, constant_values=value)


def _prepare(query, key, value, q_buckets, k_buckets, chunk_size, num_buckets, key_mask, shared_qk):
    """Pad to a multiple of the chunk and give padded positions the sentinel bucket ``b``."""
    length = query.shape[2]
    if length is None:
        raise ValueError(
            "Bucketed attention needs a static sequence length; build the model with a fixed "
            "length (Input(shape=(L,)))."
        )
    c = int(min(chunk_size, length))
    padded = -(-length // c) * c
    pad = padded - length
    query, key, value = (_pad_axis(t, pad, 2, 0) for t in (query, key, value))
    q_buckets = _pad_axis(ops.cast(q_buckets, "int32"), pad, 3, num_buckets)
    k_buckets = _pad_axis(ops.cast(k_buckets, "int32"), pad, 3, num_buckets)
    if key_mask is not None:
        key_mask = _pad_axis(ops.cast(key_mask, "bool"), pad, 1, False)
        # Masked keys go to the sentinel bucket too: they sort after every real token, so the
        # content of a padded token never moves the chunks of the others.
        keep = key_mask[:, None, None, :]  # (B, 1, 1, Lp)
        k_buckets = ops.where(keep, k_buckets, num_buckets)
        if shared_qk:
            q_buckets = k_buckets
    elif pad:
        key_mask = (ops.arange(padded) < length)[None, :]  # (1, Lp)
    return query, key, value, q_buckets, k_buckets, key_mask, c, padded


def _dedup_counts(q_all, k_all):
    """Number of rounds in which query and key share a bucket: ``(..., Lq, 1, R) vs (..., 1, Lk, R)``."""
    count = None
    for r in range(q_all.shape[-1]):
        same = ops.cast(
            ops.equal(q_all[..., r][..., :, None], k_all[..., r][..., None, :]), "float32"
        )
        count = same if count is None else count + same
    return count


def _softmax_lse(scores, mask, values):
    """Masked softmax over the last axis, its output on ``values`` and its log-sum-exp."""
    s = ops.where(mask, scores, _MASKED)
    top = ops.stop_gradient(ops.max(s, axis=-1, keepdims=True))
    e = ops.where(mask, ops.exp(s - top), 0.0)
    den = ops.sum(e, axis=-1, keepdims=True)
    safe = ops.maximum(den, 1e-30)
    out = ops.matmul(e / safe, values)
    lse = ops.where(den > 0, top + ops.log(safe), _MASKED)[..., 0]
    return out, lse, e / safe


def _combine_rounds(outputs, lse):
    """``outputs (B, h, R, L, dv)``, ``lse (B, h, R, L)`` -> ``(B, h, L, dv)``."""
    if outputs.shape[2] == 1:
        return outputs[:, :, 0]
    weights = ops.softmax(lse, axis=2)  # (B, h, R, L)
    return ops.sum(outputs * weights[..., None], axis=2)


def bucketed_attention(
    query,
    key,
    value,
    q_buckets,
    k_buckets,
    chunk_size,
    num_buckets,
    causal=False,
    key_mask=None,
    shared_qk=True,
    scale=None,
):
    """Sort-by-bucket chunked attention (see module docstring).

    Args:
        query: ``(B, h, L, dh)``.
        key: ``(B, h, L, dh)`` (under shared-QK, the normalised queries).
        value: ``(B, h, L, dv)``.
        q_buckets, k_buckets: int ``(B, h, R, L)`` bucket ids in ``[0, num_buckets)`` for ``R``
            rounds (the same tensor under shared-QK).
        chunk_size: ``c``.
        num_buckets: number of buckets (padding uses the sentinel ``num_buckets``).
        causal: strictly causal window (requires ``shared_qk``).
        key_mask: bool ``(B, L)`` or None.
        shared_qk: queries and keys are sorted together; applies the self-attention rule.
        scale: score scale (default ``1/sqrt(dh)``).

    Returns:
        ``(B, h, L, dv)`` in the dtype of ``value``.
    """
    if causal and not shared_qk:
        raise ValueError("Causal bucketed attention needs shared_qk=True.")
    length = query.shape[2]
    dtype = value.dtype
    if scale is None:
        scale = float(query.shape[-1]) ** -0.5
    query, key, value, q_buckets, k_buckets, key_mask, c, padded = _prepare(
        query, key, value, q_buckets, k_buckets, chunk_size, num_buckets, key_mask, shared_qk
    )
    n = padded // c
    rounds = q_buckets.shape[2]
    positions = ops.arange(padded, dtype="int32")
    q_perm = ops.argsort(q_buckets * padded + positions, axis=-1)  # (B, h, R, Lp)
    k_perm = q_perm if shared_qk else ops.argsort(k_buckets * padded + positions, axis=-1)
    q_perm, k_perm = ops.cast(q_perm, "int32"), ops.cast(k_perm, "int32")

    f32 = "float32"
    sq = _gather_per_round(ops.cast(query, f32), q_perm)  # (B, h, R, Lp, dh)
    sk = _gather_per_round(ops.cast(key, f32), k_perm)  # (B, h, R, Lp, dh)
    sv = _gather_per_round(ops.cast(value, f32), k_perm)  # (B, h, R, Lp, dv)
    q_bucket = ops.take_along_axis(q_buckets, q_perm, axis=-1)  # (B, h, R, Lp)
    k_bucket = ops.take_along_axis(k_buckets, k_perm, axis=-1)

    def chunks(x):  # (B, h, R, Lp, ...) -> (B, h, R, n, c, ...)
        return split_blocks(x, c, axis=3)

    def with_previous(x, fill=0):  # (B, h, R, n, c, ...) -> (B, h, R, n, 2c, ...)
        return neighbour_blocks(chunks(x), 1, 0, axis=3, fill=fill)

    q_c = chunks(sq)  # (B, h, R, n, c, dh)
    k_nb = with_previous(sk)  # (B, h, R, n, 2c, dh)
    v_nb = with_previous(sv)  # (B, h, R, n, 2c, dv)
    qb = chunks(q_bucket)  # (B, h, R, n, c)
    kb = with_previous(k_bucket, fill=-1)  # (B, h, R, n, 2c)
    mask = ops.equal(qb[..., :, None], kb[..., None, :])  # (B, h, R, n, c, 2c)
    if key_mask is not None:
        heads = query.shape[1]
        km = ops.broadcast_to(
            ops.cast(key_mask, f32)[:, None, :, None], (ops.shape(query)[0], heads, padded, 1)
        )
        km_sorted = _gather_per_round(km, k_perm)[..., 0] > 0.5  # (B|1, h, R, Lp)
        mask = ops.logical_and(mask, with_previous(km_sorted, fill=False)[..., None, :])
    qp = chunks(q_perm)  # (B, h, R, n, c) original positions
    kp = with_previous(k_perm, fill=-1)  # (B, h, R, n, 2c)
    if causal:
        q_index = block_positions(n, c)[:, :, None]  # (n, c, 1) sorted index
        k_index = neighbour_positions(n, c, 1, 0)[:, None, :]  # (n, 1, 2c)
        window = ops.logical_and(k_index <= q_index, k_index >= q_index - c)  # (n, c, 2c)
        order = kp[..., None, :] <= qp[..., :, None]
        mask = ops.logical_and(ops.logical_and(mask, window), order)
    scores = ops.einsum("bhrnid,bhrnjd->bhrnij", q_c, k_nb) * scale  # (B, h, R, n, c, 2c)
    if shared_qk:
        is_self = ops.equal(qp[..., :, None], kp[..., None, :])
        scores = ops.where(is_self, SELF_SCORE, scores)
    if rounds > 1:
        q_all = _gather_per_round(ops.transpose(q_buckets, (0, 1, 3, 2)), q_perm)  # (.., Lp, R)
        k_all = _gather_per_round(ops.transpose(k_buckets, (0, 1, 3, 2)), k_perm)
        k_all = neighbour_blocks(chunks(k_all), 1, 0, axis=3, fill=-1)  # (B,h,R,n,2c,R)
        count = _dedup_counts(chunks(q_all), k_all)  # (B, h, R, n, c, 2c)
        scores = scores - ops.log(ops.maximum(count, 1.0))
    out, lse, _ = _softmax_lse(scores, mask, v_nb)  # (B,h,R,n,c,dv), (B,h,R,n,c)
    out = merge_blocks(out, axis=3)  # (B, h, R, Lp, dv)
    lse = merge_blocks(lse, axis=3)[..., None]  # (B, h, R, Lp, 1)
    inverse = ops.cast(ops.argsort(q_perm, axis=-1), "int32")  # sorted index of each position
    out = _gather_in_round(out, inverse)  # (B, h, R, Lp, dv) in position order
    lse = _gather_in_round(lse, inverse)[..., 0]  # (B, h, R, Lp)
    out = _combine_rounds(out, lse)  # (B, h, Lp, dv)
    return ops.cast(out[:, :, :length], dtype)


def bucketed_attention_dense(
    query,
    key,
    value,
    q_buckets,
    k_buckets,
    chunk_size,
    num_buckets,
    causal=False,
    key_mask=None,
    shared_qk=True,
    scale=None,
):
    """Dense equivalent of :func:`bucketed_attention` (debug path, ``O(L²)``).

    Returns:
        ``(output (B, h, L, dv), weights (B, h, L, L))``: ``output = weights @ value``.
    """
    length = query.shape[2]
    dtype = value.dtype
    if scale is None:
        scale = float(query.shape[-1]) ** -0.5
    query, key, value, q_buckets, k_buckets, key_mask, c, padded = _prepare(
        query, key, value, q_buckets, k_buckets, chunk_size, num_buckets, key_mask, shared_qk
    )
    positions = ops.arange(padded, dtype="int32")
    q_perm = ops.argsort(q_buckets * padded + positions, axis=-1)
    k_perm = q_perm if shared_qk else ops.argsort(k_buckets * padded + positions, axis=-1)
    q_rank = ops.argsort(q_perm, axis=-1)[..., :, None]  # (B, h, R, Lp, 1) sorted index
    k_rank = ops.argsort(k_perm, axis=-1)[..., None, :]  # (B, h, R, 1, Lp)
    mask = ops.equal(q_buckets[..., :, None], k_buckets[..., None, :])  # (B, h, R, Lp, Lp)
    if causal:
        window = ops.logical_and(k_rank <= q_rank, k_rank >= q_rank - c)
        order = positions[None, :] <= positions[:, None]
        mask = ops.logical_and(ops.logical_and(mask, window), order)
    else:
        q_chunk, k_chunk = q_rank // c, k_rank // c
        window = ops.logical_or(ops.equal(k_chunk, q_chunk), ops.equal(k_chunk, q_chunk - 1))
        mask = ops.logical_and(mask, window)
    if key_mask is not None:
        mask = ops.logical_and(mask, ops.cast(key_mask, "bool")[:, None, None, None, :])
    f32 = "float32"
    scores = ops.einsum("bhid,bhjd->bhij", ops.cast(query, f32), ops.cast(key, f32)) * scale
    scores = ops.repeat(scores[:, :, None], q_buckets.shape[2], axis=2)  # (B, h, R, Lp, Lp)
    if shared_qk:
        scores = ops.where(positions[:, None] == positions[None, :], SELF_SCORE, scores)
    if q_buckets.shape[2] > 1:
        q_all = ops.transpose(q_buckets, (0, 1, 3, 2))[:, :, None]  # (B, h, 1, Lp, R)
        k_all = ops.transpose(k_buckets, (0, 1, 3, 2))[:, :, None]
        scores = scores - ops.log(ops.maximum(_dedup_counts(q_all, k_all), 1.0))
    v = ops.cast(value, f32)[:, :, None]  # (B, h, 1, Lp, dv)
    out, lse, weights = _softmax_lse(scores, mask, v)  # (B,h,R,Lp,dv), (B,h,R,Lp), (..,Lp,Lp)
    if q_buckets.shape[2] == 1:
        combined = weights[:, :, 0]
    else:
        round_weights = ops.softmax(lse, axis=2)[..., None]  # (B, h, R, Lp, 1)
        combined = ops.sum(weights * round_weights, axis=2)  # (B, h, Lp, Lp)
    combined = combined[:, :, :length, :length]
    out = ops.matmul(combined, ops.cast(value, f32)[:, :, :length])
    return ops.cast(out, dtype), ops.cast(combined, dtype)
