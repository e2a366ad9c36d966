"""ETC global-local attention (Ainslie et al., 2020, "ETC: Encoding Long and Structured Inputs
in Transformers", EMNLP; the survey dates it 2019).

The input is split in two: a small *global input* ``x^g`` (``n_g`` auxiliary tokens, e.g. one
per sentence or a few learned summary tokens) and the *long input* ``x^l`` (``n_l`` tokens). This
core takes them as one sequence: the first ``num_global_tokens`` positions are ``x^g``, the rest
``x^l`` (use :class:`GlobalTokenPrepender` to prepend learned global tokens). Attention splits into
four pieces: global-to-global (g2g) and global-to-long (g2l) are full, long-to-global (l2g) is
full, and long-to-long (l2l) is restricted to a radius ``w``:

``a_ij = q_i k_jᵀ / sqrt(dh) - (1 - M_ij) C`` (paper: ``C = 10000``; here masked logits are
dropped exactly, which is the same up to ``exp(-C)``), ``M^{l2l}_ij = [|i - j| <= w]``,
``M^{g2g} = M^{g2l} = M^{l2g} = 1`` (with causal: ``j <= i`` in the concatenated order, so global
tokens see no long tokens). A global query's softmax runs over all ``n_g + n_l`` keys, a long
query's over its ``n_g`` global keys and ``2w + 1`` neighbours.

The paper adds learned relative-position vectors ``P^K_ij`` to the keys: pass ``position="shaw"``
(or another score-side encoding) to ``MultiHeadAttention``; relative positions are those of the
concatenated sequence.

Shapes: ``q (B, n_g + n_l, h, dh)`` -> ``(B, n_g + n_l, h, dh)``; scores: l2l ``n_l × (2w+1)``
(computed in blocks ``(B, h, n_l/b, b, 3b)``, ``b = w``; :meth:`ETCAttention.l2l_band_scores`
returns the ``(B, h, n_l, 2w+1)`` form), l2g ``n_l × n_g``, g2g + g2l ``n_g × (n_g + n_l)``.
Cost: ``O(n_l(2w + 1 + n_g) + n_g(n_g + n_l))`` per head and ``dh``: linear in ``n_l``.

Example:
    >>> import numpy as np, keras, keras_transformers as kt
    >>> from keras_transformers.attention.etc import GlobalTokenPrepender
    >>> x = keras.Input((64, 32))
    >>> y = GlobalTokenPrepender(4)(x)                                # (B, 4 + 64, 32)
    >>> y = kt.attention.MultiHeadAttention(
    ...     num_heads=2, key_dim=16,
    ...     attention={"name": "etc", "num_global_tokens": 4, "window": 3})(y)
    >>> long_part = y[:, 4:]                                          # strip the global tokens
    >>> keras.Model(x, long_part).output_shape
    (None, 64, 32)
"""

import keras
import numpy as np
from keras import ops

from keras_transformers.attention.registry import register
from keras_transformers.attention.sparse_core import BlockedCore
from keras_transformers.ops.attention import heads_first, heads_last, repeat_kv_heads
from keras_transformers.ops.blocks import slice_axis
from keras_transformers.ops.global_local import (
    BandPlan,
    band_diagonals,
    band_keys,
    dense_attention,
    global_rows,
    heads_first_qkv,
    interleave_blocks,
    uninterleave_blocks,
)
from keras_transformers.ops.sparse_patterns import SparsePart, check_int, sparse_attention


