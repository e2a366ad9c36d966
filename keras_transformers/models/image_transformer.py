"""Image Transformer (Parmar et al., 2018, "Image Transformer"): images as autoregressive sequences.

An ``H x W x C`` image with intensities quantised to ``n`` levels is a sequence of ``L = H·W·C``
categorical sub-pixels. As in the paper the channels are laid side by side, so the model works on
an ``H x (W·C)`` grid; a generation *order* flattens that grid:

* ``raster``: row by row, left to right;
* ``block_raster``: the grid is cut into ``h_q x w_q`` blocks (the 2D query blocks); the blocks
  are visited in raster order and the pixels inside a block in raster order.

The decoder reads ``[<start>, x_1, ..., x_{L-1}]`` (shifted right by one) and predicts
``p(x_t | x_<t) = softmax(W_o h_t)`` over the ``n`` levels. Self-attention is causal in the
generation order: ``local`` (1D blocks of ``l_q`` positions with ``M`` memory blocks, catalogue
V21), ``local2d`` (query block ``h_q x w_q``, memory extended ``h_m`` rows up and ``w_m`` columns
left and right, catalogue V22; in block-raster order the pattern is causal in that order) or
``full``. Positions are learned per sequence index. The paper's model is an encoder-decoder (the
encoder for conditional tasks); unconditional generation, as here, uses the decoder alone.

Likelihood is reported in bits per dimension, ``bits/dim = -(1/L) Σ_t log2 p(x_t | x_<t)``
(for ``n`` levels a uniform model scores ``log2 n``; 4 for 16 levels).

Generation (:meth:`ImageTransformer.generate_images`) runs :class:`kt.generation.Generator` with
per-layer caches; the local cores decode with :class:`kt.generation.PatternCache` (every key and
value kept, each step gathering its ``K`` pattern keys).

Example:
    >>> import numpy as np, keras_transformers as kt
    >>> model = kt.models.build_image_transformer(height=4, width=4, levels=8, d_model=16,
    ...     num_heads=2, num_layers=1, attention="local2d", query_shape=(2, 2),
    ...     memory_shape=(1, 1))
    >>> model.generate_images(2, sampler="greedy").shape
    (2, 4, 4, 1)
"""

import math

import keras
import numpy as np
from keras import ops

from keras_transformers.attention.local2d import local2d_positions
from keras_transformers.generation.pattern_cache import (
    CachedLocal2DAttention,
    CachedLocalAttention,
)
from keras_transformers.models.backbone import check_model_sizes
from keras_transformers.models.decoder_lm import DecoderLM
from keras_transformers.ops import sparse_patterns as sp
from keras_transformers.ops.blocks import gather_positions, split_blocks

ORDERS = ("raster", "block_raster")
ATTENTIONS = ("local", "local2d", "full")


