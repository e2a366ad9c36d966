"""Tile layouts by offset for the blocked engine (:mod:`keras_transformers.ops.flash_attention`).

A ``(rows, cols)`` tile of relative positions ``rel = c - r + const`` has ``rows + cols - 1``
distinct offsets. These helpers move between a per-offset vector and the tile with copies only
(pad, reshape, slice): :func:`toeplitz` lays a per-offset vector along the tile's diagonals,
:func:`diagonal_sums` is its transpose (the gradient), :func:`skew` moves each row so a column
holds one offset and :func:`unskew` undoes it.
"""

from keras import ops


def toeplitz(per_offset, rows, cols):
    """``(..., rows + cols - 1) -> (..., rows, cols)`` with ``out[r, c] = x[c - r + rows - 1]``.

    Laid out by copies only: ``x`` tiled ``rows`` times and read back with a row stride of
    ``rows + cols - 2`` shifts each row one place left of the one above it. Needs ``rows >= 2``.
    """
    n = rows + cols - 1
    lead = tuple(ops.shape(per_offset)[:-1])
    flat = ops.tile(per_offset, (1,) * len(lead) + (rows,))  # (..., rows·n)
    flat = flat[..., rows - 1 : rows - 1 + rows * (n - 1)]  # (..., rows·(n-1))
    return ops.reshape(flat, lead + (rows, n - 1))[..., :cols]  # (..., rows, cols)


def skew(tiles, rows, cols):
    """``(..., rows, cols) -> (..., rows, rows + cols - 1)``: ``out[r, t] = x[r, t + r - rows + 1]``
    (zero outside), each row moved so that a column holds one offset ``c - r``. Copies only: rows
    padded to ``rows + cols - 2``, laid end to end behind ``rows - 1`` zeros and read back with a
    row stride of ``rows + cols - 1``."""
    n = rows + cols - 1
    lead = tuple(ops.shape(tiles)[:-2])
    widths = [(0, 0)] * len(lead)
    x = ops.pad(tiles, widths + [(0, 0), (0, n - 1 - cols)])  # (..., rows, n-1)
    x = ops.reshape(x, lead + (rows * (n - 1),))
    x = ops.pad(x, widths + [(rows - 1, 1)])  # (..., rows·n)
    return ops.reshape(x, lead + (rows, n))  # (..., rows, n)


def unskew(per_offset, rows, cols):
    """``(..., rows, rows + cols - 1) -> (..., rows, cols)``: ``out[r, c] = y[r, c - r + rows - 1]``,
    the inverse layout of :func:`skew` (a per-row :func:`toeplitz`)."""
    n = rows + cols - 1
    lead = tuple(ops.shape(per_offset)[:-2])
    flat = ops.reshape(per_offset, lead + (rows * n,))
    flat = flat[..., rows - 1 : rows - 1 + rows * (n - 1)]  # (..., rows·(n-1))
    return ops.reshape(flat, lead + (rows, n - 1))[..., :cols]


def diagonal_sums(tiles, rows, cols):
    """``(..., rows, cols) -> (..., rows + cols - 1)``: ``out[t] = Σ_{c - r = t - rows + 1} x[r, c]``.

    The transpose of :func:`toeplitz` (its gradient), again by copies and one sum: each row is
    padded to ``rows + cols - 2``, the rows are laid end to end behind ``rows - 1`` zeros and read
    back with a row stride of ``rows + cols - 1``, which lines the diagonals up in columns.
    """
    return ops.sum(skew(tiles, rows, cols), axis=-2)  # (..., rows + cols - 1)
