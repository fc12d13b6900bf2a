"""Checks a `frozenlm train reranker` run directory (CTest cli_train_reranker): the training rows are balanced per
question (each negative follows its own copy of the positive) and reranker.json holds the input template."""
import collections
import json
import sys

run = sys.argv[1]
rows = [json.loads(line) for line in open(f"{run}/data/reranker_train.jsonl")]
per_q = collections.defaultdict(lambda: [0, 0])
for i, r in enumerate(rows):
    per_q[r["question_index"]][r["label"]] += 1
    if r["label"] == 0:
        prev = rows[i - 1]
        assert i > 0 and prev["label"] == 1 and prev["question_index"] == r["question_index"], f"row {i + 1}: a negative not after its positive"
for q, (neg, pos) in per_q.items():  # a question without a retrieved negative keeps its one positive
    assert pos == neg or (neg == 0 and pos == 1), f"question {q}: {pos} positive and {neg} negative rows"
t = json.load(open(f"{run}/reranker.json"))["input"]
assert "{passage}" in t and "{question}" in t, t
pos = sum(p for _, p in per_q.values())
neg = sum(n for n, _ in per_q.values())
print(f"{len(per_q)} questions, {pos} positive and {neg} negative rows; template {t!r}")
