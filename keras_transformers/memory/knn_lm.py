"""kNN-LM: a language model interpolated with a nearest-neighbour datastore (Khandelwal et al., 2020,
"Generalization through Memorization: Nearest Neighbor Language Models", ICLR).

A trained LM maps each context ``x`` to an embedding ``f(x)`` (here the hidden state that feeds the
output projection). The datastore holds one pair ``(f(c_i), w_i)`` per training token: the context
embedding and the token that followed it. At test time the ``k`` nearest keys of ``f(x)`` vote for
their next tokens with weights that decay with distance, and that distribution is mixed with the
LM's own:

``p_kNN(y|x) ∝ Σ_{(k_i, w_i) ∈ N(x)} 1[y = w_i] · exp(−d(k_i, f(x)) / T)``,
``p(y|x) = λ · p_kNN(y|x) + (1 − λ) · p_LM(y|x)``,

with ``d`` the squared L2 distance (as in the paper's FAISS search; ``distance="l2"`` for the plain
norm), temperature ``T`` (1 in the paper), ``λ`` tuned on validation data (0.25 in-domain on
WikiText-103). ``λ = 0`` gives exactly ``p_LM``; ``p_kNN`` is zero outside the retrieved tokens.
The LM is not retrained; the datastore is built once (:func:`build_knn_datastore`).

Shapes (``S`` datastore size, ``d`` key size, ``V`` vocabulary, ``k`` neighbours): datastore keys
``(S, d)`` and next tokens ``(S,)``; queries ``f(x)`` ``(B, L, d)``; LM logits ``(B, L, V)``;
interpolated log-probabilities ``(B, L, V)``.

Cost per query: exact search ``O(S·d)`` (scanned in chunks of ``chunk_size`` keys, never a full
``(B·L, S)`` matrix for ``S > chunk_size``) plus ``O(k·V)`` for the per-token aggregation. The
paper uses an approximate FAISS index over 103M keys; this exact ``keras.ops`` search is meant for
datastores up to a few million keys.

Example:
    >>> import numpy as np
    >>> from keras_transformers.memory.knn_lm import KNNLM
    >>> knn = KNNLM(vocab_size=5, key_dim=3, datastore_size=10, top_k=2, interpolation=0.5)
    >>> knn.add(np.eye(3, dtype="float32"), np.array([1, 2, 3]))
    >>> logp = knn(np.ones((1, 2, 3), "float32"), np.zeros((1, 2, 5), "float32"))
    >>> np.exp(np.asarray(logp)).sum(-1).round(5)
    array([[1., 1.]], dtype=float32)
"""

import keras
import numpy as np
from keras import ops

from keras_transformers.memory.datastore import TokenDatastore
from keras_transformers.memory.knn import _check_positive_int

DISTANCES = ("squared_l2", "l2")


