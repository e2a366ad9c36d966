"""SPALM's long-term episodic memory and its learned gate (Yogatama, de Masson d'Autume & Kong,
2021, "Adaptive semiparametric language models", TACL).

SPALM reads a context with three memories: the tokens of the current segment (the transformer's
own attention), a Transformer-XL short-term memory of the previous segments' hidden states, and a
long-term *episodic* memory of ``(key, next token)`` pairs from a large datastore, searched with
k nearest neighbours as in kNN-LM. The top layer's hidden state ``h^R_t`` is the query; the ``k``
retrieved next tokens ``y_1..y_k`` are embedded with the word embeddings (shared with the input and
the output) and merged with ``h^R_t`` by a learned, context-dependent gate:

``m_t = Σ_i softmax_i(y_iᵀ h^R_t) · y_i``   (the neighbours' distances are not used)
``g_t = σ(w_gᵀ h^R_t)``                     (one scalar per position)
``z_t = (1 − g_t) · m_t + g_t · h^R_t``
``p(x_{t+1} | x_{≤t}) = softmax(z_t Wᵀ)``   (``W`` the word-embedding matrix)

``g_t → 1`` ignores the memory (``z_t = h^R_t``); ``m_t`` is a convex combination of the ``y_i``.
A position whose search finds nothing (an empty store) uses ``z_t = h^R_t``. The keys are fixed
(the paper takes them from a pretrained LM: :func:`keras_transformers.models.spalm.build_spalm_datastore`
fills the store with the trained model's own hidden states); the value encoder, i.e. the word
embeddings, keeps training through ``y_i``.

Shapes (``B`` batch, ``L`` length, ``d`` model size, ``S`` store size, ``k`` neighbours):
store keys ``(S, d)``, next tokens ``(S,)``; hidden ``(B, L, d)`` -> neighbour ids ``(B, L, k)``
and validity ``(B, L, k)``; embedded neighbours ``(B, L, k, d)`` -> ``z (B, L, d)``, gate
``(B, L, 1)``. Cost per position: exact chunked search ``O(S·d)`` + ``O(k·d)`` for the gate.

Example:
    >>> import numpy as np
    >>> from keras_transformers.memory.spalm import SPALMGate
    >>> gate = SPALMGate()
    >>> h = np.random.rand(1, 3, 4).astype("float32")
    >>> y = np.ones((1, 3, 2, 4), "float32")          # two identical neighbours
    >>> z, g = gate(h, y, np.ones((1, 3, 2), bool))
    >>> tuple(z.shape), tuple(g.shape)
    ((1, 3, 4), (1, 3, 1))
"""

import keras
import numpy as np
from keras import ops

from keras_transformers.memory.knn import _check_positive_int, top_k_search
from keras_transformers.ops.attention import masked_softmax

METRICS = ("squared_l2", "dot")


