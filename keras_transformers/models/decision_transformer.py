"""Decision Transformer (Chen et al., 2021): offline RL as conditional sequence modelling.

A trajectory is written as interleaved tokens ``τ = (R̂_1, s_1, a_1, R̂_2, s_2, a_2, ...)``, where
``R̂_t = Σ_{t'≥t} r_{t'}`` is the return-to-go (the return still wanted from step ``t`` on). Three
linear embeddings (return-to-go, state, action) plus a learned per-timestep embedding make
``3K`` tokens for a context of ``K`` steps; a causal transformer reads them and the action
``a_t`` is predicted from the output at the ``s_t`` token, i.e. from ``R̂_≤t, s_≤t, a_<t``.
At test time the model is conditioned on a *target* return: after each step the reward received
is subtracted from the return-to-go fed next.

Shapes: ``returns_to_go (B, K, 1)``, ``states (B, K, state_dim)``, ``actions (B, K)`` int,
``timesteps (B, K)`` int -> tokens ``(B, 3K, d)`` -> action logits ``(B, K, num_actions)``.
Cost: ``O((3K)²·d)`` per layer with full attention (any registered core can be used).

Example:
    >>> import numpy as np
    >>> from keras_transformers.models.decision_transformer import build_decision_transformer
    >>> model = build_decision_transformer(state_dim=9, num_actions=4, context_length=5,
    ...                                    max_timestep=20, d_model=16, num_heads=2, num_layers=1)
    >>> logits = model({"returns_to_go": np.zeros((2, 5, 1), "float32"),
    ...                 "states": np.zeros((2, 5, 9), "float32"),
    ...                 "actions": np.zeros((2, 5), "int32"),
    ...                 "timesteps": np.zeros((2, 5), "int32")})
    >>> tuple(logits.shape)
    (2, 5, 4)
"""

import keras
import numpy as np
from keras import ops

from keras_transformers.models.backbone import BackboneModel, check_model_sizes

INPUT_NAMES = ("returns_to_go", "states", "actions", "timesteps")


@keras.saving.register_keras_serializable(package="keras_transformers")
class InterleaveTokens(keras.layers.Layer):
    """``[x_0 (B, K, d), x_1 (B, K, d), ...]`` -> ``(B, M·K, d)`` ordered
    ``x_0[:, 0], x_1[:, 0], ..., x_0[:, 1], x_1[:, 1], ...`` (token ``M·t + m`` is ``x_m[:, t]``).
    """

    def call(self, inputs):
        stacked = ops.stack(inputs, axis=2)  # (B, K, M, d)
        shape = ops.shape(stacked)
        k, m, d = stacked.shape[1], stacked.shape[2], stacked.shape[3]
        return ops.reshape(stacked, (shape[0], k * m, d))  # (B, M·K, d)

    def compute_output_shape(self, input_shapes):
        b, k, d = input_shapes[0]
        return (b, None if k is None else k * len(input_shapes), d)


