#!/usr/bin/env bash
# Set up everything on a fresh Debian 12 machine, then run the main job on a model (default: tinystories-656k):
# describe it, score a sentence and generate a story from it.
# Usage: scripts/demo.sh [MODEL_DIR_OR_BIN] [extra generate flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-../shared/models/tinystories-656k}
shift || true
scripts/setup.sh build >/dev/null
./build/frozenlm info --model "$MODEL"
echo
./build/frozenlm generate --model "$MODEL" --prompt "Once upon a time" --max-new-tokens 120 --temperature 0.8 --top-p 0.95 --seed 1 "$@"
