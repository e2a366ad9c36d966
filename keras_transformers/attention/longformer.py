"""Longformer attention: sliding + dilated windows + global tokens (Beltagy et al., 2020,
"Longformer: The Long-Document Transformer").

Each token attends to a window around itself; some heads dilate the window (gaps of ``d``) so a
few layers reach far at the same cost; a few preselected *global* tokens (e.g. ``[CLS]``, question
tokens) attend to every token and every token attends to them. The global positions can be fixed
(``global_tokens=[0]``) and/or given per sequence through ``global_mask`` (B, L).

``S_i = {i + d_h·t : -w <= t <= w} ∪ G`` for a local query (``-w <= t <= 0`` when causal),
``S_i = {all j}`` for ``i ∈ G``; ``out_i = softmax_{j ∈ S_i}(q_i k_jᵀ / sqrt(dh)) v_j`` (keys
``j <= i`` only when causal). ``w`` is the one-sided window, as in ``attention="sliding_window"``
(the paper's window size is ``2w``: ``w`` tokens on each side), ``d_h`` the head's dilation; with
``dilation=1`` and no global tokens this core equals ``sliding_window``.

Computation: the sequence of a head with dilation ``d`` is split into ``d`` interleaved classes
``i mod d`` (a dilated window is a contiguous window on its class) and blocked; each query block
attends to its neighbour blocks plus the ``G`` gathered global keys in one softmax (global keys
are removed from the band so none is counted twice). Global rows are a separate attention of the
``G`` global queries over all keys. With ``global_mask`` the global set varies per sequence: up to
``max_global`` of them (the first by position) are gathered with ``top_k``, so shapes stay static.

Shapes: ``q (B, L, h, dh)``, ``k, v (B, L, h_kv, dh)`` -> ``(B, L, h, dh)``; band scores
``(B, h, d, L/(d·w), w, 3w)``; global columns ``(B, h, L, G)``; global rows ``(B, h, G, L)``.
Cost: ``O(L·(w + G)·dh)`` time, ``O(L·(w + G))`` memory; a local query attends to at most
``2w + 1 + G`` keys.

Example:
    >>> import numpy as np, keras_transformers as kt
    >>> core = {"name": "longformer", "window": 2, "dilation": [1, 2], "global_tokens": [0]}
    >>> mha = kt.attention.MultiHeadAttention(num_heads=2, key_dim=8, attention=core)
    >>> x = np.random.rand(2, 32, 16).astype("float32")
    >>> gm = np.zeros((2, 32), bool); gm[:, 5] = True          # per-batch global tokens
    >>> tuple(mha(x, global_mask=gm).shape)
    (2, 32, 16)
"""

import numpy as np
from keras import ops

from keras_transformers.attention.registry import register
from keras_transformers.attention.sparse_core import BlockedCore
from keras_transformers.ops.attention import heads_last
from keras_transformers.ops.blocks import lookup
from keras_transformers.ops.global_local import (
    BandPlan,
    band_keys,
    dense_attention,
    gather_global,
    global_rows,
    heads_first_qkv,
    interleave_blocks,
    scatter_global_rows,
    select_global_positions,
    uninterleave_blocks,
)
from keras_transformers.ops.sparse_patterns import SparsePart, check_int, sparse_attention


