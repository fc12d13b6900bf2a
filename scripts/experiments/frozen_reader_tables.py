#!/usr/bin/python3
"""Tables of scripts/experiments/frozen_reader.sh (docs/RESULTS.md "Frozen readers", docs/CLAIMS.md rows d, e):
retrieval recall and the readers' exact match by entity group, mean over the 7 relations with bootstrap 95% intervals.
Missing runs are shown as "–". Usage: frozen_reader_tables.py RUNS_DIR"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from paired_bootstrap import paired  # noqa: E402

R = sys.argv[1]
SPLITS = {"test": "seen, never QA-trained", "test_heldout": "held out (reading only)"}


def load(name):
    p = os.path.join(R, name + ".json")
    return json.load(open(p)) if os.path.exists(p) and os.path.getsize(p) else None


def cell(r, key=None):
    if r is None:
        return "–"
    if key is None:
        return "**%.1f** [%.1f, %.1f]" % (100 * r["score"], 100 * r["ci95"][0], 100 * r["ci95"][1])
    vals = [t[key[0]][key[1]]["value"] if len(key) == 2 else t[key[0]]["value"] for t in r["tasks"]]
    return "%.1f" % (100 * sum(vals) / len(vals))


print("**Retrieval** (mean over relations, %; 20 candidates; packed = answer inside the reader's 256-token input)\n")
print("| retrieval | split | recall@1 | @2 | @4 | @8 | @20 | answer in packed context |")
print("|---|---|---|---|---|---|---|---|")
for name, label in (("bm25", "BM25"), ("bm25_lm", "BM25 + LM-likelihood re-rank"), ("bm25_trained", "BM25 + trained re-ranker"),
                    ("dense", "dense (frozen LM, layer 4)"), ("hybrid", "hybrid (BM25 + dense, RRF)"),
                    ("dense_projected", "dense through the trained projection"),
                    ("hybrid_projected", "hybrid (BM25 + projected dense, RRF)")):
    for s in SPLITS:
        r = load(f"retrieval_{name}_{s}")
        cells = [cell(r, ("recall_at", k)) for k in ("1", "2", "4", "8", "20")] + [cell(r, ("answer_in_context",))]
        print(f"| {label} | {s} | " + " | ".join(cells) + " |")

print("\n**Open-domain QA** (exact match, mean over relations, %, bootstrap 95% interval)\n")
print("| system | " + " | ".join(SPLITS.values()) + " |")
print("|---|---|---|")
for name, label in (("closed_book_prompt", "closed book, prompt tuning"), ("closed_book_finetune", "closed book, fine-tuning"),
                    ("zero_shot_bm25", "frozen LM reads BM25 passages, no prompt"), ("bm25_reader", "BM25 + prompt-tuned frozen reader"),
                    ("bm25_reader_best_last", "BM25 + prompt-tuned reader, best passage last (next to the question)"),
                    ("bm25_reader_top2", "BM25 + prompt-tuned reader, top 2 passages only, best last"),
                    ("bm25_lm_reranked_reader", "BM25 + LM re-rank + prompt-tuned reader"),
                    ("bm25_reranked_reader", "BM25 + trained re-ranker + prompt-tuned reader"),
                    ("dense_reader", "dense + prompt-tuned reader"), ("hybrid_reader", "hybrid + prompt-tuned reader"),
                    ("dense_projected_reader", "dense (trained projection) + prompt-tuned reader"),
                    ("hybrid_projected_reader", "hybrid (BM25 + projected dense) + prompt-tuned reader"),
                    ("bm25_finetuned_reader", "BM25 + fine-tuned reader (every weight)"),
                    ("gold_passage_prompt", "gold passage (oracle) + prompt-tuned reader")):
    print(f"| {label} | " + " | ".join(cell(load(f"{name}_{s}")) for s in SPLITS) + " |")


# Paired differences on the same questions (each report keeps every task's per-question scores).
def scores(name):
    r = load(name)
    if r is None or not all("example_scores" in t for t in r["tasks"]):
        return None
    return {t["task"]: t["example_scores"] for t in r["tasks"]}


rows = []
for a, b, what in (("bm25_reranked_reader", "bm25_reader", "(e) trained re-ranker − no re-ranking"),
                   ("bm25_lm_reranked_reader", "bm25_reader", "(e) LM-likelihood re-ranking − no re-ranking"),
                   ("bm25_reranked_reader", "bm25_finetuned_reader", "(d) frozen reader with trained re-ranker − fine-tuned reader"),
                   ("bm25_reader", "bm25_finetuned_reader", "(d) frozen reader, no re-ranker − fine-tuned reader"),
                   ("hybrid_projected_reader", "bm25_finetuned_reader", "(d) best frozen reader (hybrid with the projection) − fine-tuned reader"),
                   ("bm25_reader_best_last", "bm25_reader", "best passage last − best first"),
                   ("dense_reader", "bm25_reader", "dense − BM25 retrieval (same reader recipe)"),
                   ("hybrid_reader", "bm25_reader", "hybrid − BM25 retrieval"),
                   ("dense_projected_reader", "dense_reader", "trained projection − raw dense states"),
                   ("hybrid_projected_reader", "bm25_reader", "hybrid with the projection − BM25 retrieval"),
                   ("bm25_reader_top2", "bm25_reader_best_last", "top 2 only − as many as fit (best last)")):
    for s in SPLITS:
        x, y = scores(f"{a}_{s}"), scores(f"{b}_{s}")
        if x and y:
            d, lo, hi = paired(x, y)
            rows.append(f"| {what} | {s} | **{100 * d:+.1f}** [{100 * lo:+.1f}, {100 * hi:+.1f}] |")
if rows:
    print("\n**Paired differences** (exact match points, mean over relations; paired bootstrap 95% interval)\n")
    print("| comparison | split | difference [95% CI] |")
    print("|---|---|---|")
    print("\n".join(rows))
