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
from keras import ops

from keras_transformers.memory.datastore import TokenDatastore
from keras_transformers.ops.attention import masked_softmax

METRICS = ("squared_l2", "dot")


@keras.saving.register_keras_serializable(package="keras_transformers")
class EpisodicMemory(TokenDatastore):
    """SPALM's long-term memory: a store of ``(context key, next token)`` pairs searched by kNN.

    Call ``memory(hidden (B, L, d))`` -> ``(token_ids (B, L, k) int32, found (B, L, k) bool)``,
    the next tokens of the ``k`` nearest keys (exact chunked top-k, gradients stopped), sorted
    nearest first. The store (:class:`~keras_transformers.memory.datastore.TokenDatastore`, the
    same as kNN-LM's) is filled outside the graph with :meth:`add` (FIFO once full) and saved
    with the model (non-trainable variables); it is *not* a ``StatefulMemory``: a
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
        super().__init__(datastore_size, key_dim, top_k, chunk_size, **kwargs)
        if metric not in METRICS:
            raise ValueError(f"metric={metric!r}: allowed values are {', '.join(METRICS)}.")
        self.metric = metric

    def call(self, hidden):
        _, tokens, found = self.search(hidden, metric=self.metric)  # (B, L, k)
        return tokens, found

    def compute_output_spec(self, hidden):
        shape = (*hidden.shape[:-1], self.top_k)
        return keras.KerasTensor(shape, "int32"), keras.KerasTensor(shape, "bool")

    def get_config(self):
        return {**super().get_config(), "metric": self.metric}


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
