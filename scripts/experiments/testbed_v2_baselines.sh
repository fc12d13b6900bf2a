#!/usr/bin/env bash
# docs/RESULTS.md "Testbed v2 baselines" and docs/CLAIMS.md rows (a)-(c), (i) (issue 10): zero-shot, one shared
# prompt (prompt tuning, P=20), ID-PT (P=20, generator reading layer 1 of the frozen LM itself) and fine-tuning (every
# weight) on the v2 base, per mixture built by testbed/build.sh:
#   closed_book (7 relations), open_book (the gold passage in the input), classification (4 tasks), and multitask
#   (all 18 tasks together; examples-proportional, cap 400 each).
# Scored by entity group: `test` (seen, never QA-trained: extraction), `test_qa_trained` (QA-trained entities in the
# held-back phrasing), `test_heldout` (never in pretraining). Same steps × 16 examples for every trained system of a
# mixture. Prompt learning rates follow the rule (default_prompt_lr: 0.6 × embedding RMS); ID-PT's generator trains at
# 3e-3 (--gen-lr-scale = 3e-3 / that rate), the absolute rate that worked on the tinystories mixture.
#   scripts/experiments/testbed_v2_baselines.sh [RUNS_DIR]      (rerunning skips finished runs; ≈ 90 min on 2 cores)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
F=${FROZENLM:-$ROOT/build/frozenlm}
M=${MODEL:-$ROOT/testbed/model}
B=${TESTBED:-$ROOT/testbed/build}
R=${1:-$ROOT/runs/testbed_v2}
LIMIT=${LIMIT:-200}
[ -f "$B/tasks/mix_multitask.json" ] || bash "$ROOT/testbed/build.sh" "$B" 0 >/dev/null
mkdir -p "$R"
trained() { [ -f "$1/run.json" ]; }
declare -A STEPS=([closed_book]=600 [open_book]=400 [classification]=400 [multitask]=1000)
# The generator's scale relative to the prompts' default rate (`frozenlm info` reports it: 0.04 on the v2 base)
PLR=$("$F" info --model "$M" --json | /usr/bin/python3 -c 'import json,sys; print("%.6g" % (3e-3 / json.load(sys.stdin)["default_prompt_lr"]))')

for mix in closed_book open_book classification multitask; do
  MIX=$B/tasks/mix_$mix.json
  COMMON=(--mixture "$MIX" --steps "${STEPS[$mix]}" --batch-size 16 --eval-every 200 --eval-limit 50 --seed 0 --resume-or-start)
  trained "$R/${mix}_prompt" || "$F" train prompt-tuning --model "$M" --out "$R/${mix}_prompt" --virtual-tokens 20 "${COMMON[@]}"
  trained "$R/${mix}_idpt" || "$F" train idpt --model "$M" --out "$R/${mix}_idpt" --virtual-tokens 20 --encoder self --encoder-layer 1 \
      --gen-dim 64 --gen-blocks 1 --gen-heads 4 --gen-lr-scale "$PLR" "${COMMON[@]}"
  trained "$R/${mix}_finetune" || "$F" train finetune --model "$M" --out "$R/${mix}_finetune" --lr 3e-4 "${COMMON[@]}"
  SPLITS="test test_qa_trained test_heldout"; [ "$mix" = classification ] && SPLITS="test test_heldout"
  for split in $SPLITS; do
    EVAL=(--mixture "$MIX" --split "$split" --limit "$LIMIT" --max-new-tokens 12)
    [ "$mix" = multitask ] && [ "$split" = test_qa_trained ] && continue  # classification tasks have no such split
    [ -s "$R/${mix}_zero_shot_$split.json" ] || "$F" eval --model "$M" "${EVAL[@]}" > "$R/${mix}_zero_shot_$split.json"
    for s in prompt idpt; do
      [ -s "$R/${mix}_${s}_$split.json" ] || "$F" eval --model "$M" --module "$R/${mix}_$s" "${EVAL[@]}" > "$R/${mix}_${s}_$split.json"
    done
    [ -s "$R/${mix}_finetune_$split.json" ] || "$F" eval --model "$R/${mix}_finetune" "${EVAL[@]}" > "$R/${mix}_finetune_$split.json"
  done
done
# Forgetting (row i): perplexity on 1,000 pretraining documents, frozen base (every module leaves it as it is) vs each
# fine-tuned model.
PT=$B/tasks/pretrain_v2_sample.json
[ -s "$R/forget_base.json" ] || "$F" eval --model "$M" --task "$PT" --split test > "$R/forget_base.json"
for mix in closed_book open_book classification multitask; do
  [ -s "$R/forget_${mix}_finetune.json" ] || "$F" eval --model "$R/${mix}_finetune" --task "$PT" --split test > "$R/forget_${mix}_finetune.json"
done
for mix in multitask; do
  for s in prompt idpt; do "$F" info --model "$M" --module "$R/${mix}_$s" --json > "$R/${mix}_${s}_info.json"; done
done
# Per-example multitask test scores, for paired comparisons (claims a, b: the same examples under two systems).
PE=(--mixture "$B/tasks/mix_multitask.json" --split test --limit "$LIMIT" --max-new-tokens 12 --per-example)
for s in prompt idpt; do
  [ -s "$R/multitask_${s}_test_per_example.json" ] || "$F" eval --model "$M" --module "$R/multitask_$s" "${PE[@]}" > "$R/multitask_${s}_test_per_example.json"
done
[ -s "$R/multitask_finetune_test_per_example.json" ] || "$F" eval --model "$R/multitask_finetune" "${PE[@]}" > "$R/multitask_finetune_test_per_example.json"
/usr/bin/python3 "$ROOT/scripts/experiments/testbed_v2_tables.py" "$R"
