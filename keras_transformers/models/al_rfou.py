"""Deep character-level transformer LM with Al-Rfou et al.'s auxiliary losses (Al-Rfou, Choe,
Constant, Guo & Jones, 2019, "Character-level language modeling with deeper self-attention", AAAI).

A deep (64 layers in the paper) causal transformer over characters is hard to train from the
final prediction alone. The paper adds three kinds of auxiliary predictions, all dropped or kept
by weights, and learned positions at every layer:

1. **multiple positions**: every position predicts its next character, not only the last one of
   the window (``all_positions=True``; ``False`` scores the last position only);
2. **intermediate layers**: the output of layer ``i < N`` also predicts the next character, with
   a weight that decays linearly to exactly 0 at ``i / (2N)`` of training, so the lower layers are
   let go first and after half of training only the top layer is scored:
   ``w_i(p) = max(0, 1 − p · 2N / i)`` with ``p`` the fraction of training done;
3. **multiple targets**: the final layer also predicts the characters ``2 .. 1+F`` ahead with
   separate heads, weighted ``future_weight`` (0.5 in the paper).

Loss (per batch, mean over the scored positions):
``CE_N(x_{t+1}) + Σ_{i<N} w_i(p) · CE_i(x_{t+1}) + future_weight · Σ_{f=1..F} CE_f(x_{t+1+f})``.

``position="learned_per_layer"``: a separate learned table ``E_pos^i ∈ R^{L_max×d}`` is added to
the input of every layer ``i`` (the paper's per-layer positional embeddings); ``"learned"`` adds
one table after the embedding, as the other LMs.

The model owns its loss (:meth:`AlRfouLM.compute_loss`): compile with an optimizer only,
``fit(x, y)`` with ``y`` the next-token targets ``(B, L)``; the multiple-target heads shift ``y``
themselves. Progress ``p`` = ``aux_step / aux_total_steps``, two non-trainable variables: the step
counts itself in every training step; the total is set by
:class:`keras_transformers.callbacks.aux_schedule.AuxiliaryLossSchedule` at the start of
``fit`` (from the epochs and steps), or by hand (``model.set_schedule_steps(n)``).

Shapes: ``token_ids (B, L) -> outputs (B, E, L, V)``: ``E = N + F`` stacked predictions (layers
``1..N-1``, the final layer at index ``N-1``, then the ``F`` future heads). ``generate`` decodes
the final layer's prediction with the blocks' KV caches, adding each layer's position row
``E_pos^i[t]`` to the new token at block ``i`` (``use_cache=False`` recomputes the window).

Example:
    >>> import numpy as np
    >>> from keras_transformers.models.al_rfou import build_al_rfou_lm
    >>> lm = build_al_rfou_lm(vocab_size=40, max_length=16, d_model=16, num_heads=2,
    ...                       num_layers=4, num_future=1)
    >>> tuple(lm(np.ones((2, 16), "int32")).shape)      # 4 layers + 1 future head
    (2, 5, 16, 40)
"""

import keras
import numpy as np
from keras import ops

from keras_transformers.memory.knn import _check_positive_int
from keras_transformers.models.adaptive_depth import ExitStack
from keras_transformers.models.backbone import builder_arguments, check_model_sizes, make_blocks
from keras_transformers.models.decoder_lm import DecoderLM
from keras_transformers.positional.learned import LearnedPositionEmbedding

POSITIONS = ("learned_per_layer", "learned")


def layer_loss_weights(progress, num_layers):
    """``w_i(p) = max(0, 1 − p·2N/i)`` for the intermediate layers ``i = 1 .. N−1`` (numpy)."""
    i = np.arange(1, num_layers, dtype="float64")
    return np.maximum(0.0, 1.0 - float(progress) * 2.0 * num_layers / i)


def _masked_ce(targets, logits, weights):
    """Mean sparse cross-entropy over the positions where ``weights`` is 1."""
    ce = keras.losses.sparse_categorical_crossentropy(
        targets, ops.cast(logits, "float32"), from_logits=True
    )  # (B, L')
    return ops.sum(ce * weights) / ops.maximum(ops.sum(weights), 1.0)


