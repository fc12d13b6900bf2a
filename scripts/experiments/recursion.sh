#!/usr/bin/env bash
# docs/RESULTS.md "Recursive LMs" and docs/CLAIMS.md rows (f), (g), (h) (issue 12): the same frozen v2 base applied
# twice, on the testbed's closed-book QA (7 relations), scored on `test` (seen entities never QA-trained) and
# `test_heldout`; every trained system gets the same 600 steps × 16 examples as testbed_v2_baselines.sh's closed-book
# systems (whose prompt-tuned and fine-tuned modules are reused from V2_RUNS: the textual recursion's pass 1 *is* that
# prompt).
#   textual     pass 1 = the prompt-tuned closed-book module samples 4 candidates (temperature 1) + its greedy answer;
#               pass 2 = a second prompt (P=20) trained on "candidates + question" built from pass-1 samples on the
#               train split (no gold answer injected)
#   textual_cf  the same with cross-fitted pass-2 data (--pass1-folds 2): each training question's candidates come
#               from a pass-1 prompt trained without it, so pass 2 sees pass 1's mistakes as they happen on test
#   neural      LM–connector–LM, MLP connector (256 wide), P1 = P2 = 20, stage B only
#   neural_a    the same after stage A: 300 steps of language modelling through LM–C–LM on the pretraining sample
#   prompt2x    prompt tuning (P=20) on the 2× sibling base testbed/model-2x (9.6M → 2× the compute of one pass)
#   gate        eval --gate-thresholds on the textual and neural modules: accuracy against mean passes (SVG)
#   scripts/experiments/recursion.sh [RUNS_DIR=runs/recursion]   (rerunning skips what is done; THREADS=N)
# PARTS="textual neural neural_a prompt2x gate" (the default: all, then the tables) runs some parts only, e.g. two
# lanes on two cores: PARTS="neural neural_a" THREADS=1 taskset -c 1 ... & PARTS=prompt2x THREADS=1 taskset -c 0 ...
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
F=${FROZENLM:-$ROOT/build/frozenlm}
M=${MODEL:-$ROOT/testbed/model}
M2=${MODEL_2X:-$ROOT/testbed/model-2x}
B=${TESTBED:-$ROOT/testbed/build}
R=${1:-$ROOT/runs/recursion}
V2=${V2_RUNS:-$ROOT/runs/testbed_v2}   # testbed_v2_baselines.sh's closed-book prompt and fine-tuned modules
THREADS=${THREADS:-0}
STEPS=${STEPS:-600}; STAGE_A=${STAGE_A:-300}; LIMIT=${LIMIT:-200}
PARTS=${PARTS:-"textual textual_cf neural neural_a prompt2x gate"}
MIX=$B/tasks/mix_closed_book.json
[ -f "$MIX" ] || bash "$ROOT/testbed/build.sh" "$B" 0 >/dev/null
mkdir -p "$R"
has() { [[ " $PARTS " == *" $1 "* ]]; }
TH=(--threads "$THREADS")
COMMON=(--mixture "$MIX" --steps "$STEPS" --batch-size 16 --eval-every 200 --eval-limit 50 --seed 0 --resume-or-start "${TH[@]}")
SPLITS="test test_heldout"
# evaluate NAME MODEL [--module DIR] ...: per-example scores on each split (paired comparisons), once
evaluate() {
  local name=$1 model=$2; shift 2
  for split in $SPLITS; do
    [ -s "$R/${name}_$split.json" ] || "$F" eval --model "$model" "$@" --mixture "$MIX" --split "$split" --limit "$LIMIT" \
        --max-new-tokens 12 --per-example "${TH[@]}" > "$R/${name}_$split.json"
  done
}

# The one-pass systems of the same base, trained by testbed_v2_baselines.sh (trained here if missing, same command)
PT=$V2/closed_book_prompt; FT=$V2/closed_book_finetune
[ -f "$PT/run.json" ] || "$F" train prompt-tuning --model "$M" --out "$PT" --virtual-tokens 20 "${COMMON[@]}"
[ -f "$FT/run.json" ] || "$F" train finetune --model "$M" --out "$FT" --lr 3e-4 "${COMMON[@]}"
if has textual || has textual_cf || has neural; then evaluate prompt "$M" --module "$PT"; evaluate finetune "$FT"; fi

