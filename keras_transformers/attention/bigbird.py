"""BigBird block-sparse attention: window + global + random blocks (Zaheer et al., 2020, "Big
Bird: Transformers for Longer Sequences"), the ITC form (global tokens are existing tokens).

Like Longformer (a local window plus a few global tokens), but the dilated windows are replaced by
attention to a few *random* key blocks: in a random graph information flows between any two nodes
in few hops. Everything works on blocks of ``b`` tokens: query block ``i`` attends to its
``num_window_blocks`` neighbour blocks (3: left, self, right), the first ``num_global_blocks``
blocks (global) and ``r = num_random_blocks`` random blocks; global blocks attend to everything.

``S_i = W(i) ∪ G ∪ R(i)`` (blocks), ``W(i) = {i - ⌊n_w/2⌋ .. i + ⌊n_w/2⌋}``, ``G = {0 .. g-1}``,
``R(i)`` = ``r`` distinct blocks outside ``W(i) ∪ G`` drawn once from ``seed`` (fixed when the
layer is built, the same on every call and after save/load); with ``causal=True`` the window is
``{i - ⌊n_w/2⌋ .. i}``, random blocks come only from the past and keys satisfy ``j <= i``.
``out_i = softmax_{j ∈ S_i}(q_i k_jᵀ / sqrt(dh)) v_j``. An interior query attends to
``(n_w + g + r)·b`` keys (``w + g + r`` in the survey's token counts), constant in ``L``.

Shapes: ``q (B, L, h, dh)``, ``k, v (B, L, h_kv, dh)`` -> ``(B, L, h, dh)``; blocked scores
``(B, h, n, b, (n_w + r)·b + g·b)`` with ``n = L / b``; global rows ``(B, h, g·b, L)``.
Cost: ``O(L·(n_w + g + r)·b·dh)`` time, ``O(L·(n_w + g + r)·b)`` memory: linear in ``L``.

Example:
    >>> import numpy as np, keras_transformers as kt
    >>> core = {"name": "bigbird", "block_size": 4, "num_random_blocks": 1, "seed": 7}
    >>> mha = kt.attention.MultiHeadAttention(num_heads=2, key_dim=8, attention=core)
    >>> tuple(mha(np.random.rand(2, 32, 16).astype("float32")).shape)
    (2, 32, 16)
"""

import numpy as np
from keras import ops

from keras_transformers.attention.registry import register
from keras_transformers.attention.sparse_core import BlockedCore
from keras_transformers.ops.attention import heads_last
from keras_transformers.ops.blocks import (
    neighbour_blocks,
    num_blocks,
    pad_length,
    slice_axis,
    split_blocks,
)
from keras_transformers.ops.global_local import (
    dense_attention,
    global_rows,
    heads_first_qkv,
    random_block_table,
)
from keras_transformers.ops.sparse_patterns import SparsePart, check_int, sparse_attention


