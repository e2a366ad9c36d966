"""The Decision Transformer recipe: flags, the offline grid-world data, the rollout report.

Used by ``examples/train_decision_transformer.py`` around its own
``build_decision_transformer -> compile -> fit``. The module imports no Keras at load time, so
``--help`` answers at once.
"""

import argparse

import numpy as np

from keras_transformers.recipes.argtypes import (
    DefaultsHelpFormatter,
    add_run_arguments,
    integer,
    layer_spec,
    number,
    positive_int,
)

DESCRIPTION = (
    "Train a Decision Transformer (Chen et al., 2021) offline on a generated grid world: a noisy "
    "scripted policy (each episode mixes optimal and random actions at its own rate) writes the "
    "dataset, the model learns to predict the actions from (return-to-go, state, action) tokens, "
    "then it is rolled out in the environment conditioned on target returns and its average "
    "return is printed next to the behaviour policy's. Nothing is downloaded."
)


def build_parser(prog=None):
    p = argparse.ArgumentParser(
        prog=prog,
        description=DESCRIPTION,
        formatter_class=DefaultsHelpFormatter,
    )
    env = p.add_argument_group("environment and data")
    env.add_argument("--size", type=integer(3), default=6, help="grid side N, >= 3")
    env.add_argument("--max-steps", type=positive_int, default=30, help="episode step limit")
    env.add_argument(
        "--episodes",
        type=positive_int,
        default=600,
        help="offline episodes of the behaviour policy",
    )
    env.add_argument("--layout-seed", type=int, default=0, help="seed of the grid layout")
    model = p.add_argument_group("model")
    model.add_argument(
        "--context-length",
        type=positive_int,
        default=10,
        help="K steps per window, 3K tokens",
    )
    model.add_argument("--d-model", type=positive_int, default=64, help="model width d")
    model.add_argument("--heads", type=positive_int, default=4, help="attention heads")
    model.add_argument("--layers", type=positive_int, default=2, help="causal transformer blocks")
    model.add_argument("--dropout", type=number(0.0, 1.0), default=0.1, help="dropout rate")
    model.add_argument(
        "--attention",
        type=layer_spec,
        default="full",
        help="causal attention core over the 3K tokens",
    )
    train = p.add_argument_group("training")
    add_run_arguments(train, "decision_transformer")
    train.add_argument("--epochs", type=positive_int, default=8, help="training epochs")
    train.add_argument("--batch-size", type=positive_int, default=64, help="batch size (windows)")
    train.add_argument("--lr", type=number(0.0), default=1e-3, help="peak AdamW learning rate")
    train.add_argument("--weight-decay", type=number(0.0), default=1e-4, help="AdamW weight decay")
    train.add_argument(
        "--val-fraction",
        type=number(0.0, 1.0, open_low=True),
        default=0.1,
        help="share of episodes held out for validation",
    )
    ev = p.add_argument_group("evaluation")
    ev.add_argument(
        "--target-returns",
        type=float,
        nargs="+",
        default=None,
        help="returns to condition the rollouts on (default: the best return in the data and "
        "a low one, -1.0)",
    )
    ev.add_argument(
        "--eval-episodes",
        type=positive_int,
        default=50,
        help="rollouts per target return",
    )
    return p


def parse_args(argv=None, prog=None):
    """Parse ``argv`` (default ``sys.argv[1:]``) and check that --heads divides --d-model."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.d_model % args.heads:
        parser.error(f"--d-model={args.d_model} must be divisible by --heads={args.heads}")
    args.example = "decision_transformer"
    args.position = None
    return args


def load_data(args):
    """The grid world and its offline dataset, split by episode into training/validation windows.

    Returns:
        ``make_env, dataset, (x_train, y_train, w_train), (x_val, y_val, w_val)``; ``x`` is the
        dict of per-window token inputs, ``y`` the actions and ``w`` 0 on padded steps.
    """
    from keras_transformers.data.gridworld import GridWorld, generate_dataset, make_windows

    def make_env():
        return GridWorld(size=args.size, max_steps=args.max_steps, seed=args.layout_seed)

    env = make_env()
    print("grid (# wall, ~ lava, G goal):\n" + env.render())
    dataset = generate_dataset(env, args.episodes, seed=args.seed)
    order = np.random.default_rng(args.seed).permutation(len(dataset))
    num_val = max(1, int(round(len(dataset) * args.val_fraction)))

    def subset(rows):
        return type(dataset)(
            states=[dataset.states[i] for i in rows],
            actions=[dataset.actions[i] for i in rows],
            rewards=[dataset.rewards[i] for i in rows],
            returns_to_go=[dataset.returns_to_go[i] for i in rows],
            timesteps=[dataset.timesteps[i] for i in rows],
            epsilons=dataset.epsilons[rows],
        )

    train = make_windows(subset(order[num_val:]), args.context_length)
    validation = make_windows(subset(order[:num_val]), args.context_length)
    returns = dataset.episode_returns
    print(
        f"data: {len(dataset)} episodes, {sum(len(a) for a in dataset.actions)} steps; "
        f"behaviour return mean {returns.mean():.3f} (min {returns.min():.2f}, max "
        f"{returns.max():.2f}); optimal policy {optimal_return(env):.3f}"
    )
    return make_env, dataset, train, validation


def optimal_return(env):
    """The optimal policy's return averaged over every start cell."""
    return float(np.mean([env.optimal_return(p) for p in env.free_cells]))


def print_rollouts(model, make_env, returns, args):
    """Roll the model out conditioned on each target return; print them next to the baselines.

    Returns:
        ``{target: average return}``.
    """
    from keras_transformers.models.decision_transformer import evaluate_returns

    targets = args.target_returns or [float(returns.max()), -1.0]
    print(f"Rollouts ({args.eval_episodes} episodes per target, random start cells):")
    print(f"  behaviour policy (dataset average): {returns.mean():+.3f}")
    print(f"  optimal policy:                     {optimal_return(make_env()):+.3f}")
    results = {}
    for target in targets:
        got = evaluate_returns(model, make_env, target, args.eval_episodes, seed=10_000)
        results[target] = float(got.mean())
        print(
            f"  Decision Transformer, target {target:+.2f}: {got.mean():+.3f} (std {got.std():.3f})"
        )
    return results
