#!/usr/bin/env bash
# Runs every benchmark of BENCHMARKS.md in one go (each configuration in its own process, for its peak RSS).
# Usage: bench/run_bench.sh PATH/TO/frozenlm_bench [SHAPE=100m]
set -euo pipefail
BENCH=$1; SHAPE=${2:-100m}
HERE=$(cd "$(dirname "$0")" && pwd)
echo "# $(date -u +%FT%TZ) $(uname -m), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
/usr/bin/python3 "$HERE/bench_pytorch.py" --shape "$SHAPE"
for w in f32 bf16 int8; do "$BENCH" --shape "$SHAPE" --weights "$w"; done
/usr/bin/python3 "$HERE/bench_pytorch.py" --shape "$SHAPE"
