#!/usr/bin/env bash
# Resume trial (docs/RESULTS.md, "Exact resume under random SIGKILLs"): N training runs (default 20), each SIGKILLed at a
# kill point drawn from a seed — a step (after its checkpoint, if any, is written) or the moment between a checkpoint's
# two renames — over prompt tuning, ID-PT and fine-tuning in turn; a third of them are killed a second time after
# resuming. Every run is resumed with --resume-or-start (as a supervisor would) until it finishes, then compared
# byte for byte (module and losses) with an uninterrupted run, and checked to have resumed from the step it should.
#   scripts/experiments/resume_kill_trial.sh [N] [SEED] [WORK_DIR]        (≈ 4 min on 2 cores for N = 20)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
F=${FROZENLM:-$ROOT/build/frozenlm}
M=${MODEL:-$ROOT/../shared/models/tinystories-656k}
N=${1:-20}; SEED=${2:-1}; W=${3:-/tmp/frozenlm-resume-trial}
STEPS=16; EVERY=3
rm -rf "$W"; mkdir -p "$W"
args() {
  local mode=$1
  local a=(train "$mode" --model "$M" --task "$ROOT/tasks/sst2.json" --train-limit 20 --steps $STEPS --batch-size 4
           --grad-accum 2 --checkpoint-every $EVERY --schedule cosine --warmup 3 --seed 7 --eval-every 2 --eval-limit 8 --patience 5)
  case $mode in
    prompt-tuning) a+=(--virtual-tokens 4) ;;
    idpt) a+=(--virtual-tokens 4 --gen-dim 16 --encoder-layer 1 --lr 0.05) ;;
    finetune) a+=(--lr 1e-3) ;;
  esac
  echo "${a[@]}"
}
outfile() { case $1 in prompt-tuning) echo adapter_model.safetensors ;; idpt) echo idpt_model.safetensors ;; *) echo model.safetensors ;; esac; }
field() { /usr/bin/python3 -c 'import json,sys; v=json.load(open(sys.argv[1])).get(sys.argv[2]); print("null" if v is None else v)' "$1" "$2"; }
losses() { grep -o '"\(loss\|eval_score\)":[^,}]*' "$1/metrics.jsonl"; }
MODES=(prompt-tuning idpt finetune)
for m in "${MODES[@]}"; do
  # shellcheck disable=SC2046
  "$F" $(args $m) --out "$W/straight-$m" > /dev/null 2>&1
done
RANDOM=$SEED
ok=0; kills=0
printf "| run | mode | kills (kind@step) | resumed from | steps after the last resume | identical |\n|---|---|---|---|---|---|\n"
for i in $(seq 1 "$N"); do
  m=${MODES[$(( (i - 1) % 3 ))]}
  out="$W/run-$i"
  A=$(args $m)
  stop=$(field "$W/straight-$m/run.json" steps)  # the uninterrupted run's last step (early stopping may end it before STEPS)
  plan=(); n_kills=$(( RANDOM % 3 == 0 ? 2 : 1 )); at=0
  for k in $(seq 1 $n_kills); do
    [ $(( stop - 1 - at )) -ge 1 ] || break
    at=$(( at + 1 + RANDOM % (stop - 1 - at) ))
    up=$(( (at + EVERY - 1) / EVERY * EVERY ))  # a swap kill happens at a checkpoint step: the next one
    if (( RANDOM % 3 == 0 )) && (( up < stop )); then at=$up; plan+=("swap@$at"); else plan+=("step@$at"); fi
  done
  expect_from=null
  for p in "${plan[@]}"; do
    kind=${p%@*}; step=${p#*@}
    var=FROZENLM_KILL_AT_STEP; [ "$kind" = swap ] && var=FROZENLM_KILL_IN_CHECKPOINT_SWAP
    set +e
    # shellcheck disable=SC2086
    env $var=$step "$F" $A --out "$out" --resume-or-start > /dev/null 2>> "$out.log"; rc=$?
    set -e
    [ $rc -eq 137 ] || { echo "run $i: expected SIGKILL at $p, got exit $rc"; continue; }
    kills=$((kills + 1))
    # The checkpoint a resume must start from: the last multiple of EVERY at or before the kill step (a swap kill:
    # the one before the interrupted checkpoint).
    # (A swap kill at the first checkpoint leaves no link: the complete new version itself is resumed.)
    if [ "$kind" = swap ]; then last=$(( step > EVERY ? step - EVERY : step )); else last=$(( step / EVERY * EVERY )); fi
    if [ $last -le 0 ]; then expect_from=null; else expect_from=$last; fi
  done
  # shellcheck disable=SC2086
  "$F" $A --out "$out" --resume-or-start > /dev/null 2>> "$out.log"
  from=$(field "$out/run.json" resumed_from_step); after=$(field "$out/run.json" steps_this_process)
  same=no
  if cmp -s "$W/straight-$m/$(outfile $m)" "$out/$(outfile $m)" && diff -q <(losses "$W/straight-$m") <(losses "$out") > /dev/null \
     && [ "$from" = "$expect_from" ]; then same=yes; ok=$((ok + 1)); fi
  printf "| %d | %s | %s | %s (expected %s) | %s | %s |\n" "$i" "$m" "${plan[*]}" "$from" "$expect_from" "$after" "$same"
done
echo
echo "$ok of $N runs identical to the uninterrupted run and resumed from the expected step ($kills SIGKILLs in all; seed $SEED)"