@keras.saving.register_keras_serializable(package="keras_transformers")
class EpisodicMemory(keras.layers.Layer):
    """SPALM's long-term memory: a store of ``(context key, next token)`` pairs searched by kNN.

    Call ``memory(hidden (B, L, d))`` -> ``(token_ids (B, L, k) int32, found (B, L, k) bool)``,
    the next tokens of the ``k`` nearest keys (exact chunked top-k, gradients stopped), sorted
    nearest first. The store is filled outside the graph with :meth:`add` (FIFO once full) and
    saved with the model (non-trainable variables); it is *not* a ``StatefulMemory``: a
    ``MemoryReset`` leaves it alone.

    Args:
        datastore_size: capacity ``S``.
        key_dim: ``d`` of the keys.
        top_k: neighbours ``k``.
        metric: ``"squared_l2"`` (nearest by L2 distance, as kNN-LM) or ``"dot"``.
        chunk_size: keys scored at once during a search.
    """

    def __init__(
        self, datastore_size, key_dim, top_k=4, metric="squared_l2", chunk_size=4096, **kwargs
    ):
        super().__init__(**kwargs)
        self.datastore_size = _check_positive_int("datastore_size", datastore_size)
        self.key_dim = _check_positive_int("key_dim", key_dim)
        self.top_k = _check_positive_int("top_k", top_k)
        if metric not in METRICS:
            raise ValueError(f"metric={metric!r}: allowed values are {', '.join(METRICS)}.")
        self.metric = metric
        self.chunk_size = _check_positive_int("chunk_size", chunk_size)

    def build(self, input_shape=None):
        if self.built:
            return
        s = self.datastore_size
        self.keys = self.add_weight(
            name="keys", shape=(s, self.key_dim), initializer="zeros", trainable=False
        )
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
        """Append pairs (numpy, eager): ``keys (N, d)``, ``next_tokens (N,)``; FIFO when full."""
        self.build()
        keys = np.asarray(keys, "float32").reshape(-1, self.key_dim)
        tokens = np.asarray(next_tokens, "int32").reshape(-1)
        if len(keys) != len(tokens):
            raise ValueError(f"keys has {len(keys)} rows but next_tokens has {len(tokens)}.")
        s = self.datastore_size
        if len(keys) > s:  # only the newest S survive
            keys, tokens = keys[-s:], tokens[-s:]
        start = int(ops.convert_to_numpy(self.pointer))
        slots = (start + np.arange(len(keys))) % s
        all_keys = ops.convert_to_numpy(self.keys).copy()
        all_tokens = ops.convert_to_numpy(self.next_tokens).copy()
        valid = ops.convert_to_numpy(self.valid).copy()
        all_keys[slots], all_tokens[slots], valid[slots] = keys, tokens, 1
        self.keys.assign(all_keys)
        self.next_tokens.assign(all_tokens)
        self.valid.assign(valid)
        self.pointer.assign(np.array((start + len(keys)) % s, "int32"))

    def size(self):
        """Number of filled slots."""
        return int(ops.convert_to_numpy(self.valid).sum())

    def call(self, hidden):
        q = ops.stop_gradient(ops.cast(hidden, "float32"))  # (B, L, d)
        _, index, found = top_k_search(
            q,
            ops.convert_to_tensor(self.keys),
            self.top_k,
            valid=ops.convert_to_tensor(self.valid),
            chunk_size=self.chunk_size,
            metric=self.metric,
        )  # (B, L, k)
        tokens = ops.take(ops.convert_to_tensor(self.next_tokens), index, axis=0)  # (B, L, k)
        return ops.cast(tokens, "int32"), found

    def compute_output_spec(self, hidden):
        shape = (*hidden.shape[:-1], self.top_k)
        return keras.KerasTensor(shape, "int32"), keras.KerasTensor(shape, "bool")

    def get_config(self):
        return {
            **super().get_config(),
            "datastore_size": self.datastore_size,
            "key_dim": self.key_dim,
            "top_k": self.top_k,
            "metric": self.metric,
            "chunk_size": self.chunk_size,
        }


@keras.saving.register_keras_serializable(package="keras_transformers")
class SPALMGate(keras.layers.Layer):
    """The SPALM gate: ``z = (1 − g)·m + g·h`` with ``m = Σ softmax(yᵀh)·y``, ``g = σ(w_gᵀh)``.

    Call ``gate(hidden (B, L, d), neighbours (B, L, k, d), found (B, L, k) bool)`` -> ``(z (B, L,
    d), g (B, L, 1))``; with ``return_memory=True`` also ``m (B, L, d)``. Where nothing was found
    ``g = 1`` (so ``z = h``). ``w_g`` is the only weight (``(d, 1)``, no bias, as in the paper).

    Args:
        kernel_initializer: of ``w_g``.
    """

    def __init__(self, kernel_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.kernel_initializer = keras.initializers.serialize(
            keras.initializers.get(kernel_initializer)
        )

    def build(self, hidden_shape, neighbours_shape=None, found_shape=None):
        self.kernel = self.add_weight(
            name="gate_kernel",
            shape=(int(hidden_shape[-1]), 1),
            initializer=keras.initializers.get(self.kernel_initializer),
        )
        self.built = True

    def call(self, hidden, neighbours, found, return_memory=False):
        found = ops.cast(found, "bool")  # (B, L, k)
        scores = ops.sum(neighbours * hidden[:, :, None, :], axis=-1)  # (B, L, k): y_iᵀ h
        weights = masked_softmax(ops.cast(scores, "float32"), found)  # (B, L, k)
        weights = ops.cast(weights, hidden.dtype)
        memory = ops.sum(weights[..., None] * neighbours, axis=2)  # (B, L, d): m_t
        gate = ops.sigmoid(ops.matmul(hidden, ops.cast(self.kernel, hidden.dtype)))  # (B, L, 1)
        any_found = ops.any(found, axis=-1, keepdims=True)  # (B, L, 1)
        gate = ops.where(any_found, gate, ops.ones_like(gate))
        z = (1.0 - gate) * memory + gate * hidden  # (B, L, d)
        return (z, gate, memory) if return_memory else (z, gate)

    def compute_output_spec(self, hidden, neighbours, found, return_memory=False):
        z = keras.KerasTensor(hidden.shape, hidden.dtype)
        g = keras.KerasTensor((*hidden.shape[:-1], 1), hidden.dtype)
        return (z, g, z) if return_memory else (z, g)

    def get_config(self):
        return {**super().get_config(), "kernel_initializer": self.kernel_initializer}