@register("bigbird")
class BigBirdAttention(BlockedCore):
    """Blocked window + global + random attention (BigBird-ITC).

    Args:
        block_size: ``b >= 1`` tokens per block (capped at the sequence length).
        num_window_blocks: odd ``n_w >= 1``: the window blocks centred on the query block
            (``3`` = left, self, right); with ``causal`` only the left half and the own block.
        num_global_blocks: ``g >= 0``: the first ``g`` blocks are global (attend to and are
            attended by every token).
        num_random_blocks: ``r >= 0`` random key blocks per query block.
        seed: seed of the random blocks; the table is a deterministic function of ``seed``, the
            number of blocks and the window/global settings (``random_blocks(length)``).
    """

    supports_key_content_bias = False  # global/local key blocks shared across groups
    example_config = {
        "block_size": 4,
        "num_window_blocks": 3,
        "num_global_blocks": 1,
        "num_random_blocks": 1,
        "seed": 0,
    }
    #: Settings of benchmarks/attention_scaling.py (the paper's b=64, 3 window, 2 global, 3 random).
    benchmark_config = {
        "block_size": 64,
        "num_window_blocks": 3,
        "num_global_blocks": 2,
        "num_random_blocks": 3,
    }
    quick_benchmark_config = {"block_size": 8, "num_random_blocks": 2}

    def __init__(
        self,
        block_size=64,
        num_window_blocks=3,
        num_global_blocks=1,
        num_random_blocks=3,
        seed=0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.block_size = check_int("block_size", block_size, 1)
        self.num_window_blocks = check_int("num_window_blocks", num_window_blocks, 1)
        if self.num_window_blocks % 2 == 0:
            raise ValueError(
                f"num_window_blocks={num_window_blocks}: must be odd (the window is centred on "
                "the query block: 1, 3, 5, ...)."
            )
        self.num_global_blocks = check_int("num_global_blocks", num_global_blocks, 0)
        self.num_random_blocks = check_int("num_random_blocks", num_random_blocks, 0)
        self.seed = check_int("seed", seed, 0)
        self._tables = {}

    # ----------------------------------------------------------------- layout
    def layout(self, length, causal=False):
        """Static block layout for a sequence of ``length``: a dict of Python ints."""
        b = min(self.block_size, length)
        n = num_blocks(length, b)
        half = self.num_window_blocks // 2
        return {
            "b": b,
            "n": n,
            "half": half,
            "g": min(self.num_global_blocks, n),
            "before": min(half, n - 1),
            "after": 0 if causal else min(half, n - 1),
        }

    def random_blocks(self, length, causal=False):
        """The ``(n, r)`` int32 table of random key blocks (``-1`` = none), fixed by the seed."""
        lay = self.layout(length, causal)
        key = (lay["n"], bool(causal))
        if key not in self._tables:
            self._tables[key] = random_block_table(
                lay["n"],
                self.num_random_blocks,
                self.seed,
                lay["half"],
                0 if causal else lay["half"],
                lay["g"],
                causal,
            )
        return self._tables[key]

    def build(self, query_shape, key_shape=None):
        length = query_shape[1]
        if length is not None:
            # draw the random blocks once, at build time (both modes; cheap numpy)
            self.random_blocks(int(length), False)
            self.random_blocks(int(length), True)
        self.built = True

    def pattern(self, length, causal=False):
        """Static numpy mask ``(L, L)`` of the pattern (block-level union, then causal)."""
        lay = self.layout(length, causal)
        n, b, g, half = lay["n"], lay["b"], lay["g"], lay["half"]
        blk = np.arange(n)
        diff = blk[None, :] - blk[:, None]  # key block - query block
        window = (diff >= -half) & (diff <= (0 if causal else half))
        block_mask = window | (blk[None, :] < g) | (blk[:, None] < g)
        table = self.random_blocks(length, causal)
        for i in range(n):
            chosen = table[i][table[i] >= 0]
            block_mask[i, chosen] = True
        mask = np.repeat(np.repeat(block_mask, b, 0), b, 1)[:length, :length]
        if causal:
            mask &= np.tril(np.ones((length, length), bool))
        return mask

    # ----------------------------------------------------------------- compute
    def compute(self, query, key, value, context):
        length, q, k, v, padding_mask = heads_first_qkv(self, query, key, value, context)
        causal = context.causal
        if context.return_scores:
            mask = self.pattern(length, causal)  # (L, L): debug path only
            out, weights = dense_attention(q, k, v, mask, length, context, padding_mask)
            return heads_last(out), weights

        lay = self.layout(length, causal)
        b, n, g = lay["b"], lay["n"], lay["g"]
        num_global = min(g * b, length)  # global query/key tokens
        outs = []
        if num_global:
            # global rows: the first g blocks attend to every key, O(g·b·L)
            qg = slice_axis(q, 0, num_global, 2)  # (B, h, g·b, dh)
            outs.append(global_rows(qg, k, v, np.arange(num_global), length, context, padding_mask))
        if g < n:
            outs.append(self._local(q, k, v, padding_mask, context, length, lay))
        out = outs[0] if len(outs) == 1 else ops.concatenate(outs, axis=2)
        return heads_last(slice_axis(out, 0, length, 2))  # (B, L, h, dv)

    def _local(self, q, k, v, padding_mask, context, length, lay):
        """Window + global columns + random blocks for query blocks ``g .. n-1``."""
        b, n, g = lay["b"], lay["n"], lay["g"]
        before, after = lay["before"], lay["after"]
        qp, _ = pad_length(q, b, axis=2)
        kp, _ = pad_length(k, b, axis=2)
        vp, _ = pad_length(v, b, axis=2)
        qb = slice_axis(split_blocks(qp, b, axis=2), g, n, 2)  # (B, h, n', b, dh)
        kb = split_blocks(kp, b, axis=2)  # (B, h, n, b, dh)
        vb = split_blocks(vp, b, axis=2)  # (B, h, n, b, dv)
        qpos = np.arange(n * b).reshape(n, b)[g:]  # (n', b)

        # window blocks (global blocks among them are covered by the global columns)
        span = (before + 1 + after) * b
        wpos = (np.arange(n)[:, None] - before) * b + np.arange(span)[None, :]  # (n, K)
        wpos = wpos[g:]
        # key_pos - query_pos inside a block does not depend on the block: (b, K)
        rel = (np.arange(span)[None, :] - before * b) - np.arange(b)[:, None]
        pattern = (wpos >= g * b)[:, None, :]  # (n', 1, K)
        if context.causal:
            pattern = pattern & (rel <= 0)  # (n', b, K)
        window = SparsePart(
            qb,
            neighbour_blocks(kb, before, after, axis=2, start=g),  # (B, h, n', K, dh)
            neighbour_blocks(vb, before, after, axis=2, start=g),  # (B, h, n', K, dv)
            qpos,
            wpos,
            pattern,
            rel=rel[None],
        )
        parts = [window]
        if g:
            # global columns: the first g·b tokens, all before any local query
            kg, vg = slice_axis(kp, 0, g * b, 2), slice_axis(vp, 0, g * b, 2)  # (B, h, g·b, ·)
            parts.append(SparsePart(qb, kg, vg, qpos, np.arange(g * b)))
        r = self.num_random_blocks
        if r:
            table = self.random_blocks(length, context.causal)[g:]  # (n', r)
            idx = ops.convert_to_tensor(np.maximum(table, 0).reshape(-1).astype("int32"))
            rk = ops.take(kb, idx, axis=2)  # (B, h, n'·r, b, dh)
            rv = ops.take(vb, idx, axis=2)
            rk = ops.reshape(rk, (-1, rk.shape[1], n - g, r * b, rk.shape[-1]))  # (B,h,n',rb,dh)
            rv = ops.reshape(rv, (-1, rv.shape[1], n - g, r * b, rv.shape[-1]))
            rpos = (np.maximum(table, 0)[..., None] * b + np.arange(b)).reshape(n - g, r * b)
            rvalid = np.repeat(table >= 0, b, axis=1)  # (n', r·b)
            parts.append(SparsePart(qb, rk, rv, qpos, rpos, rvalid[:, None, :]))
        return sparse_attention(
            parts, length, padding_mask, context.position, context.causal, context.dropout
        )  # (B, h, n'·b, dv)

    def get_config(self):
        config = super().get_config()
        config.update(
            block_size=self.block_size,
            num_window_blocks=self.num_window_blocks,
            num_global_blocks=self.num_global_blocks,
            num_random_blocks=self.num_random_blocks,
            seed=self.seed,
        )
        return config