@keras.saving.register_keras_serializable(package="keras_transformers")
class KNNLM(TokenDatastore):
    """Datastore of (context embedding, next token) pairs and the kNN-LM interpolation.

    Call ``layer(hidden (B, L, d), logits (B, L, V))`` (or ``layer([hidden, logits])``) to get the
    interpolated log-probabilities ``(B, L, V)``; :meth:`knn_probs` gives ``p_kNN`` alone. The
    store (:class:`~keras_transformers.memory.datastore.TokenDatastore`) is filled with
    :meth:`add` (FIFO beyond ``S``) and saved with the model.

    Args:
        vocab_size: ``V``.
        key_dim: ``d`` of the context embeddings.
        datastore_size: capacity ``S`` (non-trainable variables, saved with the model).
        top_k: neighbours ``k`` (the paper: 1024).
        interpolation: ``λ`` in [0, 1].
        temperature: ``T > 0`` dividing the distances.
        distance: ``"squared_l2"`` or ``"l2"``.
        chunk_size: datastore keys scored at once.
    """

    def __init__(
        self,
        vocab_size,
        key_dim,
        datastore_size,
        top_k=8,
        interpolation=0.25,
        temperature=1.0,
        distance="squared_l2",
        chunk_size=8192,
        **kwargs,
    ):
        self.vocab_size = _check_positive_int("vocab_size", vocab_size)
        super().__init__(
            datastore_size, key_dim, top_k, chunk_size, vocab_size=self.vocab_size, **kwargs
        )
        if not 0.0 <= float(interpolation) <= 1.0:
            raise ValueError(f"interpolation={interpolation!r}: must be in [0, 1].")
        if not float(temperature) > 0.0:
            raise ValueError(f"temperature={temperature!r}: must be > 0.")
        if distance not in DISTANCES:
            raise ValueError(f"distance={distance!r}: allowed values are {', '.join(DISTANCES)}.")
        self.interpolation = float(interpolation)
        self.temperature = float(temperature)
        self.distance = distance

    def neighbours(self, hidden):
        """``hidden (B, L, d) -> (distances (B, L, k), next_tokens (B, L, k), found (B, L, k))``."""
        shape = hidden.shape
        q = ops.reshape(hidden, (-1, self.key_dim))  # (B·L, d)
        scores, tokens, found = self.search(q, metric="squared_l2")  # (B·L, k)
        dist = -scores
        if self.distance == "l2":
            dist = ops.sqrt(ops.maximum(dist, 0.0))
        out_shape = tuple(-1 if s is None else s for s in shape[:-1]) + (self.top_k,)
        return (
            ops.reshape(dist, out_shape),
            ops.reshape(tokens, out_shape),
            ops.reshape(found, out_shape),
        )

    def knn_probs(self, hidden):
        """``p_kNN (B, L, V)``: softmax of ``−d/T`` over the found neighbours, summed per token.

        A query with no neighbour at all (empty datastore) gets all zeros.
        """
        dist, tokens, found = self.neighbours(hidden)
        # softmax over neighbours in float32, masked for missing ones
        logits = ops.where(found, -dist / self.temperature, -1e30)
        logits = logits - ops.max(logits, axis=-1, keepdims=True)
        weights = ops.where(found, ops.exp(logits), 0.0)
        weights = weights / ops.maximum(ops.sum(weights, axis=-1, keepdims=True), 1e-30)
        onehot = ops.one_hot(tokens, self.vocab_size, dtype="float32")  # (B, L, k, V)
        return ops.sum(weights[..., None] * onehot, axis=-2)  # (B, L, V)

    def call(self, hidden, logits=None):
        if logits is None:  # called as layer([hidden, logits])
            hidden, logits = hidden
        log_p_lm = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
        lam = self.interpolation
        if lam == 0.0:
            return log_p_lm
        p_knn = self.knn_probs(hidden)
        if lam == 1.0:
            return ops.log(ops.maximum(p_knn, 1e-30))
        p = lam * p_knn + (1.0 - lam) * ops.exp(log_p_lm)
        # where p_kNN = 0 keep the exact log(1 − λ) + log p_LM (no underflow for tiny p_LM)
        return ops.where(p_knn > 0.0, ops.log(ops.maximum(p, 1e-30)), np.log1p(-lam) + log_p_lm)

    def compute_output_shape(self, hidden_shape, logits_shape=None):
        if logits_shape is None:
            hidden_shape, logits_shape = hidden_shape
        return tuple(logits_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "interpolation": self.interpolation,
            "temperature": self.temperature,
            "distance": self.distance,
        }


def _hidden_layer(model, hidden_layer=None):
    """The layer whose output is ``f(x)``: ``hidden_layer`` itself, or by default the model's
    ``final_norm`` (its last block for a post-norm model)."""
    if hidden_layer is None:
        final_norm = getattr(model, "final_norm", None)
        if final_norm is not None:
            return final_norm
        blocks = getattr(model, "transformer_layers", None)
        if not blocks:
            raise ValueError(
                f"model {model.name!r} has no final_norm or transformer_layers attribute (a model "
                "of kt.models has them): pass hidden_layer=<the layer whose output is f(x)>."
            )
        return blocks[-1]
    if not isinstance(hidden_layer, keras.layers.Layer):
        raise ValueError(
            f"hidden_layer={hidden_layer!r}: pass a layer of the model (e.g. model.final_norm or "
            "model.transformer_layers[i]) or None for the final norm, not a name."
        )
    return hidden_layer


