"""Backend-agnostic math on ``keras.ops``: masks and attention kernels (dense, blocked exact)."""

from keras_transformers.ops.attention import (
    attend,
    heads_first,
    heads_last,
    masked_softmax,
    repeat_kv_heads,
    zero_empty_rows,
)
from keras_transformers.ops.flash_attention import flash_attention
from keras_transformers.ops.masks import (
    causal_mask,
    check_attention_mask,
    check_padding_mask,
    combine_masks,
)

__all__ = [
    "attend",
    "causal_mask",
    "check_attention_mask",
    "check_padding_mask",
    "combine_masks",
    "flash_attention",
    "heads_first",
    "heads_last",
    "masked_softmax",
    "repeat_kv_heads",
    "zero_empty_rows",
]
