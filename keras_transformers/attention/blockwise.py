"""Blockwise attention (Qiu et al., 2019, "Blockwise Self-Attention for Long Document
Understanding", BlockBERT).

The sequence is split into ``n`` blocks and a permutation ``π`` of the blocks decides which
single key block each query block attends to:

``M_ij = 1 if π(⌊i·n/L⌋) = ⌊j·n/L⌋ else 0`` (0-based),
``Blockwise-attn(Q, K, V) = [softmax(q̂_1 k̂_{π(1)}ᵀ / sqrt(dh)) v̂_{π(1)}; ...;
softmax(q̂_n k̂_{π(n)}ᵀ / sqrt(dh)) v̂_{π(n)}]``,

with ``q̂_i, k̂_i, v̂_i ∈ R^{(L/n) × dh}`` (the survey's "n×n" / "N/n × N/n" block sizes are an
erratum: the score blocks are ``(L/n) × (L/n)``). ``π`` = identity gives block-diagonal
attention. BlockBERT gives different heads different permutations; here one core uses one
permutation (use several layers or cores for more). With ``causal=True`` keys after the query are
masked as well, so only ``π(i) <= i`` blocks are useful there.

The blocks are given either by their count (``num_blocks = n``, block length ``ceil(L/n)``, cost
``O(L²/n)`` as in the paper) or by their length (``block_size = b``, ``n = ceil(L/b)``, cost
``O(L·b)``, linear in ``L``). A length that is not a multiple of the block length is padded and
the padding masked / removed.

Shapes: ``q (B, L, h, dh)``, ``k, v (B, L, h_kv, dh)`` -> ``(B, L, h, dh)``; scores
``(B, h, n, L/n, L/n)``.

Example:
    >>> import numpy as np, keras_transformers as kt
    >>> mha = kt.attention.MultiHeadAttention(
    ...     num_heads=2, key_dim=8,
    ...     attention={"name": "blockwise", "num_blocks": 3, "permutation": [1, 2, 0]})
    >>> tuple(mha(np.zeros((1, 12, 16), "float32")).shape)
    (1, 12, 16)
"""

import numpy as np
from keras import ops

from keras_transformers.attention.registry import register
from keras_transformers.attention.sparse_core import SparsePatternCore
from keras_transformers.ops import sparse_patterns as sp
from keras_transformers.ops.blocks import split_blocks

_NAMED = ("identity", "shift", "random")


def _check_permutation(permutation, n, name="permutation"):
    perm = [int(p) for p in permutation]
    if len(perm) != n or sorted(perm) != list(range(n)):
        raise ValueError(
            f"{name}={list(permutation)}: must be a permutation of range({n}) (one key block "
            f"index per query block, each used once) for {n} blocks."
        )
    return perm


@register("blockwise")
class BlockwiseAttention(SparsePatternCore):
    """Each query block attends exactly one key block, chosen by a permutation.

    Args:
        num_blocks: ``n >= 1`` blocks (block length ``ceil(L / n)``); exclusive with
            ``block_size``.
        block_size: block length ``b >= 1`` instead (``n = ceil(L / b)``).
        permutation: ``None`` / ``"identity"`` (block-diagonal), a list ``[π(0), ..., π(n-1)]``,
            ``"shift"`` (``π(i) = (i + shift) mod n``) or ``"random"`` (a permutation drawn
            with ``seed``).
        shift: the cyclic shift of ``permutation="shift"``; None draws it with ``seed`` in
            ``[1, n)`` (a seeded random shift).
        seed: seed of the random permutation / shift (reproducible).
    """

    example_config = {"num_blocks": 4, "permutation": "shift", "shift": 1}

    def __init__(
        self, num_blocks=None, block_size=None, permutation=None, shift=None, seed=0, **kwargs
    ):
        super().__init__(**kwargs)
        if num_blocks is not None and block_size is not None:
            raise ValueError(
                f"num_blocks={num_blocks}, block_size={block_size}: give only one of them."
            )
        if num_blocks is None and block_size is None:
            num_blocks = 2
        self.num_blocks = sp.check_int("num_blocks", num_blocks, 1, allow_none=True)
        self.block_size = sp.check_int("block_size", block_size, 1, allow_none=True)
        self.shift = sp.check_int("shift", shift, None, allow_none=True)
        self.seed = sp.check_int("seed", seed)
        if permutation is None or isinstance(permutation, str):
            if permutation is not None and permutation not in _NAMED:
                raise ValueError(
                    f"permutation={permutation!r}: allowed values are None, a list of block "
                    f"indices, {', '.join(repr(p) for p in _NAMED)}."
                )
            self.permutation = permutation
        else:
            try:
                perm = [int(p) for p in permutation]
            except (TypeError, ValueError):
                raise ValueError(
                    f"permutation={permutation!r}: must be None, a list of block indices or "
                    f"one of {', '.join(repr(p) for p in _NAMED)}."
                ) from None
            if self.num_blocks is not None:
                perm = _check_permutation(perm, self.num_blocks)
            self.permutation = perm

    def blocks_for(self, length):
        """``(n, b)`` for a sequence of ``length``."""
        if self.block_size is not None:
            block = self.block_size
            return sp.ceil_div(length, block), block
        return self.num_blocks, sp.ceil_div(length, self.num_blocks)

    def permutation_for(self, n):
        """The permutation ``[π(0), ..., π(n-1)]`` used with ``n`` blocks."""
        if self.permutation is None or self.permutation == "identity":
            return list(range(n))
        if self.permutation == "shift":
            shift = self.shift
            if shift is None:
                shift = int(np.random.RandomState(self.seed).randint(1, n)) if n > 1 else 0
            return [(i + shift) % n for i in range(n)]
        if self.permutation == "random":
            return [int(p) for p in np.random.RandomState(self.seed).permutation(n)]
        return _check_permutation(self.permutation, n)

    def _padded_length(self, length):
        n, block = self.blocks_for(length)
        return n * block

    def _parts(self, q, k, v, length, lp, causal):
        n, block = self.blocks_for(length)
        perm = np.asarray(self.permutation_for(n), "int32")
        qb = split_blocks(q, block)  # (B, h, n, b, dh)
        index = ops.convert_to_tensor(perm)
        kb = ops.take(split_blocks(k, block), index, axis=2)  # (B, h, n, b, dh): block π(i)
        vb = ops.take(split_blocks(v, block), index, axis=2)  # (B, h, n, b, dv)
        qpos = np.arange(lp).reshape(n, block)  # (n, b)
        kpos = perm[:, None] * block + np.arange(block)[None, :]  # (n, b)
        pattern = np.ones((n, block, block), bool)
        if causal:
            pattern = kpos[:, None, :] <= qpos[:, :, None]
        return [sp.SparsePart(qb, kb, vb, qpos, kpos, pattern)]

    def get_config(self):
        return {
            **super().get_config(),
            "num_blocks": self.num_blocks,
            "block_size": self.block_size,
            "permutation": self.permutation,
            "shift": self.shift,
            "seed": self.seed,
        }
