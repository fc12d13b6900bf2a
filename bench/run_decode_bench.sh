#!/usr/bin/env bash
# Issue 13's numbers in one run (BENCHMARKS.md "Decode" and "Training memory"), each configuration in its own process:
#  1. decode: this machine's read bandwidth, then greedy decode tokens/s at batch 1, 8, 64 on the random-init 100M
#     shape in f32 / bf16 / int8 / q8_0, before (LibTorch graph) and after (lean decode step + kernels);
#  2. TinyStories-656K decode, 1 and 2 threads;
#  3. training memory: a 1B-shape (Llama-3.2-1B) bf16 checkpoint written to disk, loaded as bf16 / int8 / q8_0, and a
#     soft prompt and an ID-PT generator trained through it at batch 4 × 256, each under /usr/bin/time -v;
#  4. the existing throughput bench (prefill and training) for the no-regression check, 100M f32.
# Usage: bench/run_decode_bench.sh BUILD_DIR [SHARED_DIR=../shared] [WORK_DIR=/tmp/frozenlm-decode-bench]
# Takes ≈ 30 minutes on the 2-core machine; run it on a quiet machine (one heavy process at a time).
set -euo pipefail
BUILD=$(cd "$1" && pwd); SHARED=${2:-$(cd "$(dirname "$0")/../.." && pwd)/shared}; WORK=${3:-/tmp/frozenlm-decode-bench}
mkdir -p "$WORK"
echo "# $(date -u +%FT%TZ) $(uname -m), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
peak() {  # runs "$@" under /usr/bin/time -v; prints its JSON lines and one with the process's maximum RSS
  /usr/bin/time -v -o "$WORK/time.txt" "$@"
  echo "{\"time_v_max_rss_mb\": $(awk '/Maximum resident set size/ {printf "%.0f", $NF / 1024}' "$WORK/time.txt"), \"cmd\": \"$*\"}"
}
# 1. decode, 100M shape: batch 1 in rounds (this VM's bandwidth moves ±15% within minutes: every ratio compares
#    numbers of the same round), with the matrices alone beside the whole step; then batch 1…64, before and after
for t in 2 1; do
  "$BUILD/bench/frozenlm_bench_decode" --shape 100m --formats f32,bf16,int8,q8_0 --batches 1 --modes lean --threads "$t" \
    --tokens 64 --reps 3 --rounds "$([ "$t" = 2 ] && echo 5 || echo 3)" --kernels-alone 1
done
"$BUILD/bench/frozenlm_bench_decode" --shape 100m --batches 1,8,16,64 --modes libtorch,lean --threads 2 --tokens 32 --reps 3
# batched decode: the panel kernels ("lean") against LibTorch's GEMM for the same rows ("lean-gemm"), in every round;
# batch 1 and 4 also compare the prompts' prefill (16 and 64 rows: the panel kernels take those too)
"$BUILD/bench/frozenlm_bench_decode" --shape 100m --formats f32,bf16,int8,q8_0 --batches 8,16,32,64 --modes lean,lean-gemm \
  --threads 2 --tokens 24 --reps 2 --rounds 2
"$BUILD/bench/frozenlm_bench_decode" --shape 100m --formats f32,int8,q8_0 --batches 1,4 --modes lean,lean-gemm --threads 2 \
  --tokens 8 --reps 3 --rounds 3
# the int8 / q8_0 software prefetch distance, every distance in every round (one process: across processes this VM's
# bandwidth moves more than the distances differ)
"$BUILD/bench/frozenlm_bench_decode" --shape 100m --formats int8,q8_0 --batches 1 --modes lean --threads 2 --tokens 64 --reps 3 \
  --rounds 3 --prefetch 1024,2048,3072,4096
"$BUILD/bench/frozenlm_bench_decode" --shape 1b --formats int8,q8_0 --batches 1 --modes lean --threads 2 --tokens 32 --reps 2 \
  --rounds 3 --prefetch 768,1024,1536,2048
# weights on huge pages against 4 KiB pages, both models in one process, each allocated first in turn
for order in 0,1 1,0; do
  "$BUILD/bench/frozenlm_bench_decode" --shape 100m --formats f32,int8,q8_0 --batches 1 --modes lean --threads 2 --tokens 64 \
    --reps 3 --rounds 3 --huge-pages "$order"
done
"$BUILD/bench/frozenlm_bench_decode" --shape 1b --formats f32,int8,q8_0 --batches 1 --modes lean --threads 2 --tokens 16 --reps 2 \
  --rounds 2 --huge-pages 1,0
# 2. TinyStories-656K
for t in 1 2; do
  "$BUILD/bench/frozenlm_bench_decode" --shape "$SHARED/models/tinystories-656k" --formats f32,int8,q8_0 --batches 1,8,64 \
    --modes lean --tokens 128 --reps 5 --threads "$t" --rounds 3
done
# 3. training memory through a 1B-shape checkpoint
CKPT="$WORK/llama-1b-shape-bf16"
[ -f "$CKPT/model.safetensors" ] || peak "$BUILD/bench/frozenlm_bench_train_memory" --write-checkpoint "$CKPT" --shape 1b
for w in bf16 int8 q8_0; do
  for m in pt idpt; do
    peak "$BUILD/bench/frozenlm_bench_train_memory" --model "$CKPT" --weights "$w" --module "$m" --batch 4 --seq 256 --steps 2
  done
done
# The issue's own measurement (full logits, forward + backward to the embeddings), for before/after.
peak "$BUILD/bench/frozenlm_bench" --shape 1b --weights bf16 --batch 1 --seq 256 --reps 1
# 4. prefill and training throughput (BENCHMARKS.md's first table), for the no-regression check
for w in f32 int8; do "$BUILD/bench/frozenlm_bench" --shape 100m --weights "$w" --reps 3; done
