"""Blocked exact attention in ``O(L)`` memory (Rabe & Staats, 2021, "Self-attention does not
need O(n²) memory"; Dao et al., 2022, "FlashAttention"; Dao, 2023, "FlashAttention-2").

``out_i = Σ_j softmax_j(s_ij) v_j``, ``s_ij = q_i·k_j / sqrt(dh) + bias_ij`` (masked pairs left
out) is computed one ``(Tq, Tk)`` tile of queries and keys at a time. Each query tile keeps a
running maximum ``m``, a running sum ``l`` and an unnormalised output ``acc`` in float32; a new key
tile with scores ``s`` updates them as

``m' = max(m, max_j s)``, ``l' = l·e^(m - m') + Σ_j e^(s - m')``,
``acc' = acc·e^(m - m') + e^(s - m') v``, and at the end ``out = acc / l``.

No ``(Lq, Lk)`` tensor exists at any time: memory is ``O(L·dh + Tq·Tk)`` per head. The forward
keeps only ``out`` and the log-sum-exp ``lse = m + log l`` per query; the backward pass
recomputes every tile from them (``p = e^(s - lse)``, ``dS = p (dP - rowsum(dO ∘ O))``) in one
sweep over key tiles (FlashAttention-2's order: five tile matmuls): each key tile's ``dK``, ``dV``
and bias-parameter gradients are summed over its query tiles, and every ``dQ_i += dS_ij K_j`` is
added into a per-tile accumulator (a TensorList on TensorFlow, so one tile's update copies no
other tile), so training is ``O(L)`` in memory too. The custom gradient is ``tf.custom_gradient`` on
TensorFlow, ``jax.custom_vjp`` on JAX and a ``torch.autograd.Function`` on PyTorch; the tile loops
are ``while`` loops (``tf.map_fn``/``tf.while_loop``, ``lax.map``/``lax.fori_loop``), so the graph
has a constant size whatever ``L``.

Causal attention visits only the tiles on and below the diagonal (the ones above are skipped,
not masked) and masks only the tiles that cross it. Key padding (``(B, Lk)``), an arbitrary
``attention_mask`` (``(B, Lq, Lk)``) and a score bias (a callback given each tile's queries,
keys and relative positions: ALiBi, T5, Shaw's key term, Transformer-XL) are applied per tile.
A bias of the relative position alone (ALiBi, T5) is asked only for a tile's ``Tq + Tk - 1``
distinct offsets and laid along its diagonals (:func:`toeplitz`; its gradient sums ``dS`` along
them, :func:`diagonal_sums`). Shaw's value vectors add ``Σ_j α_ij a^V[label(j - i)]`` per tile:
the tile's weights laid out by offset (:func:`skew`) times a one-hot ``(Tq + Tk - 1, R)`` of the
labels give the weight per label, accumulated with the same running rescale as ``acc``.
A query with no key to attend to gives a zero output and zero gradients. Odd lengths are padded
to the tile and sliced back.

Shapes: ``query (B, h, Lq, dh)``, ``key (B, h, Lk, dh)``, ``value (B, h, Lk, dv)`` ->
``(B, h, Lq, dv)``. Lengths must be static.
"""

import numpy as np
from keras import ops

from keras_transformers.ops._flash_backends import (
    add_tile,
    custom_gradient,
    map_tiles,
    online_softmax,
    set_tile,
    stack_tiles,
    tile_loop,
    tiles_of,
    vjp_fn,
    weights_and_ds,
)
from keras_transformers.ops._flash_layout import diagonal_sums, skew, toeplitz, unskew

# Finite stand-in for -inf: exp(-1e9 - max) underflows to exactly 0 in float32.
MASK_VALUE = -1e9
# A running max below this means no key of the row was visible so far.
_EMPTY = -5e8
# Log-sum-exp of an empty row: every recomputed weight exp(s - lse) is then exactly 0.
_EMPTY_LSE = 1e30

__all__ = ["DEFAULT_BLOCK_SIZE", "flash_attention"]

DEFAULT_BLOCK_SIZE = 512


