"""Early exit: Depth-Adaptive Transformer (Elbayad et al., 2020) and CALM (Schuster et al., 2022).

Idea: attach an output classifier to every layer so that easy inputs can stop after a few layers.
Training optimises the (weighted) average of every exit's loss (the "aligned" training of the
Depth-Adaptive Transformer; CALM weighs layer ``n`` by ``n / sum_j j``)::

    loss = sum_{n=1}^{N} w_n · CE(y, softmax(head_n(h^n))),        sum_n w_n = 1

At inference (:class:`EarlyExitPredictor`) layer ``n`` runs only for the examples (classifier) or
tokens (language model, an eager per-token loop) that are not yet confident; an element exits at
the first layer whose confidence ``c^n >= threshold`` (the last layer always exits). Confidence
measures (CALM): ``"softmax_max"`` = max_y p(y), ``"softmax_response"`` = difference of the two
largest probabilities, ``"saturation"`` = ``cos(h^{n-1}, h^n)`` (``h^0`` = the embeddings).

* Classifier (Depth-Adaptive style): one head per layer (LayerNorm, pooling, Dense).
* LM (CALM style): one shared head, the final LayerNorm and the tied output embedding, read at
  every layer. A token that exits at layer ``n`` copies ``h^n`` to the skipped layers (CALM's
  state propagation) so later tokens can attend to it at every layer.

Shapes: classifier ``token_ids (B, L) -> exit logits (B, N, C)``; LM ``token_ids (B, L) ->
(B, N, L, V)``. The last exit ``[:, -1]`` is the ordinary N-layer model. Cost of training: one
``N``-layer pass plus ``N`` heads; inference stops at ``n <= N`` layers per element.

Example:
    >>> import numpy as np
    >>> from keras_transformers.models.adaptive_depth import (
    ...     EarlyExitPredictor, build_early_exit_classifier)
    >>> model = build_early_exit_classifier(50, 3, 8, d_model=16, num_heads=2, num_layers=3)
    >>> predictor = EarlyExitPredictor(model, threshold=0.9)
    >>> logits, layers = predictor.predict(np.ones((2, 8), "int32"))
    >>> logits.shape, layers.shape
    ((2, 3), (2,))
"""

import keras
import numpy as np
from keras import ops

from keras_transformers.models.backbone import (
    BackboneModel,
    builder_arguments,
    check_model_sizes,
)
from keras_transformers.models.decoder_lm import DecoderLM
from keras_transformers.models.layers import PaddingMask, SequencePooling

CONFIDENCE_MEASURES = ("softmax_max", "softmax_response", "saturation")
EXIT_WEIGHTS = ("uniform", "linear")


@keras.saving.register_keras_serializable(package="keras_transformers")
class ExitStack(keras.layers.Layer):
    """Stack ``N`` per-exit tensors ``(B, ...)`` into ``(B, N, ...)``."""

    def call(self, exits):
        return ops.stack(exits, axis=1)

    def compute_output_shape(self, shapes):
        return (shapes[0][0], len(shapes)) + tuple(shapes[0][1:])


def normalized_exit_weights(num_exits, weights="uniform"):
    """Normalised loss weights ``w_n`` (sum 1): ``uniform``, ``linear`` (CALM) or a list."""
    if isinstance(weights, str):
        if weights not in EXIT_WEIGHTS:
            raise ValueError(
                f"exit_weights={weights!r}: allowed values are {', '.join(EXIT_WEIGHTS)} "
                "or a list of floats."
            )
        raw = np.ones(num_exits) if weights == "uniform" else np.arange(1, num_exits + 1)
    else:
        raw = np.asarray(weights, "float64")
        if raw.shape != (num_exits,) or np.any(raw < 0) or raw.sum() <= 0:
            raise ValueError(
                f"exit_weights={list(weights)}: need {num_exits} non-negative values with a "
                "positive sum."
            )
    return (raw / raw.sum()).astype("float32")


