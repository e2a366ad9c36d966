"""Decision Transformer builder: token order, causality, shapes, save/load, training, rollouts."""

import keras
import numpy as np
import pytest

from keras_transformers.data.gridworld import GridWorld, generate_dataset, make_windows
from keras_transformers.models.decision_transformer import (
    InterleaveTokens,
    SelectModality,
    build_decision_transformer,
    context_window,
    evaluate_returns,
)

K, S, A, T = 4, 6, 3, 12


def _model(**kwargs):
    config = dict(d_model=16, num_heads=2, num_layers=2, dropout=0.0)
    config.update(kwargs)
    return build_decision_transformer(S, A, K, T, **config)


def _inputs(batch=2, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "returns_to_go": rng.normal(size=(batch, K, 1)).astype("float32"),
        "states": rng.normal(size=(batch, K, S)).astype("float32"),
        "actions": rng.integers(0, A, size=(batch, K)).astype("int32"),
        "timesteps": np.tile(np.arange(K, dtype="int32") + 3, (batch, 1)),
    }


def test_interleave_order_and_select_modality():
    rng = np.random.default_rng(0)
    parts = [rng.normal(size=(2, K, 5)).astype("float32") for _ in range(3)]
    tokens = keras.ops.convert_to_numpy(InterleaveTokens()(parts))
    assert tokens.shape == (2, 3 * K, 5)  # the sequence length is 3K
    for t in range(K):
        for m in range(3):  # order R̂_t, s_t, a_t
            np.testing.assert_array_equal(tokens[:, 3 * t + m], parts[m][:, t])
    for m in range(3):
        picked = keras.ops.convert_to_numpy(SelectModality(m)(tokens))
        np.testing.assert_array_equal(picked, parts[m])
    with pytest.raises(ValueError, match="index=3"):
        SelectModality(3)


def test_model_interleaves_returns_states_actions():
    model = _model()
    inner = keras.Model(model.inputs, model.get_layer("interleave").output)
    x = _inputs()
    tokens = keras.ops.convert_to_numpy(inner(x))
    assert tokens.shape == (2, 3 * K, 16)
    state_embed = keras.Model(model.inputs, model.get_layer("state_plus_time").output)
    np.testing.assert_allclose(
        tokens[:, 1::3], keras.ops.convert_to_numpy(state_embed(x)), rtol=1e-6, atol=1e-6
    )
    action_embed = keras.Model(model.inputs, model.get_layer("action_plus_time").output)
    np.testing.assert_allclose(
        tokens[:, 2::3], keras.ops.convert_to_numpy(action_embed(x)), rtol=1e-6, atol=1e-6
    )


def test_shapes():
    model = _model()
    assert keras.ops.convert_to_numpy(model(_inputs(batch=3))).shape == (3, K, A)


@pytest.mark.parametrize("attention", ["full", {"name": "local", "block_size": 4}])
def test_action_at_t_depends_only_on_tokens_up_to_s_t(attention):
    model = _model(attention=attention)
    x = _inputs(batch=1, seed=1)
    base = keras.ops.convert_to_numpy(model(x))
    for t in range(K):
        changed = {key: value.copy() for key, value in x.items()}
        rng = np.random.default_rng(t)
        changed["actions"][:, t:] = (changed["actions"][:, t:] + 1) % A  # a_t and later
        changed["returns_to_go"][:, t + 1 :] += rng.normal(size=(1, K - t - 1, 1))
        changed["states"][:, t + 1 :] += rng.normal(size=(1, K - t - 1, S)).astype("float32")
        changed["timesteps"][:, t + 1 :] += 1
        out = keras.ops.convert_to_numpy(model(changed))
        np.testing.assert_allclose(out[:, : t + 1], base[:, : t + 1], rtol=1e-5, atol=1e-5)
        # ... while s_t itself and R̂_t do matter
        own = {key: value.copy() for key, value in x.items()}
        own["states"][:, t] += 1.0
        assert not np.allclose(keras.ops.convert_to_numpy(model(own))[:, t], base[:, t])
        own = {key: value.copy() for key, value in x.items()}
        own["returns_to_go"][:, t] += 1.0
        assert not np.allclose(keras.ops.convert_to_numpy(model(own))[:, t], base[:, t])


def test_keras_round_trip(tmp_path):
    model = _model(position="learned")
    x = _inputs()
    path = str(tmp_path / "dt.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x)), atol=1e-6
    )


def test_fit_learns_behaviour_and_rollout_runs():
    env = GridWorld(size=4, wall_fraction=0.0, lava_fraction=0.0, max_steps=T, seed=0)
    data = generate_dataset(env, num_episodes=16, epsilons=(0.0,), seed=0)  # optimal play only
    x, y, w = make_windows(data, K)
    model = build_decision_transformer(
        env.state_dim, env.num_actions, K, T, d_model=16, num_heads=2, num_layers=1, dropout=0.0
    )
    model.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=["accuracy"],
        jit_compile=False,
    )
    history = model.fit(x, y, sample_weight=w, batch_size=32, epochs=4, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["loss"][-1] < 0.8 * history.history["loss"][0]
    returns = evaluate_returns(
        model,
        lambda: GridWorld(size=4, wall_fraction=0.0, lava_fraction=0.0, max_steps=T, seed=0),
        target_return=1.0,
        num_episodes=3,
    )
    assert returns.shape == (3,) and np.all(np.isfinite(returns))
    assert np.all(returns <= 1.0)


def test_context_window_rolls_and_right_pads():
    history = [
        {
            "returns_to_go": [5.0, 4.0],
            "states": [np.eye(S)[0], np.eye(S)[1]],
            "actions": [2, 0],
            "timesteps": [0, 1],
        },
        {
            "returns_to_go": list(np.arange(K + 2, dtype=float)),
            "states": [np.eye(S)[i % S] for i in range(K + 2)],
            "actions": list(range(K + 2)),
            "timesteps": list(range(K + 2)),
        },
    ]
    inputs, last = context_window(history, K, T)
    np.testing.assert_array_equal(last, [1, K - 1])
    np.testing.assert_array_equal(inputs["returns_to_go"][0, :, 0], [5, 4, 0, 0])
    np.testing.assert_array_equal(inputs["timesteps"][1], np.arange(2, K + 2))  # last K steps


def test_argument_errors():
    with pytest.raises(ValueError, match="context_length=0"):
        build_decision_transformer(S, A, 0, T)
    with pytest.raises(ValueError, match="d_model=30 must be divisible by num_heads=4"):
        build_decision_transformer(S, A, K, T, d_model=30, num_heads=4)
