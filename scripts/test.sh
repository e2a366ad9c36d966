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
# The shared contract suite (every registered core and positional encoding: shapes, masks,
# causality, .keras round trip, training steps, mixed precision) runs again on JAX and PyTorch.
echo "== JAX backend: contract suite"
KERAS_BACKEND=jax python -m pytest -q -m backends "$@"
echo "== PyTorch backend: contract suite (eager; jit_compile would mean torch.compile)"
KERAS_BACKEND=torch python -m pytest -q -m backends -k "not jit" "$@"
