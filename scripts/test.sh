#!/usr/bin/env bash
# Test suite: set up the environment with the test extras, lint, run the tests on TensorFlow,
# then the shared contract suite on the JAX and PyTorch backends.
# Extra arguments go to every pytest call (e.g. -x, -k performer).
# The tests run on KT_TEST_WORKERS pytest-xdist workers (default 2, one per core; 0 = in this
# process); the tests of one file stay together (tests/conftest.py).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh test
ruff check .
ruff format --check .
workers="${KT_TEST_WORKERS:-2}"
parallel=()
if [ "$workers" != "0" ]; then parallel=(-n "$workers" --dist loadgroup); fi
echo "== TensorFlow backend: full suite"
KERAS_BACKEND=tensorflow python -m pytest -q "${parallel[@]}" "$@"
# The shared contract suite (every registered core and positional encoding: shapes, masks,
# causality, .keras round trip, training steps, mixed precision) runs again on JAX and PyTorch.
echo "== JAX backend: contract suite (compiled; jit_compile=False would mean op-by-op dispatch)"
KERAS_BACKEND=jax python -m pytest -q "${parallel[@]}" -m backends -k "not eager" "$@"
echo "== PyTorch backend: contract suite (eager; jit_compile would mean torch.compile)"
KERAS_BACKEND=torch python -m pytest -q "${parallel[@]}" -m backends -k "not jit" "$@"
