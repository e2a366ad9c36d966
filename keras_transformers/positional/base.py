"""Base class of positional encodings.

Two kinds exist:

* ``kind = "embedding"`` (sinusoidal, learned): added to the token embeddings by the model
  builders, ``(B, L, d) -> (B, L, d)``.
* ``kind = "score"`` (rope, alibi, shaw, t5, ...): act inside attention, through three hooks
  that the attention cores call on whatever blocks they compute:

  - :meth:`transform_qk` rotates/scales queries and keys before attention (RoPE).
  - :meth:`score_bias` returns an additive term for the scaled scores. It receives the relative
    positions ``rel = key_pos - query_pos`` of the block ``(..., Lq, Lk)`` and may read the block's
    queries/keys ``(B, h, ..., L, dh)``, so content-dependent terms (Shaw, Transformer-XL) fit too.
  - :meth:`value_term` returns an extra output term from the attention weights (Shaw values).

Because the hooks only see relative positions of a block, blocked and chunked attention cores can
apply the same encoding without forming an ``L x L`` matrix.
"""

import keras


class PositionalEncoding(keras.layers.Layer):
    """Common base; subclasses set ``kind`` and override the hooks they need."""

    kind = "score"
    #: True when :meth:`score_bias` needs an (..., Lq, Lk) tensor (dense or blocked cores only).
    has_score_bias = False
    #: True when :meth:`value_term` contributes.
    has_value_term = False
    #: True when :meth:`score_bias` reads the keys' content (Transformer-XL's ``u·k_j``), not
    #: only the queries and the relative positions: cores whose blocked layout shares key blocks
    #: across query groups refuse it (``supports_key_content_bias``).
    score_bias_reads_key = False
    #: False when :meth:`score_bias` is an elementwise function of the relative positions alone
    #: (any shape of ``rel``; ALiBi, T5): the blocked engine then evaluates it once per distinct
    #: offset of a tile (``Tq + Tk - 1`` values) instead of once per query-key pair.
    score_bias_reads_qk = True
    #: True when :meth:`value_term` is ``Σ_j α_ij value_table[relative_value_labels(j - i)]``
    #: (Shaw): blocked engines then add it per tile from ``value_table`` and the labels.
    value_term_is_relative = False
    #: True when the encoding can extrapolate past any length seen in training.
    extrapolates = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = None
        self.head_dim = None

    def build(self, input_shape):
        """``input_shape`` is the per-head query shape ``(B, L, h, dh)`` for score kinds."""
        self.set_head_shape(input_shape)
        self.built = True

    def set_head_shape(self, input_shape):
        """Record ``h`` and ``dh`` from a per-head query shape ``(B, L, h, dh)``."""
        if self.kind == "score" and input_shape is not None and len(input_shape) == 4:
            self.num_heads = int(input_shape[2])
            self.head_dim = int(input_shape[3])

    def transform_qk(self, query, key, query_positions, key_positions):
        """Return transformed ``(query (B, Lq, h, dh), key (B, Lk, h_kv, dh))``."""
        return query, key

    def score_bias(self, relative_positions, query=None, key=None, causal=False):
        """Additive score term broadcastable to ``(B, h, ..., Lq, Lk)``, or None."""
        return None

    def value_term(self, weights, relative_positions):
        """Extra output ``(B, h, ..., Lq, dh)`` from weights ``(B, h, ..., Lq, Lk)``, or None."""
        return None
