"""BERT-style masked-language-model pre-training (Devlin et al., 2019) on the package's encoder.

Pre-training: 15% of the (non-special) tokens of each sequence are *selected*; of those, 80% are
replaced by a ``[MASK]`` id, 10% by a random token and 10% kept. The encoder reads the corrupted
sequence and a head predicts the original token at the selected positions only:

``h = LN(gelu(W·x_i + b))``, ``logits_i = h·Eᵀ + c`` with ``E (V, d)`` the *token embedding
matrix* (tied: the head has no output matrix of its own), loss ``−Σ_{i∈M} log p(x_i | x̃)`` over
the selected set ``M``.

The encoder is exactly :func:`keras_transformers.models.build_text_encoder`'s, with the same
layer names, so the pre-trained weights drop into :func:`build_encoder_classifier` for
fine-tuning (:func:`load_pretrained_encoder`) or give a pooled feature extractor
(:func:`encoder_from_pretrainer`).

Our tokenizers reserve ids ``0 <pad>, 1 <bos>, 2 <eos>, 3 <unk>`` and have no ``[MASK]``: the
usual choice is one extra id, ``mask_token_id = tokenizer.vocabulary_size`` with
``vocab_size = tokenizer.vocabulary_size + 1`` (see :func:`mask_token_id_for`).

Shapes: ``token_ids (B, L)`` int, ``mask_positions (B, P)`` int -> logits ``(B, P, V)``; targets
``mask_ids (B, P)``, weights ``mask_weights (B, P)`` (0 on unused selection slots).

Example:
    >>> import numpy as np
    >>> from keras_transformers.models.bert import build_bert_pretrainer, mask_tokens
    >>> ids = np.random.default_rng(0).integers(4, 50, size=(8, 16)).astype("int32")
    >>> batch = mask_tokens(ids, vocab_size=51, mask_token_id=50, seed=0)
    >>> model = build_bert_pretrainer(51, 16, d_model=16, num_heads=2, num_layers=1)
    >>> logits = model({"token_ids": batch["token_ids"],
    ...                 "mask_positions": batch["mask_positions"]})
    >>> tuple(logits.shape)
    (8, 3, 51)
"""

import math
import random

import keras
import numpy as np
from keras import ops

from keras_transformers.data.tokenizers import BOS_ID, EOS_ID, NUM_SPECIAL_TOKENS, PAD_ID
from keras_transformers.models.backbone import BackboneModel, builder_arguments, check_model_sizes
from keras_transformers.models.encoder_classifier import encode_tokens
from keras_transformers.models.layers import SequencePooling

ENGINES = ("numpy", "keras_hub")


def mask_token_id_for(tokenizer_vocabulary_size):
    """``(vocab_size, mask_token_id)`` for a tokenizer without a ``[MASK]`` token: one extra id."""
    return int(tokenizer_vocabulary_size) + 1, int(tokenizer_vocabulary_size)


def default_max_selections(max_length, selection_rate=0.15):
    """Selection slots ``P`` per sequence: ``ceil(1.25 · rate · L)``, at least 1."""
    return max(1, int(math.ceil(1.25 * selection_rate * max_length)))


def _check_rates(selection_rate, mask_token_rate, random_token_rate):
    if not 0 < selection_rate <= 1:
        raise ValueError(f"selection_rate={selection_rate}: must be in (0, 1]")
    for name, value in (
        ("mask_token_rate", mask_token_rate),
        ("random_token_rate", random_token_rate),
    ):
        if not 0 <= value <= 1:
            raise ValueError(f"{name}={value}: must be in [0, 1]")
    if mask_token_rate + random_token_rate > 1:
        raise ValueError(
            f"mask_token_rate + random_token_rate = {mask_token_rate + random_token_rate}: "
            "must be <= 1"
        )


