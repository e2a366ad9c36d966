"""Relative position representations (Shaw et al., 2018).

Learned vectors for the clipped relative distance are added to the keys and the values:

``a^K_ij = P^K[clip(j - i, -k, k)]``, ``a^V_ij = P^V[clip(j - i, -k, k)]``,
``e_ij = q_i (k_j + a^K_ij)ᵀ / sqrt(dh)``, ``z_i = Σ_j α_ij (v_j + a^V_ij)``.

``2k + 1`` labels; all pairs with ``|j - i| >= k`` share a label, which lets the model run on
unseen lengths. The tables are shared across heads as in the paper.

Shapes: ``P^K, P^V (2k+1, dh)``; score term ``(B, h, ..., Lq, Lk)``; value term
``(B, h, ..., Lq, dh)``. Extra cost ``O(L²·dh)`` like the scores themselves. On long sequences
``full`` attention applies both terms per tile of its blocked engine (``O(L)`` memory).

Example:
    >>> import keras_transformers as kt
    >>> layer = kt.attention.MultiHeadAttention(num_heads=2, key_dim=8, position="shaw")
"""

import keras
from keras import ops

from keras_transformers.positional.base import PositionalEncoding
from keras_transformers.positional.registry import register


def clipped_labels(relative_positions, max_distance):
    """``clip(j - i, -k, k) + k`` in ``[0, 2k]``."""
    rel = ops.clip(ops.cast(relative_positions, "int32"), -max_distance, max_distance)
    return rel + max_distance


@register("shaw")
class ShawRelativePosition(PositionalEncoding):
    """Clipped relative position vectors added to keys (scores) and values.

    Args:
        max_distance: the clipping distance ``k``.
        use_values: also add ``a^V`` to the values (the paper's full form).
    """

    kind = "score"
    has_score_bias = True

    def __init__(self, max_distance=16, use_values=True, **kwargs):
        super().__init__(**kwargs)
        if int(max_distance) < 1:
            raise ValueError(f"max_distance={max_distance}: must be >= 1.")
        self.max_distance = int(max_distance)
        self.use_values = bool(use_values)
        self.has_value_term = self.use_values
        #: The value term is ``Σ_j α_ij value_table[relative_value_labels(j - i)]``: the blocked
        #: engine applies it per tile.
        self.value_term_is_relative = self.use_values
        #: The score term is ``q_i·key_table[relative_key_labels(j - i)]`` (scaled): the blocked
        #: engine lays it out per tile from the tile's offsets.
        self.key_term_is_relative = True

    def build(self, input_shape):
        self.set_head_shape(input_shape)
        labels = 2 * self.max_distance + 1
        init = keras.initializers.RandomNormal(stddev=0.02)
        self.key_table = self.add_weight(
            name="key_table", shape=(labels, self.head_dim), initializer=init
        )
        if self.use_values:
            self.value_table = self.add_weight(
                name="value_table", shape=(labels, self.head_dim), initializer=init
            )
        self.built = True

    def score_bias(self, relative_positions, query=None, key=None, causal=False):
        # query: (B, h, ..., Lq, dh); relative_positions: (..., Lq, Lk)
        scale = 1.0 / float(self.head_dim) ** 0.5
        table = ops.cast(self.key_table, query.dtype)  # (R, dh)
        per_label = ops.matmul(query, ops.transpose(table)) * scale  # (B, h, ..., Lq, R)
        labels = clipped_labels(relative_positions, self.max_distance)  # (..., Lq, Lk)
        # bias[..., i, j] = per_label[..., i, label(j - i)]: a gather, not a one-hot product
        lead = tuple(ops.shape(per_label)[:-2])
        labels = ops.broadcast_to(labels, lead + tuple(ops.shape(labels)[-2:]))
        return ops.take_along_axis(per_label, labels, axis=-1)  # (B, h, ..., Lq, Lk)

    @property
    def relative_constant_beyond(self):
        """Distances ``|j - i| >= k`` share the clipped label: blocked engines treat a tile
        beyond ``k`` as one label."""
        return self.max_distance

    def relative_key_labels(self, relative_positions):
        """Labels of ``a^K`` for relative positions of any shape (clipped distances)."""
        return clipped_labels(relative_positions, self.max_distance)

    def relative_value_labels(self, relative_positions):
        """Labels of ``a^V`` for relative positions of any shape (the blocked engine's value
        term reads ``value_table[labels]`` per tile offset)."""
        return clipped_labels(relative_positions, self.max_distance)

    def value_term(self, weights, relative_positions):
        if not self.use_values:
            return None
        labels = clipped_labels(relative_positions, self.max_distance)
        one_hot = ops.one_hot(labels, 2 * self.max_distance + 1, dtype=weights.dtype)
        # weights per label: (B, h, ..., Lq, 1, Lk) @ (..., Lq, Lk, R) -> (B, h, ..., Lq, 1, R)
        per_label = ops.squeeze(ops.matmul(weights[..., None, :], one_hot), -2)
        return ops.matmul(per_label, ops.cast(self.value_table, weights.dtype))  # (..., Lq, dh)

    def get_config(self):
        return {
            **super().get_config(),
            "max_distance": self.max_distance,
            "use_values": self.use_values,
        }
