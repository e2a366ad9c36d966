#!/usr/bin/env bash
# Main demo: set up the environment, train a small byte-level decoder LM on built-in text
# (the Python standard library's docstrings) for a few minutes, log to TensorBoard.
# Extra arguments go to examples/train_lm.py (see --help), e.g. --attention performer.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh ""  # no extras (an explicit argument: a sourced script would see this script's own)
python examples/train_lm.py "$@"
