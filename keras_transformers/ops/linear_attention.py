"""Kernelised attention in linear time, causal forms by chunked prefix sums.

Given feature maps ``φ(Q) (B, h, Lq, r)`` and ``φ(K) (B, h, Lk, r)``, attention with the kernel
``κ(q, k) = φ(q)·φ(k)`` is

``out_i = Σ_j κ(q_i, k_j) v_j / Σ_j κ(q_i, k_j) = φ(q_i)ᵀ (Σ_j φ(k_j) v_jᵀ) / φ(q_i)ᵀ (Σ_j φ(k_j))``

which costs ``O(L·r·dv)`` time and memory: the ``(Lq, Lk)`` matrix is never formed.

Causal attention (sum over ``j <= i`` only) uses chunks of ``c`` positions: inside a chunk the
``(c, c)`` lower-triangular kernel matrix is formed (``O(L·c·r)``), and the contribution of all
earlier chunks comes from a running state ``S = Σ φ(k_j) v_jᵀ`` (``r × dv``) and ``z = Σ φ(k_j)``
(``r``), computed for all chunks at once by an exclusive prefix sum over the chunk axis
(``O(L/c · r · dv)`` memory). Nothing of size ``L × L`` is ever built.

The gated recurrence of causal RFA (Peng et al., 2021),
``S_t = g_t S_{t-1} + (1 - g_t) φ(k_t) v_tᵀ``, ``z_t = g_t z_{t-1} + (1 - g_t) φ(k_t)``,
is computed the same way with decays: inside a chunk with the cumulative log-gates, across chunks
with an associative scan of ``(decay, state)`` pairs.

Exponential feature maps (FAVOR+) are also computed from their log-features
(:func:`log_kernel_attention`, :func:`causal_log_kernel_attention`, :func:`log_kernel_state`,
:func:`log_kernel_attention_step`), so that no query/key norm underflows every term.

All accumulation happens in float32 whatever the input dtype (mixed precision safe); a query with
no valid key gets a zero output.
"""

from keras import ops

from keras_transformers.ops.blocks import merge_blocks, pad_length, split_blocks


def _as_float32(*tensors):
    return [ops.cast(t, "float32") for t in tensors]


def _masked_keys(phi_k, key_mask):
    """Zero the features of masked keys. ``key_mask`` bool ``(B, 1 or h, Lk)``."""
    if key_mask is None:
        return phi_k
    return phi_k * ops.cast(key_mask, phi_k.dtype)[..., None]


def _safe_divide(num, den):
    """``num / den`` with ``0`` where ``den == 0`` (a query with no valid key)."""
    nonzero = ops.not_equal(den, 0.0)
    return ops.where(nonzero, num / ops.where(nonzero, den, 1.0), 0.0)


def kernel_attention(phi_q, phi_k, value, key_mask=None):
    """Non-causal kernelised attention.

    Args:
        phi_q: ``(B, h, Lq, r)`` query features.
        phi_k: ``(B, h, Lk, r)`` key features.
        value: ``(B, h, Lk, dv)``.
        key_mask: bool ``(B, 1 or h, Lk)``, True = key may be attended, or None.

    Returns:
        float32 ``(B, h, Lq, dv)``.
    """
    phi_q, phi_k, value = _as_float32(phi_q, phi_k, value)
    phi_k = _masked_keys(phi_k, key_mask)
    kv = ops.einsum("bhlr,bhld->bhrd", phi_k, value)  # (B, h, r, dv)
    z = ops.sum(phi_k, axis=2)  # (B, h, r)
    num = ops.einsum("bhlr,bhrd->bhld", phi_q, kv)  # (B, h, Lq, dv)
    den = ops.einsum("bhlr,bhr->bhl", phi_q, z)[..., None]  # (B, h, Lq, 1)
    return _safe_divide(num, den)


def _shift_right(x, axis):
    """Shift ``x`` by one along ``axis``, filling with zeros (inclusive -> exclusive scan)."""
    widths = [(0, 0)] * len(x.shape)
    widths[axis] = (1, 0)
    index = [slice(None)] * len(x.shape)
    index[axis] = slice(0, x.shape[axis])
    return ops.pad(x, widths)[tuple(index)]


