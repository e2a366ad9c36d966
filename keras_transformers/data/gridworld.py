"""A small generated grid world and an offline dataset of noisy-policy trajectories.

Used by the Decision Transformer (Chen et al., 2021) example: offline RL as sequence modelling
needs trajectories with rewards, returns-to-go ``R̂_t = Σ_{t'≥t} r_{t'}`` and timesteps, plus an
environment to roll the trained model out in. Pure numpy, deterministic for a given seed.

The world is an ``N×N`` grid with a goal, walls (impassable) and lava (episode ends with a
penalty). The layout is drawn from ``layout_seed`` and redrawn until every free cell can reach the
goal. Each episode starts on a random free cell.

* Actions: ``0`` up, ``1`` right, ``2`` down, ``3`` left (moving into a wall or the border stays).
* Rewards: ``step_reward`` every step, ``+goal_reward`` on reaching the goal (episode ends),
  ``lava_reward`` on entering lava (episode ends); the episode is cut at ``max_steps``.
* State: one-hot of the agent cell, ``state_dim = N·N``.

Example:
    >>> from keras_transformers.data.gridworld import GridWorld, generate_dataset
    >>> env = GridWorld(size=5, seed=0)
    >>> data = generate_dataset(env, num_episodes=20, seed=0)
    >>> data.returns_to_go[0][0] == data.rewards[0].sum()
    True
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

ACTIONS = ("up", "right", "down", "left")
MOVES = np.array([[-1, 0], [0, 1], [1, 0], [0, -1]], dtype=np.int64)  # (A, 2) row/column deltas
NUM_ACTIONS = len(ACTIONS)

FREE, WALL, LAVA, GOAL = 0, 1, 2, 3


def returns_to_go(rewards):
    """``R̂_t = Σ_{t'=t}^{T} r_{t'}``: reversed cumulative sum of ``rewards (T,)`` -> ``(T,)``."""
    rewards = np.asarray(rewards, dtype=np.float64)
    return np.cumsum(rewards[::-1])[::-1].astype(np.float32)


class GridWorld:
    """Deterministic ``size×size`` grid world (see the module docstring).

    Args:
        size: grid side ``N`` (>= 3).
        wall_fraction, lava_fraction: share of cells that are walls / lava.
        max_steps: episode length limit (also the largest timestep a model must embed).
        step_reward, goal_reward, lava_reward: the reward scheme.
        seed: layout seed; the layout is redrawn (seed, seed+1000, ...) until every free cell
            reaches the goal.
    """

    def __init__(
        self,
        size=6,
        wall_fraction=0.15,
        lava_fraction=0.08,
        max_steps=30,
        step_reward=-0.1,
        goal_reward=1.0,
        lava_reward=-1.0,
        seed=0,
    ):
        if int(size) < 3:
            raise ValueError(f"size={size}: must be >= 3")
        for name, value in (("wall_fraction", wall_fraction), ("lava_fraction", lava_fraction)):
            if not 0 <= value < 0.5:
                raise ValueError(f"{name}={value}: must be in [0, 0.5)")
        if int(max_steps) < 1:
            raise ValueError(f"max_steps={max_steps}: must be >= 1")
        self.size = int(size)
        self.max_steps = int(max_steps)
        self.step_reward = float(step_reward)
        self.goal_reward = float(goal_reward)
        self.lava_reward = float(lava_reward)
        self.seed = int(seed)
        for attempt in range(100):
            grid = self._draw(wall_fraction, lava_fraction, self.seed + 1000 * attempt)
            distance = self._distances(grid)
            free = grid == FREE
            if np.all(distance[free] >= 0):
                break
        else:  # pragma: no cover - practically unreachable for fractions < 0.5
            raise ValueError("could not draw a solvable layout; lower wall_fraction/lava_fraction")
        self.grid = grid  # (N, N) FREE/WALL/LAVA/GOAL
        self.distance = distance  # (N, N) shortest steps to the goal, -1 if unreachable
        self.free_cells = np.argwhere(free)  # (F, 2)
        self.position = None
        self.t = 0

    @property
    def state_dim(self):
        return self.size * self.size

    @property
    def num_actions(self):
        return NUM_ACTIONS

    def _draw(self, wall_fraction, lava_fraction, seed):
        rng = np.random.default_rng(seed)
        n = self.size
        grid = np.full((n, n), FREE, dtype=np.int64)
        cells = rng.permutation(n * n)
        goal = cells[0]
        num_walls = int(round(wall_fraction * n * n))
        num_lava = int(round(lava_fraction * n * n))
        grid.flat[goal] = GOAL
        grid.flat[cells[1 : 1 + num_walls]] = WALL
        grid.flat[cells[1 + num_walls : 1 + num_walls + num_lava]] = LAVA
        return grid

    def _distances(self, grid):
        """Breadth-first search from the goal over free cells: ``(N, N)`` steps, -1 unreachable."""
        n = self.size
        distance = np.full((n, n), -1, dtype=np.int64)
        goal = tuple(np.argwhere(grid == GOAL)[0])
        distance[goal] = 0
        queue = collections.deque([goal])
        while queue:
            r, c = queue.popleft()
            for dr, dc in MOVES:
                rr, cc = r + dr, c + dc
                if 0 <= rr < n and 0 <= cc < n and distance[rr, cc] < 0 and grid[rr, cc] == FREE:
                    distance[rr, cc] = distance[r, c] + 1
                    queue.append((rr, cc))
        return distance

    def move(self, position, action):
        """The cell reached from ``position`` by ``action`` (walls and the border block)."""
        if not 0 <= int(action) < NUM_ACTIONS:
            raise ValueError(f"action={action}: must be in [0, {NUM_ACTIONS})")
        r, c = int(position[0]) + MOVES[action][0], int(position[1]) + MOVES[action][1]
        if not (0 <= r < self.size and 0 <= c < self.size) or self.grid[r, c] == WALL:
            return (int(position[0]), int(position[1]))
        return (int(r), int(c))

    def observe(self, position=None):
        """One-hot state ``(N·N,)`` float32 of ``position`` (default: the agent's cell)."""
        position = self.position if position is None else position
        state = np.zeros(self.state_dim, dtype=np.float32)
        state[position[0] * self.size + position[1]] = 1.0
        return state

    def reset(self, seed=None, position=None):
        """Start an episode on a random free cell (or ``position``); return the state."""
        if position is None:
            rng = np.random.default_rng(seed)
            position = self.free_cells[rng.integers(len(self.free_cells))]
        self.position = (int(position[0]), int(position[1]))
        if self.grid[self.position] != FREE:
            raise ValueError(f"position={position}: must be a free cell")
        self.t = 0
        return self.observe()

    def step(self, action):
        """Apply ``action``; return ``(state, reward, done, info)`` like a gym environment."""
        if self.position is None:
            raise RuntimeError("call reset() before step()")
        self.position = self.move(self.position, action)
        self.t += 1
        cell = self.grid[self.position]
        reward = self.step_reward
        done = False
        if cell == GOAL:
            reward += self.goal_reward
            done = True
        elif cell == LAVA:
            reward += self.lava_reward
            done = True
        truncated = not done and self.t >= self.max_steps
        info = {"cell": int(cell), "truncated": truncated}
        return self.observe(), float(reward), bool(done or truncated), info

    def optimal_action(self, position=None, rng=None):
        """An action that decreases the distance to the goal (ties broken by ``rng``)."""
        position = self.position if position is None else position
        here = self.distance[position]
        best = []
        for a in range(NUM_ACTIONS):
            r, c = self.move(position, a)
            if self.grid[r, c] == GOAL or (
                self.grid[r, c] == FREE and 0 <= self.distance[r, c] < here
            ):
                best.append(a)
        if not best:  # pragma: no cover - every free cell reaches the goal by construction
            return 0
        return int(best[0] if rng is None else rng.choice(best))

    def optimal_return(self, position):
        """Return of the shortest path from ``position`` (within ``max_steps``)."""
        steps = int(self.distance[tuple(position)])
        if steps > self.max_steps:
            return self.max_steps * self.step_reward
        return steps * self.step_reward + self.goal_reward

    def render(self):
        """The layout as text: ``.`` free, ``#`` wall, ``~`` lava, ``G`` goal, ``A`` agent."""
        chars = np.array([".", "#", "~", "G"])[self.grid]
        if self.position is not None:
            chars[self.position] = "A"
        return "\n".join("".join(row) for row in chars)


@dataclasses.dataclass
class TrajectoryDataset:
    """Offline trajectories; lists of per-episode arrays of length ``T_i``.

    ``states`` ``(T, state_dim)`` float32, ``actions`` ``(T,)`` int32, ``rewards`` ``(T,)``
    float32, ``returns_to_go`` ``(T,)`` float32, ``timesteps`` ``(T,)`` int32, ``epsilons`` the
    per-episode random-action rate of the behaviour policy.
    """

    states: list
    actions: list
    rewards: list
    returns_to_go: list
    timesteps: list
    epsilons: np.ndarray

    @property
    def episode_returns(self):
        return np.array([r.sum() for r in self.rewards], dtype=np.float32)

    def __len__(self):
        return len(self.actions)


def behaviour_action(env, epsilon, rng):
    """The noisy scripted policy: a random action with probability ``epsilon``, else optimal."""
    if rng.random() < epsilon:
        return int(rng.integers(NUM_ACTIONS))
    return env.optimal_action(rng=rng)


def generate_dataset(env, num_episodes=500, epsilons=(0.0, 0.25, 0.5, 0.75, 1.0), seed=0):
    """Roll out the behaviour policy for ``num_episodes`` episodes.

    Each episode draws its random-action rate from ``epsilons`` (a mix of near-optimal and
    random play, so the returns spread out and return conditioning has something to learn).

    Returns:
        :class:`TrajectoryDataset`.
    """
    if int(num_episodes) < 1:
        raise ValueError(f"num_episodes={num_episodes}: must be >= 1")
    rng = np.random.default_rng(seed)
    columns = {k: [] for k in ("states", "actions", "rewards", "returns_to_go", "timesteps")}
    used = np.zeros(int(num_episodes), dtype=np.float32)
    for episode in range(int(num_episodes)):
        epsilon = float(epsilons[rng.integers(len(epsilons))])
        used[episode] = epsilon
        state = env.reset(seed=int(rng.integers(2**31)))
        states, actions, rewards = [], [], []
        done = False
        while not done:
            action = behaviour_action(env, epsilon, rng)
            states.append(state)
            actions.append(action)
            state, reward, done, _ = env.step(action)
            rewards.append(reward)
        rewards = np.asarray(rewards, dtype=np.float32)
        columns["states"].append(np.stack(states).astype(np.float32))
        columns["actions"].append(np.asarray(actions, dtype=np.int32))
        columns["rewards"].append(rewards)
        columns["returns_to_go"].append(returns_to_go(rewards))
        columns["timesteps"].append(np.arange(len(actions), dtype=np.int32))
    return TrajectoryDataset(epsilons=used, **columns)


def make_windows(dataset, context_length, stride=1):
    """Cut trajectories into fixed windows of ``K = context_length`` steps for training.

    A window starts at every ``stride``-th step of every episode and is right-padded with zeros
    past the episode's end (``mask`` 0 there). With a causal model right padding never changes
    the predictions at real steps.

    Returns:
        ``(inputs, actions, mask)``: ``inputs`` a dict ``returns_to_go (N, K, 1)``,
        ``states (N, K, state_dim)``, ``actions (N, K)``, ``timesteps (N, K)``; targets
        ``actions (N, K)`` int32; ``mask (N, K)`` float32, 1 on real steps.
    """
    k = int(context_length)
    if k < 1:
        raise ValueError(f"context_length={context_length}: must be >= 1")
    state_dim = dataset.states[0].shape[-1]
    starts = [(e, s) for e, a in enumerate(dataset.actions) for s in range(0, len(a), stride)]
    n = len(starts)
    rtg = np.zeros((n, k, 1), np.float32)  # (N, K, 1)
    states = np.zeros((n, k, state_dim), np.float32)  # (N, K, state_dim)
    actions = np.zeros((n, k), np.int32)  # (N, K)
    timesteps = np.zeros((n, k), np.int32)  # (N, K)
    mask = np.zeros((n, k), np.float32)  # (N, K)
    for i, (e, s) in enumerate(starts):
        stop = min(s + k, len(dataset.actions[e]))
        m = stop - s
        rtg[i, :m, 0] = dataset.returns_to_go[e][s:stop]
        states[i, :m] = dataset.states[e][s:stop]
        actions[i, :m] = dataset.actions[e][s:stop]
        timesteps[i, :m] = dataset.timesteps[e][s:stop]
        mask[i, :m] = 1.0
    inputs = {"returns_to_go": rtg, "states": states, "actions": actions, "timesteps": timesteps}
    return inputs, actions.copy(), mask
