"""Grid world environment and offline trajectory dataset (Decision Transformer data)."""

import numpy as np
import pytest

from keras_transformers.data.gridworld import (
    GOAL,
    LAVA,
    WALL,
    GridWorld,
    generate_dataset,
    make_windows,
    returns_to_go,
)


def _loop_rtg(rewards):
    out = np.zeros(len(rewards))
    for t in range(len(rewards)):
        total = 0.0
        for tt in range(t, len(rewards)):
            total += rewards[tt]
        out[t] = total
    return out


def test_returns_to_go_matches_a_loop():
    rewards = np.random.default_rng(0).normal(size=17)
    rtg = returns_to_go(rewards)
    np.testing.assert_allclose(rtg, _loop_rtg(rewards), rtol=1e-5, atol=1e-5)


def test_dataset_returns_to_go_properties():
    env = GridWorld(size=5, seed=1)
    data = generate_dataset(env, num_episodes=30, seed=0)
    assert len(data) == 30
    for rewards, rtg, t, states, actions in zip(
        data.rewards, data.returns_to_go, data.timesteps, data.states, data.actions
    ):
        np.testing.assert_allclose(rtg, _loop_rtg(rewards), atol=1e-5)
        assert rtg[0] == pytest.approx(rewards.sum(), abs=1e-5)  # R̂_1 is the total return
        np.testing.assert_allclose(rtg[:-1] - rtg[1:], rewards[:-1], atol=1e-5)  # R̂_t - R̂_t+1 = r_t
        np.testing.assert_array_equal(t, np.arange(len(rewards)))
        assert states.shape == (len(rewards), env.state_dim)
        np.testing.assert_array_equal(states.sum(-1), 1.0)  # one-hot cells
        assert actions.min() >= 0 and actions.max() < 4


def test_layout_deterministic_and_solvable():
    a, b = GridWorld(size=6, seed=3), GridWorld(size=6, seed=3)
    np.testing.assert_array_equal(a.grid, b.grid)
    assert not np.array_equal(a.grid, GridWorld(size=6, seed=4).grid)
    assert (a.grid == GOAL).sum() == 1
    free = a.grid == 0
    assert np.all(a.distance[free] > 0)


def test_env_dynamics_walls_lava_goal():
    env = GridWorld(size=5, wall_fraction=0.0, lava_fraction=0.0, max_steps=4, seed=0)
    env.grid[:] = 0
    env.grid[0, 4] = GOAL
    env.grid[1, 0] = WALL
    env.grid[2, 2] = LAVA
    state = env.reset(position=(0, 0))
    assert state.argmax() == 0
    # border blocks: moving up or left from the corner stays put, reward is the step cost
    state, reward, done, _ = env.step(0)
    assert env.position == (0, 0) and reward == pytest.approx(env.step_reward) and not done
    state, reward, done, _ = env.step(2)  # wall below blocks
    assert env.position == (0, 0)
    state, reward, done, info = env.step(1)
    assert env.position == (0, 1) and state.argmax() == 1
    state, reward, done, info = env.step(1)
    assert done and info["truncated"]  # max_steps=4 reached
    env.reset(position=(0, 3))
    _, reward, done, info = env.step(1)
    assert done and not info["truncated"]
    assert reward == pytest.approx(env.step_reward + env.goal_reward)
    env.reset(position=(1, 2))
    _, reward, done, _ = env.step(2)
    assert done and reward == pytest.approx(env.step_reward + env.lava_reward)


def test_optimal_policy_reaches_goal_with_optimal_return():
    env = GridWorld(size=6, seed=0)
    for position in env.free_cells[:10]:
        env.reset(position=position)
        total, done = 0.0, False
        while not done:
            _, reward, done, info = env.step(env.optimal_action())
            total += reward
        assert info["cell"] == GOAL
        assert total == pytest.approx(env.optimal_return(position), abs=1e-5)


def test_noisy_policy_returns_spread_with_epsilon():
    env = GridWorld(size=6, seed=0)
    data = generate_dataset(env, num_episodes=200, epsilons=(0.0, 1.0), seed=0)
    returns = data.episode_returns
    assert returns[data.epsilons == 0].mean() > returns[data.epsilons == 1].mean() + 0.5


def test_make_windows_alignment_and_padding():
    env = GridWorld(size=5, seed=0)
    data = generate_dataset(env, num_episodes=5, seed=1)
    inputs, targets, mask = make_windows(data, context_length=4)
    assert len(targets) == sum(len(a) for a in data.actions)
    first = data.actions[0]
    np.testing.assert_array_equal(targets[0, : min(4, len(first))], first[:4])
    np.testing.assert_array_equal(inputs["actions"], targets)
    # the last window of the first episode holds one real step then padding
    last = len(first) - 1
    assert mask[last, 0] == 1 and mask[last, 1:].sum() == 0
    assert inputs["returns_to_go"][last, 0, 0] == pytest.approx(data.rewards[0][-1])
    assert inputs["timesteps"][last, 0] == last


def test_argument_errors():
    with pytest.raises(ValueError, match="size=2"):
        GridWorld(size=2)
    with pytest.raises(ValueError, match="action=7"):
        env = GridWorld(size=4)
        env.reset(seed=0)
        env.step(7)
    with pytest.raises(ValueError, match="context_length=0"):
        make_windows(generate_dataset(GridWorld(size=4), 2), 0)
