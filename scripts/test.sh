#!/usr/bin/env bash
# Test suite: set up the environment with the test extras, lint, run the tests on TensorFlow,
# then the shared contract suite on the JAX and PyTorch backends.
# Extra arguments go to every pytest call (e.g. -x, -k performer).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh test
ruff check .
ruff format --check .
echo "== TensorFlow backend: full suite"
KERAS_BACKEND=tensorflow python -m pytest -q "$@"
# The other backends run the core of the contract suite (shapes, masks, causality, .keras round
# trip, a training step) for every registered core and positional encoding; XLA and mixed
# precision are covered on TensorFlow. `pytest -m backends` runs all of it on any backend.
CORE="shape or padding or causal or save_load or (fit and eager)"
echo "== JAX backend: contract suite (core checks)"
KERAS_BACKEND=jax python -m pytest -q -m backends -k "$CORE" "$@"
echo "== PyTorch backend: contract suite (core checks)"
KERAS_BACKEND=torch python -m pytest -q -m backends -k "$CORE" "$@"