def _exclusive_cumsum(x, axis):
    """Prefix sum over ``axis`` that excludes the current element."""
    return _shift_right(ops.cumsum(x, axis=axis), axis)


def _chunk(x, chunk_size):
    """``(B, h, L, r) -> (B, h, n, c, r)`` after zero padding ``L`` to a multiple of ``c``."""
    x, _ = pad_length(x, chunk_size, axis=2)
    return split_blocks(x, chunk_size, axis=2)


def causal_kernel_attention(phi_q, phi_k, value, chunk_size=64, key_mask=None, gates=None):
    """Causal kernelised attention by chunked prefix sums (never ``L × L``).

    ``out_i = Σ_{j<=i} w_ij φ(q_i)·φ(k_j) v_j / Σ_{j<=i} w_ij φ(q_i)·φ(k_j)`` with ``w_ij = 1``,
    or with gates ``w_ij = (1 - g_j) Π_{j<s<=i} g_s`` (gated causal RFA).

    Args:
        phi_q: ``(B, h, L, r)``.
        phi_k: ``(B, h, L, r)``.
        value: ``(B, h, L, dv)``.
        chunk_size: ``c``; memory ``O(L·c + L/c·r·dv)`` per head.
        key_mask: bool ``(B, 1 or h, L)`` or None.
        gates: ``(B, h, L)`` in ``(0, 1)`` or None. Masked keys neither decay nor write the state.

    Returns:
        float32 ``(B, h, L, dv)``.
    """
    phi_q, phi_k, value = _as_float32(phi_q, phi_k, value)
    length = phi_q.shape[2]
    if phi_k.shape[2] != length:
        raise ValueError(
            f"Causal kernel attention needs as many keys as queries; got Lq={length}, "
            f"Lk={phi_k.shape[2]}."
        )
    c = int(min(chunk_size, length))
    phi_k = _masked_keys(phi_k, key_mask)
    q = _chunk(phi_q, c)  # (B, h, n, c, r)
    k = _chunk(phi_k, c)  # (B, h, n, c, r)
    v = _chunk(value, c)  # (B, h, n, c, dv)
    tril = ops.tril(ops.ones((c, c), dtype="bool"))  # (c, c): key s <= query t
    scores = ops.einsum("bhntr,bhnsr->bhnts", q, k)  # (B, h, n, c, c)

    if gates is None:
        scores = ops.where(tril, scores, 0.0)
        kv_chunk = ops.einsum("bhnsr,bhnsd->bhnrd", k, v)  # (B, h, n, r, dv)
        z_chunk = ops.sum(k, axis=3)  # (B, h, n, r)
        kv_prev = _exclusive_cumsum(kv_chunk, axis=2)  # state before each chunk
        z_prev = _exclusive_cumsum(z_chunk, axis=2)
        num = ops.einsum("bhnts,bhnsd->bhntd", scores, v) + ops.einsum(
            "bhntr,bhnrd->bhntd", q, kv_prev
        )
        den = ops.sum(scores, axis=-1) + ops.einsum("bhntr,bhnr->bhnt", q, z_prev)
    else:
        gates = ops.cast(gates, "float32")
        log_g = ops.log(ops.clip(gates, 1e-30, 1.0))  # (B, h, L)
        write = 1.0 - gates
        if key_mask is not None:
            valid = ops.cast(key_mask, "float32")
            log_g = log_g * valid  # masked keys: g = 1 (no decay)
            write = write * valid  # ... and no write
        log_g = split_blocks(pad_length(log_g, c, axis=2)[0], c, axis=2)  # (B, h, n, c)
        write = split_blocks(pad_length(write, c, axis=2)[0], c, axis=2)  # (B, h, n, c)
        cum = ops.cumsum(log_g, axis=-1)  # (B, h, n, c): log Π_{start<=s<=t} g_s
        diff = cum[..., :, None] - cum[..., None, :]  # (B, h, n, t, s): log Π_{s<u<=t} g_u
        decay = ops.exp(ops.where(tril, diff, -1e30))  # 0 above the diagonal, <= 1 below
        scores = scores * decay * write[..., None, :]
        to_end = ops.exp(cum[..., -1:] - cum) * write  # (B, h, n, c): weight of s at chunk end
        kv_chunk = ops.einsum("bhnsr,bhnsd->bhnrd", k * to_end[..., None], v)  # (B, h, n, r, dv)
        z_chunk = ops.einsum("bhnsr,bhns->bhnr", k, to_end)  # (B, h, n, r)
        chunk_decay = ops.exp(cum[..., -1])  # (B, h, n)

        def combine(a, b):
            # (decay, kv, z) of segment a followed by segment b.
            da, kva, za = a
            db, kvb, zb = b
            return da * db, db[..., None, None] * kva + kvb, db[..., None] * za + zb

        _, kv_end, z_end = ops.associative_scan(combine, (chunk_decay, kv_chunk, z_chunk), axis=2)
        kv_prev = _shift_right(kv_end, axis=2)  # state entering each chunk
        z_prev = _shift_right(z_end, axis=2)
        into = ops.exp(cum)  # (B, h, n, c): decay from the chunk start to t
        num = ops.einsum("bhnts,bhnsd->bhntd", scores, v) + into[..., None] * ops.einsum(
            "bhntr,bhnrd->bhntd", q, kv_prev
        )
        den = ops.sum(scores, axis=-1) + into * ops.einsum("bhntr,bhnr->bhnt", q, z_prev)

    out = _safe_divide(num, den[..., None])  # (B, h, n, c, dv)
    return merge_blocks(out, axis=2)[:, :, :length]


