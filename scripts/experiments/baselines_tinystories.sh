#!/usr/bin/env bash
# docs/RESULTS.md, "Zero-shot vs prompt tuning vs fine-tuning": every number of that table, from scratch.
#   scripts/experiments/baselines_tinystories.sh [RUNS_DIR]      (≈ 15 min on 2 cores)
# Writes RUNS_DIR/<run>/ (modules, models, curves) and RUNS_DIR/<run>.eval.json (test-split reports).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
F=${FROZENLM:-$ROOT/build/frozenlm}
M=${MODEL:-$ROOT/../shared/models/tinystories-656k}
R=${1:-$ROOT/runs}
mkdir -p "$R"
ev() { local name=$1; shift; "$F" eval --model "$M" "$@" > "$R/$name.eval.json"; echo "$name: $(grep -m1 '"score"' "$R/$name.eval.json")"; }

# SST-2: train on GLUE train, select on 300 dev examples, report GLUE dev (= test.tsv here, 872)
ev zs_sst2 --task tasks/sst2.json --split test
"$F" train prompt-tuning --model "$M" --task tasks/sst2.json --out "$R/pt_sst2" --steps 300 --batch-size 16 \
    --virtual-tokens 20 --lr 0.3 --eval-every 100 --eval-limit 300 > /dev/null
ev pt_sst2 --module "$R/pt_sst2" --task tasks/sst2.json --split test
"$F" train finetune --model "$M" --task tasks/sst2.json --out "$R/ft_sst2" --steps 300 --batch-size 16 \
    --lr 1e-3 --eval-every 100 --eval-limit 300 > /dev/null
"$F" eval --model "$R/ft_sst2" --task tasks/sst2.json --split test > "$R/ft_sst2.eval.json"; echo "ft_sst2: $(grep -m1 '"score"' "$R/ft_sst2.eval.json")"

# BoolQ: FewGLUE's 32 training examples, dev32 for selection, SuperGLUE val (first 500) for the report
ev zs_boolq --task tasks/boolq.json --split test --limit 500
"$F" train prompt-tuning --model "$M" --task tasks/boolq.json --out "$R/pt_boolq" --steps 100 --batch-size 8 \
    --virtual-tokens 20 --eval-every 25 --eval-limit 32 > /dev/null
ev pt_boolq --module "$R/pt_boolq" --task tasks/boolq.json --split test --limit 500
"$F" train finetune --model "$M" --task tasks/boolq.json --out "$R/ft_boolq" --steps 100 --batch-size 8 \
    --lr 1e-3 --eval-every 25 --eval-limit 32 > /dev/null
"$F" eval --model "$R/ft_boolq" --task tasks/boolq.json --split test --limit 500 > "$R/ft_boolq.eval.json"; echo "ft_boolq: $(grep -m1 '"score"' "$R/ft_boolq.eval.json")"

# NQ-openbook: gold passage in the input; rows 0-623 train, 624-823 test (no dev: the last step's module is kept)
ev zs_nqob --task tasks/nq_openbook.json --split test
"$F" train prompt-tuning --model "$M" --task tasks/nq_openbook.json --out "$R/pt_nqob" --steps 300 --batch-size 8 \
    --virtual-tokens 20 --lr 0.3 --dev-split "" > /dev/null
ev pt_nqob --module "$R/pt_nqob" --task tasks/nq_openbook.json --split test
"$F" train finetune --model "$M" --task tasks/nq_openbook.json --out "$R/ft_nqob" --steps 300 --batch-size 8 \
    --lr 1e-3 --dev-split "" > /dev/null
"$F" eval --model "$R/ft_nqob" --task tasks/nq_openbook.json --split test > "$R/ft_nqob.eval.json"; echo "ft_nqob: $(grep -m1 '"score"' "$R/ft_nqob.eval.json")"
