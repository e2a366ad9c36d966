"""Input pipelines for ``fit()``: ``tf.data`` datasets or backend-neutral ``keras.utils.PyDataset``.

The loaders in this package return numpy arrays; these functions wrap them into batched,
optionally shuffled pipelines for the three kinds of user data:

- :func:`lm_dataset`: a text file or a folder of text files -> next-token windows;
- :func:`classification_dataset`: a CSV/TSV/JSONL file or one folder per class -> (ids, label);
- :func:`seq2seq_dataset`: a TSV file of ``source<TAB>target`` pairs -> ((src, tgt_in), tgt_out).

``format="tf"`` (default) gives a ``tf.data.Dataset`` (shuffled each epoch with a fixed seed,
prefetched); ``format="pydataset"`` a ``keras.utils.PyDataset`` that needs no TensorFlow and feeds
the JAX and PyTorch backends directly. Both are accepted by ``model.fit`` on every backend.
Missing files, empty files, missing columns and a label column with one class raise a clear
error from the underlying loader.

Example:
    >>> import keras_transformers as kt
    >>> train, val = kt.data.lm_dataset(None, kt.data.ByteTokenizer(), seq_len=32, batch_size=8,
    ...                                 max_chars=5000)
    >>> x, y = next(iter(train))
    >>> tuple(x.shape), tuple(y.shape)
    ((8, 32), (8, 32))
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any

import numpy as np

from keras_transformers.data.classification import (
    encode_texts,
    load_class_folders,
    load_classification_file,
)
from keras_transformers.data.seq2seq import encode_pairs, load_tsv_pairs
from keras_transformers.data.text import builtin_text, load_text, make_lm_windows, train_val_split

FORMATS = ("tf", "pydataset")


def _check_format(format: str) -> str:
    if format not in FORMATS:
        raise ValueError(f"format={format!r}: allowed values are {', '.join(FORMATS)}")
    return format


def _num(x: Any) -> int:
    if isinstance(x, dict):
        return len(next(iter(x.values())))
    if isinstance(x, (tuple, list)):
        return len(x[0])
    return len(x)


def _take(x: Any, rows: np.ndarray) -> Any:
    if isinstance(x, dict):
        return {k: v[rows] for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return tuple(v[rows] for v in x)
    return x[rows]


def make_pipeline(
    x: Any,
    y: Any = None,
    batch_size: int = 32,
    shuffle: bool = False,
    seed: int = 0,
    drop_remainder: bool = False,
    format: str = "tf",
):
    """Batch numpy arrays (``x`` may be a tuple or dict of arrays) into a pipeline.

    Args:
        x, y: inputs and targets with examples on axis 0 (``y`` may be None).
        batch_size: examples per batch.
        shuffle: reshuffle every epoch (seeded: epoch ``e`` uses ``(seed, e)``).
        drop_remainder: drop the last incomplete batch (static batch size, e.g. for XLA).
        format: ``"tf"`` (``tf.data.Dataset``) or ``"pydataset"`` (``keras.utils.PyDataset``).
    """
    _check_format(format)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size={batch_size}: must be >= 1")
    if y is not None and _num(x) != _num(y):
        raise ValueError(f"x has {_num(x)} examples but y has {_num(y)}")
    if format == "pydataset":
        return _pydataset_class()(
            x, y, batch_size, shuffle=shuffle, seed=seed, drop_remainder=drop_remainder
        )
    import tensorflow as tf

    features = tuple(x) if isinstance(x, list) else x
    dataset = tf.data.Dataset.from_tensor_slices(features if y is None else (features, y))
    if shuffle:
        dataset = dataset.shuffle(_num(x), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(int(batch_size), drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


@functools.cache
def _pydataset_class():
    """The ``keras.utils.PyDataset`` subclass, defined on first use (Keras imported lazily)."""
    import keras

    class _ArrayPyDataset(keras.utils.PyDataset):
        """Batches of numpy arrays; reshuffled (seeded) at the end of every epoch."""

        def __init__(self, x, y, batch_size, shuffle=False, seed=0, drop_remainder=False):
            super().__init__()
            self.x, self.y = x, y
            self.batch_size = int(batch_size)
            self.shuffle, self.seed = bool(shuffle), int(seed)
            self.drop_remainder = bool(drop_remainder)
            self.epoch = 0
            self._order()

        def _order(self):
            count = _num(self.x)
            self.rows = (
                np.random.default_rng([self.seed, self.epoch]).permutation(count)
                if self.shuffle
                else np.arange(count)
            )

        def __len__(self):
            count = _num(self.x)
            if self.drop_remainder:
                return count // self.batch_size
            return math.ceil(count / self.batch_size)

        def __getitem__(self, index):
            rows = self.rows[index * self.batch_size : (index + 1) * self.batch_size]
            batch_x = _take(self.x, rows)
            return batch_x if self.y is None else (batch_x, _take(self.y, rows))

        def on_epoch_end(self):
            self.epoch += 1
            self._order()

    return _ArrayPyDataset


def lm_dataset(
    path: str | os.PathLike | None,
    tokenizer,
    seq_len: int,
    batch_size: int = 32,
    val_fraction: float = 0.1,
    stride: int | None = None,
    max_chars: int | None = 200_000,
    seed: int = 0,
    format: str = "tf",
):
    """Next-token windows from a text file or folder (``None``: the built-in text).

    The token stream is split before windowing (the last ``val_fraction`` of it validates), so
    no validation text is seen in training.

    Returns:
        ``(train, validation)`` pipelines of ``(x (B, seq_len), y (B, seq_len))`` int32 batches.
    """
    _check_format(format)
    text = builtin_text(max_chars=max_chars, seed=seed) if path is None else load_text(path)
    ids = np.asarray(tokenizer.encode(text), np.int32)  # (T,)
    num_val = max(int(round(ids.size * val_fraction)), seq_len + 1) if val_fraction else 0
    if ids.size - num_val < seq_len + 1:
        raise ValueError(
            f"{path or 'built-in text'} has {ids.size} tokens: too few for seq_len={seq_len} "
            f"with val_fraction={val_fraction}"
        )
    train = make_lm_windows(ids[: ids.size - num_val], seq_len, stride=stride)
    pipelines = [make_pipeline(*train, batch_size, shuffle=True, seed=seed, format=format)]
    if num_val:
        val = make_lm_windows(ids[ids.size - num_val :], seq_len)
        pipelines.append(make_pipeline(*val, batch_size, format=format))
    else:
        pipelines.append(None)
    return tuple(pipelines)


def classification_dataset(
    path: str | os.PathLike,
    tokenizer,
    seq_len: int,
    batch_size: int = 32,
    text_column: str = "text",
    label_column: str = "label",
    val_fraction: float = 0.1,
    seed: int = 0,
    format: str = "tf",
):
    """Labelled texts from a CSV/TSV/JSONL file or a folder with one sub-folder per class.

    Returns:
        ``(train, validation, class_names)``; batches are ``(ids (B, seq_len), label (B,))``.
    """
    _check_format(format)
    if os.path.isdir(path):
        texts, labels, class_names = load_class_folders(path, seed=seed)
    else:
        texts, labels, class_names = load_classification_file(
            path, text_column=text_column, label_column=label_column
        )
    ids = encode_texts(tokenizer, list(texts), seq_len)  # (N, seq_len)
    (x_train, y_train), (x_val, y_val) = train_val_split(
        ids, np.asarray(labels), val_fraction=val_fraction, seed=seed
    )
    train = make_pipeline(x_train, y_train, batch_size, shuffle=True, seed=seed, format=format)
    val = make_pipeline(x_val, y_val, batch_size, format=format) if len(y_val) else None
    return train, val, class_names


def seq2seq_dataset(
    path: str | os.PathLike,
    src_tokenizer,
    tgt_tokenizer,
    src_length: int,
    tgt_length: int,
    batch_size: int = 32,
    val_fraction: float = 0.1,
    seed: int = 0,
    format: str = "tf",
):
    """``source<TAB>target`` pairs for teacher forcing.

    Returns:
        ``(train, validation)`` of ``((encoder_ids, decoder_input_ids), decoder_target_ids)``.
    """
    _check_format(format)
    sources, targets = load_tsv_pairs(path)
    enc, dec_in, dec_out = encode_pairs(
        src_tokenizer, tgt_tokenizer, sources, targets, src_length, tgt_length
    )
    (x_train, y_train), (x_val, y_val) = train_val_split(
        (enc, dec_in), dec_out, val_fraction=val_fraction, seed=seed
    )
    train = make_pipeline(x_train, y_train, batch_size, shuffle=True, seed=seed, format=format)
    val = make_pipeline(x_val, y_val, batch_size, format=format) if len(y_val) else None
    return train, val