def kernel_state(phi_k, value, key_mask=None):
    """Recurrent state of ungated causal kernel attention after the keys ``phi_k``.

    Args:
        phi_k: ``(B, h, l, r)``; value ``(B, h, l, dv)``; key_mask bool ``(B, 1 or h, l)``.

    Returns:
        float32 ``(B, h, r, dv + 1)``: ``[S | z]`` with ``S = Σ φ(k_j) v_jᵀ``, ``z = Σ φ(k_j)``.
    """
    phi_k, value = _as_float32(phi_k, value)
    phi_k = _masked_keys(phi_k, key_mask)
    s = ops.einsum("bhlr,bhld->bhrd", phi_k, value)  # (B, h, r, dv)
    z = ops.sum(phi_k, axis=2)  # (B, h, r)
    return ops.concatenate([s, z[..., None]], axis=-1)


def kernel_attention_step(phi_q, phi_k, value, state, key_mask=None):
    """Causal kernel attention of ``l`` new positions that continue a recurrent state.

    ``out_i = φ(q_i)ᵀ (S + Σ_{j<=i} φ(k_j) v_jᵀ) / φ(q_i)ᵀ (z + Σ_{j<=i} φ(k_j))`` over the new
    positions ``j``; the cost is ``O(l²·r + l·r·dv)``, independent of the length decoded so far.

    Args:
        phi_q, phi_k: ``(B, h, l, r)``; value ``(B, h, l, dv)``.
        state: ``(B, h, r, dv + 1)`` from :func:`kernel_state` (``[S | z]``).
        key_mask: bool ``(B, 1 or h, l)`` or None (masked keys are not added).

    Returns:
        ``(out float32 (B, h, l, dv), new state (B, h, r, dv + 1))``.
    """
    phi_q, phi_k, value, state = _as_float32(phi_q, phi_k, value, state)
    phi_k = _masked_keys(phi_k, key_mask)
    dv = value.shape[-1]
    length = phi_q.shape[2]
    s, z = state[..., :dv], state[..., dv]  # (B, h, r, dv), (B, h, r)
    tril = ops.tril(ops.ones((length, length), dtype="bool"))
    scores = ops.where(tril, ops.einsum("bhtr,bhsr->bhts", phi_q, phi_k), 0.0)  # (B, h, l, l)
    num = ops.matmul(scores, value) + ops.einsum("bhtr,bhrd->bhtd", phi_q, s)  # (B, h, l, dv)
    den = ops.sum(scores, axis=-1) + ops.einsum("bhtr,bhr->bht", phi_q, z)  # (B, h, l)
    out = _safe_divide(num, den[..., None])
    return out, state + kernel_state(phi_k, value)