def flash_attention(
    query,
    key,
    value,
    causal=False,
    query_offset=0,
    padding_mask=None,
    attention_mask=None,
    bias_fn=None,
    bias_params=(),
    bias_reads_qk=True,
    bias_relative=False,
    constant_beyond=None,
    key_table=None,
    key_labels=None,
    value_table=None,
    value_labels=None,
    scale=None,
    block_size=DEFAULT_BLOCK_SIZE,
):
    """Exact softmax attention over tiles, ``O(L)`` memory in the forward and backward pass.

    Args:
        query: ``(B, h, Lq, dh)``.
        key: ``(B, h, Lk, dh)``.
        value: ``(B, h, Lk, dv)``.
        causal: query ``i`` sees keys ``j <= i + query_offset``.
        query_offset: static int, absolute position of query 0 among the keys.
        padding_mask: bool ``(B, Lk)`` (True = key may be attended) or None.
        attention_mask: bool ``(B, Lq, Lk)`` or None.
        bias_fn: ``bias_fn(params, q_tile (B, h, Tq, dh), k_tile (B, h, Tk, dh), rel (Tq, Tk))``
            -> a score term broadcastable to ``(B, h, Tq, Tk)``; ``rel = key_pos - query_pos``.
        bias_params: the tensors ``bias_fn`` reads (its trainable tables); they get gradients.
        bias_reads_qk: the bias depends on the query/key content (Shaw, XL); False skips those
            gradients (ALiBi, T5).
        bias_relative: the bias is an elementwise function of ``rel`` alone (ALiBi, T5): a
            ``(Tq, Tk)`` tile has only ``Tq + Tk - 1`` distinct offsets, so ``bias_fn`` is called
            on those, ``rel (Tq + Tk - 1,)`` ascending, returns ``(..., Tq + Tk - 1)``, and the
            engine lays the values along the tile's diagonals (copies, no per-pair arithmetic).
        constant_beyond: static int ``D`` or None: every positions-only term (a
            ``bias_relative`` bias, ``key_labels``, ``value_labels``) of ``|rel| >= D`` equals its
            value at ``sign(rel)·D`` (T5 past ``max_distance``, Shaw's clipped labels). On a tile
            whose offsets all lie beyond ``D`` on one side such a term is one value per head (or
            one label) and its gradient a sum over the tile: no diagonal layouts.
        key_table: ``(R, dh)`` relative key vectors (Shaw et al.'s ``a^K``): the scores get
            ``scale · q_i·key_table[key_labels(j - i)]`` (per tile: the queries times the table,
            laid out by offset); it receives a gradient.
        key_labels: like ``value_labels``, for ``key_table``.
        value_table: ``(R, dv)`` relative value vectors (Shaw et al.'s ``a^V``): the output gets
            ``Σ_j α_ij value_table[value_labels(j - i)]``; it receives a gradient.
        value_labels: ``value_labels(rel (n,) int32) -> int labels (n,)`` in ``[0, R)``,
            elementwise in ``rel``; required with ``value_table``.
        scale: score scale, default ``1/sqrt(dh)``.
        block_size: tile size ``T`` (queries and keys); shorter sequences use one tile.

    Returns:
        ``(B, h, Lq, dv)`` in the dtype of ``query``.
    """
    q_len, k_len = query.shape[2], key.shape[2]
    if q_len is None or k_len is None:
        raise ValueError(
            f"flash_attention needs static lengths; got query length {q_len}, key length {k_len}."
        )
    if not isinstance(query_offset, (int, np.integer)):
        raise ValueError(f"query_offset={query_offset!r}: must be a static int.")
    if int(block_size) < 1:
        raise ValueError(f"block_size={block_size}: must be >= 1.")
    if (value_table is None) != (value_labels is None):
        raise ValueError("value_table and value_labels: pass both (relative values) or neither.")
    if (key_table is None) != (key_labels is None):
        raise ValueError("key_table and key_labels: pass both (relative keys) or neither.")
    dh = query.shape[-1]
    scale = 1.0 / float(dh) ** 0.5 if scale is None else float(scale)
    tq, tk = _tile(q_len, block_size), _tile(k_len, block_size)
    nq, nk = -(-q_len // tq), -(-k_len // tk)
    plan = _Plan(
        q_len, k_len, tq, tk, nq, nk, bool(causal), int(query_offset), scale, bias_fn,
        bool(bias_reads_qk) and bias_fn is not None and not bias_relative,
        bool(bias_relative) and bias_fn is not None,
    )  # fmt: skip
    plan.n_bias, plan.value_labels = len(bias_params), value_labels
    plan.key_labels = key_labels
    if constant_beyond is not None:
        if not (plan.bias_relative or key_labels or value_labels):
            raise ValueError(
                "constant_beyond: only with a positions-only term (bias_relative=True and a "
                "bias_fn, key_labels or value_labels)."
            )
        if int(constant_beyond) < 1:
            raise ValueError(f"constant_beyond={constant_beyond}: must be >= 1.")
        plan.constant_beyond = int(constant_beyond)
    params = tuple(bias_params) + tuple(t for t in (key_table, value_table) if t is not None)

    # keys that may be attended (B|1, Lk_pad): a boolean, not an additive bias (TensorFlow's
    # grappler remapper fuses "BatchMatMul + Add" wrongly for a (B, 1, 1, Tk) addend)
    key_valid = None
    if padding_mask is not None or nk * tk != k_len:
        valid = ops.convert_to_tensor(np.arange(nk * tk) < k_len)[None]  # (1, Lk_pad)
        if padding_mask is not None:
            pm = _pad(ops.cast(padding_mask, "bool"), 1, nk * tk - k_len)  # (B, Lk_pad)
            valid = ops.logical_and(pm, valid)  # (B, Lk_pad)
        key_valid = ops.reshape(valid, (-1, 1, 1, nk, tk))  # (B|1, 1, 1, nk, Tk)
        key_valid = ops.transpose(key_valid, (3, 0, 1, 2, 4))  # (nk, B|1, 1, 1, Tk)
    mask = None
    if attention_mask is not None:
        am = _pad(_pad(ops.cast(attention_mask, "bool"), 1, nq * tq - q_len), 2, nk * tk - k_len)
        mask = ops.reshape(am, (-1, nq, tq, nk, tk))  # (B, nq, Tq, nk, Tk)
        mask = ops.transpose(mask, (1, 3, 0, 2, 4))  # (nq, nk, B, Tq, Tk)
    q = _pad(query, 2, nq * tq - q_len)  # (B, h, Lq_pad, dh)
    k = _pad(key, 2, nk * tk - k_len)  # (B, h, Lk_pad, dh)
    v = _pad(value, 2, nk * tk - k_len)  # (B, h, Lk_pad, dv)
    out = custom_gradient(plan, _forward, _backward)(q, k, v, key_valid, mask, params)
    return out[:, :, :q_len]  # (B, h, Lq, dv)


class _Plan:
    """Static tiling of one call: lengths, tiles, causality, bias callback."""

    def __init__(
        self, q_len, k_len, tq, tk, nq, nk, causal, offset, scale, bias_fn, reads_qk, relative
    ):
        self.q_len, self.k_len, self.tq, self.tk, self.nq, self.nk = q_len, k_len, tq, tk, nq, nk
        self.causal, self.offset, self.scale = causal, offset, scale
        self.bias_fn, self.reads_qk, self.bias_relative = bias_fn, reads_qk, relative
        self.n_bias, self.value_labels = 0, None  # params[:n_bias] are the bias' tensors
        self.key_labels = None  # with a key table, params[n_bias] is it
        self.constant_beyond = None  # see flash_attention's bias_constant_beyond

    # ---------------------------------------------------------------- tile ranges (causal skip)
    def key_ranges(self, i):
        """Key tiles of query tile ``i``: ``[0, full)`` need no causal mask, ``[full, end)`` do."""
        if not self.causal:
            return 0, self.nk, self.nk
        o, tq, tk = self.offset, self.tq, self.tk
        full = _clip((i * tq + o + 1) // tk, 0, self.nk)
        end = _clip((i * tq + tq - 1 + o) // tk + 1, 0, self.nk)
        return 0, full, end

    def query_ranges(self, j):
        """Query tiles that see key tile ``j``: ``[start, full)`` masked, ``[full, nq)`` not."""
        if not self.causal:
            return 0, 0, self.nq
        o, tq, tk = self.offset, self.tq, self.tk
        start = _clip((j * tk - o) // tq, 0, self.nq)
        full = _clip(-((o + 1 - (j + 1) * tk) // tq), 0, self.nq)
        return start, full, self.nq

    # ---------------------------------------------------------------- one tile's scores
    def relative(self, i, j):
        """``rel = key_pos - query_pos`` of tile ``(i, j)``: int32 ``(Tq, Tk)``."""
        q_pos = ops.arange(self.tq, dtype="int32") + ops.cast(i * self.tq + self.offset, "int32")
        k_pos = ops.arange(self.tk, dtype="int32") + ops.cast(j * self.tk, "int32")
        return k_pos[None, :] - q_pos[:, None]

    def diagonals(self, i, j):
        """The ``Tq + Tk - 1`` distinct ``rel`` of tile ``(i, j)``, ascending: int32.

        ``rel[r, c] = diagonals[c - r + Tq - 1]``.
        """
        first = j * self.tk - i * self.tq - self.offset - self.tq + 1
        return ops.arange(self.tq + self.tk - 1, dtype="int32") + ops.cast(first, "int32")

    def tile_bias(self, params, q_i, k_j, i, j):
        """The score bias of tile ``(i, j)``, broadcastable to ``(B, h, Tq, Tk)``."""
        if self.bias_relative:
            per_offset = self.bias_fn(params, None, None, self.diagonals(i, j))  # (..., Tq+Tk-1)
            return toeplitz(per_offset, self.tq, self.tk)  # (..., Tq, Tk)
        return self.bias_fn(params, q_i, k_j, self.relative(i, j))

    def label_one_hot(self, i, j, num_labels, labels=None):
        """``(Tq + Tk - 1, R)`` float32 one-hot labels (``labels``, default the value labels) of
        tile ``(i, j)``'s offsets."""
        labels = self.value_labels if labels is None else labels
        return ops.one_hot(labels(self.diagonals(i, j)), num_labels, dtype="float32")

    def far_label(self, i, j, labels, num_labels):
        """``(far, one_hot (R,))``: whether tile ``(i, j)`` lies beyond ``constant_beyond``, and
        the one label all its offsets then share."""
        far, rep = self.far_offset(i, j)
        return far, ops.one_hot(labels(rep), num_labels, dtype="float32")[0]

    def label_weights(self, x, i, j, num_labels, labels=None):
        """``x (B, h, Tq, Tk)`` summed per label along each row: float32 ``(B, h, Tq, R)``. The
        tile laid out by offset (:func:`skew`) times the ``(Tq + Tk - 1, R)`` one-hot; a tile
        beyond ``constant_beyond`` puts its row sums on its one label."""
        labels = self.value_labels if labels is None else labels

        def near():
            return ops.matmul(
                skew(x, self.tq, self.tk), self.label_one_hot(i, j, num_labels, labels)
            )

        if self.constant_beyond is None:
            return near()
        far, one_hot = self.far_label(i, j, labels, num_labels)
        return ops.cond(far, lambda: ops.sum(x, axis=-1)[..., None] * one_hot, near)

    def add_by_label(self, s, per_label, i, j, labels):
        """``s[r, c] + per_label[r, label(c - r)]``: float32 ``(B, h, Tq, Tk)``, for
        ``per_label (B, h, Tq, R)`` (times the transposed one-hot, laid out by offset; on a tile
        beyond ``constant_beyond``, one column added to every key)."""
        num_labels = per_label.shape[-1]

        def near():
            one_hot = self.label_one_hot(i, j, num_labels, labels)  # (n, R)
            return s + unskew(ops.matmul(per_label, ops.transpose(one_hot)), self.tq, self.tk)

        if self.constant_beyond is None:
            return near()
        far, one_hot = self.far_label(i, j, labels, num_labels)
        return ops.cond(far, lambda: s + ops.sum(per_label * one_hot, -1)[..., None], near)

    def far_offset(self, i, j):
        """``(far, rep)``: whether every offset of tile ``(i, j)`` lies at or beyond
        ``constant_beyond`` on one side, and the offset ``±D`` that stands for them (int32 ``(1,)``)."""
        first = j * self.tk - i * self.tq - self.offset - self.tq + 1
        last = first + self.tq + self.tk - 2
        d = self.constant_beyond
        far = ops.logical_or(ops.less_equal(last, -d), ops.greater_equal(first, d))
        rep = ops.where(ops.greater_equal(first, d), d, -d)
        return far, ops.reshape(ops.cast(rep, "int32"), (1,))

    def biased_scores(self, qs, k_j, params, i, j):
        """``qs kᵀ + bias`` (float32 ``(B, h, Tq, Tk)``) for a positions-only bias.

        A tile whose per-offset values ``x`` are linear in the offset (to float32 rounding: ALiBi
        on every causal tile off the diagonal; T5 past ``max_distance``, where they are constant)
        has a bias of rank 2, ``x[c - r + Tq - 1] = x[Tq - 1 - r] + x[Tq - 1 + c] - x[Tq - 1]``: a
        row and a column vector, which ride along in the score matmul as two extra columns of the
        queries and keys (``[q, rows, 1]·[k, 1, cols]``; float32 only, no pass over the tile).
        A tile beyond ``constant_beyond`` is asked for one value per head. Other tiles lay the
        ``(Tq, Tk)`` bias out (:func:`toeplitz`).
        """
        tq, tk = self.tq, self.tk
        if self.constant_beyond is not None:
            far, rep = self.far_offset(i, j)

            def constant():
                c = ops.cast(self.bias_fn(params, None, None, rep), "float32")  # (..., 1)
                return self.rank_two_scores(qs, k_j, c + ops.zeros((tq,)), ops.zeros((tk,)))

            return ops.cond(far, constant, lambda: self.near_scores(qs, k_j, params, i, j))
        return self.near_scores(qs, k_j, params, i, j)

    def near_scores(self, qs, k_j, params, i, j):
        """:meth:`biased_scores` of a tile that is not beyond ``constant_beyond``."""
        x = ops.cast(self.bias_fn(params, None, None, self.diagonals(i, j)), "float32")
        n, tq = self.tq + self.tk - 1, self.tq
        slope = (x[..., -1:] - x[..., :1]) / float(n - 1)
        fit = x[..., :1] + slope * ops.arange(n, dtype="float32")  # (..., n)
        tol = 1e-6 * (1.0 + ops.max(ops.abs(x)))  # a few float32 ulps of the largest value
        linear = ops.all(ops.abs(x - fit) <= tol)
        rows = ops.flip(x[..., :tq], axis=-1)  # (..., Tq): x[Tq - 1 - r]
        cols = x[..., tq - 1 :] - x[..., tq - 1 : tq]  # (..., Tk): x[Tq - 1 + c] - x[Tq - 1]

        def laid_out():
            s = ops.cast(ops.matmul(qs, ops.swapaxes(k_j, -1, -2)), "float32")
            return s + toeplitz(x, self.tq, self.tk)  # (B, h, Tq, Tk)

        return ops.cond(linear, lambda: self.rank_two_scores(qs, k_j, rows, cols), laid_out)

    def rank_two_scores(self, qs, k_j, rows, cols):
        """``qs kᵀ + rows[:, None] + cols[None, :]``: float32 ``(B, h, Tq, Tk)``.

        ``rows (..., Tq)``, ``cols (..., Tk)`` float32, broadcastable to ``(B, h, ·)``.
        """
        if ops.dtype(qs) != "float32":  # a 16-bit matmul would round the bias: add it after
            s = ops.cast(ops.matmul(qs, ops.swapaxes(k_j, -1, -2)), "float32")
            return s + rows[..., :, None] + cols[..., None, :]
        b, h = ops.shape(qs)[0], qs.shape[1]

        def column(vector, length):  # (..., n) -> (B, h, n, 1)
            lead = (1,) * (3 - len(vector.shape)) + tuple(vector.shape)
            return ops.broadcast_to(ops.reshape(vector, lead), (b, h, length))[..., None]

        ones_q, ones_k = ops.ones((b, h, self.tq, 1)), ops.ones((b, h, self.tk, 1))
        q_aug = ops.concatenate([qs, column(rows, self.tq), ones_q], axis=-1)  # (B, h, Tq, dh+2)
        k_aug = ops.concatenate([k_j, ones_k, column(cols, self.tk)], axis=-1)  # (B, h, Tk, dh+2)
        return ops.matmul(q_aug, ops.swapaxes(k_aug, -1, -2))

    def scores(self, t, i, j, q_i, k_j, params, diagonal):
        """Scaled, biased, masked float32 scores of tile ``(i, j)``: ``(B, h, Tq, Tk)``."""
        key_table = params[self.n_bias] if self.key_labels is not None else None
        params = params[: self.n_bias]
        qs = q_i * ops.cast(self.scale, q_i.dtype)
        if self.bias_relative:
            s = self.biased_scores(qs, k_j, params, i, j)  # (B, h, Tq, Tk)
        else:
            s = ops.cast(ops.matmul(qs, ops.swapaxes(k_j, -1, -2)), "float32")  # (B, h, Tq, Tk)
        if self.bias_fn is not None and not self.bias_relative:
            s = s + ops.cast(self.tile_bias(params, q_i, k_j, i, j), "float32")
        if key_table is not None:  # Shaw's keys: qs_i·a^K[label(j - i)]
            table = ops.cast(key_table, "float32")  # (R, dh)
            per_label = ops.matmul(ops.cast(qs, "float32"), ops.transpose(table))  # (B, h, Tq, R)
            s = self.add_by_label(s, per_label, i, j, self.key_labels)
        if t.key_valid is not None:
            s = ops.where(t.key_valid[j], s, MASK_VALUE)  # keys (B|1, 1, 1, Tk)
        if t.mask is not None:
            s = ops.where(t.mask[i][j][:, None], s, MASK_VALUE)  # mask (B, 1, Tq, Tk)
        if diagonal:
            s = ops.where(self.relative(i, j) <= 0, s, MASK_VALUE)
        return s


class _Tiles:
    """The padded tensors split into tiles along a leading axis."""

    def __init__(self, plan, q, k, v, key_valid, mask):
        self.q = _split(q, plan.nq, plan.tq)  # (nq, B, h, Tq, dh)
        self.k = _split(k, plan.nk, plan.tk)  # (nk, B, h, Tk, dh)
        self.v = _split(v, plan.nk, plan.tk)  # (nk, B, h, Tk, dv)
        self.key_valid, self.mask = key_valid, mask


def _forward(plan, q, k, v, key_valid, mask, params):
    """``out (B, h, Lq_pad, dv)`` in the query dtype and float32 ``lse (B, h, Lq_pad)``."""
    t = _Tiles(plan, q, k, v, key_valid, mask)
    q_tile_shape = ops.shape(t.q[0])

    def query_tile(i):
        q_i = t.q[i]  # (B, h, Tq, dh)
        b, h = q_tile_shape[0], q_tile_shape[1]
        m = ops.full((b, h, plan.tq), -1e30, dtype="float32")
        l_sum = ops.zeros((b, h, plan.tq), dtype="float32")
        acc = ops.zeros((b, h, plan.tq, v.shape[-1]), dtype="float32")

        def step(diagonal):
            def body(j, state):
                m, l_sum, acc = state
                s = plan.scores(t, i, j, q_i, t.k[j], params, diagonal)  # (B, h, Tq, Tk)
                m_new, alpha, p, l_sum = online_softmax(s, m, l_sum)  # p (B, h, Tq, Tk)
                pv = ops.cast(ops.matmul(ops.cast(p, v.dtype), t.v[j]), "float32")  # (B, h, Tq, dv)
                if plan.value_labels is not None:  # Σ_j p_ij a^V[label(j - i)]
                    table = ops.cast(params[-1], "float32")  # (R, dv)
                    pv = pv + ops.matmul(plan.label_weights(p, i, j, table.shape[0]), table)
                acc = acc * alpha[..., None] + pv
                return m_new, l_sum, acc

            return body

        start, full, end = plan.key_ranges(i)
        state = tile_loop(start, full, step(False), (m, l_sum, acc))
        m, l_sum, acc = tile_loop(full, end, step(True), state)
        empty = m < _EMPTY  # (B, h, Tq): no visible key
        out = ops.where(empty[..., None], 0.0, acc / ops.maximum(l_sum, 1e-30)[..., None])
        lse = ops.where(empty, _EMPTY_LSE, m + ops.log(ops.maximum(l_sum, 1e-30)))
        return ops.cast(out, q.dtype), lse

    out, lse = map_tiles(
        query_tile, plan.nq, (q.dtype, "float32")
    )  # (nq, B, h, Tq, dv), (nq, B, h, Tq)
    return _merge(out), _merge(lse[..., None])[..., 0]


def _backward(plan, q, k, v, key_valid, mask, params, out, lse, d_out):
    """Gradients ``(dq, dk, dv, dparams)`` by recomputing each tile from ``lse``."""
    t = _Tiles(plan, q, k, v, key_valid, mask)
    lse_t = _split(lse[..., None], plan.nq, plan.tq)[..., 0]  # (nq, B, h, Tq)
    do_t = _split(d_out, plan.nq, plan.tq)  # (nq, B, h, Tq, dv)
    delta = ops.sum(ops.cast(d_out, "float32") * ops.cast(out, "float32"), axis=-1)
    delta_t = _split(delta[..., None], plan.nq, plan.tq)[..., 0]  # (nq, B, h, Tq)
    vjp = vjp_fn()
    bias_params = params[: plan.n_bias]
    table = None if plan.value_labels is None else ops.cast(params[-1], "float32")  # (R, dv)
    key_table = None if plan.key_labels is None else ops.cast(params[plan.n_bias], "float32")

    def tile_grads(i, j, diagonal, k_j, v_j):
        """``(p, dS)`` of tile ``(i, j)``, both float32 ``(B, h, Tq, Tk)``."""
        s = plan.scores(t, i, j, t.q[i], k_j, params, diagonal)
        dp = ops.cast(ops.matmul(do_t[i], ops.swapaxes(v_j, -1, -2)), "float32")
        if table is not None:  # dα_ij += dO_i · a^V[label(j - i)]
            per_label = ops.matmul(ops.cast(do_t[i], "float32"), ops.transpose(table))
            dp = plan.add_by_label(dp, per_label, i, j, plan.value_labels)  # (B, h, Tq, Tk)
        return weights_and_ds(s, lse_t[i], dp, delta_t[i])  # p, dS (B, h, Tq, Tk)

    def relative_bias_grads(i, j, ds):
        """Gradients of a positions-only bias' tensors from tile ``(i, j)``'s ``dS``: the
        callback is differentiated on the tile's ``Tq + Tk - 1`` offsets with ``dS`` summed along
        the diagonals, or, on a tile beyond ``constant_beyond``, on its one offset with ``Σ dS``."""

        def near():
            diag = plan.diagonals(i, j)
            per_offset = plan.bias_fn(bias_params, None, None, diag)  # (..., Tq+Tk-1)
            lead = tuple(per_offset.shape[:-1])
            cot = diagonal_sums(_reduce_to(ds, lead), plan.tq, plan.tk)  # (..., Tq+Tk-1)
            return tuple(vjp(lambda *ps: plan.bias_fn(ps, None, None, diag), bias_params, cot))

        if plan.constant_beyond is None:
            return near()
        far, rep = plan.far_offset(i, j)

        def constant():
            lead = tuple(plan.bias_fn(bias_params, None, None, rep).shape[:-1])
            cot = ops.sum(_reduce_to(ds, lead), axis=(-2, -1))[..., None]  # (..., 1)
            return tuple(vjp(lambda *ps: plan.bias_fn(ps, None, None, rep), bias_params, cot))

        return ops.cond(far, constant, near)

    def key_tile(j, dq_all):
        """``dK_j``, ``dV_j``, this tile's bias-parameter gradients and ``dq_all`` with every
        ``dQ_i += dS_ij K_j`` of key tile ``j`` added (one sweep: FlashAttention-2's order)."""
        k_j, v_j = t.k[j], t.v[j]  # (B, h, Tk, d)
        dk = ops.zeros(ops.shape(k_j), "float32")
        dv = ops.zeros(ops.shape(v_j), "float32")
        dparams = tuple(ops.zeros(ops.shape(p), "float32") for p in params)
        k_scaled = k_j * ops.cast(plan.scale, k_j.dtype)

        def step(diagonal):
            def body(i, state):
                dk, dv, dparams, dq_all = state
                p, ds = tile_grads(i, j, diagonal, k_j, v_j)
                ds_c = ops.cast(ds, q.dtype)
                dv = dv + ops.cast(
                    ops.matmul(ops.swapaxes(ops.cast(p, q.dtype), -1, -2), do_t[i]), "float32"
                )
                qs = t.q[i] * ops.cast(plan.scale, q.dtype)
                dk = dk + ops.cast(ops.matmul(ops.swapaxes(ds_c, -1, -2), qs), "float32")
                dq_i = ops.cast(ops.matmul(ds_c, k_scaled), "float32")  # (B, h, Tq, dh)
                if key_table is not None:  # dS summed per key label
                    r = key_table.shape[0]
                    d_label = plan.label_weights(ds, i, j, r, plan.key_labels)  # (B, h, Tq, R)
                    dq_i = dq_i + ops.matmul(d_label, key_table) * plan.scale
                    d_keys = ops.einsum("bhqr,bhqd->rd", d_label, ops.cast(qs, "float32"))
                    k_at = plan.n_bias
                    dparams = dparams[:k_at] + (dparams[k_at] + d_keys,) + dparams[k_at + 1 :]
                if table is not None:  # d a^V += Σ_(B, h) (weights per label)ᵀ dO
                    w = plan.label_weights(p, i, j, table.shape[0])  # (B, h, Tq, R)
                    d_table = ops.einsum("bhqr,bhqd->rd", w, ops.cast(do_t[i], "float32"))
                    dparams = dparams[:-1] + (dparams[-1] + d_table,)
                if bias_params and plan.bias_relative:
                    dparams = _add_first(dparams, relative_bias_grads(i, j, ds))
                elif bias_params or plan.reads_qk:
                    q_i = t.q[i]
                    wrt = ((q_i, k_j) if plan.reads_qk else ()) + tuple(bias_params)

                    def bias(*args):
                        qq, kk = args[:2] if plan.reads_qk else (q_i, k_j)
                        ps = args[2:] if plan.reads_qk else args
                        return plan.tile_bias(ps, qq, kk, i, j)

                    grads = vjp(bias, wrt, ds)
                    if plan.reads_qk:
                        dq_i = dq_i + _f32(grads[0], dq_i)
                        dk = dk + _f32(grads[1], dk)
                        grads = grads[2:]
                    dparams = _add_first(dparams, grads)
                return dk, dv, dparams, add_tile(dq_all, i, dq_i)

            return body

        start, full, end = plan.query_ranges(j)
        state = tile_loop(start, full, step(True), (dk, dv, dparams, dq_all))
        return tile_loop(full, end, step(False), state)

    def sweep(j, state):
        dq_all, dk_all, dv_all, dparams = state
        dk, dv, dp, dq_all = key_tile(j, dq_all)
        dparams = tuple(a + b for a, b in zip(dparams, dp))
        return dq_all, set_tile(dk_all, j, dk), set_tile(dv_all, j, dv), dparams

    zeros = [ops.zeros(ops.shape(x), "float32") for x in (t.q, t.k, t.v)]  # (n, B, h, T, d)
    state = tuple(tiles_of(z) for z in zeros) + (
        tuple(ops.zeros(ops.shape(p), "float32") for p in params),
    )
    *grads, dparams = tile_loop(0, plan.nk, sweep, state)
    dq, dk, dv = (_merge(stack_tiles(g, z)) for g, z in zip(grads, zeros))
    return dq, dk, dv, dparams


# -------------------------------------------------------------------- small helpers


def _tile(length, block_size):
    """Tile size: ``block_size``, or the length rounded up to 8 when shorter."""
    return int(min(int(block_size), -(-length // 8) * 8))


def _add_first(totals, grads):
    """Add ``grads`` to the first ``len(grads)`` running totals (the bias' tensors)."""
    summed = tuple(a + _f32(g, a) for a, g in zip(totals, grads))
    return summed + tuple(totals[len(summed) :])


def _reduce_to(x, lead):
    """Sum ``x (..., Tq, Tk)`` down to ``lead + (Tq, Tk)`` (the bias' broadcast shape)."""
    extra = len(x.shape) - 2 - len(lead)
    if extra > 0:
        x = ops.sum(x, axis=tuple(range(extra)))
    axes = tuple(a for a, size in enumerate(lead) if size == 1 and x.shape[a] != 1)
    return ops.sum(x, axis=axes, keepdims=True) if axes else x


def _clip(x, low, high):
    if isinstance(x, (int, np.integer)):
        return int(min(max(x, low), high))
    return ops.clip(x, low, high)


def _pad(x, axis, amount):
    if amount == 0:
        return x
    widths = [(0, 0)] * len(x.shape)
    widths[axis] = (0, amount)
    if x.dtype == "bool":
        return ops.cast(ops.pad(ops.cast(x, "int8"), widths), "bool")
    return ops.pad(x, widths)


def _split(x, n, size):
    """``(B, h, n·size, d) -> (n, B, h, size, d)``."""
    b, h = ops.shape(x)[0], x.shape[1]
    x = ops.reshape(x, (b, h, n, size, x.shape[-1]))
    return ops.transpose(x, (2, 0, 1, 3, 4))


def _merge(x):
    """``(n, B, h, size, d) -> (B, h, n·size, d)``."""
    n, _, h, size, d = x.shape
    x = ops.transpose(x, (1, 2, 0, 3, 4))
    return ops.reshape(x, (ops.shape(x)[0], h, n * size, d))


def _f32(g, like):
    return ops.cast(g, "float32") if g is not None else ops.zeros_like(like)
