"""SPALM language model (Yogatama, de Masson d'Autume & Kong, 2021, "Adaptive semiparametric
language models"): Transformer-XL short-term memory + kNN long-term episodic memory + a gate.

``token_ids (B, L) -> embedding -> N x Transformer-XL block -> LN -> h^R (B, L, d)``;
``h^R -> EpisodicMemory -> k next-token ids -> word embeddings y (B, L, k, d)``;
``z = SPALMGate(h^R, y) -> z Wᵀ -> logits (B, L, V)`` with ``W`` the shared word embeddings
(see :mod:`keras_transformers.memory.spalm` for the equations).

Training follows the paper's recipe in two steps: train the model with an empty store (then the
gate passes ``h^R`` through and it is a Transformer-XL LM), fill the store with the trained
model's own ``(h^R_t, x_{t+1})`` pairs over a datastore text (:func:`build_spalm_datastore`: the
keys stay fixed from then on), and keep training, so the gate learns when to trust the memory.
Feed consecutive segments (``make_segment_streams``, ``shuffle=False``, ``MemoryReset``) as for
Transformer-XL.

Example:
    >>> import numpy as np
    >>> from keras_transformers.models.spalm import build_spalm_lm
    >>> lm = build_spalm_lm(vocab_size=40, segment_length=8, memory_length=8, batch_size=2,
    ...                     datastore_size=64, top_k=4, d_model=16, num_heads=2, num_layers=1)
    >>> tuple(lm(np.ones((2, 8), "int32")).shape)
    (2, 8, 40)
"""

import keras
import numpy as np

from keras_transformers.memory.knn import _check_positive_int
from keras_transformers.memory.segment import TransformerXLBlock
from keras_transformers.memory.spalm import METRICS, EpisodicMemory, SPALMGate
from keras_transformers.memory.state import reset_memory
from keras_transformers.models.backbone import builder_arguments, check_model_sizes
from keras_transformers.models.transformer_xl import TransformerXLLM, xl_block_arguments


@keras.saving.register_keras_serializable(package="keras_transformers")
class SPALMLM(TransformerXLLM):
    """SPALM LM on the shared backbone, with ``generate``.

    ``SPALMLM(**config)`` with the arguments of :func:`build_spalm_lm`. Parts as in
    :class:`DecoderLM` (``transformer_layers`` are Transformer-XL blocks) plus ``documents``,
    ``long_term_memory`` (:class:`EpisodicMemory`) and ``gate`` (:class:`SPALMGate`).
    :meth:`gate_values` returns ``g_t`` for a batch; :meth:`hidden_states` ``h^R``.
    """

    default_name = "spalm"
    stateful_memory = True

    def build_graph(
        self,
        vocab_size,
        segment_length,
        memory_length,
        batch_size,
        datastore_size,
        top_k,
        metric,
        d_model,
        num_heads,
        num_layers,
        ff_dim,
        dropout,
        document_start_id,
        activation,
        chunk_size,
    ):
        common = xl_block_arguments(
            num_heads, d_model, ff_dim, memory_length, batch_size, dropout, activation
        )
        blocks = [TransformerXLBlock(**common, name=f"xl_block_{i}") for i in range(num_layers)]
        token_ids, hidden = self.assemble_segments(
            segment_length,
            batch_size,
            document_start_id,
            blocks,
            vocab_size=vocab_size,
            d_model=d_model,
            dropout=dropout,
            tie_embeddings=True,  # SPALM shares W between input, output and the memory values
        )  # (B, L, d): h^R
        self.long_term_memory = EpisodicMemory(
            datastore_size, d_model, top_k, metric, chunk_size, name="long_term_memory"
        )
        neighbour_ids, found = self.long_term_memory(hidden)  # (B, L, k)
        neighbours = self.token_embedding(neighbour_ids)  # (B, L, k, d): y_i
        self.gate = SPALMGate(name="gate")
        z, gate = self.gate(hidden, neighbours, found)  # (B, L, d), (B, L, 1)
        object.__setattr__(self, "_kt_symbolic", (token_ids, hidden, gate))
        return token_ids, self.logits_output(z)

    def _submodel(self, index):
        token_ids, *outputs = self._kt_symbolic
        return keras.Model(token_ids, outputs[index])

    def hidden_states(self, token_ids):
        """``h^R (B, L, d)`` for one batch (advances the short-term memories like a call)."""
        return keras.ops.convert_to_numpy(self._submodel(0)(token_ids))

    def gate_values(self, token_ids):
        """``g_t (B, L)`` for one batch (advances the short-term memories like a call)."""
        return keras.ops.convert_to_numpy(self._submodel(1)(token_ids))[..., 0]


def build_spalm_lm(
    vocab_size,
    segment_length,
    memory_length,
    batch_size,
    datastore_size=4096,
    top_k=4,
    metric="squared_l2",
    d_model=128,
    num_heads=4,
    num_layers=2,
    ff_dim=None,
    dropout=0.0,
    document_start_id=None,
    activation="gelu",
    chunk_size=4096,
    name="spalm",
):
    """Build a SPALM language model (:class:`SPALMLM`).

    Args:
        vocab_size: ``V``.
        segment_length: ``L``, tokens per segment (the fixed input length).
        memory_length: ``m``, the Transformer-XL short-term memory per layer.
        batch_size: ``B``, parallel streams (fixed by the short-term memory).
        datastore_size: capacity ``S`` of the long-term episodic memory.
        top_k: neighbours ``k`` retrieved per position (the paper: 4).
        metric: ``"squared_l2"`` or ``"dot"`` for the search.
        d_model, num_heads, num_layers, ff_dim, dropout, activation: sizes of the backbone.
        document_start_id: token that starts a new document (short-term memory masked before it).
        chunk_size: store keys scored at once.

    Returns:
        :class:`SPALMLM`: ``token_ids (B, L) int32 -> logits (B, L, V) float32``.
    """
    config = builder_arguments(locals(), drop=("name",))
    check_model_sizes(d_model, num_heads, num_layers)
    for arg in ("vocab_size", "segment_length", "memory_length", "batch_size", "datastore_size"):
        _check_positive_int(arg, config[arg])
    _check_positive_int("top_k", top_k)
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r}: allowed values are {', '.join(METRICS)}.")
    return SPALMLM(**config, name=name)


def build_spalm_datastore(model, x, y, clear=True):
    """Fill ``model.long_term_memory`` with ``(h^R_t, x_{t+1})`` pairs of a token stream.

    Args:
        model: a :class:`SPALMLM`.
        x, y: segment batches in stream order (``make_segment_streams``): ``(N·B, L)`` inputs and
            next-token targets.
        clear: empty the store first.

    Returns:
        the number of pairs in the store. The short-term memories are reset before and after.
    """
    batch = model.documents.batch_size
    x, y = np.asarray(x, "int32"), np.asarray(y, "int32")
    if len(x) % batch:
        raise ValueError(f"x has {len(x)} rows: must be a multiple of batch_size={batch}.")
    if clear:
        model.long_term_memory.clear()
    reset_memory(model)
    hidden = model._submodel(0)
    keys = [keras.ops.convert_to_numpy(hidden(x[i : i + batch])) for i in range(0, len(x), batch)]
    reset_memory(model)
    keys = np.concatenate(keys).reshape(-1, keys[0].shape[-1])
    model.long_term_memory.add(keys, y.reshape(-1))
    return model.long_term_memory.size()
