"""Base class of attention cores: the one boundary between the shell and the variants.

An *attention core* is the part of multi-head attention that varies between the transformer
variants: given per-head projected queries, keys and values it returns the per-head outputs. The
projections, the head split/merge, RoPE and caching live once in
:class:`~keras_transformers.attention.MultiHeadAttention`; the shared checks (capabilities, GQA
head repeat, dropout gating) live once here, in :meth:`AttentionCore.call`. A core implements
only :meth:`AttentionCore.compute` and declares what it can do as class attributes; the shell,
the builders, the contract suite and the docs read those attributes, never a registry name.

Layout at the core boundary (the layout of ``keras.ops.dot_product_attention``):
``query (B, Lq, h, dh)``, ``key (B, Lk, h_kv, dh)``, ``value (B, Lk, h_kv, dv)`` ->
``output (B, Lq, h, dv)``.

Caching cores (``supports_cache = True``) implement one protocol: :meth:`init_cache` returns the
empty decoding state and :meth:`decode_step` attends new queries to it and returns the updated
state. Full attention's key/value cache follows it like every other core's.
"""

import dataclasses
import numbers
from typing import Any

import keras
from keras import ops

from keras_transformers.ops.attention import repeat_kv_heads


def check_int(name, value, minimum=1):
    """Validate an integer argument (``8`` and ``8.0`` pass, ``2.7`` and ``True`` do not) and
    return it as ``int``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or int(value) != value:
        raise ValueError(f"{name}={value!r}: must be an integer >= {minimum}.")
    if int(value) < minimum:
        raise ValueError(f"{name}={value!r}: must be >= {minimum}.")
    return int(value)


@dataclasses.dataclass(frozen=True)
class AttentionContext:
    """Everything a core's :meth:`~AttentionCore.compute` needs besides ``q, k, v``.

    Attributes:
        padding_mask: bool ``(B, Lk)``, True = key may be attended, or None.
        attention_mask: bool ``(B, Lq, Lk)`` or None.
        causal: query ``i`` (at absolute position ``i + query_offset``) sees keys
            ``j <= i + query_offset``.
        position: a score-side positional encoding (its hooks) or None.
        query_offset: absolute position of query 0 (int or scalar tensor; KV-cache decoding).
        dropout: callable applied to the attention weights, already gated on ``training``
            (None when not training or without dropout).
        training: the Keras training flag.
        return_scores: the caller wants ``(output, weights (B, h, Lq, Lk))``.
        global_mask: bool ``(B, L)`` marking global tokens (cores with
            ``supports_global_tokens``), or None.
    """

    padding_mask: Any = None
    attention_mask: Any = None
    causal: bool = False
    position: Any = None
    query_offset: Any = 0
    dropout: Any = None
    training: Any = None
    return_scores: bool = False
    global_mask: Any = None

    @property
    def uses_position_bias(self):
        """The positional encoding adds a score bias or a value term (forces a scored path)."""
        p = self.position
        return p is not None and (p.has_score_bias or p.has_value_term)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


class AttentionCore(keras.layers.Layer):
    """Common base. Subclasses implement :meth:`compute` and declare what they support.

    What a core supports is declared in the class attributes below (each documented where it is
    set); the shell, the builders, the contract suite and the docs read them, never the name.
    """

    #: Can apply score-side positional hooks (ALiBi/T5/Shaw biases). RoPE works with every core.
    supports_position_bias = True
    #: Can apply a score bias that reads the keys' content (``position.score_bias_reads_key``:
    #: Transformer-XL's ``u·k_j``).
    supports_key_content_bias = True
    #: Accepts an arbitrary ``(B, Lq, Lk)`` attention_mask.
    supports_attention_mask = True
    #: Accepts keys/values of another length/source than the queries.
    supports_cross_attention = True
    #: Implements :meth:`init_cache` / :meth:`decode_step` (incremental decoding).
    supports_cache = False
    #: Supports ``causal=True``.
    supports_causal = True
    #: Accepts a per-sequence ``global_mask`` (dynamic global tokens, Longformer).
    supports_global_tokens = False
    #: Can return the ``(B, h, Lq, Lk)`` attention weights (dense debug path).
    supports_attention_scores = True
    #: Blocks or chunks the sequence, so the model input needs a fixed (static) length.
    needs_static_length = True
    #: Works on a 2-D grid of tokens (image patches); builders give it the grid's shape through
    #: :meth:`with_grid`.
    uses_token_grid = False
    #: Handles ``h_kv < h`` key/value heads itself; otherwise :meth:`call` repeats them to ``h``.
    handles_grouped_kv = False
    #: Which keys a query may see depends on the content of *other* tokens (LSH buckets, k-means
    #: clusters): changing a masked or future token can then move chunk boundaries, so the
    #: contract suite checks such cores through their debug weights (never attending to masked or
    #: future keys) instead of exact output invariance.
    sparsity_depends_on_content = False
    #: Small constructor arguments that make the variant's structure visible on short sequences
    #: (L around 16-32); used by the docs examples and the shared contract test suite.
    example_config = {}

    @property
    def variant(self):
        """The registered name, for messages (never for decisions)."""
        return getattr(self, "registry_name", type(self).__name__)

    def check_position(self, position):
        """Raise a clear error if ``position`` cannot be applied by this core."""
        if position is None:
            return
        needs_bias = position.has_score_bias or position.has_value_term
        if needs_bias and not self.supports_position_bias:
            raise ValueError(
                f"attention={self.variant!r} cannot apply position="
                f"{position.registry_name!r}: it never forms per-pair scores. Use position='rope' "
                "(works with every attention core) or an embedding-side encoding in the builder "
                "('sinusoidal', 'learned')."
            )
        if getattr(position, "score_bias_reads_key", False) and not self.supports_key_content_bias:
            raise ValueError(
                f"attention={self.variant!r} cannot apply position="
                f"{position.registry_name!r} with its key content term (u·k): its global and "
                "local key blocks are shared across query groups. Use position='xl' with "
                "use_content_bias=False, or 'rope', 'alibi', 't5', 'shaw'."
            )

    def with_grid(self, height, width):
        """A copy of this core for a ``height x width`` token grid (``uses_token_grid`` cores)."""
        raise NotImplementedError(f"attention={self.variant!r} does not work on a token grid.")

    def build(self, query_shape, key_shape=None):
        """Per-head shapes ``(B, Lq, h, dh)`` and ``(B, Lk, h_kv, dh)``."""
        self.built = True

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
        """Per-head attention: the shared checks, then :meth:`compute`.

        Args:
            query: ``(B, Lq, h, dh)``.
            key: ``(B, Lk, h_kv, dh)``.
            value: ``(B, Lk, h_kv, dv)``.
            padding_mask: bool ``(B, Lk)``, True = key may be attended.
            attention_mask: bool ``(B, Lq, Lk)`` or None.
            causal: query ``i`` (at absolute position ``i + query_offset``) sees keys ``j <= i +
                query_offset``.
            position: a score-side positional encoding or None.
            query_offset: absolute position of query 0 (KV-cache decoding).
            weights_dropout: callable applied to attention weights during training, or None.
            return_attention_scores: also return ``(B, h, Lq, Lk)`` weights.
            global_mask: bool ``(B, L)`` marking global tokens per sequence, for cores with
                ``supports_global_tokens``.

        Returns:
            ``(B, Lq, h, dv)``, or ``(output, weights (B, h, Lq, Lk))`` with
            ``return_attention_scores``.
        """
        context = self.context(
            padding_mask=padding_mask,
            attention_mask=attention_mask,
            causal=causal,
            position=position,
            query_offset=query_offset,
            weights_dropout=weights_dropout,
            training=training,
            return_attention_scores=return_attention_scores,
            global_mask=global_mask,
        )
        key, value = self.expand_kv_heads(query, key, value)
        return self.compute(query, key, value, context)

    def expand_kv_heads(self, query, key, value):
        """Repeat grouped ``h_kv < h`` key/value heads to ``h`` unless ``handles_grouped_kv``."""
        if self.handles_grouped_kv:
            return key, value
        num_heads = query.shape[2]
        key = repeat_kv_heads(key, num_heads)  # (B, Lk, h, dh)
        value = repeat_kv_heads(value, num_heads)  # (B, Lk, h, dv)
        return key, value

    def context(
        self,
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
        """Check the call against the capability attributes; return the :class:`AttentionContext`."""
        if causal and not self.supports_causal:
            raise ValueError(
                f"attention={self.variant!r} does not support causal=True (it mixes every "
                "position into its summaries); use a core with causal support, e.g. 'full'."
            )
        if attention_mask is not None and not self.supports_attention_mask:
            raise ValueError(
                f"attention={self.variant!r} does not accept an arbitrary attention_mask "
                "(B, Lq, Lk); use padding_mask (B, Lk) and causal=True."
            )
        if global_mask is not None and not self.supports_global_tokens:
            raise ValueError(
                f"attention={self.variant!r} does not take global_mask; cores that do: those "
                "with supports_global_tokens (e.g. 'longformer')."
            )
        if return_attention_scores and not self.supports_attention_scores:
            raise NotImplementedError(
                f"attention={self.variant!r} cannot materialise its (B, h, Lq, Lk) attention "
                "weights (return_attention_scores=True)."
            )
        self.check_position(position)
        return AttentionContext(
            padding_mask=padding_mask,
            attention_mask=attention_mask,
            causal=bool(causal),
            position=position,
            query_offset=query_offset,
            dropout=weights_dropout if (weights_dropout is not None and training) else None,
            training=training,
            return_scores=bool(return_attention_scores),
            global_mask=global_mask,
        )

    def compute(self, query, key, value, context):
        """The variant's computation.

        Args:
            query: ``(B, Lq, h, dh)``.
            key: ``(B, Lk, h, dh)`` (``(B, Lk, h_kv, dh)`` when ``handles_grouped_kv``).
            value: ``(B, Lk, h, dv)`` (likewise).
            context: the :class:`AttentionContext` (masks, causality, position, dropout, ...).

        Returns:
            ``(B, Lq, h, dv)``, or ``(output, weights (B, h, Lq, Lk))`` when
            ``context.return_scores``.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement compute().")

    # ------------------------------------------------------------------ cache protocol
    def init_cache(
        self, batch_size, max_length, num_heads, num_key_value_heads, key_dim, value_dim, dtype
    ):
        """The empty decoding state of one layer (``supports_cache`` cores)."""
        raise ValueError(f"attention={self.variant!r} does not support a KV cache.")

    def decode_step(self, query, key, value, cache, cache_index, context):
        """Attend ``query (B, l, h, dh)`` at positions ``cache_index ..`` to the cached state.

        ``key``/``value`` ``(B, l, h_kv, dh)`` are the new positions' projections (not repeated
        over query heads). Returns ``(output (B, l, h, dv), updated cache)``.
        """
        raise ValueError(f"attention={self.variant!r} does not support a KV cache.")


