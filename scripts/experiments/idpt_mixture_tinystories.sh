#!/usr/bin/env bash
# docs/RESULTS.md, "ID-PT on a mixture of six tasks": zero-shot, one shared prompt, per-task prompts, ID-PT and
# fine-tuning on tasks/idpt_mix.json (SST-2, AG News, BoolQ, CB, RTE, COPA; examples-proportional, cap 500) with
# tinystories-656k frozen. Every trained system gets the same 400 steps × 16 examples (each per-task prompt too).
#   scripts/experiments/idpt_mixture_tinystories.sh [RUNS_DIR]     (≈ 30 min on 2 cores)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
F=${FROZENLM:-$ROOT/build/frozenlm}
M=${MODEL:-$ROOT/../shared/models/tinystories-656k}
R=${1:-$ROOT/runs/idpt}
MIX=$ROOT/tasks/idpt_mix.json
TASKS="sst2 agnews boolq cb rte copa"
mkdir -p "$R"
COMMON=(--steps 400 --batch-size 16 --eval-every 100 --eval-limit 100 --seed 0)
EVAL=(--mixture "$MIX" --split test --limit 500)
# Steps whose output exists are skipped (rerunning the script resumes where it stopped).
trained() { [ -f "$1/run.json" ]; }

[ -s "$R/zero_shot.json" ] || "$F" eval --model "$M" "${EVAL[@]}" > "$R/zero_shot.json"
trained "$R/shared_prompt" || "$F" train prompt-tuning --model "$M" --mixture "$MIX" --out "$R/shared_prompt" --virtual-tokens 20 --lr 0.3 "${COMMON[@]}"
[ -s "$R/shared_prompt.json" ] || "$F" eval --model "$M" --module "$R/shared_prompt" "${EVAL[@]}" > "$R/shared_prompt.json"
PER=()
for t in $TASKS; do
  DEV=(); [ "$t" = agnews ] && DEV=(--dev-split "")  # AG News has no dev split here
  trained "$R/prompt_$t" || "$F" train prompt-tuning --model "$M" --task "$ROOT/tasks/$t.json" --out "$R/prompt_$t" --virtual-tokens 20 \
      --lr 0.3 "${COMMON[@]}" "${DEV[@]}"
  PER+=(--module-for "$t=$R/prompt_$t")
done
"$F" eval --model "$M" "${PER[@]}" "${EVAL[@]}" > "$R/per_task_prompts.json"
trained "$R/idpt" || "$F" train idpt --model "$M" --mixture "$MIX" --out "$R/idpt" --virtual-tokens 20 --lr 0.3 --encoder self --encoder-layer 1 \
    --gen-dim 64 --gen-blocks 1 --gen-heads 4 --gen-lr-scale 0.01 "${COMMON[@]}"
"$F" eval --model "$M" --module "$R/idpt" "${EVAL[@]}" > "$R/idpt.json"
"$F" info --model "$M" --module "$R/idpt" --json > "$R/idpt_info.json"
"$F" info --model "$M" --module "$R/shared_prompt" --json > "$R/shared_prompt_info.json"
trained "$R/finetune" || "$F" train finetune --model "$M" --mixture "$MIX" --out "$R/finetune" --lr 1e-3 "${COMMON[@]}"
"$F" eval --model "$R/finetune" "${EVAL[@]}" > "$R/finetune.json"

# The table: per-task scores, average and its bootstrap 95% interval.
/usr/bin/python3 - "$R" <<'PY'
import json, sys, os
R = sys.argv[1]
systems = ["zero_shot", "shared_prompt", "per_task_prompts", "idpt", "finetune"]
rows = {s: json.load(open(os.path.join(R, s + ".json"))) for s in systems}
tasks = [t["task"] for t in rows["zero_shot"]["tasks"]]
print("| system | " + " | ".join(tasks) + " | average [95% CI] |")
print("|---" * (len(tasks) + 2) + "|")
for s in systems:
    r = rows[s]
    cells = ["%.1f" % (100 * t["score"]) for t in r["tasks"]]
    print("| %s | %s | **%.1f** [%.1f, %.1f] |" % (s, " | ".join(cells), 100 * r["score"], 100 * r["ci95"][0], 100 * r["ci95"][1]))
PY
