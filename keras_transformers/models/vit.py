"""Vision Transformer (Dosovitskiy et al., 2021, "An Image is Worth 16x16 Words").

An image ``(H, W, C)`` is cut into non-overlapping ``p_h x p_w`` patches; each flattened patch is
linearly projected to ``d`` (``z_0 = [x_cls; x_p^1 E; ...; x_p^N E] + E_pos``, ``N = HW / (p_h p_w)``),
then a stack of Transformer encoder blocks runs over the ``N`` (+1) tokens and the class token (or
the mean of the patch tokens) feeds a linear classifier.

Layers:

* :class:`PatchEmbedding` -- ``(B, H, W, C) -> (B, N, d)``: the patch projection, computed either as a
  strided convolution (``mode="conv"``) or as an explicit reshape into patches followed by a matmul
  (``mode="reshape"``). Both modes own the same ``(p_h, p_w, C, d)`` kernel and give the same
  result.
* :class:`ClassToken` -- prepends a learned ``[CLS]`` vector: ``(B, N, d) -> (B, N + 1, d)``.
* :class:`SinusoidalPosition2D` -- fixed 2D sine-cosine position table (Vaswani et al. 2017's 1D
  table applied to the patch row in the first half of the features and to the patch column in
  the second half, as in MAE / "simple ViT", He et al. 2022, Beyer et al. 2022).

Shapes: ``images (B, H, W, C) -> tokens (B, N [+1], d) -> logits (B, num_classes)``.
Cost: ``O(N²·d)`` per layer with full attention; with ``attention="local2d"`` (2D local blocks over
the patch grid) ``O(N·w·d)``.
"""

import keras
import numpy as np
from keras import ops

from keras_transformers import attention as attention_registry
from keras_transformers.models.backbone import BackboneModel, check_model_sizes
from keras_transformers.models.layers import SequencePooling

PATCH_MODES = ("conv", "reshape")
VIT_POOLING = ("cls", "mean")


