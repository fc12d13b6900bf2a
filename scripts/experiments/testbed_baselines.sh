#!/usr/bin/env bash
# docs/RESULTS.md, "Knowledge testbed baselines" (issue 5; the v1 base and splits — MODEL=a v1 model dir to rerun;
# scripts/experiments/testbed_v2_baselines.sh is the current one): zero-shot, prompt tuning (one shared 20-token prompt per
# mixture) and fine-tuning (every weight) of the frozen testbed base on three mixtures built by testbed/build.sh:
#   closed-book QA (7 relations), classification (4 tasks), open-book QA (the gold passage in the input).
# Each system is scored on `test` (seen entities; QA in the held-out third phrasing) and `test_heldout` (entities whose
# passages were never in pretraining). Every trained system gets the same steps × 16 examples per mixture.
#   scripts/experiments/testbed_baselines.sh [RUNS_DIR]     (≈ 26 min on 2 cores; needs testbed/model)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
F=${FROZENLM:-$ROOT/build/frozenlm}
M=${MODEL:-$ROOT/testbed/model}
B=${TESTBED:-$ROOT/testbed/build}
R=${1:-$ROOT/runs/testbed}
LIMIT=${LIMIT:-200}
[ -f "$B/tasks/mix_closed_book.json" ] || bash "$ROOT/testbed/build.sh" "$B" 0 >/dev/null
mkdir -p "$R"
trained() { [ -f "$1/run.json" ]; }
declare -A STEPS=([closed_book]=600 [classification]=400 [open_book]=400)

for mix in closed_book classification open_book; do
  MIX=$B/tasks/mix_$mix.json
  COMMON=(--mixture "$MIX" --steps "${STEPS[$mix]}" --batch-size 16 --eval-every 200 --eval-limit 50 --seed 0)
  trained "$R/${mix}_prompt" || "$F" train prompt-tuning --model "$M" --out "$R/${mix}_prompt" --virtual-tokens 20 --lr 0.3 "${COMMON[@]}"
  trained "$R/${mix}_finetune" || "$F" train finetune --model "$M" --out "$R/${mix}_finetune" --lr 3e-4 "${COMMON[@]}"
  for split in test test_heldout; do
    EVAL=(--mixture "$MIX" --split "$split" --limit "$LIMIT" --max-new-tokens 12)
    [ -s "$R/${mix}_zero_shot_$split.json" ] || "$F" eval --model "$M" "${EVAL[@]}" > "$R/${mix}_zero_shot_$split.json"
    [ -s "$R/${mix}_prompt_$split.json" ] || "$F" eval --model "$M" --module "$R/${mix}_prompt" "${EVAL[@]}" > "$R/${mix}_prompt_$split.json"
    [ -s "$R/${mix}_finetune_$split.json" ] || "$F" eval --model "$R/${mix}_finetune" "${EVAL[@]}" > "$R/${mix}_finetune_$split.json"
  done
done

# The tables: per mixture, per task (seen / held out) and the task average with its bootstrap 95% interval.
/usr/bin/python3 - "$R" <<'PY'
import json, sys, os
R = sys.argv[1]
for mix in ("closed_book", "classification", "open_book"):
    rows = {(s, sp): json.load(open(os.path.join(R, f"{mix}_{s}_{sp}.json")))
            for s in ("zero_shot", "prompt", "finetune") for sp in ("test", "test_heldout")}
    tasks = [t["task"] for t in rows[("zero_shot", "test")]["tasks"]]
    print(f"\n**{mix}** ({rows[('zero_shot', 'test')]['tasks'][0]['metric']}, %; seen / held out)\n")
    print("| system | " + " | ".join(tasks) + " | average seen [95% CI] | average held out [95% CI] |")
    print("|---" * (len(tasks) + 3) + "|")
    for s in ("zero_shot", "prompt", "finetune"):
        seen, held = rows[(s, "test")], rows[(s, "test_heldout")]
        cells = ["%.1f / %.1f" % (100 * a["score"], 100 * b["score"]) for a, b in zip(seen["tasks"], held["tasks"])]
        avg = lambda r: "**%.1f** [%.1f, %.1f]" % (100 * r["score"], 100 * r["ci95"][0], 100 * r["ci95"][1])
        print(f"| {s} | " + " | ".join(cells) + f" | {avg(seen)} | {avg(held)} |")
PY
