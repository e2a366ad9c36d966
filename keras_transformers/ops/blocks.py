"""Blocking primitives for sparse attention: pad, split into blocks, gather neighbour blocks.

Sparse cores work on ``(B, h, n, block, dh)`` tensors: queries of block ``i`` attend to a small,
fixed set of key blocks gathered next to them, so memory is ``O(L · keys_per_query)`` and never
``O(L²)``. Static positions (numpy) select keys with :func:`gather_positions` and read a key mask
with :func:`lookup`; they are constants of the graph, so everything traces under XLA.
"""

import numpy as np
from keras import ops


def num_blocks(length, block_size):
    """``ceil(length / block_size)`` for static Python ints."""
    return -(-int(length) // int(block_size))


#: ``ceil(a / b)`` for Python ints (the same function under its arithmetic name).
ceil_div = num_blocks


def pad_axis(x, target, axis=2, value=0):
    """Pad ``axis`` of ``x`` at the end up to the static length ``target``."""
    pad = int(target) - int(x.shape[axis])
    if pad <= 0:
        return x
    widths = [(0, 0)] * len(x.shape)
    widths[axis] = (0, pad)
    return ops.pad(x, widths, constant_values=value)


def pad_length(x, multiple, axis=2, value=0):
    """Pad ``axis`` of ``x`` at the end to a multiple of ``multiple``.

    Returns ``(padded, original_length)``; the static length must be known.
    """
    length = x.shape[axis]
    if length is None:
        raise ValueError(
            "Sparse attention needs a static sequence length; build the model with a fixed "
            "max_length (Input(shape=(L,)))."
        )
    return pad_axis(x, num_blocks(length, multiple) * multiple, axis, value), length


def split_blocks(x, block_size, axis=2):
    """``(..., L, ...) -> (..., L/block, block, ...)`` at ``axis`` (L a multiple of block)."""
    shape = list(x.shape)
    shape = [s if s is not None else -1 for s in shape]
    if shape[0] == -1:
        shape[0] = ops.shape(x)[0]
    length = x.shape[axis]
    new_shape = shape[:axis] + [length // block_size, block_size] + shape[axis + 1 :]
    return ops.reshape(x, tuple(new_shape))


def merge_blocks(x, axis=2):
    """Inverse of :func:`split_blocks`: merge ``axis`` and ``axis + 1``."""
    shape = [s if s is not None else -1 for s in x.shape]
    if shape[0] == -1:
        shape[0] = ops.shape(x)[0]
    new_shape = shape[:axis] + [x.shape[axis] * x.shape[axis + 1]] + shape[axis + 2 :]
    return ops.reshape(x, tuple(new_shape))


def to_columns(x, stride):
    """``(B, h, Lp, c) -> (B, h, stride, Lp / stride, c)``: column ``r`` holds ``r, r + ℓ, ...``."""
    return ops.transpose(split_blocks(x, stride), (0, 1, 3, 2, 4))


def slice_axis(x, start, stop, axis):
    """``x[start:stop]`` along ``axis`` through ``ops.split``.

    Same result as basic slicing, but on TensorFlow the gradient of a split is a concatenation
    while that of a strided slice of a rank-5 tensor is several times slower (it dominated the
    backward pass of the blocked cores at L = 8k).
    """
    size = int(x.shape[axis])
    start, stop = max(0, int(start)), min(size, int(stop))
    if start == 0 and stop == size:
        return x
    cuts = [c for c in (start, stop) if 0 < c < size]
    pieces = ops.split(x, cuts, axis=axis)
    return pieces[1] if start > 0 else pieces[0]


def neighbour_blocks(blocks, before, after, axis=2, fill=0, start=0):
    """Concatenate each block with its ``before`` previous and ``after`` next blocks.

    Args:
        blocks: ``(..., n, block, ...)`` with the block index at ``axis``.
        before, after: how many neighbour blocks on each side.
        fill: value for neighbours that fall off either end.
        start: first query block to return (blocks ``start .. n-1``).

    Returns:
        ``(..., n - start, (before + 1 + after) * block, ...)``: the keys of query block ``i`` are
        blocks ``i - before .. i + after`` in order.
    """
    n = int(blocks.shape[axis])
    padded = blocks
    if before or after:
        widths = [(0, 0)] * len(blocks.shape)
        widths[axis] = (before, after)
        padded = ops.pad(blocks, widths, constant_values=fill)
    parts = [slice_axis(padded, o + start, o + n, axis) for o in range(before + after + 1)]
    return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=axis + 1)


def block_positions(num, block_size):
    """Absolute positions ``(n, block)`` of a blocked sequence."""
    return ops.reshape(ops.arange(num * block_size, dtype="int32"), (num, block_size))


def neighbour_positions(num, block_size, before, after):
    """Absolute key positions ``(n, (before + 1 + after) * block)`` of :func:`neighbour_blocks`.

    Positions that fall off either end are returned as they are (negative or ``>= n·block``);
    callers mask them.
    """
    starts = (ops.arange(num, dtype="int32") - before) * block_size  # (n,)
    span = (before + 1 + after) * block_size
    return starts[:, None] + ops.arange(span, dtype="int32")[None, :]


def gather_positions(x, positions):
    """``x (B, h, Lp, c)`` at static positions ``(*P)`` -> ``(B, h, *P, c)``.

    Positions outside ``[0, Lp)`` are clipped (callers mask them out).
    """
    positions = np.asarray(positions)
    lp = x.shape[2]
    flat = np.clip(positions, 0, lp - 1).reshape(-1).astype("int32")
    out = ops.take(x, ops.convert_to_tensor(flat), axis=2)  # (B, h, prod(P), c)
    return ops.reshape(out, (-1, x.shape[1]) + tuple(positions.shape) + (x.shape[3],))


def lookup(mask, positions, length):
    """Read a ``(B, L)`` bool mask at static ``positions`` (any shape) -> ``(B, *positions)``;
    positions outside ``[0, length)`` read False."""
    positions = np.asarray(positions)
    inside = (positions >= 0) & (positions < length)
    flat = np.clip(positions, 0, length - 1).reshape(-1).astype("int32")
    got = ops.take(ops.cast(mask, "bool"), ops.convert_to_tensor(flat), axis=1)  # (B, P)
    got = ops.reshape(got, (-1,) + positions.shape)
    return ops.logical_and(got, ops.convert_to_tensor(inside)[None])
