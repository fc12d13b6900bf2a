#!/usr/bin/env bash
# A training run SIGKILLed mid-run and continued with --resume ends with exactly the bytes of an uninterrupted run, and
# the resumed process provably *resumed* (a restart would also end byte-identical): it reports the checkpoint's step,
# records resumed_from_step in run.json and does only the remaining steps. The run crosses epoch boundaries after the
# kill, accumulates gradients (2 micro-batches a step), evaluates on a dev split keeping the best module, and has
# patience (early-stop state) — all of which the checkpoint must carry.
#   MODE: prompt-tuning | idpt | finetune
# Also, per mode: a kill between the checkpoint's two renames (new version in place, link not yet moved); a kill
# before the first checkpoint (--resume says so plainly; --resume-or-start starts fresh); a resume with other options
# (refused, naming them); a corrupt trainer_state.json (refused, naming the file). prompt-tuning also resumes from the
# state an older frozenlm left when killed inside its swap (checkpoint.old + checkpoint.tmp, no checkpoint).
set -euo pipefail
FROZENLM=$1; SHARED=$2; SRC=$3; WORK=$4; MODE=${5:-prompt-tuning}
rm -rf "$WORK"; mkdir -p "$WORK"
STEPS=12
ARGS=(train "$MODE" --model "$SHARED/models/tinystories-656k" --task "$SRC/tasks/sst2.json" --train-limit 20
      --steps $STEPS --batch-size 4 --grad-accum 2 --checkpoint-every 4 --schedule cosine --warmup 3 --seed 7
      --eval-every 2 --eval-limit 8 --patience 4)
case $MODE in
  prompt-tuning) ARGS+=(--virtual-tokens 4); OUTFILE=adapter_model.safetensors ;;
  idpt) ARGS+=(--virtual-tokens 4 --gen-dim 16 --encoder-layer 1 --lr 0.05); OUTFILE=idpt_model.safetensors ;;
  finetune) ARGS+=(--lr 1e-3); OUTFILE=model.safetensors ;;
  *) echo "unknown mode $MODE"; exit 2 ;;
esac
fail() { echo "FAIL ($MODE): $*"; exit 1; }
losses() { grep -o '"\(loss\|eval_score\)":[^,}]*' "$1/metrics.jsonl"; }
json_field() { /usr/bin/python3 -c 'import json,sys; v=json.load(open(sys.argv[1])).get(sys.argv[2]); print("null" if v is None else v)' "$1" "$2"; }
# Kills a run with FROZENLM_<what>=<step>; expects SIGKILL (exit 137).
killed_run() {
  local var=$1 at=$2 out=$3
  set +e; env "$var=$at" "$FROZENLM" "${ARGS[@]}" --out "$out" > /dev/null 2> "$out.kill.log"; local rc=$?; set -e
  [ "$rc" -eq 137 ] || { cat "$out.kill.log"; fail "expected the run to die of SIGKILL at $var=$at (exit 137), got $rc"; }
}
# Resumes, then proves it resumed from step $2 and matches the uninterrupted run.
resume_and_compare() {
  local out=$1 from=$2
  "$FROZENLM" "${ARGS[@]}" --out "$out" --resume > /dev/null 2> "$out.resume.log" || { cat "$out.resume.log"; fail "resume failed"; }
  grep -q "resumed from .* at step $from " "$out.resume.log" || { cat "$out.resume.log"; fail "the resumed process did not start at step $from"; }
  local steps; steps=$(json_field "$out/run.json" steps)
  [ "$(json_field "$out/run.json" resumed_from_step)" = "$from" ] || fail "run.json: resumed_from_step is not $from"
  [ "$(json_field "$out/run.json" steps_this_process)" = "$((steps - from))" ] || fail "run.json: the resumed process did not do exactly the $((steps - from)) remaining steps"
  cmp "$WORK/straight/$OUTFILE" "$out/$OUTFILE" || fail "the resumed module differs from the uninterrupted one"
  diff <(losses "$WORK/straight") <(losses "$out") > /dev/null || fail "losses / dev scores differ from the uninterrupted run"
}

"$FROZENLM" "${ARGS[@]}" --out "$WORK/straight" > /dev/null 2> "$WORK/straight.log" || { cat "$WORK/straight.log"; fail "uninterrupted run failed"; }
[ "$(json_field "$WORK/straight/run.json" resumed_from_step)" = "null" ] || fail "a fresh run claims to have resumed"
grep -q '"eval_score"' "$WORK/straight/metrics.jsonl" || fail "no dev evaluation in the run"

# 0. A run that stopped early stays stopped: --resume on its final checkpoint does no step and changes nothing.
if [ "$(json_field "$WORK/straight/run.json" stopped_early)" = True ]; then
  cp -r "$WORK/straight" "$WORK/stopped"
  "$FROZENLM" "${ARGS[@]}" --out "$WORK/stopped" --resume > /dev/null 2> "$WORK/stopped.log" || { cat "$WORK/stopped.log"; fail "resuming a stopped run failed"; }
  [ "$(json_field "$WORK/stopped/run.json" steps_this_process)" = 0 ] || fail "a run that had stopped early trained on after --resume"
  cmp "$WORK/straight/$OUTFILE" "$WORK/stopped/$OUTFILE" || fail "resuming a stopped run changed its module"
  echo "ok: a run that stopped early (step $(json_field "$WORK/straight/run.json" steps)) stays stopped on --resume"
fi

# 1. Killed after step 6 (last checkpoint: step 4; 5 batches an epoch, 2 a step: epochs turn at steps 3, 5, 8, 10).
killed_run FROZENLM_KILL_AT_STEP 6 "$WORK/killed"
[ "$(readlink "$WORK/killed/checkpoint")" = checkpoint-00000004 ] || fail "the checkpoint link does not point at step 4"
resume_and_compare "$WORK/killed" 4
echo "ok: killed at step 6, resumed at step 4"

