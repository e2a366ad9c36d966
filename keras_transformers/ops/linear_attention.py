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