def mask_tokens(
    token_ids,
    vocab_size,
    mask_token_id,
    selection_rate=0.15,
    mask_token_rate=0.8,
    random_token_rate=0.1,
    max_selections=None,
    unselectable_ids=(PAD_ID, BOS_ID, EOS_ID),
    seed=None,
    engine="numpy",
):
    """BERT masking of a batch of token ids (numpy in, numpy out).

    Args:
        token_ids: ``(N, L)`` int array, right-padded with 0.
        vocab_size: model vocabulary ``V`` (``mask_token_id < V``).
        mask_token_id: the ``[MASK]`` id.
        selection_rate: share of the selectable tokens chosen for prediction (0.15).
        mask_token_rate, random_token_rate: of the chosen tokens, the share replaced by
            ``[MASK]`` (0.8) and by a random token (0.1); the rest (0.1) is kept.
        max_selections: ``P``, the selection slots per sequence (default
            :func:`default_max_selections`); extra selections are dropped.
        unselectable_ids: ids never selected (padding and ``<bos>``/``<eos>``); ``mask_token_id``
            is always unselectable.
        seed: random seed.
        engine: ``"numpy"`` (default): ``floor(rate · n + u)``, ``u ~ U[0, 1)``, of the ``n``
            selectable tokens per sequence are chosen (unbiased: the expected share is exactly
            ``rate``, also for short sequences), and random replacements are drawn from the
            ordinary ids ``[4, V)`` without ``[MASK]``, so a replacement never turns into padding.
            ``"keras_hub"``: ``keras_hub.layers.MaskedLMMaskGenerator`` (each token selected with
            probability ``rate``; its random replacements are drawn from all of ``[0, V)``,
            padding and special ids included).

    Returns:
        dict of numpy arrays: ``token_ids (N, L)`` int32 (corrupted), ``mask_positions (N, P)``
        int32, ``mask_ids (N, P)`` int32 (original tokens), ``mask_weights (N, P)`` float32
        (1 on used slots) — the format of ``MaskedLMMaskGenerator``.
    """
    token_ids = np.asarray(token_ids)
    if token_ids.ndim != 2:
        raise ValueError(f"token_ids.shape={token_ids.shape}: must be (N, L)")
    if not 0 <= int(mask_token_id) < int(vocab_size):
        raise ValueError(f"mask_token_id={mask_token_id}: must be in [0, vocab_size={vocab_size})")
    if engine not in ENGINES:
        raise ValueError(f"engine={engine!r}: allowed values are {', '.join(ENGINES)}")
    _check_rates(selection_rate, mask_token_rate, random_token_rate)
    n, length = token_ids.shape
    p = int(max_selections or default_max_selections(length, selection_rate))
    if p < 1:
        raise ValueError(f"max_selections={max_selections}: must be >= 1")
    unselectable = sorted({int(i) for i in unselectable_ids} | {int(mask_token_id)})
    if engine == "keras_hub":
        return _mask_with_keras_hub(
            token_ids,
            vocab_size,
            mask_token_id,
            selection_rate,
            mask_token_rate,
            random_token_rate,
            p,
            unselectable,
            seed,
        )

    rng = np.random.default_rng(seed)
    eligible = ~np.isin(token_ids, unselectable)  # (N, L)
    num_eligible = eligible.sum(axis=1)  # (N,)
    # stochastic rounding: E[count] = rate · n exactly, also for short sequences
    count = np.floor(selection_rate * num_eligible + rng.random(n)).astype(np.int64)
    count = np.minimum(count, p)  # (N,)
    keys = np.where(eligible, rng.random((n, length)), np.inf)  # (N, L)
    order = np.full((n, p), length, dtype=np.int64)  # (N, P) random eligible positions first
    order[:, : min(p, length)] = np.argsort(keys, axis=1)[:, :p]
    used = np.arange(p)[None, :] < count[:, None]  # (N, P): a prefix of `count` slots
    positions = np.where(used, np.sort(np.where(used, order, length), axis=1), 0)  # (N, P)
    rows = np.arange(n)[:, None]
    original = np.where(used, token_ids[rows, positions], 0).astype(np.int32)  # (N, P)

    choice = rng.random((n, p))  # (N, P): which corruption each selected token gets
    ordinary = np.setdiff1d(np.arange(NUM_SPECIAL_TOKENS, vocab_size), [mask_token_id])
    if ordinary.size == 0:
        raise ValueError(f"vocab_size={vocab_size}: no ordinary ids to draw random tokens from")
    random_ids = ordinary[rng.integers(ordinary.size, size=(n, p))]
    replacement = np.where(
        choice < mask_token_rate,
        mask_token_id,
        np.where(choice < mask_token_rate + random_token_rate, random_ids, original),
    )
    corrupted = token_ids.astype(np.int32).copy()
    r, c = np.nonzero(used)
    corrupted[r, positions[r, c]] = replacement[r, c]
    return {
        "token_ids": corrupted,
        "mask_positions": positions.astype(np.int32),
        "mask_ids": original,
        "mask_weights": used.astype(np.float32),
    }


