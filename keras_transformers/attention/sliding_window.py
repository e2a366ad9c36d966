"""Sliding-window (banded) attention, the local core of Longformer (Beltagy et al., 2020).

Each token attends to the keys within distance ``w`` of it: ``S_i = {j : |i - j| <= w}``
(``2w + 1`` keys), or with ``causal=True`` the ``w`` keys before it and itself,
``S_i = {j : i - w <= j <= i}`` (the causal pattern is the non-causal band intersected with
``j <= i``):

``a(x_i, S_i) = softmax((x_i W^q)(x_j W^k)ᵀ_{j ∈ S_i} / sqrt(dh)) (x_j W^v)_{j ∈ S_i}``.

Computed in blocks, never as an ``L x L`` matrix: the sequence is padded to a multiple of the
block size ``b`` (default ``b = w``), query block ``i`` gathers key blocks ``i - 1, i, i + 1``
(``i - 1, i`` when causal) and a static band mask inside the ``(b, 3b)`` score block keeps the
``|i - j| <= w`` pairs. Padded keys are masked and the padded queries dropped.

Shapes: ``q (B, L, h, dh)``, ``k, v (B, L, h_kv, dh)`` -> ``(B, L, h, dh)``; blocked scores
``(B, h, L/w, w, 3w)``.
Cost: ``O(L·w·dh)`` time and ``O(L·w)`` memory (``3w`` scores per query).

Incremental decoding (``MultiHeadAttention(..., causal=True)`` with ``cache=``): the cache is a
ring buffer of the last ``w + 1`` keys and values, ``(B, 2, w + 1, h_kv, dh)``; position ``p``
lives in slot ``p mod (w + 1)``, so the cache and the per-token cost are ``O(w)`` whatever the
length, and the key positions needed by ALiBi/T5/Shaw biases are recovered from the slot index
(RoPE keys are stored already rotated).

The building blocks are importable: :func:`sliding_window_attention` works on heads-first
``(B, h, L, dh)`` tensors and :func:`sliding_window_part` returns the band as a
:class:`~keras_transformers.ops.sparse_patterns.SparsePart` that can be combined with other parts
(global tokens, random blocks) in one joint softmax.

Example:
    >>> import numpy as np, keras_transformers as kt
    >>> mha = kt.attention.MultiHeadAttention(
    ...     num_heads=2, key_dim=8, attention={"name": "sliding_window", "window": 4})
    >>> tuple(mha(np.zeros((1, 10, 16), "float32")).shape)
    (1, 10, 16)
"""

from keras import ops

from keras_transformers.attention.registry import register
from keras_transformers.attention.sparse_core import SparsePatternCore
from keras_transformers.ops import sparse_patterns as sp
from keras_transformers.ops.attention import attend, heads_first, heads_last, repeat_kv_heads
from keras_transformers.ops.blocks import pad_axis


def window_block_size(window, length, block_size=None):
    """The block size used for ``length``: ``block_size or window``, capped at ``length``."""
    return max(1, min(int(block_size or window), int(length)))


def sliding_window_part(q, k, v, length, padded_length, window, causal, block_size, heads=None):
    """The band ``|i - j| <= window`` as a blocked :class:`SparsePart`.

    Args:
        q, k, v: heads-first ``(B, h, Lp, ·)``, ``Lp`` a multiple of ``block_size``.
        length: unpadded length ``L``.
        window: ``w``.
        causal: keep only ``j <= i``.
        block_size: ``b`` (usually ``w``); each query block gathers ``ceil(w / b)`` blocks on
            each side (only before it when causal).
        heads: optional numpy bool ``(h,)``: heads that use this part.
    """
    reach = sp.ceil_div(window, block_size)
    pattern = sp.band_pattern(window, causal)
    return sp.window_part(q, k, v, length, padded_length, block_size, reach, causal, pattern, heads)


def sliding_window_attention(
    q,
    k,
    v,
    window,
    causal=False,
    key_mask=None,
    position=None,
    dropout=None,
    block_size=None,
    return_weights=False,
):
    """Blocked sliding-window attention on heads-first tensors.

    Args:
        q: ``(B, h, L, dh)``; k ``(B, h, L, dh)``; v ``(B, h, L, dv)`` (static ``L``).
        window: ``w``; query ``i`` sees ``|i - j| <= w`` (``i - w <= j <= i`` when causal).
        key_mask: bool ``(B, L)`` key padding mask (True = keep) or None.
        position: score-side positional encoding or None.
        dropout: callable applied to the attention weights, or None.
        block_size: ``b``, default ``w``.
        return_weights: also return the dense ``(B, h, L, L)`` weights (debug only: ``O(L²)``).

    Returns:
        ``(B, h, L, dv)`` (and the weights).
    """
    length = sp.static_length(q, 2, "sliding_window")
    block = window_block_size(window, length, block_size)
    lp = sp.ceil_div(length, block) * block
    q, k, v = (pad_axis(x, lp) for x in (q, k, v))
    dv = v.shape[-1]
    if return_weights:
        eye = ops.broadcast_to(
            ops.eye(lp, dtype=v.dtype)[None, None], (ops.shape(v)[0], v.shape[1], lp, lp)
        )
        v = ops.concatenate([v, eye], axis=-1)
    key_valid = None
    if key_mask is not None:
        key_valid = pad_axis(ops.cast(key_mask, "bool"), lp, axis=1, value=False)
    part = sliding_window_part(q, k, v, length, lp, window, causal, block)
    out = sp.sparse_attention(
        [part],
        length,
        key_valid,
        position,
        causal,
        dropout,
        value_channels=dv if return_weights else None,
    )
    if return_weights:
        return out[:, :, :length, :dv], out[:, :, :length, dv : dv + length]
    return out[:, :, :length]


