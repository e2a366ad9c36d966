#!/usr/bin/env bash
# Create (or reuse) the project virtual environment and install the package with its extras.
# Usage: source scripts/setup_env.sh [extras]   e.g. "test"
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${KT_VENV:-$here/.venv}"
extras="${1:-}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
stamp="$venv/.kt-installed-${extras:-base}"
if [ ! -f "$stamp" ] || [ "$here/setup.cfg" -nt "$stamp" ]; then
  "$venv/bin/python" -m pip install -q --upgrade pip
  spec="$here"
  [ -n "$extras" ] && spec="$here[$extras]"
  "$venv/bin/python" -m pip install -q -e "$spec"
  touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
export TF_CPP_MIN_LOG_LEVEL=3
