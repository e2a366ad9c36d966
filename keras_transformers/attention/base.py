"""Base class of attention cores.

An *attention core* is the part of multi-head attention that varies between the transformer
variants: given per-head projected queries, keys and values it returns the per-head outputs. The
projections, the head split/merge, RoPE, caching and masking conventions live once in
:class:`~keras_transformers.attention.MultiHeadAttention`.

Layout at the core boundary (the layout of ``keras.ops.dot_product_attention``):
``query (B, Lq, h, dh)``, ``key (B, Lk, h_kv, dh)``, ``value (B, Lk, h_kv, dv)`` ->
``output (B, Lq, h, dv)``.
"""

import keras


class AttentionCore(keras.layers.Layer):
    """Common base. Subclasses implement :meth:`call` and declare what they support."""

    #: Can apply score-side positional hooks (ALiBi/T5/Shaw biases). RoPE works with every core.
    supports_position_bias = True
    #: Accepts an arbitrary ``(B, Lq, Lk)`` attention_mask.
    supports_attention_mask = True
    #: Accepts keys/values of another length/source than the queries.
    supports_cross_attention = True
    #: Supports incremental decoding with a KV cache (``query_offset > 0``).
    supports_cache = False
    #: Supports ``causal=True``.
    supports_causal = True
    #: Which keys a query may see depends on the content of *other* tokens (LSH buckets, k-means
    #: clusters): changing a masked or future token can then move chunk boundaries, so the
    #: contract suite checks such cores through their debug weights (never attending to masked or
    #: future keys) instead of exact output invariance.
    sparsity_depends_on_content = False
    #: Small constructor arguments that make the variant's structure visible on short sequences
    #: (L around 16-32); used by the docs examples and the shared contract test suite.
    example_config = {}

    def check_position(self, position):
        """Raise a clear error if ``position`` cannot be applied by this core."""
        if position is None:
            return
        needs_bias = position.has_score_bias or position.has_value_term
        if needs_bias and not self.supports_position_bias:
            raise ValueError(
                f"attention={self.registry_name!r} cannot apply position="
                f"{position.registry_name!r}: it never forms per-pair scores. Use position='rope' "
                "(works with every attention core) or an embedding-side encoding in the builder "
                "('sinusoidal', 'learned')."
            )

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
        """Per-head attention.

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
                dynamic global attention (Longformer); other cores ignore it or reject it.
        """
        raise NotImplementedError
