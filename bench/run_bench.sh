#!/usr/bin/env bash
# Runs every benchmark of BENCHMARKS.md in one go (each configuration in its own process, for its peak RSS), with
# PyTorch-Python before and after ours (the machine is noisy) and once more with glibc's malloc told to keep freed
# memory (the same fix our caching allocator applies), as the strongest PyTorch baseline.
# Usage: bench/run_bench.sh PATH/TO/frozenlm_bench [SHAPE=100m] [REPS=3]
set -euo pipefail
BENCH=$1; SHAPE=${2:-100m}; REPS=${3:-3}
HERE=$(cd "$(dirname "$0")" && pwd)
echo "# $(date -u +%FT%TZ) $(uname -m), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
PYT="/usr/bin/python3 $HERE/bench_pytorch.py --shape $SHAPE --reps $REPS"
$PYT
GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736 $PYT | sed 's/"pytorch-python"/"pytorch-python+malloc-keep"/'
for w in f32 bf16 int8; do "$BENCH" --shape "$SHAPE" --weights "$w" --reps "$REPS"; done
FROZENLM_CPU_CACHE_MB=0 "$BENCH" --shape "$SHAPE" --weights f32 --reps "$REPS" | sed 's/"frozenlm"/"frozenlm-no-cache"/'
$PYT
GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736 $PYT | sed 's/"pytorch-python"/"pytorch-python+malloc-keep"/'
