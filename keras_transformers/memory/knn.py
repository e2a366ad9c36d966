"""Non-differentiable kNN memory of (key, value) pairs (Memorizing Transformer, Wu et al., 2022).

The memory is an external store, not a learned parameter: keys and values are written with
``stop_gradient`` into non-trainable Keras variables of a fixed capacity ``m`` and read back by exact
top-k search on the dot-product similarity ``q · k``. Writes are first-in-first-out: a write pointer
walks round the ``m`` slots and the oldest entries are overwritten once the memory is full.

One memory per batch row (the paper keeps one memory per document, and the documents of a batch are
processed side by side, row ``b`` of consecutive batches being consecutive segments of document ``b``)
and per head (the paper retrieves with each head's own query/key). So the batch size is fixed when the
memory is built. A query of row ``b`` and head ``i`` only searches the memory of row ``b``, head ``i``.

Search is exact and chunked: the memory is scanned ``chunk_size`` slots at a time, and the running
top-k is merged with each chunk's top-k, so the ``(Lq, m)`` similarity matrix is never materialised
at once for a memory larger than one chunk (the chunk loop is a static Python loop: ``ceil(m /
chunk_size)`` steps in the traced graph). That exact search is the default (``index="exact"``) and
runs inside compiled ``fit()`` on every backend.

``index="faiss"`` searches with a FAISS index (``faiss-cpu``, optional; the paper uses an
approximate index for stores of 262K tokens) built from the valid slots of each row and head at
search time: ``faiss_factory="Flat"`` (default) is FAISS's exact inner-product search (same top-k
as ``"exact"``, BLAS on the CPU), any other ``faiss.index_factory`` string (``"HNSW32"``, ...)
an approximate one. FAISS runs on numpy arrays, outside any graph, so the model must run eagerly
(``compile(run_eagerly=True)``; the PyTorch backend is eager by default); a traced call raises a
``RuntimeError`` that says so. Shape inference while a Functional model is built uses the exact
path (same shapes).

Shapes (``B`` batch, ``h`` heads, ``m`` capacity, ``dh`` head size, ``k`` neighbours):
stored keys/values ``(B, h, m, dh)``; slot validity ``(B, m)`` (0/1); queries ``(B, Lq, h, dh)``;
retrieved keys/values ``(B, Lq, h, k, dh)``; retrieved validity ``(B, Lq, h, k)`` bool.

Cost: a search is ``O(B·h·Lq·m·dh)`` time and ``O(B·h·Lq·(chunk_size + k))`` extra memory; a write
of ``L`` entries rewrites the ``m`` slots with one gather/select, ``O(B·h·m·dh)``.

Example:
    >>> import numpy as np
    >>> from keras_transformers.memory.knn import KNNMemory
    >>> mem = KNNMemory(memory_size=8, num_heads=2, key_dim=4, batch_size=1)
    >>> mem.build()
    >>> keys = np.random.rand(1, 5, 2, 4).astype("float32")
    >>> mem.write(keys, keys)
    >>> k, v, valid = mem.retrieve(keys, top_k=3)
    >>> tuple(k.shape), int(np.asarray(valid).sum())
    ((1, 5, 2, 3, 4), 30)
"""

import keras
import numpy as np
from keras import ops
from keras.src.backend.common.symbolic_scope import in_symbolic_scope

from keras_transformers.memory.state import StatefulMemory

INDEXES = ("exact", "faiss")

# Similarity given to empty (or masked) slots: far below any real score, still finite in float32.
_EMPTY_SCORE = -1e30
_VALID_THRESHOLD = -1e29


def _check_positive_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r}: must be an integer >= {minimum}.")
    return int(value)


