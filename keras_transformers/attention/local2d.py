"""Image Transformer 2D local attention (Parmar et al., 2018, "Image Transformer").

The sequence is a raster-flattened image grid of ``H x W`` positions (``L = H·W``, row by row).
The grid is partitioned into non-overlapping rectangular query blocks of ``h_q x w_q`` pixels;
every pixel of a query block attends to the *memory block*: the query block extended ``h_m`` rows
up and ``w_m`` columns to the left and to the right (and, when not causal, ``h_m`` rows down — our
choice for encoders; the paper's decoder only uses the causal form). With ``causal=True`` the
pixels after the query pixel in raster order are masked as well, so a pixel attends only to
already generated pixels. Pixels outside the image are masked, so border blocks simply see less.

``S_(r,c) = {(r', c') : r0 - h_m <= r' < r0 + h_q (+ h_m),  c0 - w_m <= c' < c0 + w_q + w_m}``
(``∩ {r'·W + c' <= r·W + c}`` if causal), with ``(r0, c0)`` the top-left pixel of the query block of
``(r, c)``, and ``a(x_i, S_i) = softmax((x_i W^q)(x_j W^k)ᵀ_{j ∈ S_i} / sqrt(dh)) (x_j W^v)_{j ∈ S_i}``.

The grid is given by ``height``/``width``; with one of them the other is ``ceil(L / given)``, with
neither the grid is ``ceil(sqrt(L))`` wide (a square when ``L`` is one). When ``H·W > L`` the
last cells are padding (masked keys, dropped queries). Score-side position biases receive the
raster (1D) distance ``j - i``, the same as dense attention over the flattened image.

Shapes: ``q (B, L, h, dh)``, ``k, v (B, L, h_kv, dh)`` -> ``(B, L, h, dh)``; scores per query block
``(h_q·w_q) x ((h_q + h_m [+ h_m])·(w_q + 2 w_m))``.
Cost: ``O(L·(h_q + 2h_m)(w_q + 2w_m))`` time and memory: linear in ``L``, constant keys per pixel.

Example:
    >>> import numpy as np, keras_transformers as kt
    >>> mha = kt.attention.MultiHeadAttention(
    ...     num_heads=2, key_dim=8, causal=True,
    ...     attention={"name": "local2d", "height": 8, "width": 8, "query_height": 2,
    ...                "query_width": 4, "memory_height": 2, "memory_width": 2})
    >>> tuple(mha(np.zeros((1, 64, 16), "float32")).shape)
    (1, 64, 16)
"""

import math

import numpy as np
from keras import ops

from keras_transformers.attention.registry import register
from keras_transformers.attention.sparse_core import SparsePatternCore
from keras_transformers.ops import sparse_patterns as sp
from keras_transformers.ops.blocks import gather_positions


def _grid_layout(height, width, hq, wq):
    """``to_flat``/``from_flat`` between ``(B, h, H·W, c)`` and query blocks ``(B, h, G, hq·wq, c)``."""
    hp, wp = sp.ceil_div(height, hq) * hq, sp.ceil_div(width, wq) * wq
    nh, nw = hp // hq, wp // wq

    def from_flat(x):
        heads, c = x.shape[1], x.shape[3]
        x = ops.reshape(x, (-1, heads, height, width, c))
        if hp > height or wp > width:
            x = ops.pad(x, [(0, 0), (0, 0), (0, hp - height), (0, wp - width), (0, 0)])
        x = ops.reshape(x, (-1, heads, nh, hq, nw, wq, c))
        x = ops.transpose(x, (0, 1, 2, 4, 3, 5, 6))  # (B, h, nh, nw, hq, wq, c)
        return ops.reshape(x, (-1, heads, nh * nw, hq * wq, c))

    def to_flat(x):
        heads, c = x.shape[1], x.shape[4]
        x = ops.reshape(x, (-1, heads, nh, nw, hq, wq, c))
        x = ops.transpose(x, (0, 1, 2, 4, 3, 5, 6))  # (B, h, nh, hq, nw, wq, c)
        x = ops.reshape(x, (-1, heads, hp, wp, c))
        if hp > height or wp > width:
            x = x[:, :, :height, :width]
        return ops.reshape(x, (-1, heads, height * width, c))

    return to_flat, from_flat


