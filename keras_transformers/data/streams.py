"""Contiguous parallel streams for segment-recurrent models (Transformer-XL, Compressive).

A recurrent-memory model carries hidden states from one batch to the next, so row ``b`` of batch
``i + 1`` must continue row ``b`` of batch ``i``. :func:`make_segment_streams` cuts a token array
into ``B`` equal contiguous streams (one per batch row) and each stream into consecutive segments
of length ``L``, with next-token targets, in the order ``fit(..., batch_size=B, shuffle=False)``
consumes them:

``tokens -> B streams of length T -> inputs (n·B, L), targets (n·B, L)``, where sample
``k·B + b`` is segment ``k`` of stream ``b`` (tokens ``b·T + k·L ... b·T + (k+1)·L - 1``).

Example:
    >>> import numpy as np
    >>> from keras_transformers.data.streams import make_segment_streams
    >>> x, y = make_segment_streams(np.arange(100), batch_size=2, segment_length=8)
    >>> x.shape, x[2, :3].tolist(), y[0, :3].tolist()
    ((12, 8), [8, 9, 10], [1, 2, 3])
"""

import numpy as np


def make_segment_streams(tokens, batch_size, segment_length, drop_remainder=True):
    """Split ``tokens`` into ``batch_size`` contiguous streams of consecutive segments.

    Args:
        tokens: 1-D array of token ids (or 2-D: several documents already concatenated row by
            row are flattened in order).
        batch_size: number of parallel streams ``B`` (the model's fixed batch size).
        segment_length: segment length ``L``.
        drop_remainder: drop the tokens that do not fill a whole segment of every stream (the
            only mode: a stateful model needs every batch to have ``B`` rows).

    Returns:
        ``(inputs, targets)``: int32 arrays ``(n·B, L)``; ``targets`` are the inputs shifted by
        one token within each stream. Feed them to ``fit(..., batch_size=B, shuffle=False)``.
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size={batch_size}: must be >= 1.")
    if int(segment_length) < 1:
        raise ValueError(f"segment_length={segment_length}: must be >= 1.")
    if not drop_remainder:
        raise ValueError("drop_remainder=False: not supported; every batch needs B full rows.")
    batch_size, segment_length = int(batch_size), int(segment_length)
    tokens = np.asarray(tokens).reshape(-1)
    # each stream needs n·L inputs plus one extra token for the last target
    per_stream = (len(tokens) - 1) // batch_size
    num_segments = per_stream // segment_length
    if num_segments < 1:
        raise ValueError(
            f"tokens has {len(tokens)} ids: too few for batch_size={batch_size} streams of at least "
            f"one segment_length={segment_length} segment (needs >= "
            f"{batch_size * segment_length + 1})."
        )
    span = num_segments * segment_length
    starts = np.arange(batch_size) * per_stream  # (B,)
    idx = starts[:, None] + np.arange(span)[None, :]  # (B, n·L)
    inputs = tokens[idx].reshape(batch_size, num_segments, segment_length)
    targets = tokens[idx + 1].reshape(batch_size, num_segments, segment_length)
    # (B, n, L) -> (n, B, L) -> (n·B, L): batch k holds segment k of every stream
    inputs = inputs.transpose(1, 0, 2).reshape(-1, segment_length)
    targets = targets.transpose(1, 0, 2).reshape(-1, segment_length)
    return inputs.astype("int32"), targets.astype("int32")


def stream_position(sample_index, batch_size):
    """``(segment k, stream b)`` of row ``sample_index`` of :func:`make_segment_streams`."""
    return int(sample_index) // int(batch_size), int(sample_index) % int(batch_size)
