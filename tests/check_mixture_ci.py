#!/usr/bin/python3
"""Reads `frozenlm eval --mixture` JSON on stdin: the mixture's 95% interval must contain its score (the mean over
tasks), and a task without per-example scores (lm: perplexity) must be named as held constant."""
import json, sys
r = json.load(sys.stdin)
lo, hi = r["ci95"]
assert lo <= r["score"] + 1e-9 and r["score"] <= hi + 1e-9, f"interval {lo, hi} does not contain the score {r['score']}"
assert r.get("ci95_fixed_tasks") == sys.argv[1:], f"fixed tasks {r.get('ci95_fixed_tasks')} != {sys.argv[1:]}"
print(f"mixture interval [{lo:.4f}, {hi:.4f}] contains the score {r['score']:.4f}")
