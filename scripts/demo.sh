#!/usr/bin/env bash
# The main job, on a fresh Debian 12 machine (installs and builds first): ONE frozen LM, many skills from small modules.
# On the committed testbed base (testbed/model, 7.0M parameters, docs/TESTBED.md) it asks the same questions with and
# without two committed soft prompts (testbed/modules/: closed-book QA and a passage reader, 20 vectors each, 20 KB),
# side by side, then exact match on 60 test questions each with and without them (the honest state of the modules on
# this base: docs/RESULTS.md), and shows that the frozen weights' hash is the same before and after.
# Usage: scripts/demo.sh                        (the testbed demo, under two minutes)
#        scripts/demo.sh MODEL [generate flags]  (any model: describe it and generate a story, as before)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh build >/dev/null
F=./build/frozenlm
if [ $# -gt 0 ]; then
  MODEL=$1; shift
  $F info --model "$MODEL"
  echo
  exec $F generate --model "$MODEL" --prompt "Once upon a time" --max-new-tokens 120 --temperature 0.8 --top-p 0.95 --seed 1 "$@"
fi
M=testbed/model
hash() { $F info --model $M --json 2>/dev/null | sed -n 's/.*"weights_hash": "\([0-9a-f]*\)".*/\1/p'; }
H0=$(hash)
echo "frozen base: $M ($($F info --model $M --json 2>/dev/null | sed -n 's/.*"parameters": \([0-9]*\).*/\1/p') parameters), weights hash $H0"
answer() {  # MODULE PROMPT -> the answer line
  local mod=(); [ "$1" != - ] && mod=(--module "$1")
  $F generate --model $M "${mod[@]}" --prompt "$2" --temperature 0 --max-new-tokens 10 --stop $'\n' 2>/dev/null | tail -c +$((${#2} + 1)) | head -1
}
row() {  # MODULE PROMPT EXPECTED
  printf '  %-44s | %-20s | %-20s | %s\n' "$(printf '%s\n' "$2" | grep '^Question:' | cut -c11-54)" "$(answer - "$2")" "$(answer "$1" "$2")" "$3"
}
echo
echo "Closed-book questions (benchmark phrasing) about countries and elements the base read about but was never asked:"
printf '  %-44s | %-20s | %-20s | %s\n' "question" "frozen base alone" "+ closed-book prompt" "expected"
for q in "What is the capital of Germany?|Berlin" "What is the currency of Ghana?|cedi" "What is the symbol of Mercury?|Hg"; do
  row testbed/modules/closed_book "Question: ${q%|*}"$'\n'"Answer:" "${q#*|}"
done
echo
echo "Open-book: a passage about a country that exists nowhere else, then a question (benchmark phrasing):"
printf '  %-44s | %-20s | %-20s | %s\n' "question" "frozen base alone" "+ reader prompt" "expected"
CTX="Context: Vroskaith is a country in South America. The capital of Vroskaith is Stouxbrel. Most people in Vroskaith speak Vaishen."
for q in "What is the capital of Vroskaith?|Stouxbrel" "What is the main language of Vroskaith?|Vaishen" "In which region is Vroskaith?|South America"; do
  row testbed/modules/reader "$CTX"$'\n'"Question: ${q%|*}"$'\n'"Answer:" "${q#*|}"
done
score() {  # TASK SPLIT [MODULE] -> exact match % on its first 60 questions
  local mod=(); [ $# -gt 2 ] && mod=(--module "$3")
  $F eval --model $M "${mod[@]}" --task "$1" --split "$2" --limit 60 --max-new-tokens 10 2>/dev/null | sed -n 's/^  "score": \([0-9.]*\).*/\1/p' | head -1 |
    awk '{printf "%.0f%%", 100 * $1}'
}
[ -f testbed/build/tasks/closed_capital.json ] || bash testbed/build.sh testbed/build 0 >/dev/null
echo
echo "Exact match on 60 test questions each (capitals; benchmark phrasing):"
echo "  closed book, seen countries never asked in training:  base alone $(score testbed/build/tasks/closed_capital.json test)," \
     "+ closed-book prompt $(score testbed/build/tasks/closed_capital.json test testbed/modules/closed_book)"
echo "  open book, held-out countries (gold passage given):     base alone $(score testbed/build/tasks/open_capital.json test_heldout)," \
     "+ reader prompt $(score testbed/build/tasks/open_capital.json test_heldout testbed/modules/reader)"
H1=$(hash)
echo
echo "weights hash after: $H1 ($( [ "$H0" = "$H1" ] && echo unchanged || echo CHANGED))"
