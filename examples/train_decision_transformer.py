"""Train a Decision Transformer (Chen et al., 2021) offline on a generated grid world.

The script generates an offline dataset with a noisy scripted policy (each episode mixes optimal
and random actions at its own rate), trains a Decision Transformer to predict the actions from
``(return-to-go, state, action)`` tokens, then rolls it out in the environment conditioned on
one or two target returns and prints its average return next to the behaviour policy's.
Nothing is downloaded. Logs to TensorBoard and prints the log folder::

    python examples/train_decision_transformer.py
    python examples/train_decision_transformer.py --size 7 --episodes 1000 --context-length 8
    python examples/train_decision_transformer.py --target-returns 0.6 -1.0 --attention local
    python examples/train_decision_transformer.py --help

Start the same command again with ``--logdir <that folder>`` and an interrupted run resumes from
its last finished epoch (``keras.callbacks.BackupAndRestore``).
"""

import argparse
import os
import sys
import time

from keras_transformers.recipes.argtypes import layer_spec, number, positive_int

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def build_parser(prog=None):
    p = argparse.ArgumentParser(
        prog=prog,
        description=" ".join(__doc__.split("\n\n")[:2]).replace("\n", " ").replace("::", "."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    env = p.add_argument_group("environment and data")
    env.add_argument("--size", type=int, default=6, help="grid side N")
    env.add_argument("--max-steps", type=int, default=30, help="episode step limit")
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
    train.add_argument("--epochs", type=positive_int, default=8, help="training epochs")
    train.add_argument("--batch-size", type=positive_int, default=64, help="batch size (windows)")
    train.add_argument(
        "--steps-per-epoch",
        type=positive_int,
        default=None,
        help="batches per epoch (default: one pass over the windows)",
    )
    train.add_argument("--lr", type=number(0.0), default=1e-3, help="peak AdamW learning rate")
    train.add_argument(
        "--schedule",
        choices=("cosine", "constant"),
        default="cosine",
        help="learning-rate schedule (warm-up + cosine, or constant)",
    )
    train.add_argument(
        "--warmup-steps",
        type=int,
        default=None,
        help="warm-up steps (default: 5%% of all steps, at most 100)",
    )
    train.add_argument("--weight-decay", type=number(0.0), default=1e-4, help="AdamW weight decay")
    train.add_argument(
        "--val-fraction",
        type=number(0.0, 1.0, open_low=True),
        default=0.1,
        help="share of episodes held out for validation",
    )
    train.add_argument(
        "--seed", type=int, default=0, help="seed of the data, initialisation and dropout"
    )
    train.add_argument(
        "--jit",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="compile the train step with XLA (default: Keras decides)",
    )
    train.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=1,
        help="fit() verbosity: 0 silent, 1 progress bar, 2 one line per epoch",
    )
    train.add_argument(
        "--logdir",
        default=None,
        help="TensorBoard logs and checkpoints (default: runs/decision_transformer/<time>-...); "
        "pass the folder of an interrupted run to resume it",
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


def main(argv=None, prog=None):
    """Parse ``argv``, train and evaluate; return the History (``history.summary`` has the
    behaviour policy's and the model's average returns)."""
    args = build_parser(prog).parse_args(argv)
    # Imported after parsing so that --help and argument errors answer at once.
    import keras
    import numpy as np

    from keras_transformers.data.gridworld import GridWorld, generate_dataset, make_windows
    from keras_transformers.models.decision_transformer import (
        build_decision_transformer,
        evaluate_returns,
    )
    from keras_transformers.recipes import run

    if args.d_model % args.heads:
        raise SystemExit(
            f"error: --d-model={args.d_model} must be divisible by --heads={args.heads}"
        )
    started = time.time()
    args.example = "decision_transformer"
    args.position = None
    run.check_specs(args)
    keras.utils.set_random_seed(args.seed)
    logdir = run.prepare_logdir(args)
    print(f"keras {keras.__version__} (backend: {keras.backend.backend()}); logdir: {logdir}")

    def make_env():
        return GridWorld(size=args.size, max_steps=args.max_steps, seed=args.layout_seed)

    with run.user_errors("environment"):
        env = make_env()
    print("grid (# wall, ~ lava, G goal):\n" + env.render())
    dataset = generate_dataset(env, args.episodes, seed=args.seed)
    returns = dataset.episode_returns
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

    x_train, y_train, w_train = make_windows(subset(order[num_val:]), args.context_length)
    x_val, y_val, w_val = make_windows(subset(order[:num_val]), args.context_length)
    scale = float(max(np.abs(returns).max(), 1.0))
    optimal = float(np.mean([env.optimal_return(p) for p in env.free_cells]))
    print(
        f"data: {len(dataset)} episodes, {sum(len(a) for a in dataset.actions)} steps; "
        f"behaviour return mean {returns.mean():.3f} (min {returns.min():.2f}, max "
        f"{returns.max():.2f}); optimal policy {optimal:.3f}"
    )

    model = build_decision_transformer(
        env.state_dim,
        env.num_actions,
        args.context_length,
        args.max_steps,
        d_model=args.d_model,
        num_heads=args.heads,
        num_layers=args.layers,
        attention=args.attention,
        dropout=args.dropout,
        return_scale=scale,
    )
    steps = run.steps_per_epoch(args, len(y_train))
    run.compile_model(
        model,
        args,
        steps * args.epochs,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    print(
        f"{len(y_train)} training / {len(y_val)} validation windows of {args.context_length} "
        f"steps ({3 * args.context_length} tokens), {model.count_params():,} parameters"
    )
    history = model.fit(
        x_train,
        y_train,
        sample_weight=w_train,
        batch_size=args.batch_size,
        steps_per_epoch=args.steps_per_epoch,
        epochs=args.epochs,
        validation_data=(x_val, y_val, w_val),
        callbacks=run.make_callbacks(logdir),
        verbose=args.verbose,
    )

    targets = args.target_returns or [float(returns.max()), -1.0]
    print(f"Rollouts ({args.eval_episodes} episodes per target, random start cells):")
    print(f"  behaviour policy (dataset average): {returns.mean():+.3f}")
    print(f"  optimal policy:                     {optimal:+.3f}")
    results = {}
    for target in targets:
        got = evaluate_returns(model, make_env, target, args.eval_episodes, seed=10_000)
        results[target] = float(got.mean())
        print(
            f"  Decision Transformer, target {target:+.2f}: {got.mean():+.3f} (std {got.std():.3f})"
        )
    history.summary = {"behaviour_return": float(returns.mean()), "dt_returns": results}
    history.logdir = logdir
    print(f"Finished in {time.time() - started:.1f} s.")
    print(f"Logs and checkpoints (best.keras, last.keras): {logdir}")
    print(f"View the curves with:\n  tensorboard --logdir {logdir}")
    return history


if __name__ == "__main__":
    main(prog=os.path.basename(__file__))
    sys.exit(0)
