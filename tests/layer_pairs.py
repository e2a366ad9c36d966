"""A layer with an attention variant and a full-attention twin holding the same weights."""

import keras_transformers as kt


def variant_and_full(attention, causal, rng, position=None, length=14):
    """``(x, variant, full)``: two ``MultiHeadAttention`` layers (2 heads of size 8) that differ
    only in the core; ``full`` gets ``variant``'s weights; ``x (2, length, 16)`` from ``rng``."""
    x = rng.normal(size=(2, length, 16)).astype("float32")
    variant, full = (
        kt.attention.MultiHeadAttention(
            num_heads=2, key_dim=8, attention=a, position=position, causal=causal
        )
        for a in (attention, "full")
    )
    variant(x)
    full(x)
    full.set_weights(variant.get_weights())
    return x, variant, full
