"""Boolean attention masks (True = attend) and their validation.

Every mask in the package follows one convention: boolean, ``True`` means "this query may attend
to this key". A query row with no key to attend to produces a zero output, never NaN.
"""

from keras import ops


def causal_mask(query_length, key_length, offset=0):
    """Lower-triangular mask ``j <= i + offset``.

    Args:
        query_length: ``Lq``.
        key_length: ``Lk``.
        offset: position of query 0 among the keys (``Lk - Lq`` when the keys extend the queries
            to the left, as with a KV cache or a memory).

    Returns:
        bool tensor ``(Lq, Lk)``.
    """
    q_pos = ops.arange(query_length)[:, None] + offset  # (Lq, 1)
    k_pos = ops.arange(key_length)[None, :]  # (1, Lk)
    return k_pos <= q_pos


def check_padding_mask(padding_mask, batch_size, key_length, name="padding_mask"):
    """Validate a ``(B, Lk)`` key mask and return it as bool.

    Static shapes are checked when known; ``None`` passes through.
    """
    if padding_mask is None:
        return None
    shape = tuple(padding_mask.shape)
    if len(shape) != 2:
        raise ValueError(
            f"{name} must have shape (batch, key_length) = (B, Lk); got rank {len(shape)} "
            f"shape {shape}."
        )
    if key_length is not None and shape[1] is not None and shape[1] != key_length:
        raise ValueError(
            f"{name} has shape {shape}: its second axis must equal the key length {key_length}."
        )
    if batch_size is not None and shape[0] is not None and shape[0] != batch_size:
        raise ValueError(f"{name} has shape {shape}: its first axis must equal batch {batch_size}.")
    return ops.cast(padding_mask, "bool")


def check_attention_mask(attention_mask, batch_size, query_length, key_length):
    """Validate a ``(B, Lq, Lk)`` mask and return it as bool."""
    if attention_mask is None:
        return None
    shape = tuple(attention_mask.shape)
    if len(shape) != 3:
        raise ValueError(
            "attention_mask must have shape (batch, query_length, key_length) = (B, Lq, Lk); "
            f"got rank {len(shape)} shape {shape}."
        )
    for axis, want, label in ((1, query_length, "Lq"), (2, key_length, "Lk")):
        if want is not None and shape[axis] is not None and shape[axis] != want:
            raise ValueError(
                f"attention_mask has shape {shape}: axis {axis} must equal {label}={want}."
            )
    return ops.cast(attention_mask, "bool")


def combine_masks(
    padding_mask=None,
    attention_mask=None,
    causal=False,
    query_length=None,
    key_length=None,
    offset=0,
):
    """Fold a key padding mask, an explicit mask and causality into one dense mask.

    Args:
        padding_mask: ``(B, Lk)`` bool or None.
        attention_mask: ``(B, Lq, Lk)`` bool or None.
        causal: add ``j <= i + offset``.

    Returns:
        bool ``(B or 1, 1, Lq, Lk)`` (head axis ready to broadcast) or None if nothing masks.
    """
    mask = None
    if padding_mask is not None:
        mask = padding_mask[:, None, None, :]  # (B, 1, 1, Lk)
    if attention_mask is not None:
        am = attention_mask[:, None, :, :]  # (B, 1, Lq, Lk)
        mask = am if mask is None else ops.logical_and(mask, am)
    if causal:
        cm = causal_mask(query_length, key_length, offset)[None, None]  # (1, 1, Lq, Lk)
        mask = cm if mask is None else ops.logical_and(mask, cm)
    return mask
