#!/usr/bin/env bash
# Data-parallel training on this machine (BENCHMARKS.md "Data-parallel training"): prompt tuning and ID-PT through a
# random 100M-shape Llama (12 layers, d 768, vocab 32000; fp32 compute) on SST-2, the same global batches in
#   1 rank × 1 thread, 1 rank × 2 threads, 2 ranks × 1 thread (--nproc 2, c10d Gloo over 127.0.0.1).
# Per run: seconds per optimiser step (forward + backward + collectives + AdamW, from run.json; evaluation and
# checkpoints excluded) and rank 0's seconds in collectives (all-reduces of the gradients and token counts, including
# waiting for the slower rank).
# Usage: bench/run_data_parallel_bench.sh BUILD_DIR [WORK_DIR]
set -euo pipefail
BUILD=${1:?usage: bench/run_data_parallel_bench.sh BUILD_DIR [WORK_DIR]}
WORK=${2:-/tmp/frozenlm-dp-bench}
SRC=$(cd "$(dirname "$0")/.." && pwd)
SHARED=$SRC/../shared
F=$BUILD/frozenlm
mkdir -p "$WORK"
CKPT=$WORK/llama-100m-shape
[ -f "$CKPT/model.safetensors" ] || "$BUILD/bench/frozenlm_bench_train_memory" --write-checkpoint "$CKPT" --shape 100m > /dev/null
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(date -u +%FT%TZ)"
COMMON=(--model "$CKPT" --tokenizer "$SHARED/models/tinystories-656k/tokenizer.json" --task "$SRC/tasks/sst2.json" --train-limit 128
        --steps 8 --batch-size 8 --eval-every 0 --eval-limit 8 --dev-split "" --checkpoint-every 1000 --seed 1)
report() {  # name run_dir
  /usr/bin/python3 - "$1" "$2" <<'PY'
import json, sys
name, d = sys.argv[1], sys.argv[2]
r = json.load(open(d + "/run.json"))
steps, secs = r["steps_this_process"], r["seconds_in_steps_this_process"]
dp = r.get("data_parallel") or {}
coll = dp.get("rank0_seconds_in_collectives")
print("%-34s %6.2f s/step  loss %.4f -> %.4f%s" % (name, secs / steps, r["first_loss"], r["last_loss"],
      "" if coll is None else "  collectives %.3f s/step (%.1f%% of a step)" % (coll / steps, 100 * coll / secs)))
PY
}
for module in prompt-tuning idpt; do
  EXTRA=(--virtual-tokens 20)
  [ $module = idpt ] && EXTRA=(--virtual-tokens 20 --gen-dim 64 --encoder-layer 2)
  for cfg in "1 rank x 1 thread:--threads 1" "1 rank x 2 threads:--threads 2" "2 ranks x 1 thread:--nproc 2"; do
    name=${cfg%%:*}
    IFS=' ' read -r -a flags <<< "${cfg#*:}"
    out="$WORK/$module-${name// /_}"
    rm -rf "$out"
    "$F" train $module "${COMMON[@]}" "${EXTRA[@]}" "${flags[@]}" --out "$out" > /dev/null 2> "$out.log"
    report "$module, $name" "$out"
  done
done