@keras.saving.register_keras_serializable(package="keras_transformers")
class MultiExitLoss(keras.losses.Loss):
    """Weighted average over exits of the sparse cross-entropy.

    ``y_true (B,)`` or ``(B, L)`` integer targets; ``y_pred (B, N, C)`` or ``(B, N, L, V)``
    logits. Per example: ``sum_n w_n · mean_positions CE(y, y_pred[:, n])``.

    Args:
        exit_weights: ``"uniform"`` (Depth-Adaptive aligned training), ``"linear"`` (CALM,
            ``w_n ∝ n``) or a list of ``N`` non-negative floats (normalised to sum 1).
        from_logits: ``y_pred`` are logits.
    """

    def __init__(self, exit_weights="uniform", from_logits=True, name="multi_exit_loss", **kw):
        super().__init__(name=name, **kw)
        if isinstance(exit_weights, str):
            normalized_exit_weights(1, exit_weights)  # validates the name
        self.exit_weights = exit_weights if isinstance(exit_weights, str) else list(exit_weights)
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        num_exits = y_pred.shape[1]
        w = ops.convert_to_tensor(normalized_exit_weights(num_exits, self.exit_weights))  # (N,)
        y_true = ops.cast(y_true, "int32")
        target = ops.broadcast_to(ops.expand_dims(y_true, 1), ops.shape(y_pred)[:-1])
        ce = keras.losses.sparse_categorical_crossentropy(
            target, ops.cast(y_pred, "float32"), from_logits=self.from_logits
        )  # (B, N) or (B, N, L)
        if len(ce.shape) > 2:
            ce = ops.mean(ops.reshape(ce, (ops.shape(ce)[0], num_exits, -1)), axis=-1)
        return ops.sum(ce * w[None], axis=1)  # (B,)

    def get_config(self):
        return {
            **super().get_config(),
            "exit_weights": self.exit_weights,
            "from_logits": self.from_logits,
        }


@keras.saving.register_keras_serializable(package="keras_transformers")
class ExitAccuracy(keras.metrics.Metric):
    """Sparse categorical accuracy of one exit (default: the last) of a multi-exit model."""

    def __init__(self, exit_index=-1, name=None, **kwargs):
        super().__init__(name=name or f"exit_{exit_index}_accuracy", **kwargs)
        self.exit_index = int(exit_index)
        self.correct = self.add_variable(shape=(), initializer="zeros", name="correct")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        pred = ops.argmax(y_pred[:, self.exit_index], axis=-1)
        hit = ops.cast(ops.equal(ops.cast(y_true, "int32"), ops.cast(pred, "int32")), "float32")
        self.correct.assign(self.correct + ops.sum(hit))
        self.count.assign(self.count + ops.cast(ops.size(hit), "float32"))

    def result(self):
        return self.correct / ops.maximum(self.count, 1.0)

    def reset_state(self):
        self.correct.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "exit_index": self.exit_index}


@keras.saving.register_keras_serializable(package="keras_transformers")
class EarlyExitClassifier(BackboneModel):
    """Encoder classifier with a head after every layer, on the shared backbone.

    ``EarlyExitClassifier(**config)`` with the arguments of :func:`build_early_exit_classifier`.
    Parts: the backbone's (``token_embedding``, ``position_embedding``, ``transformer_layers``;
    no ``final_norm``) plus ``padding_mask_layer`` and, per exit ``n``, ``exit_norms[n]``
    (LayerNorm, None for post-norm), ``exit_poolings[n]``, ``exit_dropouts[n]`` and
    ``exit_heads[n]`` (Dense).
    """

    default_name = "early_exit_classifier"

    def build_graph(self, num_classes, max_length, num_layers, dropout, pooling, **config):
        token_ids = keras.Input(shape=(max_length,), dtype="int32", name="token_ids")
        self.padding_mask_layer = PaddingMask(name="padding_mask")
        padding_mask = self.padding_mask_layer(token_ids)  # (B, L)
        self.assemble_stack(
            "encoder",
            token_ids,
            max_length=max_length,
            num_layers=num_layers,
            dropout=dropout,
            final_norm=False,  # every exit has its own norm
            padding_mask=padding_mask,
            **config,
        )
        norm_first = config.get("norm_first", True)
        n = range(num_layers)
        self.exit_norms = [
            keras.layers.LayerNormalization(epsilon=1e-5, name=f"exit_norm_{i}")
            if norm_first
            else None
            for i in n
        ]
        self.exit_poolings = [SequencePooling(pooling, name=f"exit_pooling_{i}") for i in n]
        self.exit_dropouts = [keras.layers.Dropout(dropout, name=f"exit_dropout_{i}") for i in n]
        self.exit_heads = [
            keras.layers.Dense(num_classes, dtype="float32", name=f"exit_logits_{i}") for i in n
        ]
        exits = []
        for i, block in enumerate(self.transformer_layers):
            h = block.output  # (B, L, d)
            if self.exit_norms[i] is not None:
                h = self.exit_norms[i](h)
            pooled = self.exit_poolings[i](h, padding_mask=padding_mask)  # (B, d)
            exits.append(self.exit_heads[i](self.exit_dropouts[i](pooled)))  # (B, C)
        return token_ids, ExitStack(dtype="float32", name="exit_logits")(exits)  # (B, N, C)