@register("longformer")
class LongformerAttention(BlockedCore):
    """Sliding-window + dilated-window + global-token attention, computed in blocks.

    Args:
        window: one-sided window ``w >= 1``: ``w`` keys on each side plus the token itself
            (causal: the ``w`` previous keys plus itself), in steps of the head's dilation.
        dilation: int or list of ints ``>= 1``: the gap between window keys; a list gives one per
            head, cycled over the heads (head ``i`` uses ``dilation[i % len]``).
        global_tokens: fixed global positions (e.g. ``[0]`` for ``[CLS]``).
        max_global: static capacity of the global set when a per-batch ``global_mask`` is given
            (union with ``global_tokens``; tokens past the capacity are treated as local).
            Default ``len(global_tokens) + 16`` capped at ``L``.
        block_size: block size of the band computation (default ``w``; any value gives the same
            result).
    """

    supports_key_content_bias = False  # global/local key blocks shared across groups
    supports_global_tokens = True
    example_config = {"window": 2, "dilation": [1, 2], "global_tokens": [0], "max_global": 4}
    #: Settings of benchmarks/attention_scaling.py (window 128 like the other local cores).
    benchmark_config = {"window": 128, "dilation": [1, 1, 2, 2], "global_tokens": [0]}
    quick_benchmark_config = {"window": 16, "dilation": [1, 2], "global_tokens": [0]}

    def __init__(
        self, window=128, dilation=1, global_tokens=(), max_global=None, block_size=None, **kwargs
    ):
        super().__init__(**kwargs)
        self.window = check_int("window", window, 1)
        dil = list(dilation) if isinstance(dilation, (list, tuple)) else [dilation]
        if not dil:
            raise ValueError("dilation=[]: give an int or a non-empty list of ints >= 1.")
        for d in dil:
            check_int("dilation", d, 1)
        self.dilation = [int(d) for d in dil]
        if isinstance(global_tokens, (int, np.integer)):
            global_tokens = [global_tokens]
        tokens = []
        for p in global_tokens:
            tokens.append(check_int("global_tokens", p, 0))
        self.global_tokens = sorted(set(tokens))
        if max_global is not None:
            max_global = check_int("max_global", max_global, 1)
            if max_global < len(self.global_tokens):
                raise ValueError(
                    f"max_global={max_global}: must be >= len(global_tokens)="
                    f"{len(self.global_tokens)}."
                )
        self.max_global = max_global
        self.block_size = None if block_size is None else check_int("block_size", block_size, 1)

    # ----------------------------------------------------------------- helpers
    def head_dilations(self, num_heads):
        return [self.dilation[i % len(self.dilation)] for i in range(num_heads)]

    def sides(self, causal):
        """Window extent ``(left, right)`` in units of the dilation."""
        return (self.window, 0) if causal else (self.window, self.window)

    def capacity(self, length):
        if self.max_global is not None:
            return min(self.max_global, length)
        return min(len(self.global_tokens) + 16, length)

    def build(self, query_shape, key_shape=None):
        length = query_shape[1]
        if length is not None and self.global_tokens and self.global_tokens[-1] >= length:
            raise ValueError(
                f"global_tokens={self.global_tokens}: positions must be < the sequence length "
                f"{length}."
            )
        self.built = True

    def _global_set(self, global_mask, length):
        """Static ``(positions list)`` or dynamic ``(positions (B,G), valid (B,G), eff (B,L))``."""
        if global_mask is None:
            if not self.global_tokens:
                return None
            if self.global_tokens[-1] >= length:
                raise ValueError(
                    f"global_tokens={self.global_tokens}: positions must be < the sequence "
                    f"length {length}."
                )
            return {"static": True, "positions": np.asarray(self.global_tokens, "int32")}
        if tuple(global_mask.shape[1:]) != (length,):
            raise ValueError(
                f"global_mask has shape {tuple(global_mask.shape)}: expected (batch, {length})."
            )
        is_global = ops.cast(global_mask, "bool")
        if self.global_tokens:
            fixed = np.zeros((length,), bool)
            fixed[self.global_tokens] = True
            is_global = ops.logical_or(is_global, ops.convert_to_tensor(fixed)[None])
        positions, valid, effective = select_global_positions(is_global, self.capacity(length))
        return {"static": False, "positions": positions, "valid": valid, "effective": effective}

    # ----------------------------------------------------------------- compute
    def compute(self, query, key, value, context):
        length, q, k, v, padding_mask = heads_first_qkv(self, query, key, value, context)
        glob = self._global_set(context.global_mask, length)
        if context.return_scores:
            out, weights = self._dense(q, k, v, padding_mask, context, glob)
            return heads_last(out), weights

        num_heads = q.shape[1]
        dilations = self.head_dilations(num_heads)
        groups = sorted(set(dilations))
        outs, order = [], []
        for d in groups:
            heads = [i for i, hd in enumerate(dilations) if hd == d]
            order += heads
            if len(groups) == 1:
                qg, kg, vg = q, k, v
            else:
                idx = ops.convert_to_tensor(np.asarray(heads, "int32"))
                qg, kg, vg = (ops.take(t, idx, axis=1) for t in (q, k, v))
            group_heads = None if len(groups) == 1 else heads
            outs.append(self._local(qg, kg, vg, d, glob, padding_mask, context, group_heads))
        out = outs[0] if len(outs) == 1 else ops.concatenate(outs, axis=1)
        if order != sorted(order):
            inverse = np.argsort(np.asarray(order)).astype("int32")
            out = ops.take(out, ops.convert_to_tensor(inverse), axis=1)  # (B, h, L, dv)
        if glob is not None:
            out = self._global_rows(out, q, k, v, glob, padding_mask, context)
        return heads_last(out)  # (B, L, h, dv)

    def _local(self, q, k, v, d, glob, padding_mask, context, heads):
        """Band (+ global columns) for heads sharing dilation ``d``: ``(B, hg, L, dv)``."""
        length = q.shape[2]
        left, right = self.sides(context.causal)
        plan = BandPlan(length, left, right, d, self.block_size or max(left, right, 1))
        qb = interleave_blocks(q, plan)  # (B, hg, d, n, b, dh)
        pattern = plan.band  # (b, K)
        mask = None
        if glob is not None:
            # global keys are attended through the global columns; drop them from the band
            if glob["static"]:
                is_global = np.zeros((length,), bool)
                is_global[glob["positions"]] = True
                local_key = ~is_global[np.clip(plan.key_positions, 0, length - 1)]  # (d, n, K)
                pattern = pattern & local_key[:, :, None, :]  # (d, n, b, K)
            else:
                local_key = ops.logical_not(lookup(glob["effective"], plan.key_positions, length))
                mask = local_key[:, None, :, :, None, :]  # (B, 1, d, n, 1, K)
        band = SparsePart(
            qb,
            band_keys(k, plan),  # (B, hg, d, n, K, dh)
            band_keys(v, plan),  # (B, hg, d, n, K, dv)
            plan.query_positions,
            plan.key_positions,
            pattern,
            mask=mask,
            rel=plan.rel,
        )
        parts = [band]
        if glob is not None:
            parts.append(self._global_columns(qb, k, v, glob, plan, padding_mask, context))
        out = sparse_attention(
            parts,
            length,
            padding_mask,
            context.position,
            context.causal,
            context.dropout,
            heads=heads,
        )  # (B, hg, d·n·b, dv)
        return uninterleave_blocks(out, plan)  # (B, hg, L, dv)

    def _global_columns(self, qb, k, v, glob, plan, padding_mask, context):
        """Every local query block sees the ``G`` global keys (shared by all blocks)."""
        qpos = plan.query_positions  # (d, n, b)
        if glob["static"]:
            pos = glob["positions"]  # (G,)
            idx = ops.convert_to_tensor(pos)
            kg = ops.take(k, idx, axis=2)  # (B, hg, G, dh), shared by all query blocks
            vg = ops.take(v, idx, axis=2)  # (B, hg, G, dv)
            pattern = (pos[None, None, None, :] <= qpos[..., None]) if context.causal else None
            return SparsePart(qb, kg, vg, qpos, pos, pattern)  # pattern (d, n, b, G)
        pos, valid = glob["positions"], glob["valid"]  # (B, G)
        kg = gather_global(k, pos)  # (B, hg, G, dh)
        vg = gather_global(v, pos)  # (B, hg, G, dv)
        qpos_t = ops.convert_to_tensor(qpos.astype("int32"))
        rel = pos[:, None, None, None, :] - qpos_t[None, ..., None]  # (B, d, n, b, G)
        key_ok = valid
        if padding_mask is not None:
            key_ok = ops.logical_and(key_ok, ops.take_along_axis(padding_mask, pos, axis=1))
        mask = key_ok[:, None, None, None, :]  # (B, 1, 1, 1, G)
        if context.causal:
            mask = ops.logical_and(mask, rel <= 0)  # (B, d, n, b, G)
        return SparsePart(qb, kg, vg, mask=mask[:, None], rel=rel, per_batch=True)

    def _global_rows(self, out, q, k, v, glob, padding_mask, context):
        """Global queries attend to all keys: ``O(G·L)``."""
        length = q.shape[2]
        if glob["static"]:
            pos = glob["positions"]
            qg = ops.take(q, ops.convert_to_tensor(pos), axis=2)  # (B, h, G, dh)
            rows = global_rows(qg, k, v, pos, length, context, padding_mask)  # (B, h, G, dv)
            slot = np.zeros((length,), "int32")
            slot[pos] = np.arange(pos.size)
            is_global = np.zeros((length,), bool)
            is_global[pos] = True
            placed = ops.take(rows, ops.convert_to_tensor(slot), axis=2)  # (B, h, L, dv)
            return ops.where(ops.convert_to_tensor(is_global)[None, None, :, None], placed, out)
        pos, valid = glob["positions"], glob["valid"]  # (B, G)
        qg = gather_global(q, pos)  # (B, h, G, dh)
        kpos = ops.convert_to_tensor(np.arange(length).astype("int32"))
        rel = kpos[None, None, :] - pos[:, :, None]  # (B, G, L)
        mask = valid[:, :, None]  # (B, G, 1)
        if context.causal:
            mask = ops.logical_and(mask, rel <= 0)  # (B, G, L)
        part = SparsePart(
            qg, k, v, key_positions=np.arange(length), mask=mask[:, None], rel=rel, per_batch=True
        )
        rows = sparse_attention(
            [part], length, padding_mask, context.position, context.causal, context.dropout
        )  # (B, h, G, dv)
        return scatter_global_rows(out, rows, pos, valid)

    # ----------------------------------------------------------------- debug path
    def pattern(self, length, num_heads, causal=False, is_global=None):
        """Static numpy pattern ``(h, L, L)`` (``is_global``: optional bool ``(L,)``)."""
        rel = np.arange(length)[None, :] - np.arange(length)[:, None]  # (Lq, Lk)
        left, right = self.sides(causal)
        masks = []
        for d in self.head_dilations(num_heads):
            band = (rel % d == 0) & (rel >= -left * d) & (rel <= right * d)
            masks.append(band)
        mask = np.stack(masks)
        if is_global is not None:
            mask = mask | is_global[None, None, :] | is_global[None, :, None]
        if causal:
            mask &= rel[None] <= 0
        return mask

    def _dense(self, q, k, v, padding_mask, context, glob):
        """Dense equivalent ``(B, h, L, L)`` (debug path for ``return_attention_scores``)."""
        num_heads, length = q.shape[1], q.shape[2]
        causal = context.causal
        if glob is None or glob["static"]:
            is_global = None
            if glob is not None:
                is_global = np.zeros((length,), bool)
                is_global[glob["positions"]] = True
            mask = self.pattern(length, num_heads, causal, is_global)  # (h, L, L)
        else:
            rel = np.arange(length)[None, :] - np.arange(length)[:, None]
            band = ops.convert_to_tensor(self.pattern(length, num_heads, causal))[None]
            eff = glob["effective"]  # (B, L)
            cover = ops.logical_or(eff[:, None, None, :], eff[:, None, :, None])  # (B, 1, L, L)
            if causal:
                cover = ops.logical_and(cover, ops.convert_to_tensor(rel <= 0))
            mask = ops.logical_or(band, cover)  # (B, h, L, L)
        return dense_attention(q, k, v, mask, length, context, padding_mask)

    def get_config(self):
        config = super().get_config()
        config.update(
            window=self.window,
            dilation=list(self.dilation) if len(self.dilation) > 1 else self.dilation[0],
            global_tokens=list(self.global_tokens),
            max_global=self.max_global,
            block_size=self.block_size,
        )
        return config
