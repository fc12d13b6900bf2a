#!/usr/bin/python3
"""Tables of scripts/experiments/testbed_v2_baselines.sh (docs/RESULTS.md "Testbed v2 baselines", docs/CLAIMS.md):
per mixture, each system's mean over tasks with its bootstrap 95% interval (from `frozenlm eval`) by entity group, then
per-task scores on `test`, the forgetting check and the parameter counts. Missing runs are shown as "–".
Usage: testbed_v2_tables.py RUNS_DIR"""
import json
import os
import sys

R = sys.argv[1]
SYSTEMS = ["zero_shot", "prompt", "idpt", "finetune"]
NAMES = {"zero_shot": "zero-shot", "prompt": "prompt tuning (one shared prompt)", "idpt": "ID-PT", "finetune": "fine-tuning"}
SPLITS = {"test": "seen, never QA-trained", "test_qa_trained": "QA-trained (new phrasing)", "test_heldout": "held out"}


def load(name):
    p = os.path.join(R, name + ".json")
    return json.load(open(p)) if os.path.exists(p) and os.path.getsize(p) else None


def avg(r):
    return "–" if r is None else "**%.1f** [%.1f, %.1f]" % (100 * r["score"], 100 * r["ci95"][0], 100 * r["ci95"][1])


for mix in ("closed_book", "open_book", "classification", "multitask"):
    splits = [s for s in SPLITS if not (s == "test_qa_trained" and mix in ("classification", "multitask"))]
    first = load(f"{mix}_zero_shot_test")
    metric = first["tasks"][0]["metric"] if first else "score"
    print(f"\n**{mix}** (mean over tasks, %; {metric} for QA, accuracy for classification)\n")
    print("| system | " + " | ".join(SPLITS[s] for s in splits) + " |")
    print("|---" * (len(splits) + 1) + "|")
    for s in SYSTEMS:
        print(f"| {NAMES[s]} | " + " | ".join(avg(load(f"{mix}_{s}_{sp}")) for sp in splits) + " |")
    if first:
        tasks = [t["task"] for t in first["tasks"]]
        print(f"\nper task, `test` (seen, never QA-trained):\n")
        print("| system | " + " | ".join(tasks) + " |")
        print("|---" * (len(tasks) + 1) + "|")
        for s in SYSTEMS:
            r = load(f"{mix}_{s}_test")
            cells = ["%.1f" % (100 * t["score"]) for t in r["tasks"]] if r else ["–"] * len(tasks)
            print(f"| {NAMES[s]} | " + " | ".join(cells) + " |")

base = load("forget_base")
if base:
    print("\n**Forgetting**: perplexity on 1,000 pretraining documents (`pretrain_v2_sample`)\n")
    print("| model | perplexity |")
    print("|---|---|")
    print("| frozen base (with or without any prompt module: the weights are the same bytes) | %.3f |" % base["perplexity"])
    for mix in ("closed_book", "open_book", "classification", "multitask"):
        r = load(f"forget_{mix}_finetune")
        if r:
            print("| fine-tuned on %s | %.3f (%+.1f%%) |" % (mix, r["perplexity"], 100 * (r["perplexity"] / base["perplexity"] - 1)))
for s in ("prompt", "idpt"):
    info = load(f"multitask_{s}_info")
    if info:
        print(f"\n{NAMES[s]} (multitask): " + json.dumps({k: info[k] for k in info if "param" in k}))

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from paired_bootstrap import paired  # noqa: E402

# Paired comparisons on the multitask mixture (claims a, b): the same test examples scored by two systems
# (`--per-example` reports); the difference of the mean-over-tasks score with a paired bootstrap 95% interval
# (examples resampled within each task, the same draw for both systems).
def per_example(name):
    r = load(name)
    if r is None:
        return None
    out = {}
    for t in r["tasks"]:
        xs = []
        for e in t["examples"]:
            xs.append(float(e["em"]) if "em" in e else float(e["prediction"] == e["label"]))
        out[t["task"]] = xs
    return out


pe = {s: per_example(f"multitask_{s}_test_per_example") for s in ("prompt", "idpt", "finetune")}
if all(pe.values()):
    print("\n**Paired differences, multitask `test`** (mean over 18 tasks, points; paired bootstrap 95% interval)\n")
    print("| comparison | difference [95% CI] |")
    print("|---|---|")
    for x, y in (("idpt", "prompt"), ("idpt", "finetune"), ("prompt", "finetune")):
        d, lo, hi = paired(pe[x], pe[y])
        print(f"| {NAMES[x]} − {NAMES[y]} | **{100 * d:+.1f}** [{100 * lo:+.1f}, {100 * hi:+.1f}] |")