def top_k_search(queries, keys, top_k, valid=None, chunk_size=4096, metric="dot"):
    """Exact top-k search of ``queries`` among ``keys``, scanning the keys in chunks.

    Args:
        queries: ``(..., Lq, d)``.
        keys: ``(..., S, d)`` (leading axes broadcast against the queries' ones).
        top_k: ``k`` (static int). If ``S < k`` the missing neighbours are returned as invalid.
        valid: bool or 0/1 ``(..., S)`` marking the keys that can be returned, or None (all).
        chunk_size: keys scored at once; the ``(Lq, S)`` similarity is never built for ``S >
            chunk_size``.
        metric: ``"dot"`` (similarity ``q·k``) or ``"squared_l2"`` (similarity ``-|q-k|²``).

    Returns:
        ``(scores (..., Lq, k), indices (..., Lq, k) int32, found (..., Lq, k) bool)``, sorted by
        decreasing similarity. ``found`` is False for neighbours that do not exist (empty slots).
    """
    if metric not in ("dot", "squared_l2"):
        raise ValueError(f"metric={metric!r}: allowed values are 'dot', 'squared_l2'.")
    top_k = _check_positive_int("top_k", top_k)
    chunk_size = _check_positive_int("chunk_size", chunk_size)
    size = keys.shape[-2]
    queries = ops.cast(queries, "float32")
    keys = ops.cast(keys, "float32")
    if metric == "squared_l2":
        q_sq = ops.sum(ops.square(queries), axis=-1, keepdims=True)  # (..., Lq, 1)
    best_scores = best_index = None
    for start in range(0, size, chunk_size):
        stop = min(start + chunk_size, size)
        chunk = keys[..., start:stop, :]  # (..., c, d)
        scores = ops.matmul(queries, ops.swapaxes(chunk, -1, -2))  # (..., Lq, c)
        if metric == "squared_l2":
            k_sq = ops.sum(ops.square(chunk), axis=-1)[..., None, :]  # (..., 1, c)
            scores = -ops.maximum(q_sq - 2.0 * scores + k_sq, 0.0)
        if valid is not None:
            ok = ops.cast(valid[..., start:stop], "bool")[..., None, :]  # (..., 1, c)
            scores = ops.where(ok, scores, _EMPTY_SCORE)
        kk = min(top_k, stop - start)
        scores, index = ops.top_k(scores, kk)  # (..., Lq, kk)
        index = ops.cast(index, "int32") + start
        if best_scores is not None:
            scores = ops.concatenate([best_scores, scores], axis=-1)
            index = ops.concatenate([best_index, index], axis=-1)
            kk = min(top_k, scores.shape[-1])
            scores, pick = ops.top_k(scores, kk)
            index = ops.take_along_axis(index, pick, axis=-1)
        best_scores, best_index = scores, index
    missing = top_k - best_scores.shape[-1]
    if missing > 0:  # fewer keys than neighbours asked for: pad with invalid entries
        pad = [[0, 0]] * (len(best_scores.shape) - 1) + [[0, missing]]
        best_scores = ops.pad(best_scores, pad, constant_values=_EMPTY_SCORE)
        best_index = ops.pad(best_index, pad, constant_values=0)
    found = best_scores > _VALID_THRESHOLD
    return best_scores, best_index, found