if has textual; then
  [ -f "$R/textual/run.json" ] || "$F" train recursive-text --model "$M" --pass1-module "$PT" --out "$R/textual" \
      --samples 4 --temperature 1.0 --virtual-tokens 20 "${COMMON[@]}"
  evaluate textual "$M" --module "$R/textual"
fi
if has textual_cf; then
  [ -f "$R/textual_cf/run.json" ] || "$F" train recursive-text --model "$M" --pass1-module "$PT" --out "$R/textual_cf" \
      --samples 4 --temperature 1.0 --virtual-tokens 20 --pass1-folds 2 "${COMMON[@]}"
  evaluate textual_cf "$M" --module "$R/textual_cf"
fi
if has neural; then
  [ -f "$R/neural/run.json" ] || "$F" train recursive-neural --model "$M" --out "$R/neural" --virtual-tokens 20 \
      --pass1-tokens 20 --connector mlp --connector-dim 256 "${COMMON[@]}"
  evaluate neural "$M" --module "$R/neural"
fi
if has neural_a; then
  [ -f "$R/neural_a/run.json" ] || "$F" train recursive-neural --model "$M" --out "$R/neural_a" --virtual-tokens 20 \
      --pass1-tokens 20 --connector mlp --connector-dim 256 --connector-pretrain-steps "$STAGE_A" \
      --pretrain-task "$B/tasks/pretrain_v2_sample.json" --pretrain-split test "${COMMON[@]}"
  evaluate neural_a "$M" --module "$R/neural_a"
  # Did stage A lower the LM loss through LM–C–LM? Perplexity on pretraining documents stage A did not train on
  # (rows 1,000–1,499 of the corpus; the sample it trained on is rows 0–999), the frozen base alone vs LM–C–LM.
  LMT=$R/stage_a_check_task.json
  echo "{\"name\": \"pretrain_rows_1000_1500\", \"type\": \"lm\", \"text\": \"{text}\", \"max_tokens\": 256, \"data\": {\"test\": {\"path\": \"$B/corpus/pretrain_v2.jsonl\", \"rows\": [1000, 1500]}}}" > "$LMT"
  [ -s "$R/stage_a_base.json" ] || "$F" eval --model "$M" --task "$LMT" --split test "${TH[@]}" > "$R/stage_a_base.json"
  [ -s "$R/stage_a_lmclm.json" ] || "$F" eval --model "$M" --module "$R/neural_a/stage_a" --task "$LMT" --split test "${TH[@]}" > "$R/stage_a_lmclm.json"
fi
if has prompt2x; then
  [ -f "$R/prompt2x/run.json" ] || "$F" train prompt-tuning --model "$M2" --out "$R/prompt2x" --virtual-tokens 20 "${COMMON[@]}"
  evaluate prompt2x "$M2" --module "$R/prompt2x"
fi
if has gate; then
  GT=(--gate-thresholds=-inf,-1,-0.5,-0.3,-0.2,-0.1,-0.05,-0.02,inf --mixture "$MIX" --split test --limit "$LIMIT" --max-new-tokens 12 "${TH[@]}")
  for n in textual textual_cf; do
    [ -f "$R/$n/run.json" ] || { echo "gate: $n is not trained yet: skipped" >&2; continue; }
    [ -s "$R/gate_$n.json" ] || "$F" eval --model "$M" --module "$R/$n" "${GT[@]}" --gate-svg "$R/gate_$n.svg" > "$R/gate_$n.json"
  done
  for n in neural neural_a; do
    [ -f "$R/$n/run.json" ] || { echo "gate: $n is not trained yet: skipped" >&2; continue; }
    [ -s "$R/gate_$n.json" ] || "$F" eval --model "$M" --module "$R/$n" --gate-module "$PT" "${GT[@]}" --gate-svg "$R/gate_$n.svg" > "$R/gate_$n.json"
  done
fi
[ "$PARTS" = "textual textual_cf neural neural_a prompt2x gate" ] && /usr/bin/python3 "$ROOT/scripts/experiments/recursion_tables.py" "$R"
exit 0
