"""T5 relative position bias (Raffel et al., 2020, "Exploring the limits of transfer learning").

A learned scalar per (head, distance bucket) is added to the scores. Distances below
``num_buckets/2`` (per direction when bidirectional) get their own bucket; larger ones share
logarithmically spaced buckets up to ``max_distance``, beyond which they all fall in the last
bucket — which is what lets it run on lengths not seen in training. The survey names it as the
"T5 simplified relative positional encoding" baseline of ALiBi's extrapolation figure.

``score_ij += b[h, bucket(j - i)]``.

Shapes: table ``(num_buckets, h)``; bias ``(h, ..., Lq, Lk)``.

Example:
    >>> import keras_transformers as kt
    >>> layer = kt.attention.MultiHeadAttention(num_heads=4, key_dim=8, position="t5")
"""

import math

import keras
from keras import ops

from keras_transformers.positional.base import PositionalEncoding
from keras_transformers.positional.registry import register


def relative_position_bucket(relative_positions, bidirectional, num_buckets, max_distance):
    """Map ``rel = key_pos - query_pos`` (int tensor) to bucket ids in ``[0, num_buckets)``."""
    n = -ops.cast(relative_positions, "int32")  # query_pos - key_pos
    buckets = ops.zeros_like(n)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + ops.cast(n < 0, "int32") * num_buckets
        n = ops.abs(n)
    else:
        n = ops.maximum(n, 0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    n_float = ops.cast(ops.maximum(n, 1), "float32")
    large = max_exact + ops.cast(
        ops.log(n_float / max_exact)
        / math.log(max_distance / max_exact)
        * (num_buckets - max_exact),
        "int32",
    )
    large = ops.minimum(large, num_buckets - 1)
    return buckets + ops.where(is_small, n, large)


@register("t5")
class T5RelativeBias(PositionalEncoding):
    """Bucketed, learned relative-position score bias.

    Args:
        num_buckets: bucket count (32 in T5).
        max_distance: distance where the logarithmic buckets end (128 in T5).
        bidirectional: None follows the attention layer (bidirectional unless causal).
    """

    kind = "score"
    has_score_bias = True
    #: The bias depends on positions only (not on the query/key content): blocked engines skip
    #: its query/key gradients.
    score_bias_reads_qk = False

    @property
    def relative_constant_beyond(self):
        """Past ``max_distance`` every distance of one direction shares the last bucket: the
        bias of ``|rel| >= max_distance`` is its value at ``±max_distance`` (blocked engines add
        one value per head to such tiles)."""
        return self.max_distance

    def __init__(self, num_buckets=32, max_distance=128, bidirectional=None, **kwargs):
        super().__init__(**kwargs)
        if num_buckets < 4:
            raise ValueError(f"num_buckets={num_buckets}: must be >= 4.")
        self.num_buckets = int(num_buckets)
        self.max_distance = int(max_distance)
        self.bidirectional = bidirectional

    def build(self, input_shape):
        self.set_head_shape(input_shape)
        self.table = self.add_weight(
            name="relative_bias",
            shape=(self.num_buckets, self.num_heads),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )
        self.built = True

    def score_bias(self, relative_positions, query=None, key=None, causal=False):
        bidirectional = (not causal) if self.bidirectional is None else self.bidirectional
        ids = relative_position_bucket(
            relative_positions, bidirectional, self.num_buckets, self.max_distance
        )  # (..., Lq, Lk)
        bias = ops.take(self.table, ids, axis=0)  # (..., Lq, Lk, h)
        rank = len(bias.shape)
        return ops.transpose(bias, (rank - 1,) + tuple(range(rank - 1)))  # (h, ..., Lq, Lk)

    def get_config(self):
        return {
            **super().get_config(),
            "num_buckets": self.num_buckets,
            "max_distance": self.max_distance,
            "bidirectional": self.bidirectional,
        }