@keras.saving.register_keras_serializable(package="keras_transformers")
class KNNMemory(keras.layers.Layer, StatefulMemory):
    """FIFO store of per-row, per-head (key, value) pairs with exact chunked top-k retrieval.

    Args:
        memory_size: capacity ``m`` (slots per batch row and head).
        num_heads: ``h``.
        key_dim: ``dh`` of the keys.
        batch_size: ``B`` (fixed: one memory per batch row).
        value_dim: size of the values (defaults to ``key_dim``).
        chunk_size: memory slots scored at once during a search.
        index: ``"exact"`` (chunked ``keras.ops`` top-k, the default) or ``"faiss"`` (eager only,
            needs ``faiss-cpu``).
        faiss_factory: the ``faiss.index_factory`` description with ``index="faiss"``
            (``"Flat"``: exact).

    State (non-trainable variables, saved with the model): ``keys (B, h, m, dh)``,
    ``values (B, h, m, dv)``, ``valid (B, m)`` and the scalar write ``pointer``.
    """

    def __init__(
        self,
        memory_size,
        num_heads,
        key_dim,
        batch_size,
        value_dim=None,
        chunk_size=4096,
        index="exact",
        faiss_factory="Flat",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if index not in INDEXES:
            raise ValueError(f"index={index!r}: allowed values are {', '.join(INDEXES)}.")
        if index == "faiss":
            try:
                import faiss  # noqa: F401
            except ImportError as error:
                raise ImportError(
                    "index='faiss' needs the faiss-cpu package (pip install faiss-cpu)."
                ) from error
        self.index = index
        self.faiss_factory = str(faiss_factory)
        self.memory_size = _check_positive_int("memory_size", memory_size)
        self.num_heads = _check_positive_int("num_heads", num_heads)
        self.key_dim = _check_positive_int("key_dim", key_dim)
        self.batch_size = _check_positive_int("batch_size", batch_size)
        self.value_dim = _check_positive_int(
            "value_dim", key_dim if value_dim is None else value_dim
        )
        self.chunk_size = _check_positive_int("chunk_size", chunk_size)

    def build(self, input_shape=None):
        if self.built:
            return
        b, h, m = self.batch_size, self.num_heads, self.memory_size
        self.keys = self.add_weight(
            name="keys", shape=(b, h, m, self.key_dim), initializer="zeros", trainable=False
        )
        self.values = self.add_weight(
            name="values", shape=(b, h, m, self.value_dim), initializer="zeros", trainable=False
        )
        self.valid = self.add_weight(
            name="valid", shape=(b, m), initializer="zeros", trainable=False, dtype="int32"
        )
        self.pointer = self.add_weight(
            name="pointer", shape=(), initializer="zeros", trainable=False, dtype="int32"
        )
        self.built = True

    def _check_batch(self, x, name):
        if x.shape[0] is not None and x.shape[0] != self.batch_size:
            raise ValueError(
                f"{name} has batch size {x.shape[0]}, but this KNNMemory holds one memory per "
                f"batch row for batch_size={self.batch_size}; feed batches of exactly that size."
            )

    def clear(self):
        """Empty the memory (all slots invalid, pointer back to 0)."""
        self.build()
        for var in (self.keys, self.values, self.valid, self.pointer):
            var.assign(ops.zeros(var.shape, var.dtype))

    reset = clear
    reset_memory = clear  # the StatefulMemory interface (see keras_transformers.memory.state)

    def write(self, keys, values, mask=None):
        """Append ``L`` entries per row/head, overwriting the oldest once the memory is full.

        Args:
            keys: ``(B, L, h, dh)``; values ``(B, L, h, dv)`` (gradients are stopped).
            mask: ``(B, L)`` bool or None. Masked positions still take a slot (the FIFO order
                stays one slot per position) but the slot is marked empty.
        """
        self.build()
        self._check_batch(keys, "keys")
        length = keys.shape[1]
        m = self.memory_size
        # convert first: numpy input reaches write() directly (it is not a Layer.__call__), and the
        # PyTorch backend's stop_gradient only accepts tensors
        keys = ops.cast(ops.stop_gradient(ops.convert_to_tensor(keys)), self.keys.dtype)
        values = ops.cast(ops.stop_gradient(ops.convert_to_tensor(values)), self.values.dtype)
        pointer = ops.convert_to_tensor(self.pointer)
        # Slot s receives position t = the last t < L with (pointer + t) mod m == s, if any.
        offset = ops.mod(ops.arange(m, dtype="int32") - pointer + m, m)  # (m,)
        written = offset < length  # (m,)
        source = offset + m * ops.floor_divide(ops.maximum(length - 1 - offset, 0), m)
        source = ops.clip(source, 0, length - 1)  # (m,)
        new_keys = ops.transpose(ops.take(keys, source, axis=1), (0, 2, 1, 3))  # (B, h, m, dh)
        new_values = ops.transpose(ops.take(values, source, axis=1), (0, 2, 1, 3))
        if mask is None:
            new_valid = ops.ones((self.batch_size, m), "int32")
        else:
            new_valid = ops.take(ops.cast(mask, "int32"), source, axis=1)  # (B, m)
        w4 = written[None, None, :, None]
        self.keys.assign(ops.where(w4, new_keys, ops.convert_to_tensor(self.keys)))
        self.values.assign(ops.where(w4, new_values, ops.convert_to_tensor(self.values)))
        self.valid.assign(ops.where(written[None, :], new_valid, ops.convert_to_tensor(self.valid)))
        self.pointer.assign(ops.mod(pointer + length, m))

    def retrieve(self, queries, top_k, return_scores=False):
        """Exact top-k neighbours of each query by dot product, in its own row and head.

        Args:
            queries: ``(B, Lq, h, dh)``.
            top_k: ``k``.
            return_scores: also return the similarities ``(B, Lq, h, k)`` and the slot indices.

        Returns:
            ``(keys (B, Lq, h, k, dh), values (B, Lq, h, k, dv), valid (B, Lq, h, k) bool)``
            [+ ``(scores, indices)``]; neighbours sorted by decreasing similarity. Invalid
            entries (empty slots) hold arbitrary stored data and must be masked by the caller.
        """
        self.build()
        self._check_batch(queries, "queries")
        if self.index == "faiss" and not in_symbolic_scope():
            return self._retrieve_faiss(queries, top_k, return_scores)
        queries = ops.convert_to_tensor(queries)
        q = ops.stop_gradient(ops.transpose(queries, (0, 2, 1, 3)))  # (B, h, Lq, dh)
        mem_keys = ops.convert_to_tensor(self.keys)  # (B, h, m, dh)
        mem_values = ops.convert_to_tensor(self.values)
        valid = ops.convert_to_tensor(self.valid)[:, None, :]  # (B, 1, m)
        scores, index, found = top_k_search(
            q, mem_keys, top_k, valid=valid, chunk_size=self.chunk_size
        )  # (B, h, Lq, k)
        b, h, lq, k = index.shape
        flat = ops.reshape(index, (b, h, lq * k, 1))  # (B, h, Lq·k, 1)
        got_k = ops.take_along_axis(
            mem_keys, ops.broadcast_to(flat, (b, h, lq * k, self.key_dim)), axis=2
        )
        got_v = ops.take_along_axis(
            mem_values, ops.broadcast_to(flat, (b, h, lq * k, self.value_dim)), axis=2
        )
        got_k = ops.transpose(ops.reshape(got_k, (b, h, lq, k, -1)), (0, 2, 1, 3, 4))
        got_v = ops.transpose(ops.reshape(got_v, (b, h, lq, k, -1)), (0, 2, 1, 3, 4))
        found = ops.transpose(found, (0, 2, 1, 3))  # (B, Lq, h, k)
        dtype = keras.backend.standardize_dtype(queries.dtype)
        out = (ops.cast(got_k, dtype), ops.cast(got_v, dtype), found)
        if return_scores:
            return out + (
                ops.transpose(scores, (0, 2, 1, 3)),
                ops.transpose(index, (0, 2, 1, 3)),
            )
        return out

    def _faiss_search(self, queries, keys, top_k):
        """FAISS top-k by inner product: ``queries (Lq, dh)``, ``keys (n, dh)`` -> scores, ids."""
        import faiss

        index = faiss.index_factory(keys.shape[1], self.faiss_factory, faiss.METRIC_INNER_PRODUCT)
        if not index.is_trained:
            index.train(keys)
        index.add(keys)
        return index.search(queries, min(top_k, len(keys)))  # (Lq, k'), ids -1 if missing

    def _retrieve_faiss(self, queries, top_k, return_scores):
        """:meth:`retrieve` with a FAISS index per row and head, on numpy arrays (eager)."""
        top_k = _check_positive_int("top_k", top_k)
        try:
            q = np.ascontiguousarray(ops.convert_to_numpy(queries), dtype="float32")
        except Exception as error:  # a traced tensor (tf.function, jax.jit, torch.compile)
            raise RuntimeError(
                "KNNMemory(index='faiss') searches numpy arrays outside the graph: run the model "
                "eagerly (model.compile(..., run_eagerly=True), or the PyTorch backend), or use "
                "index='exact'."
            ) from error
        dtype = keras.backend.standardize_dtype(queries.dtype)
        mem_keys = ops.convert_to_numpy(self.keys)  # (B, h, m, dh)
        mem_values = ops.convert_to_numpy(self.values)
        valid = ops.convert_to_numpy(self.valid).astype(bool)  # (B, m)
        b, lq, h, _ = q.shape
        scores = np.full((b, lq, h, top_k), _EMPTY_SCORE, "float32")
        index = np.zeros((b, lq, h, top_k), "int32")
        for row in range(b):
            slots = np.flatnonzero(valid[row])  # (n,)
            if not len(slots):
                continue
            for head in range(h):
                keys = np.ascontiguousarray(mem_keys[row, head, slots], dtype="float32")
                got_scores, got_ids = self._faiss_search(q[row, :, head], keys, top_k)
                kk = got_ids.shape[1]
                ok = got_ids >= 0
                scores[row, :, head, :kk] = np.where(ok, got_scores, _EMPTY_SCORE)
                index[row, :, head, :kk] = np.where(ok, slots[np.maximum(got_ids, 0)], 0)
        found = scores > _VALID_THRESHOLD
        rows = np.arange(b)[:, None, None, None]
        heads = np.arange(h)[None, None, :, None]
        got_k = mem_keys[rows, heads, index]  # (B, Lq, h, k, dh)
        got_v = mem_values[rows, heads, index]
        out = (
            ops.convert_to_tensor(got_k, dtype),
            ops.convert_to_tensor(got_v, dtype),
            ops.convert_to_tensor(found),
        )
        if return_scores:
            return out + (ops.convert_to_tensor(scores), ops.convert_to_tensor(index))
        return out

    def call(self, queries, top_k=1):
        return self.retrieve(queries, top_k)

    def size(self):
        """Number of valid (filled, unmasked) slots per batch row, ``(B,)``."""
        return ops.sum(ops.convert_to_tensor(self.valid), axis=1)

    def get_config(self):
        return {
            **super().get_config(),
            "memory_size": self.memory_size,
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "batch_size": self.batch_size,
            "value_dim": self.value_dim,
            "chunk_size": self.chunk_size,
            "index": self.index,
            "faiss_factory": self.faiss_factory,
        }