def _mask_with_keras_hub(
    token_ids, vocab_size, mask_token_id, rate, mask_rate, random_rate, p, unselectable, seed
):
    from keras_hub.layers import MaskedLMMaskGenerator

    generator = MaskedLMMaskGenerator(
        vocabulary_size=int(vocab_size),
        mask_selection_rate=float(rate),
        mask_token_id=int(mask_token_id),
        mask_selection_length=p,
        unselectable_token_ids=unselectable,
        mask_token_rate=float(mask_rate),
        random_token_rate=float(random_rate),
    )
    # Its Python path draws from the global `random` module: seed it, then restore the state.
    state = random.getstate()
    random.seed(seed)
    try:
        out = generator(token_ids.astype(np.int32))
    finally:
        random.setstate(state)
    result = {key: np.asarray(ops.convert_to_numpy(value)) for key, value in out.items()}
    for key in ("token_ids", "mask_positions", "mask_ids"):
        result[key] = result[key].astype(np.int32)
    result["mask_weights"] = result["mask_weights"].astype(np.float32)
    return result


@keras.saving.register_keras_serializable(package="keras_transformers")
class VocabularyIds(keras.layers.Layer):
    """``token_ids (B, L)`` -> ``arange(V)`` ``(V,)`` int32.

    Feeding these ids through the token embedding layer gives its whole table ``E (V, d)`` as a
    graph tensor: calling the *same* layer a second time is how the MLM head shares the matrix
    in a Functional model (the tie survives ``.keras`` save/load).
    """

    def __init__(self, vocab_size, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = int(vocab_size)

    def call(self, token_ids):
        return ops.arange(self.vocab_size, dtype="int32")

    def compute_output_spec(self, token_ids):
        return keras.KerasTensor((self.vocab_size,), dtype="int32")

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size}


@keras.saving.register_keras_serializable(package="keras_transformers")
class MaskedLMHead(keras.layers.Layer):
    """BERT's masked-LM head with the output projection tied to the token embedding.

    ``logits = LN(act(x[positions] W + b)) Eᵀ + c``: a dense transform with ``activation``,
    LayerNorm, projection on the embedding table ``E`` passed in at call time, and a per-token
    output bias ``c (V,)`` (the head's only vocabulary-sized weight).

    Call args:
        hidden: ``(B, L, d)`` encoder outputs.
        embedding_table: ``(V, d)`` token embedding matrix (e.g. ``embedding(VocabularyIds(V)(ids))``).
        mask_positions: ``(B, P)`` int positions to predict.

    Returns:
        logits ``(B, P, V)`` float32.
    """

    def __init__(self, vocab_size, activation="gelu", layer_norm_epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        if int(vocab_size) < 1:
            raise ValueError(f"vocab_size={vocab_size}: must be >= 1")
        self.vocab_size = int(vocab_size)
        self.activation = keras.activations.get(activation)
        self.activation_name = activation if isinstance(activation, str) else None
        self.layer_norm_epsilon = float(layer_norm_epsilon)

    def build(self, hidden_shape, embedding_table_shape=None, mask_positions_shape=None):
        d = hidden_shape[-1]
        self.dense = keras.layers.Dense(d, dtype=self.dtype_policy, name="transform")
        self.dense.build((None, None, d))
        self.norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="transform_norm"
        )
        self.norm.build((None, None, d))
        self.output_bias = self.add_weight(
            shape=(self.vocab_size,), initializer="zeros", name="output_bias"
        )
        self.built = True

    def call(self, hidden, embedding_table, mask_positions):
        positions = ops.cast(mask_positions, "int32")
        picked = ops.take_along_axis(hidden, positions[..., None], axis=1)  # (B, P, d)
        h = self.norm(self.activation(self.dense(picked)))  # (B, P, d)
        table = ops.cast(embedding_table, h.dtype)  # (V, d)
        logits = ops.einsum("bpd,vd->bpv", h, table)  # (B, P, V)
        return ops.cast(logits, "float32") + ops.cast(self.output_bias, "float32")

    def compute_output_shape(self, hidden_shape, embedding_table_shape, mask_positions_shape):
        return (hidden_shape[0], mask_positions_shape[1], self.vocab_size)

    def compute_output_spec(self, hidden, embedding_table, mask_positions):
        return keras.KerasTensor(
            (hidden.shape[0], mask_positions.shape[1], self.vocab_size), dtype="float32"
        )

    def get_config(self):
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "activation": self.activation_name or keras.activations.serialize(self.activation),
            "layer_norm_epsilon": self.layer_norm_epsilon,
        }