def dense_kernel_weights(phi_q, phi_k, key_mask=None, causal=False, gates=None):
    """The equivalent dense ``(B, h, Lq, Lk)`` attention weights (debug path only, O(L²)).

    Rows are the kernel values normalised by their sum, exactly the weights the linear forms apply.
    """
    phi_q, phi_k = _as_float32(phi_q, phi_k)
    phi_k = _masked_keys(phi_k, key_mask)
    scores = ops.einsum("bhir,bhjr->bhij", phi_q, phi_k)  # (B, h, Lq, Lk)
    lq, lk = phi_q.shape[2], phi_k.shape[2]
    if causal:
        tril = ops.arange(lk)[None, :] <= ops.arange(lq)[:, None]
        if gates is not None:
            gates = ops.cast(gates, "float32")
            log_g = ops.log(ops.clip(gates, 1e-30, 1.0))
            write = 1.0 - gates
            if key_mask is not None:
                valid = ops.cast(key_mask, "float32")
                log_g, write = log_g * valid, write * valid
            cum = ops.cumsum(log_g, axis=-1)
            diff = cum[..., :, None] - cum[..., None, :]
            scores = scores * ops.exp(ops.where(tril, diff, -1e30)) * write[..., None, :]
        scores = ops.where(tril, scores, 0.0)
    den = ops.sum(scores, axis=-1, keepdims=True)
    return _safe_divide(scores, den)


# ---------------------------------------------------------------------------- log-space features
# Kernels whose features are exponentials, ``φ(x) = exp(ℓ(x))`` (FAVOR+), are computed from the
# log-features ``ℓ`` so that no norm of ``q`` or ``k`` can make every term underflow (or
# overflow) in float32. A set of keys is summarised per feature ``f`` by its log-mass
# ``λ_f = log Σ_j exp(ℓ_f(k_j))`` and the mean value ``μ_f = Σ_j exp(ℓ_f(k_j) - λ_f) v_j``, so
# that ``φ(q)ᵀ Σ_j φ(k_j) v_jᵀ = Σ_f exp(ℓ_f(q) + λ_f) μ_f``: the output is a softmax over the
# features, ``out = Σ_f softmax_f(ℓ_f(q) + λ_f) μ_f``, stabilised per query row. Two summaries
# merge like the running max of online softmax (``λ = logaddexp(λ_a, λ_b)``), which gives the
# prefix sums over chunks (an associative scan) and the constant-size decoding state
# ``[μ | λ]`` ``(B, h, r, dv + 1)``. Inside a chunk the ``(c, c)`` kernel matrix uses per-row
# shifts: ``κ(q_t, k_s) = exp(p_t + a_s) φ̃(q_t)·φ̃(k_s)`` with ``p_t = max_f ℓ_f(q_t)``,
# ``a_s = max_f ℓ_f(k_s)`` (less ``HEADROOM``), each query's own key exactly (a logsumexp over
# ``f``), and every term of query ``t`` is divided by the largest one it can see (keys
# ``s <= t`` only, so the stabiliser never looks ahead).

NEG_LOG = -1e30  # log of an empty sum (finite, so differences stay defined)
#: Per-row shifts leave each feature up to ``exp(HEADROOM)``: a product of a query and a key
#: feature then spans ``exp(-87 - 2·HEADROOM) .. exp(2·HEADROOM)``, and sums of up to ``e^12``
#: features stay below the float32 maximum ``exp(88.7)``.
HEADROOM = 38.0


def _key_valid(log_k, key_mask):
    """bool ``(B, h, L)`` of valid keys."""
    shape = ops.shape(log_k)[:3]
    if key_mask is None:
        return ops.ones(shape, dtype="bool")
    return ops.broadcast_to(ops.cast(key_mask, "bool"), shape)


