#!/usr/bin/python3
"""Tables of scripts/experiments/recursion.sh (docs/RESULTS.md "Recursive LMs", docs/CLAIMS.md rows f, g, h): exact
match by entity group, mean over the 7 closed-book relations with bootstrap 95% intervals; paired differences on the
same questions; the gate's accuracy against mean passes. Missing runs are shown as "–".
Usage: recursion_tables.py RUNS_DIR"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from paired_bootstrap import paired  # noqa: E402

R = sys.argv[1]
SPLITS = {"test": "seen, never QA-trained", "test_heldout": "held out"}
SYSTEMS = (("prompt", "prompt tuning (P=20), one pass"),
           ("textual", "textual recursion (pass 1 = that prompt, 4 samples + greedy; pass-2 prompt)"),
           ("textual_cf", "textual recursion, pass-2 data cross-fitted (2 folds)"),
           ("neural", "neural recursion, MLP connector, no stage A"),
           ("neural_a", "neural recursion, MLP connector, stage A (300 LM steps) then B"),
           ("finetune", "fine-tuning (every weight), one pass"),
           ("prompt2x", "prompt tuning on the 2× sibling base (testbed/model-2x)"))


def load(name):
    p = os.path.join(R, name + ".json")
    return json.load(open(p)) if os.path.exists(p) and os.path.getsize(p) else None


def cell(r):
    return "–" if r is None else "**%.1f** [%.1f, %.1f]" % (100 * r["score"], 100 * r["ci95"][0], 100 * r["ci95"][1])


print("| system | " + " | ".join(SPLITS.values()) + " |")
print("|---|---|---|")
for name, label in SYSTEMS:
    print(f"| {label} | " + " | ".join(cell(load(f"{name}_{s}")) for s in SPLITS) + " |")


def scores(name, split):
    r = load(f"{name}_{split}")
    return None if r is None else {t["task"]: [e["em"] for e in t["examples"]] for t in r["tasks"]}


print("\nPaired differences (points, same questions; paired bootstrap within tasks):\n")
print("| comparison | " + " | ".join(SPLITS.values()) + " |")
print("|---|---|---|")
for a, b in (("textual", "prompt"), ("textual_cf", "prompt"), ("textual_cf", "textual"), ("neural", "prompt"), ("neural_a", "prompt"), ("neural_a", "neural"),
             ("prompt2x", "prompt"), ("textual", "prompt2x"), ("neural_a", "prompt2x"), ("neural", "prompt2x"),
             ("textual", "finetune"), ("neural_a", "finetune")):
    cells = []
    for s in SPLITS:
        x, y = scores(a, s), scores(b, s)
        cells.append("–" if x is None or y is None else "%+.1f [%+.1f, %+.1f]" % tuple(100 * v for v in paired(x, y)))
    print(f"| {a} − {b} | " + " | ".join(cells) + " |")

for name in ("textual", "textual_cf", "neural", "neural_a"):
    g = load(f"gate_{name}")
    if g is None:
        continue
    print(f"\nGate, {name} recursion (one pass: {os.path.basename(g['one_pass'])}; confidence: {g['measure']}; `test`, "
          f"{g['n']} questions; one pass {1000 * g['one_pass_seconds']:.1f} ms, recursion {1000 * g['recursive_seconds']:.1f} ms "
          "per question at 1 thread):\n")
    print("| threshold | exact match [95% CI] | escalated | mean passes | ms per question |")
    print("|---|---|---|---|---|")
    for p in g["points"]:
        print("| %s | %.1f [%.1f, %.1f] | %.0f%% | %.2f | %.1f |" % (p["threshold"], 100 * p["score"], 100 * p["ci95"][0], 100 * p["ci95"][1],
                                                             100 * p["escalated"], p["mean_passes"], 1000 * p["seconds_per_question"]))

b, a = load("stage_a_base"), load("stage_a_lmclm")
if b and a:
    print(f"\nStage A check: perplexity on {b['n']} pretraining documents stage A did not train on: the frozen base alone "
          f"{b['perplexity']:.3f}, LM–C–LM after stage A {a['perplexity']:.3f} ({100 * (a['perplexity'] / b['perplexity'] - 1):+.1f}%)")