@keras.saving.register_keras_serializable(package="keras_transformers")
class BertPretrainer(BackboneModel):
    """Masked-LM pre-trainer: the encoder of :class:`TextEncoder` (same parts, same layer names)
    plus a :class:`MaskedLMHead` (``mlm_head``) tied to ``token_embedding``.

    ``BertPretrainer(**config)`` with the arguments of :func:`build_bert_pretrainer` (the builder
    resolves ``max_selections``).
    """

    default_name = "bert_pretrainer"

    def build_graph(self, vocab_size, max_length, max_selections, activation="gelu", **encoder):
        token_ids = keras.Input(shape=(max_length,), dtype="int32", name="token_ids")
        hidden, _ = encode_tokens(
            self,
            token_ids,
            vocab_size=vocab_size,
            max_length=max_length,
            activation=activation,
            **encoder,
        )  # (B, L, d)
        mask_positions = keras.Input(shape=(max_selections,), dtype="int32", name="mask_positions")
        table = self.token_embedding(
            VocabularyIds(vocab_size, name="vocabulary_ids")(token_ids)
        )  # (V, d): the same embedding layer, called on every id
        self.mlm_head = MaskedLMHead(vocab_size, activation=activation, name="mlm_head")
        logits = self.mlm_head(hidden, table, mask_positions)  # (B, P, V)
        return {"token_ids": token_ids, "mask_positions": mask_positions}, logits


def _sequence_output(model):
    """The per-token encoder output ``(B, L, d)`` of a pre-trainer (or text encoder)."""
    last = model.final_norm if model.final_norm is not None else model.transformer_layers[-1]
    return last.output


def build_bert_pretrainer(
    vocab_size,
    max_length,
    d_model=128,
    num_heads=4,
    num_layers=2,
    ff_dim=None,
    attention="full",
    position="learned",
    dropout=0.1,
    activation="gelu",
    norm_first=True,
    num_key_value_heads=None,
    max_selections=None,
    selection_rate=0.15,
    name="bert_pretrainer",
):
    """Build a Functional masked-LM pre-training model on :func:`build_text_encoder`.

    Args:
        vocab_size: ``V``, the ``[MASK]`` id included (see :func:`mask_token_id_for`).
        max_length: ``L``.
        d_model, num_heads, num_layers, ff_dim: encoder sizes, as in the classifier builder.
        attention, position, dropout, activation: the encoder's layers, as there.
        norm_first, num_key_value_heads: as there (use the same values to fine-tune).
        max_selections: ``P``, prediction slots per sequence (default
            :func:`default_max_selections` of ``L`` and ``selection_rate``).

    Returns:
        ``keras.Model``: ``{"token_ids": (B, L) int, "mask_positions": (B, P) int}`` -> logits
        ``(B, P, V)`` float32. Train with ``SparseCategoricalCrossentropy(from_logits=True,
        reduction="mean_with_sample_weight")`` on ``mask_ids`` with
        ``sample_weight=mask_weights`` (from :func:`mask_tokens`), so only selected positions
        count and the loss is their mean. Give ``mask_tokens`` the same ``selection_rate`` (or
        ``max_selections``) so that ``P`` matches. Its encoder layers keep the names of
        :func:`build_text_encoder` (``token_embedding``, ``position_embedding``,
        ``encoder_block_<i>``, ``final_norm``).
    """
    config = builder_arguments(locals(), drop=("selection_rate",))
    config["max_selections"] = int(
        max_selections or default_max_selections(max_length, selection_rate)
    )
    if config["max_selections"] < 1:
        raise ValueError(f"max_selections={max_selections}: must be >= 1")
    check_model_sizes(d_model, num_heads, num_layers)
    return BertPretrainer(**config)