def _log_summary(log_k, value, valid):
    """Per-feature summary of keys along axis -2.

    Args:
        log_k: ``(..., s, r)`` log-features; value ``(..., s, dv)``; valid bool ``(..., s)``.

    Returns:
        ``(mean (..., r, dv), log_mass (..., r))``; ``log_mass = NEG_LOG`` and ``mean = 0`` for
        no valid key.
    """
    log_k = ops.where(valid[..., None], log_k, NEG_LOG)
    top = ops.stop_gradient(ops.max(log_k, axis=-2, keepdims=True))  # (..., 1, r)
    weight = ops.where(valid[..., None], ops.exp(log_k - top), 0.0)  # (..., s, r), <= 1
    mass = ops.sum(weight, axis=-2)  # (..., r)
    total = ops.matmul(ops.swapaxes(weight, -1, -2), value)  # (..., r, dv)
    some = mass > 0.0
    safe = ops.where(some, mass, 1.0)
    mean = total / safe[..., None]
    log_mass = ops.where(some, top[..., 0, :] + ops.log(safe), NEG_LOG)
    return mean, log_mass


def _merge_summaries(a, b):
    """Summary of the keys of ``a`` and ``b`` together (associative)."""
    mean_a, log_a = a
    mean_b, log_b = b
    top = ops.maximum(log_a, log_b)
    w_a, w_b = ops.exp(log_a - top), ops.exp(log_b - top)  # one of them is 1
    total = w_a + w_b
    mean = (w_a[..., None] * mean_a + w_b[..., None] * mean_b) / total[..., None]
    return mean, top + ops.log(total)


def _attend_chunks(log_q, log_k, value, valid, mean_prev, log_prev):
    """Causal attention inside chunks plus the summary of everything before each chunk.

    Args:
        log_q, log_k: ``(B, h, n, c, r)``; value ``(B, h, n, c, dv)``; valid ``(B, h, n, c)``.
        mean_prev: ``(B, h, n, r, dv)``, log_prev ``(B, h, n, r)``: keys before each chunk.

    Returns:
        float32 ``(B, h, n, c, dv)``.
    """
    c = log_q.shape[3]
    tril = ops.tril(ops.ones((c, c), dtype="bool"))  # (c, c): key s <= query t
    log_k = ops.where(valid[..., None], log_k, NEG_LOG)
    p = ops.stop_gradient(ops.max(log_q, axis=-1)) - HEADROOM  # (B, h, n, c)
    a = ops.stop_gradient(ops.max(log_k, axis=-1)) - HEADROOM  # (B, h, n, c)
    phi_q = ops.exp(log_q - p[..., None])  # (B, h, n, c, r), row max e^HEADROOM
    phi_k = ops.where(valid[..., None], ops.exp(log_k - a[..., None]), 0.0)
    kernel = ops.einsum("bhntr,bhnsr->bhnts", phi_q, phi_k)  # (B, h, n, c, c)
    seen = ops.logical_and(tril, kernel > 0.0)  # pairs that did not underflow
    log_kernel = p[..., :, None] + a[..., None, :] + ops.log(ops.where(seen, kernel, 1.0))
    log_kernel = ops.where(seen, log_kernel, NEG_LOG)  # (B, h, n, c, c): log κ(q_t, k_s)
    pair = log_q + log_k  # (B, h, n, c, r): each query with its own key, exactly
    top = ops.stop_gradient(ops.max(pair, axis=-1, keepdims=True))
    diagonal = top[..., 0] + ops.log(ops.sum(ops.exp(pair - top), axis=-1))  # (B, h, n, c)
    diagonal = ops.where(valid, diagonal, NEG_LOG)
    eye = ops.eye(c, dtype="bool")
    log_kernel = ops.where(eye, diagonal[..., None, :], log_kernel)
    inter = log_q + log_prev[..., None, :]  # (B, h, n, c, r)
    top = ops.maximum(ops.max(log_kernel, axis=-1), ops.max(inter, axis=-1))  # (B, h, n, c)
    top = ops.stop_gradient(top)
    scores = ops.exp(log_kernel - top[..., None])  # (B, h, n, c, c), 0 above the diagonal
    inter = ops.exp(inter - top[..., None])  # (B, h, n, c, r), <= 1
    num = ops.einsum("bhnts,bhnsd->bhntd", scores, value) + ops.einsum(
        "bhntr,bhnrd->bhntd", inter, mean_prev
    )
    den = ops.sum(scores, axis=-1) + ops.sum(inter, axis=-1)  # (B, h, n, c)
    return _safe_divide(num, den[..., None])