@keras.saving.register_keras_serializable(package="keras_transformers")
class AlRfouLM(DecoderLM):
    """Causal LM with per-layer learned positions and Al-Rfou's auxiliary losses.

    ``AlRfouLM(**config)`` with the arguments of :func:`build_al_rfou_lm`. Parts as in
    :class:`DecoderLM` plus ``layer_positions`` (the ``N`` tables, or empty), ``layer_norms``
    (the intermediate predictions' LayerNorms; the head is the tied embedding), ``future_heads``
    and the schedule variables ``aux_step`` / ``aux_total_steps``.
    """

    default_name = "al_rfou_lm"

    def build_graph(
        self,
        vocab_size,
        max_length,
        d_model,
        num_heads,
        num_layers,
        ff_dim,
        position,
        num_future,
        dropout,
        activation,
        **loss_config,
    ):
        token_ids = keras.Input(shape=(max_length,), dtype="int32", name="token_ids")
        blocks = make_blocks(
            "decoder",
            num_layers,
            d_model,
            num_heads,
            ff_dim or 4 * d_model,
            cross_attention=False,
            dropout=dropout,
            activation=activation,
        )
        per_layer = position == "learned_per_layer"
        # the shared backbone with no blocks gives the embedding (and the single table)
        x = self.assemble(
            token_ids,
            [],
            vocab_size=vocab_size,
            d_model=d_model,
            max_length=max_length,
            position=None if per_layer else "learned",
            dropout=dropout,
            norm_first=False,
        )  # (B, L, d)
        self.transformer_layers = blocks
        self.layer_positions = [
            LearnedPositionEmbedding(max_length, name=f"layer_position_{i}")
            for i in range(num_layers if per_layer else 0)
        ]
        self.layer_norms = [
            keras.layers.LayerNormalization(epsilon=1e-5, name=f"layer_norm_{i}")
            for i in range(num_layers - 1)
        ]
        self.final_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")
        exits = []
        for i, block in enumerate(blocks):
            if per_layer:
                x = self.layer_positions[i](x)  # (B, L, d): E_pos^i added at layer i's input
            x = block(x)  # (B, L, d)
            if i < num_layers - 1:
                exits.append(self.token_embedding(self.layer_norms[i](x), reverse=True))
        top = self.final_norm(x)  # (B, L, d)
        exits.append(self.token_embedding(top, reverse=True))  # (B, L, V): the main prediction
        self.future_heads = [
            keras.layers.Dense(d_model, activation=activation, name=f"future_head_{f + 1}")
            for f in range(num_future)
        ]
        for head in self.future_heads:
            exits.append(self.token_embedding(head(top), reverse=True))  # predicts x_{t+1+f}
        return token_ids, ExitStack(dtype="float32", name="predictions")(exits)  # (B, E, L, V)

    def __init__(self, **config):
        super().__init__(**config)
        self.aux_step = self.add_weight(
            name="aux_step", shape=(), initializer="zeros", trainable=False
        )
        self.aux_total_steps = self.add_weight(
            name="aux_total_steps", shape=(), initializer="ones", trainable=False
        )

    # ----------------------------------------------------------------------------- schedule
    def set_schedule_steps(self, total_steps, step=0):
        """Start the intermediate-layer schedule: ``total_steps`` training steps from ``step``."""
        total_steps = _check_positive_int("total_steps", int(total_steps))
        self.aux_total_steps.assign(float(total_steps))
        self.aux_step.assign(float(step))

    def progress(self):
        """Fraction ``p`` of the schedule done (a float)."""
        step = float(ops.convert_to_numpy(self.aux_step))
        return min(1.0, step / float(ops.convert_to_numpy(self.aux_total_steps)))

    def layer_weights(self, progress=None):
        """The current weights ``w_i`` of the layers ``1 .. N−1`` (numpy ``(N−1,)``)."""
        num_layers = self._builder_config["num_layers"]
        return layer_loss_weights(self.progress() if progress is None else progress, num_layers)

    def _layer_weights_tensor(self):
        num_layers = self._builder_config["num_layers"]
        progress = ops.minimum(
            ops.convert_to_tensor(self.aux_step) / ops.convert_to_tensor(self.aux_total_steps), 1.0
        )
        i = ops.arange(1, num_layers, dtype="float32")  # (N-1,)
        return ops.maximum(0.0, 1.0 - progress * (2.0 * num_layers) / i)

    # ----------------------------------------------------------------------------- loss
    def auxiliary_loss(self, y, y_pred, progress_weights=None):
        """The total loss for targets ``y (B, L)`` and predictions ``y_pred (B, E, L, V)``."""
        cfg = self._builder_config
        n, length = cfg["num_layers"], y_pred.shape[2]
        y = ops.cast(y, "int32")
        if cfg["all_positions"]:
            score = ops.ones(ops.shape(y), "float32")  # (B, L)
        else:  # only the window's last position predicts
            score = ops.cast(ops.arange(length) == length - 1, "float32")[None] * ops.ones(
                ops.shape(y), "float32"
            )
        total = _masked_ce(y, y_pred[:, n - 1], score)
        if cfg["intermediate_layers"] and n > 1:
            w = self._layer_weights_tensor() if progress_weights is None else progress_weights
            for i in range(n - 1):
                total = total + w[i] * _masked_ce(y, y_pred[:, i], score)
        for f in range(1, cfg["num_future"] + 1):  # head f at position t predicts y[t + f]
            total = total + cfg["future_weight"] * _masked_ce(
                y[:, f:], y_pred[:, n - 1 + f, : length - f], score[:, f:]
            )
        return total

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True, **kwargs
    ):
        if training:
            self.aux_step.assign_add(1.0)
        loss = self.auxiliary_loss(y, y_pred)
        other = self.losses
        return loss + ops.sum(other) if other else loss

    # ----------------------------------------------------------------------------- generation
    def generation_logits(self, outputs):
        return outputs[:, self._builder_config["num_layers"] - 1]  # (B, L, V)