def _hidden_and_logits_model(model, hidden_layer=None):
    layer = _hidden_layer(model, hidden_layer)
    try:
        return keras.Model(model.inputs, [layer.output, model.outputs[0]])
    except (AttributeError, ValueError) as err:
        raise ValueError(
            f"hidden_layer={layer.name!r}: not a layer called once in the model {model.name!r}."
        ) from err


def build_knn_datastore(
    model,
    tokens,
    segment_length,
    hidden_layer=None,
    batch_size=8,
    datastore_size=None,
    **knn_kwargs,
):
    """Run a trained LM over a token stream and store (context embedding, next token) pairs.

    The stream is cut into non-overlapping windows of ``segment_length`` tokens; every position
    ``t`` of a window gives the key ``hidden[t]`` (the output of ``hidden_layer``, by default the
    model's ``final_norm``, which feeds the output projection) and the value ``tokens[t + 1]``.

    Args:
        model: Functional LM ``token_ids (B, L) -> logits (B, L, V)``.
        tokens: 1-D int token stream.
        segment_length: the model's input length.
        hidden_layer: the layer of ``model`` whose output is ``f(x)`` (an attribute such as
            ``model.transformer_layers[-2]``); None: ``model.final_norm``.
        datastore_size: capacity ``S`` (defaults to the number of pairs).
        **knn_kwargs: ``top_k``, ``interpolation``, ``temperature``, ``distance``, ...

    Returns:
        a filled :class:`KNNLM`.
    """
    tokens = np.asarray(tokens, dtype="int32").reshape(-1)
    segment_length = _check_positive_int("segment_length", segment_length)
    n = (len(tokens) - 1) // segment_length
    if n < 1:
        raise ValueError(
            f"tokens has length {len(tokens)}: needs at least segment_length + 1 = "
            f"{segment_length + 1} tokens."
        )
    x = tokens[: n * segment_length].reshape(n, segment_length)
    y = tokens[1 : n * segment_length + 1].reshape(n, segment_length)
    probe = _hidden_and_logits_model(model, hidden_layer)
    hidden, logits = probe.predict(x, batch_size=batch_size, verbose=0)
    keys = np.asarray(hidden, dtype="float32").reshape(-1, hidden.shape[-1])
    knn = KNNLM(
        vocab_size=logits.shape[-1],
        key_dim=keys.shape[-1],
        datastore_size=datastore_size or len(keys),
        **knn_kwargs,
    )
    knn.add(keys, y.reshape(-1))
    return knn


def build_knn_lm(model, knn, hidden_layer=None, name="knn_lm"):
    """Wrap an LM and a :class:`KNNLM` into one Functional model ``token_ids -> log p (B, L, V)``.

    The result saves/loads as ``.keras`` with the datastore inside. Train nothing with it: it is an
    inference model (evaluate with a loss on log-probabilities, e.g.
    ``SparseCategoricalCrossentropy(from_logits=True)``: log-probabilities are valid logits).
    """
    probe = _hidden_and_logits_model(model, hidden_layer)
    hidden, logits = probe(model.inputs[0])
    return keras.Model(model.inputs[0], knn(hidden, logits), name=name)


def knn_lm_log_probs(model, knn, token_ids, hidden_layer=None, batch_size=8):
    """Interpolated ``log p(y|x)`` ``(N, L, V)`` of an LM with a datastore, as numpy."""
    probe = _hidden_and_logits_model(model, hidden_layer)
    hidden, logits = probe.predict(np.asarray(token_ids), batch_size=batch_size, verbose=0)
    return ops.convert_to_numpy(knn(hidden, logits))