@keras.saving.register_keras_serializable(package="keras_transformers")
class EarlyExitLM(DecoderLM):
    """Causal LM whose shared head (final norm + tied embedding) reads every layer (CALM).

    ``EarlyExitLM(**config)`` with the arguments of :func:`build_early_exit_lm`; the parts of
    :class:`DecoderLM`. Its output stacks every exit ``(B, N, L, V)``; ``generate`` uses the
    last exit (the ordinary N-layer model, with the KV cache where the core has one).
    """

    default_name = "early_exit_lm"

    def build_graph(self, num_layers=4, **config):
        token_ids, last = super().build_graph(num_layers=num_layers, **config)
        exits = []
        for block in self.transformer_layers[:-1]:
            h = block.output  # (B, L, d)
            if self.final_norm is not None:
                h = self.final_norm(h)
            exits.append(self.token_embedding(h, reverse=True))  # (B, L, V), shared head
        exits.append(last)
        return token_ids, ExitStack(dtype="float32", name="exit_logits")(exits)  # (B, N, L, V)

    def logits_output(self, x):
        return self.token_embedding(x, reverse=True)  # (B, L, V): the last exit

    def generation_logits(self, outputs):
        return outputs[:, -1]  # (B, L, V)


def build_early_exit_classifier(
    vocab_size,
    num_classes,
    max_length,
    d_model=128,
    num_heads=4,
    num_layers=4,
    ff_dim=None,
    attention="full",
    position="learned",
    dropout=0.1,
    pooling="mean",
    activation="gelu",
    norm_first=True,
    name="early_exit_classifier",
):
    """N-layer encoder classifier with a classifier head after every layer (Depth-Adaptive).

    Arguments as in :func:`~keras_transformers.models.build_encoder_classifier`. Head ``n``:
    ``[LayerNorm] -> pooling -> Dense(num_classes)`` on the output of layer ``n``.

    Returns:
        :class:`EarlyExitClassifier`: ``token_ids (B, L) -> exit logits (B, N, num_classes)``;
        train with :class:`MultiExitLoss`, evaluate with :class:`ExitAccuracy`, infer with
        :class:`EarlyExitPredictor`.
    """
    check_model_sizes(d_model, num_heads, num_layers)
    return EarlyExitClassifier(**builder_arguments(locals()))


def build_early_exit_lm(
    vocab_size,
    max_length,
    d_model=128,
    num_heads=4,
    num_layers=4,
    ff_dim=None,
    attention="full",
    position="learned",
    dropout=0.0,
    activation="gelu",
    norm_first=True,
    tie_embeddings=True,
    name="early_exit_lm",
):
    """N-layer causal LM whose shared output head reads every layer (CALM).

    The head is the final LayerNorm (pre-norm only) followed by the (tied) output embedding;
    it is the same layer at every exit. Arguments as in
    :func:`~keras_transformers.models.build_decoder_lm`.

    Returns:
        :class:`EarlyExitLM` (a :class:`DecoderLM`, ``generate`` reads the last exit):
        ``token_ids (B, L) -> exit logits (B, N, L, V)``; train with ``MultiExitLoss("linear")``.
    """
    check_model_sizes(d_model, num_heads, num_layers)
    return EarlyExitLM(**builder_arguments(locals()))