@keras.saving.register_keras_serializable(package="keras_transformers")
class SelectModality(keras.layers.Layer):
    """``(B, M·K, d)`` -> ``(B, K, d)``: every ``M``-th token from offset ``index``."""

    def __init__(self, index, num_modalities=3, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= int(index) < int(num_modalities):
            raise ValueError(f"index={index}: must be in [0, num_modalities={num_modalities})")
        self.index = int(index)
        self.num_modalities = int(num_modalities)

    def call(self, x):
        shape = ops.shape(x)
        m, d = self.num_modalities, x.shape[-1]
        grouped = ops.reshape(x, (shape[0], x.shape[1] // m, m, d))  # (B, K, M, d)
        return grouped[:, :, self.index]  # (B, K, d)

    def compute_output_shape(self, input_shape):
        b, length, d = input_shape
        return (b, None if length is None else length // self.num_modalities, d)

    def get_config(self):
        return {**super().get_config(), "index": self.index, "num_modalities": self.num_modalities}


@keras.saving.register_keras_serializable(package="keras_transformers")
class DecisionTransformer(BackboneModel):
    """Decision Transformer on the shared backbone (the embeddings are its own).

    ``DecisionTransformer(**config)`` with the arguments of :func:`build_decision_transformer`.
    Parts: ``timestep_embedding``, ``return_embedding``, ``state_embedding``,
    ``action_embedding`` (the modality embeddings), then the backbone's ``position_embedding``,
    ``embedding_norm``, ``transformer_layers`` (causal over the ``3K`` tokens) and
    ``final_norm`` (``token_embedding`` is None), and ``action_head``.
    """

    default_name = "decision_transformer"

    def build_graph(
        self, state_dim, num_actions, context_length, max_timestep, d_model, return_scale, **config
    ):
        k = int(context_length)
        rtg = keras.Input(shape=(k, 1), dtype="float32", name="returns_to_go")
        states = keras.Input(shape=(k, int(state_dim)), dtype="float32", name="states")
        actions = keras.Input(shape=(k,), dtype="int32", name="actions")
        timesteps = keras.Input(shape=(k,), dtype="int32", name="timesteps")

        self.timestep_embedding = keras.layers.Embedding(
            int(max_timestep), d_model, name="timestep_embedding"
        )
        self.return_embedding = keras.layers.Dense(d_model, name="return_embedding")
        self.state_embedding = keras.layers.Dense(d_model, name="state_embedding")
        self.action_embedding = keras.layers.Embedding(
            int(num_actions), d_model, name="action_embedding"
        )
        t_emb = self.timestep_embedding(timesteps)  # (B, K, d)
        scaled = keras.layers.Rescaling(1.0 / float(return_scale), name="return_scale")(rtg)
        tokens = [
            keras.layers.Add(name=f"{kind}_plus_time")([emb, t_emb])
            for kind, emb in (
                ("return", self.return_embedding(scaled)),  # (B, K, d)
                ("state", self.state_embedding(states)),  # (B, K, d)
                ("action", self.action_embedding(actions)),  # (B, K, d)
            )
        ]
        x = InterleaveTokens(name="interleave")(tokens)  # (B, 3K, d): R̂_1, s_1, a_1, R̂_2, ...
        x = self.assemble_stack(
            "decoder",
            None,
            d_model=d_model,
            cross_attention=False,
            embedded=x,
            max_length=3 * k,
            embedding_norm=True,
            **config,
        )  # (B, 3K, d), causal over the 3K tokens
        state_tokens = SelectModality(1, name="state_tokens")(x)  # (B, K, d)
        self.action_head = keras.layers.Dense(
            int(num_actions), dtype="float32", name="action_logits"
        )
        inputs = {
            "returns_to_go": rtg,
            "states": states,
            "actions": actions,
            "timesteps": timesteps,
        }
        return inputs, self.action_head(state_tokens)  # (B, K, A)


def build_decision_transformer(
    state_dim,
    num_actions,
    context_length,
    max_timestep,
    d_model=64,
    num_heads=4,
    num_layers=2,
    ff_dim=None,
    attention="full",
    position=None,
    dropout=0.1,
    activation="gelu",
    norm_first=True,
    return_scale=1.0,
    name="decision_transformer",
):
    """Build a Decision Transformer (:class:`DecisionTransformer`) for discrete actions.

    Args:
        state_dim: size of a (flat, float) state vector.
        num_actions: number of discrete actions; the model returns their logits.
        context_length: ``K`` steps per input window (``3K`` tokens).
        max_timestep: timesteps are embedded with a table of this many rows (ids ``0..max-1``).
        d_model, num_heads, num_layers, ff_dim: sizes (``ff_dim`` defaults to ``4·d_model``).
        attention: any name in ``kt.attention.available()`` with causal support, a config dict
            or an instance; it runs over the ``3K`` tokens with a causal mask.
        position: extra positional encoding over the ``3K`` tokens (default None: the timestep
            embedding is the only position signal, as in the paper).
        return_scale: returns-to-go are divided by this before embedding.

    Returns:
        :class:`DecisionTransformer`: inputs dict ``returns_to_go (B, K, 1)`` float, ``states
        (B, K, state_dim)`` float, ``actions (B, K)`` int, ``timesteps (B, K)`` int ->
        action logits ``(B, K, num_actions)`` float32 (the logits at step ``t`` come from the
        ``s_t`` token). Train with ``SparseCategoricalCrossentropy(from_logits=True)`` on the
        actions, weighting padded steps 0.
    """
    config = dict(locals())
    for arg, value in (
        ("state_dim", state_dim),
        ("num_actions", num_actions),
        ("context_length", context_length),
        ("max_timestep", max_timestep),
    ):
        if int(value) < 1:
            raise ValueError(f"{arg}={value}: must be >= 1")
    if not return_scale > 0:
        raise ValueError(f"return_scale={return_scale}: must be > 0")
    check_model_sizes(d_model, num_heads, num_layers)
    return DecisionTransformer(**config)


def context_window(history, context_length, max_timestep):
    """Pack the last ``K`` steps of each rollout into right-padded model inputs.

    Args:
        history: list (one per rollout) of dicts with lists ``returns_to_go``, ``states``,
            ``actions``, ``timesteps``; the last step's action is a placeholder.

    Returns:
        ``(inputs, last)``: the inputs dict ``(B, K, ...)`` and ``last (B,)`` the index of
        the newest step in each window (its logits choose the next action).
    """
    k = int(context_length)
    b = len(history)
    state_dim = len(history[0]["states"][0])
    rtg = np.zeros((b, k, 1), np.float32)
    states = np.zeros((b, k, state_dim), np.float32)
    actions = np.zeros((b, k), np.int32)
    timesteps = np.zeros((b, k), np.int32)
    last = np.zeros(b, np.int64)
    for i, h in enumerate(history):
        n = min(len(h["states"]), k)
        rtg[i, :n, 0] = h["returns_to_go"][-n:]
        states[i, :n] = np.asarray(h["states"][-n:])
        actions[i, :n] = h["actions"][-n:]
        timesteps[i, :n] = np.minimum(h["timesteps"][-n:], max_timestep - 1)
        last[i] = n - 1
    inputs = {"returns_to_go": rtg, "states": states, "actions": actions, "timesteps": timesteps}
    return inputs, last


def evaluate_returns(
    model, make_env, target_return, num_episodes=10, seed=0, context_length=None, max_steps=None
):
    """Roll the model out, conditioned on ``target_return``; all episodes step in lock-step.

    Each step feeds the last ``K`` steps (rolling window, right-padded while the episode is
    shorter than ``K``) and takes the argmax action at the newest state token; the reward
    received is subtracted from the return-to-go of the next step.

    Args:
        model: a model from :func:`build_decision_transformer`.
        make_env: callable returning a fresh environment with ``reset(seed)`` and ``step(a)``
            (e.g. ``lambda: GridWorld(...)``).
        target_return: the return the model is asked to achieve (``R̂_1``).
        num_episodes: rollouts (batched together).
        seed: episode ``i`` is reset with seed ``seed + i``.

    Returns:
        ``np.ndarray (num_episodes,)`` of episode returns.
    """
    k = context_length or model.input["states"].shape[1]
    max_timestep = model.timestep_embedding.input_dim
    envs = [make_env() for _ in range(num_episodes)]
    horizon = max_steps or getattr(envs[0], "max_steps", max_timestep)
    history = []
    for i, env in enumerate(envs):
        state = env.reset(seed=seed + i)
        history.append(
            {
                "returns_to_go": [float(target_return)],
                "states": [state],
                "actions": [0],
                "timesteps": [0],
            }
        )
    totals = np.zeros(num_episodes, np.float64)
    active = np.ones(num_episodes, bool)
    for _ in range(horizon):
        if not active.any():
            break
        running = [i for i in range(num_episodes) if active[i]]
        inputs, last = context_window([history[i] for i in running], k, max_timestep)
        logits = np.asarray(keras.ops.convert_to_numpy(model(inputs, training=False)))  # (b, K, A)
        chosen = np.argmax(logits[np.arange(len(running)), last], axis=-1)
        for j, i in enumerate(running):
            action = int(chosen[j])
            h = history[i]
            h["actions"][-1] = action
            state, reward, done, _ = envs[i].step(action)
            totals[i] += reward
            if done:
                active[i] = False
                continue
            h["returns_to_go"].append(h["returns_to_go"][-1] - reward)
            h["states"].append(state)
            h["actions"].append(0)
            h["timesteps"].append(h["timesteps"][-1] + 1)
    return totals.astype(np.float32)