class KeyValueCache:
    """The cache protocol of dense cores: every key and value so far, ``(B, 2, L_max, h_kv, dh)``.

    Mixed into an :class:`AttentionCore` whose :meth:`~AttentionCore.compute` accepts a query
    offset and a key padding mask (``full``, ``distance_aware``). :meth:`decode_step` writes the
    new positions' keys and values at ``cache_index``, then attends the queries to all
    ``L_max`` slots with the slots not yet written masked out. Cost per token ``O(L_max·dh)``.
    """

    supports_cache = True

    def init_cache(
        self, batch_size, max_length, num_heads, num_key_value_heads, key_dim, value_dim, dtype
    ):
        """Zeros ``(B, 2, L_max, h_kv, dh)`` (keys and values stacked: needs ``dv == dh``)."""
        if value_dim is not None and value_dim != key_dim:
            raise ValueError(
                f"a KV cache needs value_dim == key_dim; got value_dim={value_dim}, "
                f"key_dim={key_dim}."
            )
        shape = (batch_size, 2, max_length, num_key_value_heads, key_dim)
        return ops.zeros(shape, dtype=dtype)

    def decode_step(self, query, key, value, cache, cache_index, context):
        """Write ``key, value (B, l, h_kv, dh)`` at ``cache_index`` and attend ``query`` to the
        cache; returns ``(output (B, l, h, dv), updated cache)``."""
        q_len = ops.shape(query)[1]
        new_kv = ops.stack([key, ops.cast(value, key.dtype)], axis=1)  # (B, 2, l, h_kv, dh)
        cache = ops.slice_update(cache, (0, 0, cache_index, 0, 0), ops.cast(new_kv, cache.dtype))
        keys, values = cache[:, 0], cache[:, 1]  # (B, L_max, h_kv, dh)
        valid = ops.arange(ops.shape(keys)[1]) < cache_index + q_len  # (L_max,)
        valid = ops.broadcast_to(valid[None, :], (ops.shape(keys)[0], ops.shape(keys)[1]))
        padding_mask = context.padding_mask
        padding_mask = (
            valid
            if padding_mask is None
            else ops.logical_and(ops.cast(padding_mask, "bool"), valid)
        )  # (B, L_max)
        keys, values = self.expand_kv_heads(query, keys, values)  # (B, L_max, h, dh)
        context = context.replace(padding_mask=padding_mask, query_offset=cache_index)
        return self.compute(query, keys, values, context), cache
