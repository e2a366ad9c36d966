"""A fixed-capacity store of ``(key, next token)`` pairs searched by exact kNN.

Shared by kNN-LM (:class:`~keras_transformers.memory.knn_lm.KNNLM`, Khandelwal et al., 2020) and
SPALM's episodic memory (:class:`~keras_transformers.memory.spalm.EpisodicMemory`, Yogatama et
al., 2021). The store lives in non-trainable variables, so it is saved with the model:

* ``keys (S, d)`` float32, ``next_tokens (S,)`` int32, ``valid (S,)`` int32 (0/1) and the write
  ``pointer ()`` int32.

Writes (:meth:`TokenDatastore.add`, eager, from numpy) are first-in-first-out: slot ``(p + n) mod
S`` takes the ``n``-th pair of a write starting at pointer ``p``; a write longer than ``S`` leaves
the store exactly as ``S``-slot one-by-one writes would (the newest ``S`` pairs, each in its slot).
Search (:meth:`TokenDatastore.search`) is exact and chunked
(:func:`~keras_transformers.memory.knn.top_k_search`), with gradients stopped.
"""

import keras
import numpy as np
from keras import ops

from keras_transformers.memory.knn import _check_positive_int, top_k_search


class TokenDatastore(keras.layers.Layer):
    """Base layer: the datastore variables, FIFO :meth:`add`, :meth:`clear`, :meth:`size`, :meth:`search`.

    Args:
        datastore_size: capacity ``S``.
        key_dim: ``d`` of the keys.
        top_k: neighbours ``k`` returned by a search.
        chunk_size: keys scored at once during a search.
        vocab_size: when given, :meth:`add` checks the tokens lie in ``[0, vocab_size)``.
    """

    def __init__(self, datastore_size, key_dim, top_k, chunk_size, vocab_size=None, **kwargs):
        super().__init__(**kwargs)
        self.datastore_size = _check_positive_int("datastore_size", datastore_size)
        self.key_dim = _check_positive_int("key_dim", key_dim)
        self.top_k = _check_positive_int("top_k", top_k)
        self.chunk_size = _check_positive_int("chunk_size", chunk_size)
        self._token_limit = vocab_size

    def build(self, input_shape=None):
        if self.built:
            return
        s = self.datastore_size
        self.keys = self.add_weight(
            name="keys", shape=(s, self.key_dim), initializer="zeros", trainable=False,
            dtype="float32",
        )  # fmt: skip
        self.next_tokens = self.add_weight(
            name="next_tokens", shape=(s,), initializer="zeros", trainable=False, dtype="int32"
        )
        self.valid = self.add_weight(
            name="valid", shape=(s,), initializer="zeros", trainable=False, dtype="int32"
        )
        self.pointer = self.add_weight(
            name="pointer", shape=(), initializer="zeros", trainable=False, dtype="int32"
        )
        self.built = True

    def clear(self):
        """Empty the store."""
        self.build()
        for var in (self.keys, self.next_tokens, self.valid, self.pointer):
            var.assign(np.zeros(var.shape, var.dtype))

    def add(self, keys, next_tokens):
        """Append pairs (numpy, eager): ``keys (n, d)``, ``next_tokens (n,)``; FIFO when full."""
        self.build()
        keys = np.asarray(keys, "float32").reshape(-1, self.key_dim)
        tokens = np.asarray(next_tokens).reshape(-1)
        if len(keys) != len(tokens):
            raise ValueError(
                f"keys has {len(keys)} rows but next_tokens has {len(tokens)}: one token per key."
            )
        limit = self._token_limit
        if limit is not None and len(tokens) and (tokens.min() < 0 or tokens.max() >= limit):
            raise ValueError(f"next_tokens must lie in [0, vocab_size={limit}).")
        s, total = self.datastore_size, len(keys)
        # one-by-one writes of `total` pairs would leave the newest S, the first of them at
        # slot (pointer + total - S) mod S
        start = (int(ops.convert_to_numpy(self.pointer)) + max(total - s, 0)) % s
        keys, tokens = keys[-s:], tokens[-s:]
        slots = (start + np.arange(len(keys))) % s
        store = {}
        for name in ("keys", "next_tokens", "valid"):
            store[name] = np.array(ops.convert_to_numpy(getattr(self, name)))
        store["keys"][slots] = keys
        store["next_tokens"][slots] = tokens
        store["valid"][slots] = 1
        for name, value in store.items():
            getattr(self, name).assign(value)
        self.pointer.assign(np.int32((start + len(keys)) % s))

    def size(self):
        """Number of filled slots."""
        return int(np.asarray(ops.convert_to_numpy(self.valid)).sum())

    def search(self, queries, metric):
        """``queries (..., d)`` -> ``(scores, next_tokens int32, found bool)``, each ``(..., k)``.

        Nearest first; ``metric`` ``"squared_l2"`` (scores are ``−‖q − k‖²``) or ``"dot"``.
        """
        self.build()
        q = ops.stop_gradient(ops.cast(queries, "float32"))  # (..., d)
        scores, index, found = top_k_search(
            q,
            ops.convert_to_tensor(self.keys),
            self.top_k,
            valid=ops.convert_to_tensor(self.valid),
            chunk_size=self.chunk_size,
            metric=metric,
        )  # (..., k)
        tokens = ops.take(ops.convert_to_tensor(self.next_tokens), index, axis=0)  # (..., k)
        return scores, ops.cast(tokens, "int32"), found

    def get_config(self):
        return {
            **super().get_config(),
            "datastore_size": self.datastore_size,
            "key_dim": self.key_dim,
            "top_k": self.top_k,
            "chunk_size": self.chunk_size,
        }