def _pair(name, value):
    """``int | (int, int) -> (int, int)``, each >= 1, with an error naming ``name``."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"{name}={value!r}: must be an int or a pair (height, width).")
        pair = tuple(int(v) for v in value)
    else:
        pair = (int(value), int(value))
    if min(pair) < 1:
        raise ValueError(f"{name}={value!r}: must be >= 1.")
    return pair


@keras.saving.register_keras_serializable(package="keras_transformers")
class PatchEmbedding(keras.layers.Layer):
    """Split images into ``p_h x p_w`` patches and project each one to ``d`` features.

    ``y[b, i·n_w + j] = Σ_{r, c, ch} x[b, i·p_h + r, j·p_w + c, ch] · K[r, c, ch, :] + bias``:
    patches in raster order (row by row), each flattened in ``(row, column, channel)`` order.

    Args:
        patch_size: ``p`` or ``(p_h, p_w)``.
        output_dim: ``d``.
        mode: ``"conv"`` (strided convolution, kernel = stride = patch) or ``"reshape"`` (explicit
            patch extraction, then one ``(p_h·p_w·C, d)`` matmul). Same kernel, same result.
        use_bias, kernel_initializer, bias_initializer: the projection's parameters.

    Shapes: ``(B, H, W, C) -> (B, (H/p_h)·(W/p_w), d)``; ``H``, ``W`` must be multiples of the patch.

    Example:
        >>> import numpy as np
        >>> from keras_transformers.models.vit import PatchEmbedding
        >>> PatchEmbedding(4, 16)(np.zeros((2, 8, 12, 3), "float32")).shape
        (2, 6, 16)
    """

    def __init__(
        self,
        patch_size,
        output_dim,
        mode="conv",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.patch_size = _pair("patch_size", patch_size)
        if int(output_dim) < 1:
            raise ValueError(f"output_dim={output_dim}: must be >= 1.")
        self.output_dim = int(output_dim)
        if mode not in PATCH_MODES:
            raise ValueError(f"mode={mode!r}: allowed values are {', '.join(PATCH_MODES)}.")
        self.mode = mode
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def _check_shape(self, shape):
        if len(shape) != 4:
            raise ValueError(
                f"PatchEmbedding expects images of rank 4 (batch, height, width, channels); got "
                f"shape {tuple(shape)}. Add a channel axis to grayscale images, e.g. x[..., None]."
            )
        (height, width), (ph, pw) = shape[1:3], self.patch_size
        if height is None or width is None or shape[3] is None:
            raise ValueError(
                f"PatchEmbedding needs static height, width and channels; got shape {tuple(shape)}."
            )
        if height % ph or width % pw:
            raise ValueError(
                f"image size ({height}, {width}) is not divisible by patch_size=({ph}, {pw}); "
                "resize or crop the images to a multiple of the patch size."
            )

    def build(self, input_shape):
        self._check_shape(input_shape)
        ph, pw = self.patch_size
        self.kernel = self.add_weight(
            name="kernel",
            shape=(ph, pw, int(input_shape[-1]), self.output_dim),
            initializer=self.kernel_initializer,
        )
        self.bias = (
            self.add_weight(
                name="bias", shape=(self.output_dim,), initializer=self.bias_initializer
            )
            if self.use_bias
            else None
        )
        self.built = True

    def call(self, images):
        self._check_shape(images.shape)
        _, height, width, channels = images.shape
        (ph, pw), d = self.patch_size, self.output_dim
        nh, nw = height // ph, width // pw
        kernel = ops.cast(self.kernel, images.dtype)  # (ph, pw, C, d)
        if self.mode == "conv":
            y = ops.conv(images, kernel, strides=(ph, pw), padding="valid")  # (B, nh, nw, d)
            y = ops.reshape(y, (-1, nh * nw, d))
        else:
            x = ops.reshape(images, (-1, nh, ph, nw, pw, channels))
            x = ops.transpose(x, (0, 1, 3, 2, 4, 5))  # (B, nh, nw, ph, pw, C)
            x = ops.reshape(x, (-1, nh * nw, ph * pw * channels))  # (B, N, ph·pw·C)
            y = ops.matmul(x, ops.reshape(kernel, (ph * pw * channels, d)))  # (B, N, d)
        if self.bias is not None:
            y = y + ops.cast(self.bias, y.dtype)
        return y

    def compute_output_shape(self, input_shape):
        self._check_shape(input_shape)
        (ph, pw) = self.patch_size
        return (input_shape[0], (input_shape[1] // ph) * (input_shape[2] // pw), self.output_dim)

    def get_config(self):
        return {
            **super().get_config(),
            "patch_size": self.patch_size,
            "output_dim": self.output_dim,
            "mode": self.mode,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        }


@keras.saving.register_keras_serializable(package="keras_transformers")
class ClassToken(keras.layers.Layer):
    """Prepend one learned ``[CLS]`` vector to every sequence: ``(B, N, d) -> (B, N + 1, d)``."""

    def __init__(self, initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape):
        self.token = self.add_weight(
            name="token", shape=(1, 1, int(input_shape[-1])), initializer=self.initializer
        )
        self.built = True

    def call(self, x):
        token = ops.cast(self.token, x.dtype)  # (1, 1, d)
        token = ops.broadcast_to(token, (ops.shape(x)[0], 1, x.shape[-1]))  # (B, 1, d)
        return ops.concatenate([token, x], axis=1)  # (B, N + 1, d)

    def compute_output_shape(self, input_shape):
        length = None if input_shape[1] is None else input_shape[1] + 1
        return (input_shape[0], length, input_shape[2])

    def get_config(self):
        return {
            **super().get_config(),
            "initializer": keras.initializers.serialize(self.initializer),
        }


def sinusoid_2d_table(grid_height, grid_width, dim, max_wavelength=10000.0):
    """The 2D sine-cosine table, ``(grid_height·grid_width, dim)`` float32 numpy, raster order.

    With ``q = dim / 4`` and ``ω_k = max_wavelength^(-k / q)`` (``k = 0..q-1``), the row of patch
    ``(r, c)`` is ``[sin(r ω), cos(r ω), sin(c ω), cos(c ω)]``: the first half encodes the patch
    row, the second half the column. ``dim`` must be a multiple of 4.
    """
    if dim % 4:
        raise ValueError(f"d_model={dim}: the 2D sinusoid table needs a multiple of 4.")
    quarter = dim // 4
    omega = max_wavelength ** (-np.arange(quarter, dtype=np.float64) / quarter)  # (q,)
    rows, cols = np.meshgrid(np.arange(grid_height), np.arange(grid_width), indexing="ij")
    r = rows.reshape(-1, 1) * omega[None]  # (N, q)
    c = cols.reshape(-1, 1) * omega[None]  # (N, q)
    return np.concatenate([np.sin(r), np.cos(r), np.sin(c), np.cos(c)], axis=1).astype("float32")


@keras.saving.register_keras_serializable(package="keras_transformers")
class SinusoidalPosition2D(keras.layers.Layer):
    """Add the fixed 2D sine-cosine table of a ``grid_height x grid_width`` patch grid.

    The first ``num_prefix_tokens`` positions (e.g. a class token) get no position (zeros).

    Shapes: ``(B, prefix + grid_height·grid_width, d) -> same``; ``d`` a multiple of 4.
    """

    def __init__(
        self, grid_height, grid_width, num_prefix_tokens=0, max_wavelength=10000.0, **kwargs
    ):
        super().__init__(**kwargs)
        self.grid_height = int(grid_height)
        self.grid_width = int(grid_width)
        if min(self.grid_height, self.grid_width) < 1:
            raise ValueError(f"grid ({grid_height}, {grid_width}): both sides must be >= 1.")
        self.num_prefix_tokens = int(num_prefix_tokens)
        if self.num_prefix_tokens < 0:
            raise ValueError(f"num_prefix_tokens={num_prefix_tokens}: must be >= 0.")
        self.max_wavelength = float(max_wavelength)

    def build(self, input_shape):
        expected = self.num_prefix_tokens + self.grid_height * self.grid_width
        if input_shape[1] is not None and int(input_shape[1]) != expected:
            raise ValueError(
                f"SinusoidalPosition2D: sequence length {input_shape[1]} != num_prefix_tokens + "
                f"grid_height * grid_width = {expected}."
            )
        table = sinusoid_2d_table(
            self.grid_height, self.grid_width, int(input_shape[-1]), self.max_wavelength
        )
        prefix = np.zeros((self.num_prefix_tokens, table.shape[1]), "float32")
        self._table = np.concatenate([prefix, table], axis=0)  # (L, d), not a weight
        self.built = True

    def call(self, x):
        return x + ops.cast(ops.convert_to_tensor(self._table), x.dtype)[None]  # (B, L, d)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "grid_height": self.grid_height,
            "grid_width": self.grid_width,
            "num_prefix_tokens": self.num_prefix_tokens,
            "max_wavelength": self.max_wavelength,
        }


def _grid_attention(attention, grid_height, grid_width, pooling):
    """Resolve ``attention``; a core that works on a token grid (``uses_token_grid``) gets the
    patch grid through its ``with_grid``."""
    core = attention_registry.fresh(attention)
    if not core.uses_token_grid:
        return core
    if pooling == "cls":
        raise ValueError(
            f"attention={core.variant!r} works on the patch grid, where a class token has no "
            "place; use pooling='mean' with it."
        )
    return core.with_grid(grid_height, grid_width)


@keras.saving.register_keras_serializable(package="keras_transformers")
class VisionTransformer(BackboneModel):
    """Vision Transformer classifier on the shared backbone (patches instead of tokens).

    ``VisionTransformer(**config)`` with the arguments of :func:`build_vit`. Parts:
    ``patch_embedding``, ``class_token`` (None with mean pooling), the backbone's
    ``position_embedding``, ``transformer_layers``, ``final_norm`` (``token_embedding`` is
    None), ``pooling`` and ``classifier_head``.
    """

    default_name = "vit"

    def build_graph(
        self,
        image_size,
        patch_size,
        num_classes,
        channels,
        d_model,
        attention,
        position,
        pooling,
        patch_embedding,
        dropout,
        **config,
    ):
        height, width = _pair("image_size", image_size)
        ph, pw = _pair("patch_size", patch_size)
        grid_h, grid_w = height // ph, width // pw
        prefix = 1 if pooling == "cls" else 0
        images = keras.Input(shape=(height, width, int(channels)), name="images")
        self.patch_embedding = PatchEmbedding(
            (ph, pw), d_model, mode=patch_embedding, name="patch_embedding"
        )
        x = self.patch_embedding(images)  # (B, N, d)
        self.class_token = ClassToken(name="class_token") if prefix else None
        if self.class_token is not None:
            x = self.class_token(x)  # (B, N + 1, d)
        position_layer = None
        if position == "sinusoid2d":
            position_layer = SinusoidalPosition2D(grid_h, grid_w, prefix, name="position_embedding")
        x = self.assemble_stack(
            "encoder",
            None,
            d_model=d_model,
            attention=_grid_attention(attention, grid_h, grid_w, pooling),
            position=None if position_layer is not None else position,
            dropout=dropout,
            embedded=x,
            max_length=grid_h * grid_w + prefix,
            position_layer=position_layer,
            layer_norm_epsilon=1e-6,
            **config,
        )  # (B, L, d)
        self.pooling = SequencePooling(pooling, name="pooling")
        pooled = keras.layers.Dropout(dropout, name="head_dropout")(self.pooling(x))
        self.classifier_head = keras.layers.Dense(num_classes, dtype="float32", name="logits")
        return images, self.classifier_head(pooled)  # (B, num_classes)


def build_vit(
    image_size,
    patch_size,
    num_classes,
    channels=3,
    d_model=64,
    num_heads=4,
    num_layers=4,
    ff_dim=None,
    attention="full",
    position="learned",
    pooling="cls",
    patch_embedding="conv",
    dropout=0.1,
    activation="gelu",
    norm_first=True,
    name="vit",
):
    """Build a Vision Transformer classifier (:class:`VisionTransformer`).

    Args:
        image_size: ``H`` or ``(H, W)``; must be a multiple of ``patch_size``.
        patch_size: ``p`` or ``(p_h, p_w)``.
        num_classes: output classes; the model returns logits ``(B, num_classes)``.
        channels: image channels ``C`` (1 for grayscale).
        d_model, num_heads, num_layers, ff_dim: sizes (``ff_dim`` defaults to ``4·d_model``).
        attention: any name in ``kt.attention.available()``, a config dict or an instance.
            A core on a token grid (``uses_token_grid``, e.g. ``"local2d"``: 2D local blocks)
            gets the patch grid (``with_grid``) and needs ``pooling="mean"``.
        position: ``"learned"`` (a trainable table over the tokens, class token included),
            ``"sinusoid2d"`` (fixed 2D sine-cosine table, ``d_model`` a multiple of 4), None, or
            any other name from ``kt.positional.available()`` (1D over the raster order).
        pooling: ``"cls"`` (class token) or ``"mean"`` (mean of the patch tokens).
        patch_embedding: ``"conv"`` or ``"reshape"`` (see :class:`PatchEmbedding`).
        dropout: embedding, residual and head dropout.

    Returns:
        :class:`VisionTransformer`: ``images (B, H, W, C) float -> logits (B, num_classes)``.

    Example:
        >>> from keras_transformers.models.vit import build_vit
        >>> model = build_vit(8, 2, 10, channels=1, d_model=32, num_heads=2, num_layers=2)
        >>> model.output_shape
        (None, 10)
    """
    config = dict(locals())
    height, width = _pair("image_size", image_size)
    ph, pw = _pair("patch_size", patch_size)
    if height % ph or width % pw:
        raise ValueError(
            f"image_size={image_size!r} is not divisible by patch_size={patch_size!r}: "
            f"({height}, {width}) must be a multiple of ({ph}, {pw})."
        )
    if int(channels) < 1:
        raise ValueError(f"channels={channels}: must be >= 1.")
    if int(num_classes) < 1:
        raise ValueError(f"num_classes={num_classes}: must be >= 1.")
    check_model_sizes(d_model, num_heads, num_layers)
    if pooling not in VIT_POOLING:
        raise ValueError(f"pooling={pooling!r}: allowed values are {', '.join(VIT_POOLING)}.")
    if patch_embedding not in PATCH_MODES:
        raise ValueError(
            f"patch_embedding={patch_embedding!r}: allowed values are {', '.join(PATCH_MODES)}."
        )
    if position == "sinusoid2d" and d_model % 4:
        raise ValueError(
            f"d_model={d_model}: position='sinusoid2d' needs a multiple of 4 (a sine and a "
            "cosine for the patch row and for the column)."
        )
    return VisionTransformer(**config)
