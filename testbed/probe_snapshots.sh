#!/usr/bin/env bash
# Skills during pretraining (issue 10: choose the budget from probes; in-context reading can fade while the weights
# learn the facts, so select on it). Every snapshot a pretraining run kept (testbed/pretrain_v2.sh keeps one every
# SNAPSHOT_EVERY steps in RUN/snapshots/step-<N>) is probed zero-shot, greedy, on the first LIMIT rows of each task:
#   cloze recall of seen entities (probe_<rel>, split seen), closed-book QA in a pretraining template for seen entities
#   never QA-trained (skill_closed_<rel>, seen_unqa), reading a fresh entity's passage alone / among 2 distractors
#   (skill_read_fresh*), following a counterfactual passage (skill_counterfactual).
# Per-relation skills are the mean over the 7 relations. Markdown table on stdout; RUN/probes.svg; outputs cached in
# RUN/probes/ (rerunning probes only new snapshots).
#   testbed/probe_snapshots.sh RUN_DIR [LIMIT=40] [BUILD=testbed/build]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
F=${FROZENLM:-$HERE/../build/frozenlm}
RUN=${1:?usage: probe_snapshots.sh RUN_DIR [LIMIT] [BUILD]}; LIMIT=${2:-40}; B=${3:-$HERE/build}
[ -d "$RUN/snapshots" ] || { echo "$RUN/snapshots: no snapshots (train with --snapshot-every N)" >&2; exit 1; }
RELS="capital currency language region symbol atomic_number hypernym"
for snap in "$RUN"/snapshots/step-*; do
  case "$snap" in *.tmp) continue ;; esac
  out="$RUN/probes/$(basename "$snap")"; mkdir -p "$out"
  ev() {  # task split
    local o="$out/$(basename "$1" .json).$2.json"
    [ -s "$o" ] && return 0
    "$F" eval --model "$snap" --tokenizer "$B/tokenizer_v2.json" --task "$1" --split "$2" --limit "$LIMIT" \
        --max-new-tokens 12 > "$o.tmp"
    mv "$o.tmp" "$o"
  }
  for rel in $RELS; do ev "$B/tasks/probe_$rel.json" seen; ev "$B/tasks/skill_closed_$rel.json" seen_unqa; done
  for t in read_fresh read_fresh_distractors counterfactual; do ev "$B/tasks/skill_$t.json" test; done
  echo "probed $(basename "$snap")" >&2
done
/usr/bin/python3 - "$RUN" $RELS <<'PY'
import json, os, sys
run, rels = sys.argv[1], sys.argv[2:]
skills = [("cloze, seen", [f"probe_{r}.seen" for r in rels]),
          ("closed-book template, seen never QA'd", [f"skill_closed_{r}.seen_unqa" for r in rels]),
          ("reading, fresh entity", ["skill_read_fresh.test"]),
          ("reading, among 2 distractors", ["skill_read_fresh_distractors.test"]),
          ("counterfactual followed", ["skill_counterfactual.test"])]
steps = sorted(d for d in os.listdir(os.path.join(run, "probes")) if d.startswith("step-"))
table = {}
for s in steps:
    for name, files in skills:
        scores = [json.load(open(os.path.join(run, "probes", s, f + ".json")))["score"] for f in files]
        table[(s, name)] = 100 * sum(scores) / len(scores)
print("| step | " + " | ".join(n for n, _ in skills) + " |")
print("|---" * (len(skills) + 1) + "|")
for s in steps:
    print(f"| {int(s[5:])} | " + " | ".join("%.1f" % table[(s, n)] for n, _ in skills) + " |")
# The curve: EM % against the step, one line per skill.
W, H, L, R, T, Bm = 640, 360, 50, 200, 20, 40
xs = [int(s[5:]) for s in steps]
x = lambda v: L + (W - L - R) * (v - min(xs)) / max(1, max(xs) - min(xs))
y = lambda v: T + (H - T - Bm) * (1 - v / 100)
colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="{L}" y="14">{os.path.basename(os.path.normpath(run))}: zero-shot skills (EM %) during pretraining</text>']
for v in range(0, 101, 20):
    svg.append(f'<line x1="{L}" x2="{W - R}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/><text x="{L - 28}" y="{y(v) + 4:.1f}">{v}</text>')
for v in xs:
    svg.append(f'<text x="{x(v) - 12:.1f}" y="{H - Bm + 16}">{v}</text>')
svg.append(f'<text x="{(L + W - R) / 2 - 15:.0f}" y="{H - 6}">step</text>')
for i, (name, _) in enumerate(skills):
    pts = " ".join(f"{x(v):.1f},{y(table[(s, name)]):.1f}" for v, s in zip(xs, steps))
    svg.append(f'<polyline fill="none" stroke="{colors[i]}" stroke-width="2" points="{pts}"/>')
    svg.append(f'<text x="{W - R + 8}" y="{T + 16 * i + 10}" fill="{colors[i]}">{name}</text>')
svg.append("</svg>")
open(os.path.join(run, "probes.svg"), "w").write("\n".join(svg) + "\n")
PY
