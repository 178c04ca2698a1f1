#!/usr/bin/env bash
# Set everything up and run the whole test suite on JAX, then on TensorFlow, then on PyTorch.
# Extra arguments go to pytest (e.g. scripts/test.sh -x -k bert).
# BERT4KERAS3_BACKENDS="jax" limits the backends. With several backends, each example test
# (tests/conftest.py: EXAMPLE_FILES) runs in one pass only and backend-free tests in the first;
# BERT4KERAS3_ALL_TESTS=1 runs every test in every pass.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYBIN="$(bash "$ROOT/scripts/setup_env.sh")" || { echo "environment setup failed" >&2; exit 1; }
cd "$ROOT"
export TF_CPP_MIN_LOG_LEVEL=2 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export BERT4KERAS3_PASSES="${BERT4KERAS3_BACKENDS:-jax tensorflow torch}"
status=0
for backend in $BERT4KERAS3_PASSES; do
  echo "=== pytest on KERAS_BACKEND=$backend ==="
  KERAS_BACKEND=$backend "$PYBIN" -m pytest -q "$@"
  rc=$?
  if [ $rc -eq 5 ]; then
    echo "pytest collected no tests on $backend: failing" >&2
    status=1
  elif [ $rc -ne 0 ]; then
    echo "pytest failed on $backend (exit $rc)" >&2
    status=1
  fi
done
exit $status