@register("etc")
class ETCAttention(BlockedCore):
    """Global-local attention with separate global input tokens (the first positions).

    Args:
        num_global_tokens: ``n_g >= 0``: how many leading positions are global input tokens.
        window: the l2l radius ``w >= 0``: long token ``i`` sees long tokens ``|i - j| <= w``
            (``i - w <= j <= i`` when causal).
        block_size: block size of the l2l band (default ``max(w, 1)``).
    """

    supports_key_content_bias = False  # global/local key blocks shared across groups
    example_config = {"num_global_tokens": 2, "window": 2}
    #: Settings of benchmarks/attention_scaling.py (radius 128, 16 global tokens).
    benchmark_config = {"num_global_tokens": 16, "window": 128}
    quick_benchmark_config = {"num_global_tokens": 4, "window": 16}

    def __init__(self, num_global_tokens=1, window=64, block_size=None, **kwargs):
        super().__init__(**kwargs)
        self.num_global_tokens = check_int("num_global_tokens", num_global_tokens, 0)
        self.window = check_int("window", window, 0)
        self.block_size = None if block_size is None else check_int("block_size", block_size, 1)

    def build(self, query_shape, key_shape=None):
        length = query_shape[1]
        if length is not None and self.num_global_tokens > length:
            raise ValueError(
                f"num_global_tokens={self.num_global_tokens}: must be <= the sequence length "
                f"{length} (global tokens are the first positions of the sequence)."
            )
        self.built = True

    def plan(self, long_length, causal=False):
        """:class:`BandPlan` of the l2l band over ``n_l`` long tokens."""
        left, right = (self.window, 0) if causal else (self.window, self.window)
        return BandPlan(long_length, left, right, 1, self.block_size or max(self.window, 1))

    def compute(self, query, key, value, context):
        length, q, k, v, padding_mask = heads_first_qkv(self, query, key, value, context)
        n_g = self.num_global_tokens
        if n_g > length:
            raise ValueError(f"num_global_tokens={n_g}: must be <= the sequence length {length}.")
        if context.return_scores:
            mask = self.pattern(length, context.causal)  # (L, L)
            out, weights = dense_attention(q, k, v, mask, length, context, padding_mask)
            return heads_last(out), weights

        outs = []
        if n_g:
            # g2g + g2l: each global query over all keys, O(n_g · L)
            qg = slice_axis(q, 0, n_g, 2)  # (B, h, n_g, dh)
            outs.append(global_rows(qg, k, v, np.arange(n_g), length, context, padding_mask))
        n_l = length - n_g
        if n_l:
            outs.append(self._long(q, k, v, padding_mask, context, n_g, n_l))
        out = outs[0] if len(outs) == 1 else ops.concatenate(outs, axis=2)
        return heads_last(out)  # (B, L, h, dv)

    def _long(self, q, k, v, padding_mask, context, n_g, n_l):
        """l2l band + l2g columns for the long queries: ``(B, h, n_l, dv)``."""
        plan = self.plan(n_l, context.causal)
        ql, kl, vl = (slice_axis(t, n_g, n_g + n_l, 2) for t in (q, k, v))
        qb = ops.squeeze(interleave_blocks(ql, plan), 2)  # (B, h, n, b, dh)
        qpos = plan.query_positions[0] + n_g  # (n, b), positions in the whole sequence
        kpos = np.where(plan.real[0], plan.key_positions[0] + n_g, -1)  # (n, K); -1 = none
        band = SparsePart(
            qb,
            ops.squeeze(band_keys(kl, plan), 2),  # (B, h, n, K, dh)
            ops.squeeze(band_keys(vl, plan), 2),  # (B, h, n, K, dv)
            qpos,
            kpos,
            plan.band,  # (b, K)
            rel=plan.rel[0],
        )
        parts = [band]
        if n_g:
            # l2g: every long query sees every global token (they all precede it)
            kg, vg = slice_axis(k, 0, n_g, 2), slice_axis(v, 0, n_g, 2)  # (B, h, n_g, ·)
            parts.append(SparsePart(qb, kg, vg, qpos, np.arange(n_g)))
        out = sparse_attention(
            parts, n_g + n_l, padding_mask, context.position, context.causal, context.dropout
        )  # (B, h, n·b, dv)
        return uninterleave_blocks(out, plan)  # (B, h, n_l, dv)

    def l2l_band_scores(self, query, key, causal=False):
        """The paper's l2l score tensor ``(B, h, n_l, 2w+1)`` (``w + 1`` columns when causal).

        Column ``t`` holds ``q_i k_{i+t-w}ᵀ / sqrt(dh)`` for long token ``i``; entries whose key
        falls outside the sequence are ``-inf``-like (``-1e9``). Inspection helper (the core never
        needs this layout). ``query``/``key``: ``(B, L, h, dh)`` of the whole sequence.
        """
        n_g = self.num_global_tokens
        length = query.shape[1]
        plan = self.plan(length - n_g, causal)
        ql = interleave_blocks(heads_first(query)[:, :, n_g:], plan)  # (B, h, 1, n, b, dh)
        kl = heads_first(repeat_kv_heads(key, query.shape[2]))[:, :, n_g:]
        kb = band_keys(kl, plan)  # (B, h, 1, n, K, dh)
        scale = 1.0 / float(query.shape[-1]) ** 0.5
        scores = ops.matmul(ql, ops.swapaxes(kb, -1, -2)) * scale  # (B, h, 1, n, b, K)
        band, valid = band_diagonals(scores, plan)  # (B, h, n_l, W), (n_l, W)
        return ops.where(ops.convert_to_tensor(valid), band, -1e9)

    def pattern(self, length, causal=False):
        """Static numpy mask ``(L, L)`` of the four pieces."""
        n_g = self.num_global_tokens
        pos = np.arange(length)
        rel = pos[None, :] - pos[:, None]
        is_global = pos < n_g
        mask = is_global[None, :] | is_global[:, None] | (np.abs(rel) <= self.window)
        if causal:
            mask &= rel <= 0
        return mask

    def get_config(self):
        config = super().get_config()
        config.update(
            num_global_tokens=self.num_global_tokens,
            window=self.window,
            block_size=self.block_size,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_transformers")
class GlobalTokenPrepender(keras.layers.Layer):
    """Prepend ``num_global_tokens`` learned global-token embeddings: ``(B, L, d) -> (B, n_g + L,
    d)``, the input layout of ``attention="etc"``.

    A Keras mask on the input is extended with True for the global tokens, and
    :meth:`prepend_mask` does the same for an explicit ``padding_mask (B, L)``. After the ETC
    layers, strip the global tokens with ``y[:, num_global_tokens:]`` (or :meth:`strip`) — or keep
    ``y[:, :num_global_tokens]`` as per-sequence summaries (e.g. for classification).

    Args:
        num_global_tokens: ``n_g >= 1``.
        embeddings_initializer: initializer of the ``(n_g, d)`` table.

    Example:
        >>> import numpy as np
        >>> tuple(GlobalTokenPrepender(2)(np.zeros((3, 5, 8), "float32")).shape)
        (3, 7, 8)
    """

    def __init__(self, num_global_tokens=1, embeddings_initializer="truncated_normal", **kwargs):
        super().__init__(**kwargs)
        self.num_global_tokens = check_int("num_global_tokens", num_global_tokens, 1)
        if embeddings_initializer == "truncated_normal":
            embeddings_initializer = keras.initializers.TruncatedNormal(stddev=0.02)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.supports_masking = True

    def build(self, input_shape):
        self.global_embeddings = self.add_weight(
            name="global_embeddings",
            shape=(self.num_global_tokens, int(input_shape[-1])),
            initializer=self.embeddings_initializer,
        )
        self.built = True

    def call(self, inputs, mask=None):
        tokens = ops.cast(self.global_embeddings, inputs.dtype)[None]  # (1, n_g, d)
        tokens = ops.repeat(tokens, ops.shape(inputs)[0], axis=0)  # (B, n_g, d)
        return ops.concatenate([tokens, inputs], axis=1)  # (B, n_g + L, d)

    def prepend_mask(self, padding_mask):
        """``(B, L)`` bool -> ``(B, n_g + L)`` with the global tokens marked valid."""
        if padding_mask is None:
            return None
        padding_mask = ops.cast(padding_mask, "bool")
        ones = ops.ones((ops.shape(padding_mask)[0], self.num_global_tokens), dtype="bool")
        return ops.concatenate([ones, padding_mask], axis=1)

    def compute_mask(self, inputs, mask=None):
        return self.prepend_mask(mask)

    def strip(self, x):
        """Drop the global tokens: ``(B, n_g + L, ...) -> (B, L, ...)``."""
        return x[:, self.num_global_tokens :]

    def compute_output_shape(self, input_shape):
        length = input_shape[1]
        length = None if length is None else length + self.num_global_tokens
        return (input_shape[0], length) + tuple(input_shape[2:])

    def get_config(self):
        config = super().get_config()
        config.update(
            num_global_tokens=self.num_global_tokens,
            embeddings_initializer=keras.initializers.serialize(self.embeddings_initializer),
        )
        return config