def build_al_rfou_lm(
    vocab_size,
    max_length,
    d_model=128,
    num_heads=4,
    num_layers=8,
    ff_dim=None,
    position="learned_per_layer",
    num_future=1,
    future_weight=0.5,
    all_positions=True,
    intermediate_layers=True,
    dropout=0.0,
    activation="gelu",
    name="al_rfou_lm",
):
    """Build a deep character LM with Al-Rfou et al.'s auxiliary losses (:class:`AlRfouLM`).

    Args:
        vocab_size: ``V``.
        max_length: ``L_max``, the window (rows of each position table).
        d_model, num_heads, num_layers, ff_dim: sizes (the paper: 64 layers of 512).
        position: ``"learned_per_layer"`` (a table added at every layer's input) or
            ``"learned"`` (one table after the embedding).
        num_future: ``F`` extra heads predicting ``2 .. 1+F`` tokens ahead (0: none).
        future_weight: weight of each future head's loss (the paper: 0.5).
        all_positions: every position predicts (auxiliary loss 1); False: the last one only.
        intermediate_layers: score layers ``1..N−1`` with the decaying weights (loss 2).
        dropout, activation: of the blocks.

    Returns:
        :class:`AlRfouLM`: ``token_ids (B, L) -> predictions (B, N + F, L, V)``; train with
        ``compile(optimizer)`` (the model owns its loss) and ``fit(x, y)`` with the
        :class:`~keras_transformers.callbacks.aux_schedule.AuxiliaryLossSchedule` callback.
    """
    config = builder_arguments(locals(), drop=("name",))
    check_model_sizes(d_model, num_heads, num_layers)
    _check_positive_int("vocab_size", vocab_size)
    _check_positive_int("max_length", max_length)
    if position not in POSITIONS:
        raise ValueError(f"position={position!r}: allowed values are {', '.join(POSITIONS)}.")
    _check_positive_int("num_future", num_future, minimum=0)
    if num_future >= max_length:
        raise ValueError(f"num_future={num_future}: must be < max_length={max_length}.")
    if not float(future_weight) >= 0.0:
        raise ValueError(f"future_weight={future_weight!r}: must be >= 0.")
    return AlRfouLM(**config, name=name)