def log_kernel_attention(log_q, log_k, value, key_mask=None):
    """Non-causal kernelised attention from log-features ``ℓ = log φ`` (any norm).

    Args:
        log_q: ``(B, h, Lq, r)``; log_k ``(B, h, Lk, r)``; value ``(B, h, Lk, dv)``;
        key_mask: bool ``(B, 1 or h, Lk)`` or None.

    Returns:
        float32 ``(B, h, Lq, dv)``.
    """
    log_q, log_k, value = _as_float32(log_q, log_k, value)
    mean, log_mass = _log_summary(log_k, value, _key_valid(log_k, key_mask))  # (B,h,r,dv),(B,h,r)
    logits = log_q + log_mass[:, :, None, :]  # (B, h, Lq, r)
    weight = ops.exp(logits - ops.stop_gradient(ops.max(logits, axis=-1, keepdims=True)))
    num = ops.einsum("bhlr,bhrd->bhld", weight, mean)  # (B, h, Lq, dv)
    return num / ops.sum(weight, axis=-1, keepdims=True)  # no valid key: mean = 0 -> 0


def causal_log_kernel_attention(log_q, log_k, value, chunk_size=64, key_mask=None):
    """Causal kernelised attention from log-features by chunked log-space prefix sums.

    The same estimator as :func:`causal_kernel_attention` with ``φ = exp(ℓ)``; the state entering
    each chunk is the merged summary ``[μ | λ]`` of all earlier chunks (an associative scan), so
    memory stays ``O(L·c + L/c·r·dv)`` and nothing underflows for large norms.

    Args:
        log_q, log_k: ``(B, h, L, r)``; value ``(B, h, L, dv)``; key_mask bool ``(B, 1 or h, L)``.

    Returns:
        float32 ``(B, h, L, dv)``.
    """
    log_q, log_k, value = _as_float32(log_q, log_k, value)
    length = log_q.shape[2]
    if log_k.shape[2] != length:
        raise ValueError(
            f"Causal kernel attention needs as many keys as queries; got Lq={length}, "
            f"Lk={log_k.shape[2]}."
        )
    c = int(min(chunk_size, length))
    valid = ops.cast(_key_valid(log_k, key_mask), "float32")  # (B, h, L)
    valid = ops.cast(_chunk(valid[..., None], c)[..., 0], "bool")  # (B, h, n, c); padding False
    q, k, v = _chunk(log_q, c), _chunk(log_k, c), _chunk(value, c)  # (B, h, n, c, ·)
    dv = value.shape[-1]
    summary = _pack(*_log_summary(k, v, valid))  # (B, h, n, r, dv + 1): [μ | λ] of each chunk
    shape = (ops.shape(summary)[0], *summary.shape[1:])  # the scan can lose the static shape
    summary = ops.associative_scan(_merge_packed, summary, axis=2)  # ... of chunks <= n
    summary = ops.reshape(summary, shape)
    empty = ops.concatenate(
        [
            ops.zeros_like(summary[:, :, :1, :, :dv]),
            ops.full_like(summary[:, :, :1, :, dv:], NEG_LOG),
        ],
        axis=-1,
    )  # (B, h, 1, r, dv + 1)
    prev = ops.concatenate([empty, summary[:, :, :-1]], axis=2)  # keys before each chunk
    out = _attend_chunks(q, k, v, valid, prev[..., :dv], prev[..., dv])  # (B, h, n, c, dv)
    return merge_blocks(out, axis=2)[:, :, :length]