# --------------------------------------------------------------------------- orders and data
def pixel_order(height, width, order="raster", block_shape=(2, 2)):
    """Generation order of an ``height x width`` grid: ``perm (L,)`` raster indices.

    ``perm[s]`` is the raster index ``r·width + c`` of the ``s``-th generated position.
    ``block_raster`` visits ``block_shape = (h_q, w_q)`` blocks in raster order, raster inside.
    """
    if order not in ORDERS:
        raise ValueError(f"order={order!r}: allowed values are {', '.join(ORDERS)}.")
    grid = np.arange(height * width).reshape(height, width)
    if order == "raster":
        return grid.reshape(-1)
    bh, bw = (int(s) for s in block_shape)
    if height % bh or width % bw:
        raise ValueError(
            f"block_shape={tuple(block_shape)}: the block must tile the {height}x{width} grid "
            "(height and width divisible by the block's)."
        )
    blocks = grid.reshape(height // bh, bh, width // bw, bw).transpose(0, 2, 1, 3)
    return blocks.reshape(-1)


def quantize(images, levels):
    """Float images in ``[0, 1]`` -> int32 levels ``0 .. levels - 1`` (``floor(x·n)``)."""
    return np.clip(np.floor(np.asarray(images, "float32") * levels), 0, levels - 1).astype("int32")


def dequantize(values, levels):
    """Levels -> float32 intensities at the bin centres ``(v + 0.5) / n``."""
    return (np.asarray(values, "float32") + 0.5) / levels


def images_to_sequence(values, order):
    """``(N, H, W, C)`` levels -> ``(N, L)`` in generation order (grid ``H x W·C``)."""
    values = np.asarray(values)
    n = values.shape[0]
    return values.reshape(n, -1)[:, order]


def sequence_to_images(sequence, order, height, width, channels):
    """Inverse of :func:`images_to_sequence`: ``(N, L)`` -> ``(N, H, W, C)``."""
    sequence = np.asarray(sequence)
    flat = np.empty_like(sequence)
    flat[:, order] = sequence
    return flat.reshape(sequence.shape[0], height, width, channels)


# --------------------------------------------------------------------------- block-raster core
@keras.saving.register_keras_serializable(package="keras_transformers")
class BlockRasterLocal2DAttention(CachedLocal2DAttention):
    """2D local attention over a sequence in *block-raster* order (Parmar et al., 2018, 3.2).

    Position ``s`` of the sequence is the grid pixel ``perm[s]`` of
    :func:`pixel_order` ``(height, width, "block_raster", (query_height, query_width))``, so each
    query block is ``h_q·w_q`` consecutive positions. Its memory block is the local2d rectangle
    (``h_m`` rows above, ``w_m`` columns left and right); with ``causal`` the keys later in the
    block-raster order are masked (the block to the right on the same block row stays hidden,
    the one to the left is visible). Caching as :class:`~kt.generation.PatternCache`.
    """

    def _padded_length(self, length):
        height, width = self.grid(length)
        if height % self.query_height or width % self.query_width:
            raise ValueError(
                f"block-raster order: query block {self.query_height}x{self.query_width} must "
                f"tile the {height}x{width} grid."
            )
        return height * width

    def _parts(self, q, k, v, length, lp, causal):
        height, width = self.grid(length)
        hq, wq = self.query_height, self.query_width
        hm, wm = min(self.memory_height, height), min(self.memory_width, width)
        perm = pixel_order(height, width, "block_raster", (hq, wq))
        rank = np.empty_like(perm)
        rank[perm] = np.arange(len(perm))  # raster index -> sequence index
        qr, kr, _ = local2d_positions(length, height, width, hq, wq, hm, wm, causal)
        qpos = np.where(qr >= 0, rank[np.maximum(qr, 0)], -1)  # (G, hq·wq)
        kpos = np.where(kr >= 0, rank[np.maximum(kr, 0)], -1)  # (G, m)
        pattern = (qpos[:, :, None] >= 0) & (kpos[:, None, :] >= 0)
        if causal:
            pattern &= kpos[:, None, :] <= qpos[:, :, None]
        qb = split_blocks(q, hq * wq)  # (B, h, G, hq·wq, dh): blocks are consecutive
        kb = gather_positions(k, kpos)  # (B, h, G, m, dh)
        vb = gather_positions(v, kpos)  # (B, h, G, m, dv)
        return [sp.SparsePart(qb, kb, vb, qpos, kpos, pattern)]


def attention_core(attention, order, grid, query_shape, memory_shape, block_size, memory_blocks):
    """The causal self-attention core of an Image Transformer layer."""
    if attention == "full":
        return "full"
    if attention == "local":
        return CachedLocalAttention(block_size=block_size, memory_blocks=memory_blocks)
    cls = BlockRasterLocal2DAttention if order == "block_raster" else CachedLocal2DAttention
    return cls(
        height=grid[0],
        width=grid[1],
        query_height=query_shape[0],
        query_width=query_shape[1],
        memory_height=memory_shape[0],
        memory_width=memory_shape[1],
    )


# --------------------------------------------------------------------------- model
@keras.saving.register_keras_serializable(package="keras_transformers")
class ImageTransformer(DecoderLM):
    """Autoregressive decoder over quantised sub-pixels (see the module docstring).

    ``ImageTransformer(**config)`` with the arguments of :func:`build_image_transformer`.
    Input ``token_ids (B, L)``: ``<start> = levels`` then the levels of the first ``L - 1``
    sub-pixels in generation order (:meth:`prepare`); output logits ``(B, L, levels)``.
    Parts as :class:`DecoderLM`'s plus ``output_head`` (a Dense over the ``levels`` values; the
    input vocabulary has one more id, ``<start>``).
    """

    default_name = "image_transformer"

    def build_graph(
        self,
        height,
        width,
        channels,
        levels,
        attention,
        order,
        query_shape,
        memory_shape,
        block_size,
        memory_blocks,
        **config,
    ):
        self.levels = int(levels)
        self.image_shape = (int(height), int(width), int(channels))
        self.grid = (int(height), int(width) * int(channels))
        self.order = pixel_order(*self.grid, order, tuple(query_shape))
        core = attention_core(
            attention, order, self.grid, query_shape, memory_shape, block_size, memory_blocks
        )
        length = self.grid[0] * self.grid[1]
        return super().build_graph(
            max_length=length, attention=core, vocab_size=self.levels + 1, **config
        )

    def logits_output(self, x):
        """``(B, L, d) -> (B, L, levels)`` float32 (a head over the pixel values only)."""
        self.output_head = keras.layers.Dense(self.levels, dtype="float32", name="logits")
        return self.output_head(x)

    @property
    def start_id(self):
        """The ``<start>`` token id (``levels``)."""
        return self.levels

    @property
    def sequence_length(self):
        return self.grid[0] * self.grid[1]

    def prepare(self, images):
        """Float images ``(N, H, W, C)`` in ``[0, 1]`` -> ``(inputs (N, L), targets (N, L))``."""
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[..., None]
        if images.shape[1:] != self.image_shape:
            raise ValueError(f"images must have shape (N, {self.image_shape}); got {images.shape}.")
        targets = images_to_sequence(quantize(images, self.levels), self.order)  # (N, L)
        inputs = np.concatenate(
            [np.full((len(targets), 1), self.start_id, "int32"), targets[:, :-1]], axis=1
        )
        return inputs, targets

    def to_images(self, sequence):
        """Levels in generation order ``(N, L)`` -> float images ``(N, H, W, C)`` in ``[0, 1]``."""
        values = sequence_to_images(sequence, self.order, *self.image_shape)
        return dequantize(values, self.levels)

    def bits_per_dim(self, images, batch_size=64):
        """``-(1/L) Σ_t log2 p(x_t | x_<t)`` averaged over ``images`` (float ``[0, 1]``)."""
        inputs, targets = self.prepare(images)
        total = 0.0
        for i in range(0, len(inputs), batch_size):
            logits = ops.convert_to_numpy(self(inputs[i : i + batch_size], training=False))
            logits = logits.astype("float64")
            logits -= logits.max(axis=-1, keepdims=True)
            log_z = np.log(np.exp(logits).sum(axis=-1))
            picked = np.take_along_axis(logits, targets[i : i + batch_size, :, None], -1)[..., 0]
            total += float((log_z - picked).sum())
        return total / (targets.size * math.log(2.0))

    def generate_images(self, num_images, sampler="random", prompt=None, use_cache=None, jit=True):
        """Sample ``num_images`` images ``(N, H, W, C)`` float in ``[0, 1]``.

        Args:
            num_images: ``N``.
            sampler: a ``keras_hub.samplers`` name or instance (``"random"``: ancestral sampling;
                ``"greedy"``; ``TopKSampler(k=4, seed=0)``); not ``"beam"``.
            prompt: optional ``(N, k)`` levels of the first ``k`` sub-pixels in generation order
                (image completion).
            use_cache: as in :meth:`DecoderLM.generate` (None: cache with the cores' caches).

        The generator produces sub-pixels ``1 .. L - 1`` with the caches; the last one comes from
        one full forward pass (the input holds ``L`` positions).
        """
        import keras_hub

        length = self.sequence_length
        first = np.full((num_images, 1), self.start_id, "int32")
        if prompt is not None:
            prompt = np.asarray(prompt, "int32").reshape(num_images, -1)
            if prompt.shape[1] >= length or prompt.min() < 0 or prompt.max() >= self.levels:
                raise ValueError(
                    f"prompt: at most {length - 1} levels in [0, {self.levels}) per image; got "
                    f"shape {prompt.shape}."
                )
            first = np.concatenate([first, prompt], axis=1)
        instance = keras_hub.samplers.get(sampler)
        if isinstance(instance, keras_hub.samplers.BeamSampler):
            raise ValueError("sampler='beam' is not supported for images: sample or use greedy.")
        if first.shape[1] < length:
            gen = self.generator(use_cache, jit)
            tokens = gen.generate(
                first,
                length,
                sampler=sampler,
                prompt_lengths=np.full((num_images,), first.shape[1]),
            )  # (N, L): <start> and sub-pixels 1 .. L-1
        else:
            tokens = first
        logits = ops.cast(self(tokens, training=False)[:, -1], "float32")  # (N, levels)
        last = instance.get_next_token(instance.compute_probabilities(logits))  # (N,)
        last = ops.convert_to_numpy(last).astype("int32")[:, None]
        sequence = np.concatenate([tokens[:, 1:], last], axis=1)  # (N, L)
        return self.to_images(sequence)


@keras.saving.register_keras_serializable(package="keras_transformers")
class BitsPerDim(keras.metrics.Mean):
    """``model.evaluate`` metric: mean ``-log2 p(x_t | x_<t)`` over the sub-pixels (bits/dim)."""

    def __init__(self, name="bits_per_dim", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        nats = keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)
        return super().update_state(nats / math.log(2.0), sample_weight=sample_weight)


# --------------------------------------------------------------------------- TensorBoard samples
def tile_images(images, columns=8, scale=4):
    """``(N, H, W, C)`` in ``[0, 1]`` -> one ``(rows·H·scale, columns·W·scale, C)`` float image
    (nearest-neighbour upscaled, 1-pixel gaps), for ``tf.summary.image``."""
    images = np.asarray(images, "float32")
    n, h, w, c = images.shape
    columns = min(columns, n)
    rows = -(-n // columns)
    big = np.repeat(np.repeat(images, scale, axis=1), scale, axis=2)  # (N, H·s, W·s, C)
    hs, ws = h * scale + 1, w * scale + 1
    canvas = np.ones((rows * hs - 1, columns * ws - 1, c), "float32")
    for i in range(n):
        r, col = divmod(i, columns)
        canvas[r * hs : r * hs + h * scale, col * ws : col * ws + w * scale] = big[i]
    return canvas


class ImageSampleLogger(keras.callbacks.Callback):
    """Every ``every`` epochs: ``num_images`` samples of the model as a TensorBoard image
    (``samples`` in the Images tab of ``logdir/train``), drawn with ``sampler`` (seeded)."""

    def __init__(self, logdir, num_images=16, every=1, sampler="random", seed=0):
        import keras_hub

        super().__init__()
        self.logdir, self.num_images, self.every = logdir, num_images, every
        # one instance for the whole run: the generator compiles its loop once
        self.sampler = (
            keras_hub.samplers.RandomSampler(seed=seed) if sampler == "random" else sampler
        )
        self.last_samples = None
        self._writer = None

    def log(self, step):
        import tensorflow as tf

        from keras_transformers.callbacks.summaries import summary_writer

        self.last_samples = self.model.generate_images(self.num_images, sampler=self.sampler)
        if self._writer is None:
            self._writer = summary_writer(self.logdir)
        with self._writer.as_default(step=step):
            tf.summary.image("samples", tile_images(self.last_samples)[None])
        self._writer.flush()
        return self.last_samples

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0:
            self.log(epoch)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def build_image_transformer(
    height=8,
    width=8,
    channels=1,
    levels=16,
    d_model=64,
    num_heads=4,
    num_layers=3,
    ff_dim=None,
    attention="local2d",
    order="raster",
    query_shape=(2, 4),
    memory_shape=(2, 2),
    block_size=8,
    memory_blocks=2,
    position="learned",
    dropout=0.0,
    activation="gelu",
    norm_first=True,
    name="image_transformer",
):
    """Build an Image Transformer decoder (:class:`ImageTransformer`).

    Args:
        height, width, channels: image size (the bundled digits: 8, 8, 1).
        levels: intensity levels ``n`` (the categorical output size).
        d_model, num_heads, num_layers, ff_dim: sizes.
        attention: ``"local2d"`` (query block ``query_shape``, memory ``memory_shape = (h_m,
            w_m)``), ``"local"`` (``block_size = l_q`` and ``memory_blocks = M``) or ``"full"``.
        order: ``"raster"`` or ``"block_raster"`` (blocks of ``query_shape``).
        position: embedding-side position encoding (``"learned"``: one row per position).

    Returns:
        :class:`ImageTransformer`: ``token_ids (B, L) -> logits (B, L, levels)`` with
        ``L = height·width·channels``. Train with ``SparseCategoricalCrossentropy(from_logits=
        True)`` on :meth:`~ImageTransformer.prepare`'s targets; ``loss / ln 2`` is bits/dim.
    """
    config = dict(locals())
    if attention not in ATTENTIONS:
        raise ValueError(f"attention={attention!r}: allowed values are {', '.join(ATTENTIONS)}.")
    if order not in ORDERS:
        raise ValueError(f"order={order!r}: allowed values are {', '.join(ORDERS)}.")
    for key in ("height", "width", "channels", "block_size"):
        sp.check_int(key, config[key], 1)
    sp.check_int("levels", levels, 2)
    sp.check_int("memory_blocks", memory_blocks, 0)
    for key in ("query_shape", "memory_shape"):
        if len(tuple(config[key])) != 2:
            raise ValueError(f"{key}={config[key]!r}: must be a pair (rows, columns).")
        config[key] = [int(s) for s in config[key]]
    grid = (height, width * channels)
    if order == "block_raster" and (grid[0] % query_shape[0] or grid[1] % query_shape[1]):
        raise ValueError(
            f"order='block_raster': query_shape={tuple(query_shape)} must tile the "
            f"{grid[0]}x{grid[1]} grid (height x width·channels)."
        )
    check_model_sizes(d_model, num_heads, num_layers)
    return ImageTransformer(**config)