# 2. Killed between the renames of the step-8 checkpoint: version 8 complete, the link still at 4.
killed_run FROZENLM_KILL_IN_CHECKPOINT_SWAP 8 "$WORK/swap"
[ -f "$WORK/swap/checkpoint-00000008/trainer_state.json" ] || fail "checkpoint-00000008 was not complete before the swap"
[ "$(readlink "$WORK/swap/checkpoint")" = checkpoint-00000004 ] || fail "the link moved before the kill"
resume_and_compare "$WORK/swap" 4
[ "$(ls -d "$WORK/swap"/checkpoint-* | wc -l)" = 1 ] || fail "old checkpoint versions were not cleaned up"
echo "ok: killed inside the checkpoint swap, resumed"

# 3. Killed before the first checkpoint.
killed_run FROZENLM_KILL_AT_STEP 2 "$WORK/early"
set +e; "$FROZENLM" "${ARGS[@]}" --out "$WORK/early" --resume > /dev/null 2> "$WORK/early.err"; rc=$?; set -e
[ "$rc" -eq 1 ] && grep -q "no checkpoint yet" "$WORK/early.err" && grep -q -- "--resume-or-start" "$WORK/early.err" \
  || { cat "$WORK/early.err"; fail "--resume before the first checkpoint did not say so plainly"; }
"$FROZENLM" "${ARGS[@]}" --out "$WORK/early" --resume-or-start > /dev/null 2> "$WORK/early.log" || { cat "$WORK/early.log"; fail "--resume-or-start failed"; }
[ "$(json_field "$WORK/early/run.json" resumed_from_step)" = "null" ] || fail "--resume-or-start without a checkpoint did not start fresh"
cmp "$WORK/straight/$OUTFILE" "$WORK/early/$OUTFILE" || fail "the fresh start differs from the uninterrupted run"
echo "ok: no checkpoint yet: --resume explains, --resume-or-start starts fresh"

# 4. Other options than the checkpoint's: refused with their names; the checkpoint is left as it was.
killed_run FROZENLM_KILL_AT_STEP 5 "$WORK/opts"
for bad in "--lr 0.123" "--seed 8" "--batch-size 2" "--train-limit 16" "--steps 16"; do
  opt=${bad% *}; val=${bad#* }; NEW=(); replaced=0; prev=""
  for x in "${ARGS[@]}"; do if [ "$prev" = "$opt" ]; then NEW+=("$val"); replaced=1; else NEW+=("$x"); fi; prev=$x; done
  [ $replaced -eq 1 ] || NEW+=("$opt" "$val")
  set +e; "$FROZENLM" "${NEW[@]}" --out "$WORK/opts" --resume > /dev/null 2> "$WORK/opts.err"; rc=$?; set -e
  name=$(echo "$bad" | sed 's/--\([a-z-]*\) .*/\1/; s/-/_/g'); [ "$name" = train_limit ] && name=train_examples
  [ "$rc" -eq 1 ] && grep -q "cannot resume" "$WORK/opts.err" && grep -q "  $name: checkpoint" "$WORK/opts.err" \
    || { cat "$WORK/opts.err"; fail "resuming with $bad was not refused naming '$name'"; }
done
resume_and_compare "$WORK/opts" 4
echo "ok: resuming with other options is refused, naming them"

# 5. A corrupt trainer_state.json names the file.
killed_run FROZENLM_KILL_AT_STEP 5 "$WORK/corrupt"
printf '{"step": "four"' > "$WORK/corrupt/checkpoint/trainer_state.json"
set +e; "$FROZENLM" "${ARGS[@]}" --out "$WORK/corrupt" --resume > /dev/null 2> "$WORK/corrupt.err"; rc=$?; set -e
[ "$rc" -eq 1 ] && grep -q "corrupt/checkpoint/trainer_state.json: corrupt" "$WORK/corrupt.err" || { cat "$WORK/corrupt.err"; fail "a corrupt trainer_state.json was not named"; }
echo "ok: a corrupt trainer state is refused, naming the file"

# 6. (prompt-tuning) The state an older frozenlm left when killed between its two renames.
if [ "$MODE" = prompt-tuning ]; then
  killed_run FROZENLM_KILL_AT_STEP 6 "$WORK/legacy"
  target=$(readlink "$WORK/legacy/checkpoint"); rm "$WORK/legacy/checkpoint"
  mv "$WORK/legacy/$target" "$WORK/legacy/checkpoint.old"; mkdir "$WORK/legacy/checkpoint.tmp"
  resume_and_compare "$WORK/legacy" 4
  echo "ok: an older frozenlm's interrupted swap (checkpoint.old) is resumed"
  # ... and its plain checkpoint/ directory beside a checkpoint.old (killed after its second rename): the plain one is
  # resumed, and the next checkpoint replaces both with the versioned layout.
  killed_run FROZENLM_KILL_AT_STEP 6 "$WORK/legacy2"
  target=$(readlink "$WORK/legacy2/checkpoint"); rm "$WORK/legacy2/checkpoint"
  cp -r "$WORK/legacy2/$target" "$WORK/legacy2/checkpoint.old"; mv "$WORK/legacy2/$target" "$WORK/legacy2/checkpoint"
  resume_and_compare "$WORK/legacy2" 4
  [ -L "$WORK/legacy2/checkpoint" ] && [ ! -e "$WORK/legacy2/checkpoint.old" ] || fail "the older layout was not replaced"
  echo "ok: an older frozenlm's plain checkpoint directory is resumed and replaced"
fi
echo "resumed runs are byte-identical to the uninterrupted one and started at the checkpoint's step ($MODE)"