def _pack(mean, log_mass):
    """``[μ | λ]``: ``(..., r, dv + 1)``."""
    return ops.concatenate([mean, log_mass[..., None]], axis=-1)


def _merge_packed(a, b):
    """:func:`_merge_summaries` of packed ``[μ | λ]`` tensors."""
    return _pack(*_merge_summaries((a[..., :-1], a[..., -1]), (b[..., :-1], b[..., -1])))


def empty_log_kernel_state(batch_size, num_heads, num_features, value_dim):
    """The state of no keys: ``[μ = 0 | λ = NEG_LOG]`` float32 ``(B, h, r, dv + 1)``."""
    shape = (batch_size, num_heads, num_features)
    return ops.concatenate(
        [ops.zeros((*shape, value_dim)), ops.full((*shape, 1), NEG_LOG)], axis=-1
    )


def log_kernel_state(log_k, value, key_mask=None, state=None):
    """Decoding state ``[μ | λ]`` ``(B, h, r, dv + 1)`` after the keys ``log_k (B, h, l, r)``
    (continuing ``state`` when given)."""
    log_k, value = _as_float32(log_k, value)
    summary = _pack(*_log_summary(log_k, value, _key_valid(log_k, key_mask)))
    if state is None:
        return summary
    return _merge_packed(ops.cast(state, "float32"), summary)


def log_kernel_attention_step(log_q, log_k, value, state, key_mask=None):
    """Causal attention of ``l`` new positions continuing a log-space state ``[μ | λ]``.

    Args:
        log_q, log_k: ``(B, h, l, r)``; value ``(B, h, l, dv)``; state ``(B, h, r, dv + 1)``.

    Returns:
        ``(out float32 (B, h, l, dv), new state (B, h, r, dv + 1))``.
    """
    log_q, log_k, value, state = _as_float32(log_q, log_k, value, state)
    dv = value.shape[-1]
    valid = _key_valid(log_k, key_mask)  # (B, h, l)
    out = _attend_chunks(
        log_q[:, :, None],
        log_k[:, :, None],
        value[:, :, None],
        valid[:, :, None],
        state[:, :, None, :, :dv],
        state[:, :, None, :, dv],
    )[:, :, 0]  # (B, h, l, dv)
    return out, log_kernel_state(log_k, value, key_mask, state)


def dense_log_kernel_weights(log_q, log_k, key_mask=None, causal=False):
    """Dense ``(B, h, Lq, Lk)`` weights of the log-feature kernel (debug path only, O(L²))."""
    log_q, log_k = _as_float32(log_q, log_k)
    valid = _key_valid(log_k, key_mask)[:, :, None, :]  # (B, h, 1, Lk)
    lq, lk = log_q.shape[2], log_k.shape[2]
    if causal:
        valid = ops.logical_and(valid, ops.arange(lk)[None, :] <= ops.arange(lq)[:, None])
    p = ops.stop_gradient(ops.max(log_q, axis=-1)) - HEADROOM  # (B, h, Lq)
    a = ops.stop_gradient(ops.max(log_k, axis=-1)) - HEADROOM  # (B, h, Lk)
    phi_q = ops.exp(log_q - p[..., None])  # (B, h, Lq, r)
    phi_k = ops.exp(log_k - a[..., None])  # (B, h, Lk, r)
    kernel = ops.einsum("bhir,bhjr->bhij", phi_q, phi_k)  # (B, h, Lq, Lk)
    seen = ops.logical_and(valid, kernel > 0.0)
    log_kernel = p[..., :, None] + a[..., None, :] + ops.log(ops.where(seen, kernel, 1.0))
    log_kernel = ops.where(seen, log_kernel, NEG_LOG)  # (B, h, Lq, Lk)
    top = ops.stop_gradient(ops.max(log_kernel, axis=-1, keepdims=True))
    scores = ops.where(seen, ops.exp(log_kernel - top), 0.0)
    return _safe_divide(scores, ops.sum(scores, axis=-1, keepdims=True))
