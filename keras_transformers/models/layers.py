"""Small layers the model builders compose: padding masks, pooling, embeddings."""

import keras
from keras import ops

from keras_transformers import positional


@keras.saving.register_keras_serializable(package="keras_transformers")
class PaddingMask(keras.layers.Layer):
    """``token_ids (B, L) -> (B, L)`` bool, True where ``token_ids != pad_id``."""

    def __init__(self, pad_id=0, **kwargs):
        super().__init__(**kwargs)
        self.pad_id = int(pad_id)

    def call(self, token_ids):
        return ops.not_equal(token_ids, self.pad_id)

    def compute_output_spec(self, token_ids):
        return keras.KerasTensor(token_ids.shape, dtype="bool")

    def get_config(self):
        return {**super().get_config(), "pad_id": self.pad_id}


POOLING = ("cls", "mean", "max")


@keras.saving.register_keras_serializable(package="keras_transformers")
class SequencePooling(keras.layers.Layer):
    """``(B, L, d) -> (B, d)``: first token (``cls``), masked mean or masked max."""

    def __init__(self, mode="mean", **kwargs):
        super().__init__(**kwargs)
        if mode not in POOLING:
            raise ValueError(f"pooling={mode!r}: allowed values are {', '.join(POOLING)}.")
        self.mode = mode

    def call(self, x, padding_mask=None):
        if self.mode == "cls":
            return x[:, 0]
        if padding_mask is None:
            return ops.mean(x, axis=1) if self.mode == "mean" else ops.max(x, axis=1)
        keep = ops.cast(padding_mask, x.dtype)[..., None]  # (B, L, 1)
        if self.mode == "mean":
            return ops.sum(x * keep, axis=1) / ops.maximum(ops.sum(keep, axis=1), 1.0)
        return ops.max(ops.where(keep > 0, x, ops.cast(-1e4, x.dtype)), axis=1)

    def compute_output_shape(self, x_shape, padding_mask_shape=None):
        return (x_shape[0], x_shape[-1])

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def resolve_position(position):
    """Split a builder's ``position=`` into (embedding-side layer or None, score-side spec or None).

    Score-side specs are returned as given so that every layer gets its own instance.
    """
    if position is None:
        return None, None
    probe = (
        positional.get(position)
        if not isinstance(position, positional.PositionalEncoding)
        else position
    )
    if probe.kind == "embedding":
        return probe, None
    return None, position


def embedding_position_layer(position, max_length, name):
    """Instantiate an embedding-side positional layer for ``max_length`` tokens."""
    if position is None:
        return None
    config = position.get_config()
    config.pop("name", None)
    if "max_length" in config:  # the table has exactly the builder's max_length rows
        config["max_length"] = int(max_length)
    config["name"] = name
    return position.__class__.from_config(config)


@keras.saving.register_keras_serializable(package="keras_transformers")
class ScaleEmbeddings(keras.layers.Layer):
    """``x (B, L, d) -> x · scale`` in the compute dtype (Gemma's ``sqrt(d_model)`` embedding
    scaling)."""

    def __init__(self, scale, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)
        self.supports_masking = True

    def call(self, x):
        return x * ops.cast(self.scale, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


@keras.saving.register_keras_serializable(package="keras_transformers")
class LogitSoftCap(keras.layers.Layer):
    """``logits -> c · tanh(logits / c)``: bounds the logits to ``(-c, c)`` (Gemma 2's final
    logit soft-capping), computed in float32."""

    def __init__(self, cap, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.cap = float(cap)
        if self.cap <= 0:
            raise ValueError(f"logit_soft_cap={cap}: must be > 0.")

    def call(self, logits):
        logits = ops.cast(logits, "float32")
        return ops.tanh(logits / self.cap) * self.cap

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "cap": self.cap}