@register("sliding_window")
class SlidingWindowAttention(SparsePatternCore):
    """Each token attends to the tokens within ``window`` positions of it.

    Args:
        window: ``w >= 1``; keys ``|i - j| <= w`` (causal: ``i - w <= j <= i``).
        block_size: computation block ``b`` (default ``w``); any value gives the same result,
            ``b = w`` gives the least work (``3w`` scores per query).
    """

    example_config = {"window": 3}

    def __init__(self, window=128, block_size=None, **kwargs):
        super().__init__(**kwargs)
        self.window = sp.check_int("window", window, 1)
        self.block_size = sp.check_int("block_size", block_size, 1, allow_none=True)

    def _block(self, length):
        return window_block_size(self.window, length, self.block_size)

    def _padded_length(self, length):
        block = self._block(length)
        return sp.ceil_div(length, block) * block

    def _parts(self, q, k, v, length, lp, causal):
        return [sliding_window_part(q, k, v, length, lp, self.window, causal, self._block(length))]

    # -- incremental decoding ---------------------------------------------------------------
    supports_cache = True

    def init_cache(
        self,
        batch_size,
        max_length,
        num_heads=None,
        num_key_value_heads=1,
        key_dim=1,
        value_dim=None,
        dtype="float32",
    ):
        """Empty ring buffer ``(B, 2, min(w + 1, L_max), h_kv, dh)``."""
        if value_dim is not None and value_dim != key_dim:
            raise ValueError(
                f"value_dim={value_dim}: the sliding-window cache needs value_dim == key_dim "
                f"({key_dim})."
            )
        slots = max(1, min(self.window + 1, int(max_length)))
        return ops.zeros((batch_size, 2, slots, num_key_value_heads, key_dim), dtype=dtype)

    @staticmethod
    def _write_ring(cache, key, value, start):
        """Write ``key, value (B, l, h_kv, dh)`` at positions ``start..start+l-1`` into the ring."""
        slots = cache.shape[2]
        length = key.shape[1]
        new = ops.cast(ops.stack([key, ops.cast(value, key.dtype)], axis=1), cache.dtype)
        slot = ops.arange(slots, dtype="int32")  # (W,)
        # first new index that lands in each slot, then the last one (every W steps after it)
        first = (slot - ops.cast(start, "int32") % slots + slots) % slots  # (W,)
        written = first <= length - 1
        last = first + slots * (ops.maximum(length - 1 - first, 0) // slots)
        last = ops.minimum(last, length - 1)
        gathered = ops.take(new, last, axis=2)  # (B, 2, W, h_kv, dh)
        return ops.where(written[None, None, :, None, None], gathered, cache)

    def decode_step(self, query, key, value, cache, cache_index, context):
        """Attend ``query (B, l, h, dh)`` at positions ``cache_index..`` over the ring and the new
        keys ``key, value (B, l, h_kv, dh)``; returns ``(output (B, l, h, dv), updated ring)``."""
        if not context.causal:
            raise ValueError("attention='sliding_window' decodes with a cache only when causal.")
        if context.padding_mask is not None:
            raise ValueError(
                "attention='sliding_window' with a cache does not take a padding_mask; right-pad "
                "prompts instead (kt.generation.Generator does)."
            )
        position = context.position
        if isinstance(cache_index, int) and cache_index == 0:
            # pre-fill: the blocked O(L·w) path on the prompt, then keep its last w + 1 keys
            out = self.call(
                query, key, value, causal=True, position=position, training=context.training
            )  # (B, l, h, dv)
            return out, self._write_ring(cache, key, value, 0)
        slots, length = cache.shape[2], query.shape[1]
        start = ops.cast(cache_index, "int32")
        slot = ops.arange(slots, dtype="int32")
        # position held by each slot: the latest p < start with p = slot (mod W); < 0 = empty
        old_pos = (start - 1) - ((start - 1 - slot + slots) % slots)  # (W,)
        new_pos = start + ops.arange(length, dtype="int32")  # (l,)
        key_pos = ops.concatenate([old_pos, new_pos])  # (W + l,)
        rel = key_pos[None, :] - new_pos[:, None]  # (l, W + l)
        mask = ops.logical_and(
            ops.logical_and(rel <= 0, rel >= -self.window), (key_pos >= 0)[None, :]
        )  # (l, W + l)
        num_heads = query.shape[2]
        keys = ops.concatenate([ops.cast(cache[:, 0], key.dtype), key], axis=1)
        values = ops.concatenate([ops.cast(cache[:, 1], value.dtype), value], axis=1)
        q = heads_first(query)  # (B, h, l, dh)
        k = heads_first(repeat_kv_heads(keys, num_heads))  # (B, h, W + l, dh)
        v = heads_first(repeat_kv_heads(values, num_heads))  # (B, h, W + l, dv)
        uses_bias = position is not None and (position.has_score_bias or position.has_value_term)
        bias = position.score_bias(rel, q, k, True) if uses_bias else None
        out, weights = attend(q, k, v, mask=mask[None, None], bias=bias)  # (B, h, l, dv)
        if uses_bias and position.has_value_term:
            out = out + ops.cast(position.value_term(weights, rel), out.dtype)
        return heads_last(out), self._write_ring(cache, key, value, start)

    def get_config(self):
        return {**super().get_config(), "window": self.window, "block_size": self.block_size}
