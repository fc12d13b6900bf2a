#!/usr/bin/env bash
# Zero-shot latent skills of a testbed base (issue 10; docs/TESTBED.md "Skills"): no training, formats it saw in
# pretraining, by entity group. Exact match %, greedy, with bootstrap 95% intervals, as a Markdown table on stdout.
#   testbed/evaluate_skills.sh [MODEL=testbed/model] [BUILD=testbed/build] [LIMIT=0 (all)] [OUT=MODEL/../skills-<name>]
# Rows: cloze recall (v1 probes: "The capital of France is"), closed-book QA in a pretraining template ("Name the
# capital of X."), closed-book QA in the benchmark's phrasings (never in pretraining), open-book reading of a passage
# about an entity that exists nowhere else (alone / among 2 distractors), and a counterfactual passage about a seen
# entity (followed = the passage's value; memory = the pretrained value).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
F=${FROZENLM:-$HERE/../build/frozenlm}
M=${1:-$HERE/model}; B=${2:-$HERE/build}; LIMIT=${3:-0}
OUT=${4:-$(dirname "$M")/skills-$(basename "$M")}
mkdir -p "$OUT"
ev() {  # task split -> OUT/task.split.json (kept: rerunning reuses it)
  local o="$OUT/$(basename "$1" .json).$2.json"
  [ -s "$o" ] && return 0
  "$F" eval --model "$M" --task "$1" --split "$2" --limit "$LIMIT" --max-new-tokens 12 --per-example > "$o.tmp"
  mv "$o.tmp" "$o"
}
RELS="capital currency language region symbol atomic_number hypernym"
for rel in $RELS; do
  ev "$B/tasks/probe_$rel.json" seen; ev "$B/tasks/probe_$rel.json" heldout
  for g in qa_trained seen_unqa heldout; do ev "$B/tasks/skill_closed_$rel.json" $g; done
  ev "$B/tasks/closed_$rel.json" test; ev "$B/tasks/closed_$rel.json" test_heldout
done
for t in read_fresh read_fresh_distractors counterfactual; do ev "$B/tasks/skill_$t.json" test; done
/usr/bin/python3 - "$OUT" "$B" $RELS <<'PY'
import json, os, random, sys
out, build, rels = sys.argv[1], sys.argv[2], sys.argv[3:]
def load(task, split):
    return json.load(open(os.path.join(out, f"{task}.{split}.json")))
def ci(xs, n=1000):
    if not xs: return (0.0, 0.0)
    rng = random.Random(0); m = len(xs)
    means = sorted(sum(xs[rng.randrange(m)] for _ in range(m)) / m for _ in range(n))
    return means[int(0.025 * n)], means[int(0.975 * n) - 1]
def cell(xs):
    if not xs: return "–"
    lo, hi = ci(xs)
    return "%.1f [%.1f, %.1f] (n=%d)" % (100 * sum(xs) / len(xs), 100 * lo, 100 * hi, len(xs))
def correct(r):
    return [float(e["em"]) for e in r["examples"]]
print("| skill | " + " | ".join(rels) + " | all |")
print("|---" * (len(rels) + 2) + "|")
rows = [("cloze recall, seen", "probe_{}", "seen"), ("cloze recall, held out", "probe_{}", "heldout"),
        ("closed-book, pretraining template, QA-trained", "skill_closed_{}", "qa_trained"),
        ("closed-book, pretraining template, seen never QA-trained", "skill_closed_{}", "seen_unqa"),
        ("closed-book, pretraining template, held out", "skill_closed_{}", "heldout"),
        ("closed-book, benchmark phrasings, seen never QA-trained", "closed_{}", "test"),
        ("closed-book, benchmark phrasings, held out", "closed_{}", "test_heldout")]
for name, task, split in rows:
    per = [correct(load(task.format(rel), split)) for rel in rels]
    print(f"| {name} | " + " | ".join(cell(x) for x in per) + f" | {cell(sum(per, []))} |")
for name, task in (("open-book reading, fresh entity, gold passage alone", "skill_read_fresh"),
                   ("open-book reading, fresh entity, among 2 distractors", "skill_read_fresh_distractors"),
                   ("counterfactual passage followed (seen never QA-trained entities)", "skill_counterfactual")):
    r = load(task, "test")
    data = [json.loads(l) for l in open(os.path.join(build, "data", task + ".jsonl"))]
    by = {rel: [] for rel in rels}
    for e, row in zip(r["examples"], data):  # the report keeps the data's order
        assert e["input"].endswith(row["question"] + "\nAnswer:"), (e["input"][-80:], row["question"])
        by[row["relation"]].append(float(e["em"]))
    print(f"| {name} | " + " | ".join(cell(by[rel]) for rel in rels) + f" | {cell(correct(r))} |")
# counterfactual: how often the model gave its memory instead of the passage
rows = [json.loads(l) for l in open(os.path.join(build, "data", "skill_counterfactual.jsonl"))]
r = load("skill_counterfactual", "test")
mem = [float(e["prediction"].strip().lower().startswith(row["memory_answer"].lower())) for e, row in zip(r["examples"], rows)
       if e["input"].endswith(row["question"] + "\nAnswer:")]
print(f"\nCounterfactual: the pretrained (memory) value given instead in {cell(mem)}.")
PY