def _as_model(pretrainer):
    if isinstance(pretrainer, keras.Model):
        return pretrainer
    return keras.saving.load_model(pretrainer)


def encoder_from_pretrainer(pretrainer, pooling="mean", name="text_encoder"):
    """The pooled encoder ``token_ids (B, L) -> (B, d)`` of a pre-trainer, *sharing* its weights.

    Args:
        pretrainer: a model from :func:`build_bert_pretrainer` or the path of its ``.keras`` file.
        pooling: ``"mean"`` (masked), ``"max"`` or ``"cls"``.
    """
    model = _as_model(pretrainer)
    token_ids = model.input["token_ids"]
    hidden = _sequence_output(model)  # (B, L, d)
    padding_mask = model.padding_mask_layer.output  # (B, L)
    pooled = SequencePooling(pooling, name="pooling")(hidden, padding_mask=padding_mask)
    return keras.Model(token_ids, pooled, name=name)


def load_pretrained_encoder(model, pretrainer):
    """Copy a pre-trainer's encoder weights into ``model`` (in place), part by part.

    Args:
        model: a model from :func:`build_encoder_classifier` (its nested ``text_encoder``), or
            from :func:`build_text_encoder`, built with the pre-trainer's sizes and vocabulary.
        pretrainer: a model from :func:`build_bert_pretrainer` or the path of its ``.keras`` file.

    Returns:
        the names of the layers copied. The MLM head is not copied.

    Raises:
        ValueError: when a layer is missing from the pre-trainer or a weight shape differs.
    """
    source = _as_model(pretrainer)
    target = getattr(model, "backbone", model)
    pairs = [
        (getattr(target, part), getattr(source, part))
        for part in ("token_embedding", "position_embedding")
    ]
    if len(target.transformer_layers) != len(source.transformer_layers):
        raise ValueError(
            f"{target.name!r} has {len(target.transformer_layers)} encoder blocks but the "
            f"pre-trainer {source.name!r} has {len(source.transformer_layers)}: build both with "
            "the same sizes"
        )
    pairs += list(zip(target.transformer_layers, source.transformer_layers))
    pairs.append((target.final_norm, source.final_norm))
    copied = []
    for layer, donor in pairs:
        if layer is None and donor is None:
            continue
        if layer is None or donor is None:
            raise ValueError(
                f"{target.name!r} and the pre-trainer {source.name!r} differ in their position "
                "embedding or final norm: build both with the same position and norm_first"
            )
        mine, theirs = layer.get_weights(), donor.get_weights()
        shapes = [w.shape for w in mine], [w.shape for w in theirs]
        if shapes[0] != shapes[1]:
            raise ValueError(
                f"layer {layer.name!r}: weight shapes {shapes[0]} differ from the pre-trainer's "
                f"{shapes[1]}: build both with the same vocab_size, max_length and sizes"
            )
        layer.set_weights(theirs)
        copied.append(layer.name)
    if not copied:
        raise ValueError(f"no encoder layers with weights found in {target.name!r}")
    return copied
