"""
Title: Offline reinforcement learning with a Decision Transformer
Description: Train a Decision Transformer (Chen et al., 2021) on a generated grid world.

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

"""
## Setup

The flags are parsed before Keras is imported, so ``--help`` answers at once.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from keras_transformers.recipes import decision_transformer as dt

args = dt.parse_args()

import keras

import keras_transformers as kt
from keras_transformers.recipes import run

run.setup(args)  # checks --attention, seeds, creates the run folder

"""
## Data

Episodes of the behaviour policy, split by episode; each training example is a window of
``--context-length`` steps, i.e. ``3K`` tokens (return-to-go, state, action).
"""

with run.user_errors("environment"):
    make_env, dataset, (x_train, y_train, w_train), (x_val, y_val, w_val) = dt.load_data(args)
returns = dataset.episode_returns

"""
## Model, compile, fit

A causal Transformer over the interleaved tokens; the action is read from each state token.
Returns are scaled by the largest absolute return in the data.
"""

model = kt.models.build_decision_transformer(
    make_env().state_dim,
    make_env().num_actions,
    args.context_length,
    args.max_steps,
    d_model=args.d_model,
    num_heads=args.heads,
    num_layers=args.layers,
    attention=args.attention,
    dropout=args.dropout,
    return_scale=float(max(abs(returns).max(), 1.0)),
)
steps = run.steps_per_epoch(args, len(y_train))
model.compile(
    optimizer=kt.optimizers.adamw(
        run.learning_rate(args, steps * args.epochs), weight_decay=args.weight_decay
    ),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    jit_compile=run.jit_compile(args),
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
    callbacks=run.make_callbacks(args.logdir),
    verbose=args.verbose,
)

"""
## Rollouts

Condition on a target return, act greedily, and compare with the behaviour policy.
"""

results = dt.print_rollouts(model, make_env, returns, args)
run.finish(history, args, behaviour_return=float(returns.mean()), dt_returns=results)