def confidence(measure, logits, hidden=None, previous_hidden=None):
    """Per-element confidence ``(…)`` of ``logits (…, C)`` (numpy in, numpy out).

    ``softmax_max``: largest probability; ``softmax_response``: top-1 minus top-2 probability;
    ``saturation``: ``cos(previous_hidden, hidden)`` over the last axis.
    """
    if measure not in CONFIDENCE_MEASURES:
        raise ValueError(
            f"confidence={measure!r}: allowed values are {', '.join(CONFIDENCE_MEASURES)}."
        )
    if measure == "saturation":
        a = np.asarray(previous_hidden, "float64")
        b = np.asarray(hidden, "float64")
        denom = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
        return np.sum(a * b, axis=-1) / np.maximum(denom, 1e-12)
    z = np.asarray(logits, "float64")
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    if measure == "softmax_max":
        return p.max(-1)
    top2 = np.sort(p, axis=-1)[..., -2:]
    return top2[..., 1] - top2[..., 0]


def _np(x):
    return np.asarray(ops.convert_to_numpy(x))


class EarlyExitPredictor:
    """Inference with early exit for models from :func:`build_early_exit_classifier` /
    :func:`build_early_exit_lm` (runs eagerly, layer by layer; not a Keras layer).

    Layer ``n`` is run only on the elements that have not exited yet; the last layer always
    exits. ``threshold=0`` exits everything after layer 1; ``threshold > 1`` never exits early
    and reproduces the full model (the last exit).

    Args:
        model: a model built by one of the two builders (its parts are read from attributes).
        threshold: confidence threshold (CALM calibrates it with Learn-then-Test; the
            Depth-Adaptive Transformer grid-searches it on validation data).
        confidence: ``"softmax_max"``, ``"softmax_response"`` or ``"saturation"``.

    After each call ``average_layers`` holds the mean number of layers run per element.
    """

    def __init__(self, model, threshold=0.9, confidence="softmax_max"):
        if confidence not in CONFIDENCE_MEASURES:
            raise ValueError(
                f"confidence={confidence!r}: allowed values are {', '.join(CONFIDENCE_MEASURES)}."
            )
        self.model = model
        self.threshold = float(threshold)
        self.confidence = confidence
        if isinstance(model, EarlyExitClassifier):
            self.kind = "classifier"
        elif isinstance(model, EarlyExitLM):
            self.kind = "lm"
        else:
            raise ValueError(
                f"model: expected a model from build_early_exit_classifier or "
                f"build_early_exit_lm; got {type(model).__name__}."
            )
        self.blocks = list(model.transformer_layers)
        self.num_layers = len(self.blocks)
        self.embedding = model.token_embedding
        self.position = model.position_embedding
        self.average_layers = None

    def _embed(self, token_ids, start_index=0):
        x = self.embedding(token_ids)
        if self.position is not None:
            x = self.position(x, start_index=start_index)
        return x

    def _confident(self, logits, hidden, previous):
        c = confidence(self.confidence, logits, hidden, previous)
        return c >= self.threshold

    # classifier -----------------------------------------------------------------------------
    def predict(self, token_ids):
        """Classifier: ``token_ids (B, L) -> (logits (B, C), layers used (B,))``."""
        if self.kind != "classifier":
            raise ValueError("predict() is for classifiers; use score()/generate() for an LM.")
        token_ids = np.asarray(token_ids, "int32")
        batch = token_ids.shape[0]
        pad = token_ids != 0  # (B, L)
        h = _np(self._embed(token_ids))  # (B, L, d)
        active = np.arange(batch)
        out = None
        used = np.zeros(batch, "int32")
        for i, block in enumerate(self.blocks):
            prev = h
            h = _np(block(h, padding_mask=pad[active]))
            x = h
            norm = self.model.exit_norms[i]
            if norm is not None:
                x = norm(x)
            pooled = _np(self.model.exit_poolings[i](x, padding_mask=pad[active]))  # (b, d)
            logits = _np(self.model.exit_heads[i](pooled))  # (b, C)
            if out is None:
                out = np.zeros((batch, logits.shape[-1]), "float32")
            keep = pad[active][..., None]
            pool_prev = (prev * keep).sum(1) / np.maximum(keep.sum(1), 1)
            pool_now = (h * keep).sum(1) / np.maximum(keep.sum(1), 1)
            done = self._confident(logits, pool_now, pool_prev)
            if i == self.num_layers - 1:
                done[:] = True
            out[active[done]] = logits[done]
            used[active[done]] = i + 1
            active, h = active[~done], h[~done]
            if active.size == 0:  # every element is confident: stop running layers
                break
        self.average_layers = float(used.mean())
        return out, used

    # language model -------------------------------------------------------------------------
    def _head(self, h):
        norm = self.model.final_norm
        if norm is not None:
            h = norm(h)
        return _np(self.embedding(h, reverse=True))

    def _token_step(self, states, t, logits_out, used):
        """Run layers for token ``t`` (its embedding is in ``states[0][:, t]``) with early exit.

        ``states[n] (B, L, d)``: output of layer ``n`` (``n = 0``: embeddings) for every token so
        far, with CALM state copying for the layers a token skipped.
        """
        batch = states[0].shape[0]
        active = np.arange(batch)
        for n, block in enumerate(self.blocks, start=1):
            seq = states[n - 1][active, : t + 1]  # (b, t+1, d)
            h_t = _np(block(seq))[:, t]  # causal: position t sees tokens <= t only
            states[n][active, t] = h_t
            logits = self._head(h_t[:, None])[:, 0]  # (b, V)
            done = self._confident(logits, h_t, states[n - 1][active, t])
            if n == self.num_layers:
                done[:] = True
            exited = active[done]
            logits_out[exited, t] = logits[done]
            used[exited, t] = n
            for m in range(n + 1, self.num_layers + 1):  # propagate the exited state
                states[m][exited, t] = h_t[done]
            active = active[~done]
            if active.size == 0:
                break

    def score(self, token_ids):
        """LM, teacher-forced: ``token_ids (B, L) -> (logits (B, L, V), layers used (B, L))``.

        Tokens are processed one at a time (an eager decoding loop without a KV cache: each
        layer is recomputed over the prefix, but for token ``t`` only the layers up to its exit).
        """
        if self.kind != "lm":
            raise ValueError("score() is for language models; use predict() for a classifier.")
        token_ids = np.asarray(token_ids, "int32")
        batch, length = token_ids.shape
        emb = _np(self._embed(token_ids))  # (B, L, d)
        states = [emb] + [np.zeros_like(emb) for _ in self.blocks]
        logits = None
        used = np.zeros((batch, length), "int32")
        for t in range(length):
            if logits is None:
                vocab = self._head(emb[:, :1]).shape[-1]
                logits = np.zeros((batch, length, vocab), "float32")
            self._token_step(states, t, logits, used)
        self.average_layers = float(used.mean())
        return logits, used

    def generate(self, prompt, max_new_tokens):
        """LM, greedy decoding with per-token early exit.

        Returns ``(token_ids (B, Lp + max_new_tokens), layers used (B, Lp + max_new_tokens))``.
        """
        if self.kind != "lm":
            raise ValueError("generate() is for language models.")
        prompt = np.asarray(prompt, "int32")
        batch, plen = prompt.shape
        total = plen + int(max_new_tokens)
        tokens = np.zeros((batch, total), "int32")
        tokens[:, :plen] = prompt
        d = int(self.embedding.output_dim)
        states = [np.zeros((batch, total, d), "float32") for _ in range(self.num_layers + 1)]
        logits = None
        used = np.zeros((batch, total), "int32")
        for t in range(total - 1):
            states[0][:, t] = _np(self._embed(tokens[:, t : t + 1], start_index=t))[:, 0]
            if logits is None:
                vocab = self._head(states[0][:, :1]).shape[-1]
                logits = np.zeros((batch, total, vocab), "float32")
            self._token_step(states, t, logits, used)
            if t + 1 >= plen:
                tokens[:, t + 1] = logits[:, t].argmax(-1)
        self.average_layers = float(used[:, : total - 1].mean())
        return tokens, used
