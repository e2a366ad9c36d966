"""ALiBi, attention with linear biases (Press et al., 2022, "Train Short, Test Long").

A fixed, non-learned bias proportional to the query-key distance is added to the scores:
``score_ij += -m_h · |i - j|`` (``= -m_h (i - j)`` under a causal mask; the survey's
``[0, -1, ...]`` ordering is reversed relative to the paper, we follow the paper). The head slopes
are the geometric sequence ``m_k = 2^(-8k/h)``, ``k = 1..h`` (for 8 heads ``1/2 ... 1/2^8``); for
``h`` not a power of two the paper's recipe interleaves the next power's slopes. No position
embedding is added to the inputs, and the model extrapolates past its training length.

Shapes: bias ``(h, ..., Lq, Lk)`` from relative positions; no parameters; extra cost ``O(L²)``
for full attention, ``O(L·w)`` inside a blocked core.

Example:
    >>> import keras_transformers as kt
    >>> layer = kt.attention.MultiHeadAttention(num_heads=8, key_dim=8, position="alibi",
    ...                                         causal=True)
"""

import math

import numpy as np
from keras import ops

from keras_transformers.positional.base import PositionalEncoding
from keras_transformers.positional.registry import register


def alibi_slopes(num_heads):
    """Per-head slopes ``2^(-8k/n)``; non powers of two use the paper's interleaving."""

    def power_of_two_slopes(n):
        return [2.0 ** (-8.0 * k / n) for k in range(1, n + 1)]

    if num_heads & (num_heads - 1) == 0:
        return np.asarray(power_of_two_slopes(num_heads), "float32")
    closest = 2 ** math.floor(math.log2(num_heads))
    extra = power_of_two_slopes(2 * closest)[0::2][: num_heads - closest]
    return np.asarray(power_of_two_slopes(closest) + extra, "float32")


@register("alibi")
class ALiBi(PositionalEncoding):
    """Linear distance bias with fixed geometric head slopes."""

    kind = "score"
    has_score_bias = True
    #: The bias depends on positions only (not on the query/key content): blocked engines skip
    #: its query/key gradients.
    score_bias_reads_qk = False

    def score_bias(self, relative_positions, query=None, key=None, causal=False):
        slopes = ops.convert_to_tensor(alibi_slopes(self.num_heads))  # (h,)
        distance = ops.abs(ops.cast(relative_positions, "float32"))  # (..., Lq, Lk)
        shape = (self.num_heads,) + (1,) * len(relative_positions.shape)
        return -ops.reshape(slopes, shape) * distance[None]  # (h, ..., Lq, Lk)