def local2d_positions(length, height, width, hq, wq, hm, wm, causal):
    """Static positions and pattern of the 2D local pattern.

    Returns:
        ``qpos (G, hq·wq)``, ``kpos (G, m)`` raster positions (``-1`` outside the image) and the
        bool pattern ``(G, hq·wq, m)``.
    """
    nh, nw = sp.ceil_div(height, hq), sp.ceil_div(width, wq)
    down = 0 if causal else hm
    # Query pixel coordinates per block.
    br, bc = np.meshgrid(np.arange(nh), np.arange(nw), indexing="ij")
    br, bc = br.reshape(-1, 1), bc.reshape(-1, 1)  # (G, 1)
    tr, tc = np.meshgrid(np.arange(hq), np.arange(wq), indexing="ij")
    qr, qc = br * hq + tr.reshape(1, -1), bc * wq + tc.reshape(1, -1)  # (G, hq·wq)
    # Memory block coordinates per block.
    mr, mc = np.meshgrid(np.arange(-hm, hq + down), np.arange(-wm, wq + wm), indexing="ij")
    kr, kc = br * hq + mr.reshape(1, -1), bc * wq + mc.reshape(1, -1)  # (G, m)

    def raster(r, c):
        inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        pos = r * width + c
        inside &= pos < length
        return np.where(inside, pos, -1)

    qpos, kpos = raster(qr, qc), raster(kr, kc)
    pattern = (qpos[:, :, None] >= 0) & (kpos[:, None, :] >= 0)
    if causal:
        pattern &= kpos[:, None, :] <= qpos[:, :, None]
    return qpos, kpos, pattern


@register("local2d")
class Local2DAttention(SparsePatternCore):
    """2D local attention over a raster-flattened image grid.

    Args:
        height, width: the grid ``H x W`` (``H·W`` must equal ``L`` when both are given); either
            or both may be None (see the module docstring).
        query_height, query_width: query block ``h_q x w_q``.
        memory_height: ``h_m >= 0`` memory rows above (and below when not causal) the block.
        memory_width: ``w_m >= 0`` memory columns left and right of the block.
    """

    example_config = {"query_height": 2, "query_width": 2, "memory_height": 1, "memory_width": 1}
    uses_token_grid = True

    def __init__(
        self,
        height=None,
        width=None,
        query_height=8,
        query_width=8,
        memory_height=4,
        memory_width=4,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.height = sp.check_int("height", height, 1, allow_none=True)
        self.width = sp.check_int("width", width, 1, allow_none=True)
        self.query_height = sp.check_int("query_height", query_height, 1)
        self.query_width = sp.check_int("query_width", query_width, 1)
        self.memory_height = sp.check_int("memory_height", memory_height, 0)
        self.memory_width = sp.check_int("memory_width", memory_width, 0)

    def with_grid(self, height, width):
        """A copy of this core (same blocks and memory) on a ``height x width`` token grid."""
        config = self.get_config()
        config.pop("name", None)
        config["height"], config["width"] = height, width
        return type(self).from_config(config)

    def grid(self, length):
        """``(H, W)`` for a sequence of ``length`` positions."""
        length = int(length)
        height, width = self.height, self.width
        if height is not None and width is not None:
            if height * width != length:
                raise ValueError(
                    f"height={height}, width={width}: the grid has {height * width} positions "
                    f"but the sequence length is {length}; height * width must equal it (or "
                    "leave one of them None to infer it)."
                )
            return height, width
        if width is not None:
            return sp.ceil_div(length, width), width
        if height is not None:
            return height, sp.ceil_div(length, height)
        width = math.isqrt(length)
        if width * width < length:
            width += 1
        return sp.ceil_div(length, width), width

    def _padded_length(self, length):
        height, width = self.grid(length)
        return height * width

    def _parts(self, q, k, v, length, lp, causal):
        height, width = self.grid(length)
        hq, wq = min(self.query_height, height), min(self.query_width, width)
        hm, wm = min(self.memory_height, height), min(self.memory_width, width)
        qpos, kpos, pattern = local2d_positions(length, height, width, hq, wq, hm, wm, causal)
        layout = _grid_layout(height, width, hq, wq)
        qb = layout[1](q)  # (B, h, G, hq·wq, dh)
        kb = gather_positions(k, kpos)  # (B, h, G, m, dh)
        vb = gather_positions(v, kpos)  # (B, h, G, m, dv)
        return [sp.SparsePart(qb, kb, vb, qpos, kpos, pattern, layout=layout)]

    def get_config(self):
        return {
            **super().get_config(),
            "height": self.height,
            "width": self.width,
            "query_height": self.query_height,
            "query_width": self.query_width,
            "memory_height": self.memory_height,
            "memory_width": self.memory_width,
        }
