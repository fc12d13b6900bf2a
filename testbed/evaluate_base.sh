#!/usr/bin/env bash
# Zero-shot scores of the testbed base model per relation, seen vs held-out entities (docs/TESTBED.md):
#   cloze probes ("The capital of France is" -> " Paris") and closed-book questions ("Question: ...\nAnswer:").
#   testbed/evaluate_base.sh [MODEL=testbed/model] [BUILD=testbed/build]   -> a Markdown table on stdout
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
F=${FROZENLM:-$HERE/../build/frozenlm}
M=${1:-$HERE/model}; B=${2:-$HERE/build}
score() { "$F" eval --model "$M" --task "$1" --split "$2" --max-new-tokens 12 | /usr/bin/python3 -c \
  'import json,sys; r=json.load(sys.stdin); print("%.1f (n=%d)" % (100*r["score"], r["n"]))'; }
echo "| relation | probe EM, seen | probe EM, held out | closed-book EM, seen (test phrasing) | closed-book EM, held out |"
echo "|---|---|---|---|---|"
for rel in capital currency language region symbol atomic_number hypernym; do
  echo "| $rel | $(score "$B/tasks/probe_$rel.json" seen) | $(score "$B/tasks/probe_$rel.json" heldout) | $(score "$B/tasks/closed_$rel.json" test) | $(score "$B/tasks/closed_$rel.json" test_heldout) |"
done
