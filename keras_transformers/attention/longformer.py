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

from keras_transformers.attention.base import AttentionCore
from keras_transformers.attention.registry import register
from keras_transformers.ops.attention import heads_first, heads_last, repeat_kv_heads
from keras_transformers.ops.global_local import (
    BandPlan,
    Segment,
    band_keys,
    check_int,
    check_self_attention,
    gather_global,
    interleave_blocks,
    lookup,
    scatter_global_rows,
    segment_attention,
    select_global_positions,
    uninterleave_blocks,
)


@register("longformer")
class LongformerAttention(AttentionCore):
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

    supports_position_bias = True
    supports_attention_mask = False
    supports_cross_attention = False
    supports_cache = False
    supports_causal = True
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

    def _global_set(self, global_mask, length, batch_like):
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

    # ----------------------------------------------------------------- call
    def call(
        self,
        query,
        key,
        value,
        padding_mask=None,
        attention_mask=None,
        causal=False,
        position=None,
        query_offset=0,
        weights_dropout=None,
        training=None,
        return_attention_scores=False,
        global_mask=None,
    ):
        length = check_self_attention(self, query, key, attention_mask, query_offset)
        num_heads = query.shape[2]
        q = heads_first(query)  # (B, h, L, dh)
        k = heads_first(repeat_kv_heads(key, num_heads))  # (B, h, L, dh)
        v = heads_first(repeat_kv_heads(value, num_heads))  # (B, h, L, dv)
        if padding_mask is not None:
            padding_mask = ops.cast(padding_mask, "bool")
        dropout = weights_dropout if (weights_dropout is not None and training) else None
        glob = self._global_set(global_mask, length, q)
        if return_attention_scores:
            out, weights = self._dense(q, k, v, padding_mask, causal, position, dropout, glob)
            return heads_last(out), weights

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
            outs.append(
                self._local(
                    qg,
                    kg,
                    vg,
                    d,
                    glob,
                    padding_mask,
                    causal,
                    position,
                    dropout,
                    length,
                    None if len(groups) == 1 else heads,
                )
            )
        out = outs[0] if len(outs) == 1 else ops.concatenate(outs, axis=1)
        if order != sorted(order):
            inverse = np.argsort(np.asarray(order)).astype("int32")
            out = ops.take(out, ops.convert_to_tensor(inverse), axis=1)  # (B, h, L, dv)
        if glob is not None:
            out = self._global_rows(
                out, q, k, v, glob, padding_mask, causal, position, dropout, length
            )
        return heads_last(out)  # (B, L, h, dv)

    def _local(self, q, k, v, d, glob, padding_mask, causal, position, dropout, length, heads):
        """Band (+ global columns) for heads sharing dilation ``d``: ``(B, hg, L, dv)``."""
        left, right = self.sides(causal)
        block = self.block_size or (max(left, right, 1))
        plan = BandPlan(length, left, right, d, block)
        qb = interleave_blocks(q, plan)  # (B, hg, d, n, b, dh)
        kb = band_keys(k, plan)  # (B, hg, d, n, K, dh)
        vb = band_keys(v, plan)  # (B, hg, d, n, K, dv)
        key_static = plan.real  # (d, n, K): real tokens
        key_ok = None  # (B, d, n, K)
        if padding_mask is not None:
            key_ok = lookup(padding_mask, plan.key_positions, length)
        if glob is not None:
            # global keys are attended through the global columns; drop them from the band
            if glob["static"]:
                is_global = np.zeros((length,), bool)
                is_global[glob["positions"]] = True
                key_static = key_static & ~is_global[np.clip(plan.key_positions, 0, length - 1)]
            else:
                local_key = ops.logical_not(lookup(glob["effective"], plan.key_positions, length))
                key_ok = local_key if key_ok is None else ops.logical_and(key_ok, local_key)
        keys = ops.convert_to_tensor(key_static)[None]  # (1, d, n, K)
        if key_ok is not None:
            keys = ops.logical_and(keys, key_ok)  # (B, d, n, K)
        band = ops.convert_to_tensor(plan.band)  # (b, K)
        mask = ops.logical_and(band, keys[:, None, :, :, None, :])  # (B|1, 1, d, n, b, K)
        segments = [Segment(kb, vb, mask, plan.rel)]
        if glob is not None:
            segments.append(self._global_columns(k, v, glob, plan, padding_mask, causal, length))
        out, _ = segment_attention(qb, segments, position, causal, dropout, heads=heads)
        return uninterleave_blocks(out, plan)  # (B, hg, L, dv)

    def _global_columns(self, k, v, glob, plan, padding_mask, causal, length):
        qpos = plan.query_positions  # (d, n, b)
        if glob["static"]:
            pos = glob["positions"]  # (G,)
            idx = ops.convert_to_tensor(pos)
            kg = ops.take(k, idx, axis=2)  # (B, hg, G, dh), shared by all query blocks
            vg = ops.take(v, idx, axis=2)  # (B, hg, G, dv)
            rel = pos[None, None, None, :] - qpos[..., None]  # (d, n, b, G)
            mask = None
            if causal:
                mask = ops.convert_to_tensor(rel <= 0)[None, None]  # (1, 1, d, n, b, G)
            if padding_mask is not None:
                key_ok = ops.take(padding_mask, idx, axis=1)[:, None, None, None, None, :]
                mask = key_ok if mask is None else ops.logical_and(mask, key_ok)
            return Segment(kg, vg, mask, rel, shared=True)
        pos, valid = glob["positions"], glob["valid"]  # (B, G)
        kg = gather_global(k, pos)  # (B, hg, G, dh)
        vg = gather_global(v, pos)  # (B, hg, G, dv)
        qpos_t = ops.convert_to_tensor(qpos.astype("int32"))
        rel = pos[:, None, None, None, :] - qpos_t[None, ..., None]  # (B, d, n, b, G)
        key_ok = valid
        if padding_mask is not None:
            key_ok = ops.logical_and(key_ok, ops.take_along_axis(padding_mask, pos, axis=1))
        mask = key_ok[:, None, None, None, :]  # (B, 1, 1, 1, G)
        if causal:
            mask = ops.logical_and(mask, rel <= 0)  # (B, d, n, b, G)
        return Segment(kg, vg, mask[:, None], rel, per_batch=True, shared=True)

    def _global_rows(self, out, q, k, v, glob, padding_mask, causal, position, dropout, length):
        """Global queries attend to all keys: ``O(G·L)``."""
        kpos = np.arange(length)
        if glob["static"]:
            pos = glob["positions"]
            idx = ops.convert_to_tensor(pos)
            qg = ops.take(q, idx, axis=2)  # (B, h, G, dh)
            rel = kpos[None, :] - pos[:, None]  # (G, L)
            mask = np.ones(rel.shape, bool) if not causal else rel <= 0
            mask = ops.convert_to_tensor(mask)[None, None]  # (1, 1, G, L)
            if padding_mask is not None:
                mask = ops.logical_and(mask, padding_mask[:, None, None, :])
            rows, _ = segment_attention(qg, [Segment(k, v, mask, rel)], position, causal, dropout)
            slot = np.zeros((length,), "int32")
            slot[pos] = np.arange(pos.size)
            is_global = np.zeros((length,), bool)
            is_global[pos] = True
            placed = ops.take(rows, ops.convert_to_tensor(slot), axis=2)  # (B, h, L, dv)
            return ops.where(ops.convert_to_tensor(is_global)[None, None, :, None], placed, out)
        pos, valid = glob["positions"], glob["valid"]  # (B, G)
        qg = gather_global(q, pos)  # (B, h, G, dh)
        rel = ops.convert_to_tensor(kpos.astype("int32"))[None, None, :] - pos[:, :, None]
        mask = valid[:, :, None]  # (B, G, 1)
        if causal:
            mask = ops.logical_and(mask, rel <= 0)  # (B, G, L)
        if padding_mask is not None:
            mask = ops.logical_and(mask, padding_mask[:, None, :])
        seg = Segment(k, v, mask[:, None], rel, per_batch=True)
        rows, _ = segment_attention(qg, [seg], position, causal, dropout)  # (B, h, G, dv)
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

    def _dense(self, q, k, v, padding_mask, causal, position, dropout, glob):
        """Dense equivalent ``(B, h, L, L)`` (debug path for ``return_attention_scores``)."""
        num_heads, length = q.shape[1], q.shape[2]
        rel = np.arange(length)[None, :] - np.arange(length)[:, None]
        if glob is None or glob["static"]:
            is_global = None
            if glob is not None:
                is_global = np.zeros((length,), bool)
                is_global[glob["positions"]] = True
            mask = ops.convert_to_tensor(self.pattern(length, num_heads, causal, is_global))[None]
        else:
            band = ops.convert_to_tensor(self.pattern(length, num_heads, causal))[None]
            eff = glob["effective"]  # (B, L)
            cover = ops.logical_or(eff[:, None, None, :], eff[:, None, :, None])  # (B, 1, L, L)
            if causal:
                cover = ops.logical_and(cover, ops.convert_to_tensor(rel <= 0))
            mask = ops.logical_or(band, cover)  # (B, h, L, L)
        if padding_mask is not None:
            mask = ops.logical_and(mask, padding_mask[:, None, None, :])
        out, weights = segment_attention(q, [Segment(k, v, mask, rel)], position, causal, dropout)
        return out, weights[0]

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
