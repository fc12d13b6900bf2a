#!/usr/bin/env bash
# Training killed with SIGKILL mid-run and resumed with --resume ends with exactly the module bytes of an
# uninterrupted run (optimiser state, RNG/data position and schedule all restored).
#   MODE: prompt-tuning (compares the adapter) | finetune (compares the whole saved model)
set -euo pipefail
FROZENLM=$1; SHARED=$2; SRC=$3; WORK=$4; MODE=${5:-prompt-tuning}
rm -rf "$WORK"; mkdir -p "$WORK"
ARGS=(train "$MODE" --model "$SHARED/models/tinystories-656k" --task "$SRC/tasks/sst2.json" --train-limit 64
      --dev-split "" --steps 12 --batch-size 4 --checkpoint-every 4 --schedule cosine --warmup 3 --seed 7)
if [ "$MODE" = prompt-tuning ]; then ARGS+=(--virtual-tokens 4); OUTFILE=adapter_model.safetensors
else ARGS+=(--lr 1e-3); OUTFILE=model.safetensors; fi
"$FROZENLM" "${ARGS[@]}" --out "$WORK/straight" > /dev/null 2>&1
set +e
FROZENLM_KILL_AT_STEP=6 "$FROZENLM" "${ARGS[@]}" --out "$WORK/killed" > /dev/null 2>&1
rc=$?
set -e
[ "$rc" -eq 137 ] || { echo "expected the run to die of SIGKILL (exit 137), got $rc"; exit 1; }
grep -q '"step":4' "$WORK/killed/checkpoint/trainer_state.json" || { echo "no step-4 checkpoint after the kill"; exit 1; }
"$FROZENLM" "${ARGS[@]}" --out "$WORK/killed" --resume > /dev/null 2>&1
cmp "$WORK/straight/$OUTFILE" "$WORK/killed/$OUTFILE"
diff <(grep -o '"loss":[^,]*' "$WORK/straight/metrics.jsonl") <(grep -o '"loss":[^,]*' "$WORK/killed/metrics.jsonl")
echo "resumed run is byte-identical to the uninterrupted one"
