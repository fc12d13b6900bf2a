#!/usr/bin/env bash
# docs/RESULTS.md "Frozen readers" and docs/CLAIMS.md rows (d) and (e) (issue 11): open-domain QA on the testbed,
# every system on the same frozen v2 base, the questions of the closed-book mixture (7 relations), scored on `test`
# (seen entities never QA-trained) and `test_heldout` (entities never in pretraining: only reading can answer).
# Retrieval corpus: every testbed passage + the reader's training entities' passages + WordNet glosses + GCIDE entries.
# Readers are trained on questions about fresh fictional entities (tasks/mix_reader_fresh.json, never in pretraining:
# only their retrieved passage answers them), in the benchmark's train phrasings; the re-ranker on the closed-book
# mixture's train questions.
#   retrieval only: BM25 / + LM-likelihood re-rank / + trained re-ranker / dense / hybrid (recall@k, answer in context)
#   readers (prompt tuning, P=20, the same steps): zero-shot (no prompt), BM25, BM25 + LM re-rank, BM25 + trained
#   re-ranker, dense, hybrid; a fine-tuned reader on the BM25 reader's packed contexts (the FiD-like baseline);
#   closed-book prompt tuning and fine-tuning, and the gold passage (oracle), from testbed_v2_baselines.sh's runs.
#   scripts/experiments/frozen_reader.sh [RUNS_DIR=runs/reader]     (rerunning skips what is done; THREADS=N)
# PARTS="bm25 reranked dense closed" (the default: all, then the tables) runs some parts only, e.g. two lanes on two
# cores: PARTS="bm25 reranked" THREADS=1 taskset -c 0 ... & PARTS=dense THREADS=1 taskset -c 1 ...
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
F=${FROZENLM:-$ROOT/build/frozenlm}
M=${MODEL:-$ROOT/testbed/model}
B=${TESTBED:-$ROOT/testbed/build}
R=${1:-$ROOT/runs/reader}
V2=${V2_RUNS:-$ROOT/runs/testbed_v2}   # testbed_v2_baselines.sh's closed-book and open-book modules
THREADS=${THREADS:-0}
STEPS=${STEPS:-300}; RERANK_STEPS=${RERANK_STEPS:-1000}; LIMIT=${LIMIT:-100}; CAND=20; RT=256   # the base was pretrained on 256-token windows
QA=$B/tasks/mix_closed_book.json; READ_QA=$B/tasks/mix_reader_fresh.json
[ -f "$READ_QA" ] || bash "$ROOT/testbed/build.sh" "$B" 0 >/dev/null
mkdir -p "$R"
[ -s "$B/corpus/retrieval_large.jsonl" ] || /usr/bin/python3 "$ROOT/testbed/build_retrieval_corpus.py" "$B" "$B/corpus/retrieval_large.jsonl"
[ -f "$R/index/manifest.json" ] || "$F" index build --corpus "$B/corpus/retrieval_large.jsonl" --out "$R/index"
IDX=(--index "$R/index" --reader-tokens $RT --candidates $CAND)
TRAIN=(--model "$M" "${IDX[@]}" --batch-size 16 --eval-every 100 --eval-limit 50 --dev-limit 20
       --seed 0 --resume-or-start --threads "$THREADS")
EVAL=(--mixture "$QA" --limit "$LIMIT" --threads "$THREADS")
PARTS=${PARTS:-all}
part() { [ "$PARTS" = all ] || [[ " $PARTS " == *" $1 "* ]]; }
trained() { [ -f "$1/run.json" ]; }
ev() {  # OUT ARGS...: a report, kept (rerunning reuses it)
  local out=$1; shift
  [ -s "$out" ] || { "$F" eval "$@" > "$out.tmp" && mv "$out.tmp" "$out"; }
}
reader() {  # NAME PIPELINE-ARGS...: train a reader prompt on its own pipeline's packed contexts, evaluate it
  local name=$1; shift
  trained "$R/$name" || "$F" train reader "${TRAIN[@]}" --mixture "$READ_QA" --steps "$STEPS" --out "$R/$name" "$@"
  for s in test test_heldout; do ev "$R/${name}_$s.json" --model "$M" --reader "$R/$name" "${EVAL[@]}" --split $s; done
}

# (In order of what the claims need first: BM25, the prompt-tuned reader, the trained re-ranker and its reader, the
# fine-tuned reader; then the zero-shot and LM-likelihood rows, dense and hybrid.)
if part bm25; then
# Retrieval alone (no reading pass): how often the answer is among the first k candidates / inside the packed context.
for s in test test_heldout; do ev "$R/retrieval_bm25_$s.json" --model "$M" "${IDX[@]}" "${EVAL[@]}" --split $s --retrieval-only; done
reader bm25_reader --retrieval bm25
fi
if part reranked; then
# The trained re-ranker: a prompt on the frozen LM, positives = retrieved passages with a gold answer, 3 hard negatives
# (BM25's best-ranked passages without an answer), each after its own copy of the positive (classes 1 : 1).
trained "$R/reranker" || "$F" train reranker "${TRAIN[@]}" --mixture "$QA" --steps "$RERANK_STEPS" --out "$R/reranker" --retrieval bm25 --negatives 3
for s in test test_heldout; do
  ev "$R/retrieval_bm25_trained_$s.json" --model "$M" "${IDX[@]}" --rerank trained --reranker "$R/reranker" "${EVAL[@]}" --split $s --retrieval-only
done
reader bm25_reranked_reader --retrieval bm25 --rerank trained --reranker "$R/reranker"
fi
if part bm25; then
# The fine-tuned reader (every weight) on exactly the BM25 reader's packed contexts; it reads through the same pipeline.
FT=$R/bm25_finetuned_reader
trained "$FT" || "$F" train finetune --model "$M" --task "$R/bm25_reader/data/reader_task.json" --out "$FT" --lr 3e-4 --steps "$STEPS" \
    --batch-size 16 --eval-every 100 --eval-limit 50 --seed 0 --resume-or-start --threads "$THREADS"
for s in test test_heldout; do ev "$R/bm25_finetuned_reader_$s.json" --model "$FT" "${IDX[@]}" "${EVAL[@]}" --split $s; done
# Where the passages stand: a small reader copies from the nearest matching sentence, so the best passage goes last,
# next to the question; and only the top 2 (In-Context RALM's choice), best last.
reader bm25_reader_best_last --retrieval bm25 --pack-order best_last
reader bm25_reader_top2 --retrieval bm25 --pack-order best_last --max-passages 2
fi
if part reranked; then
# Zero-shot reader: the bare frozen LM reads BM25's packed passages. In-Context RALM's LM-likelihood re-ranking.
for s in test test_heldout; do
  ev "$R/zero_shot_bm25_$s.json" --model "$M" "${IDX[@]}" "${EVAL[@]}" --split $s
  ev "$R/retrieval_bm25_lm_$s.json" --model "$M" "${IDX[@]}" --rerank lm "${EVAL[@]}" --split $s --retrieval-only
done
reader bm25_lm_reranked_reader --retrieval bm25 --rerank lm
fi
if part dense; then
# Dense retrieval on the frozen LM's own states (layer 4 of 8), then dense and hybrid readers.
grep -q '"checkpoint_id"' "$R/index/manifest.json" || "$F" index embed --index "$R/index" --model "$M" --layer 4 --batch 128 --threads "$THREADS"
for s in test test_heldout; do
  ev "$R/retrieval_dense_$s.json" --model "$M" "${IDX[@]}" --retrieval dense "${EVAL[@]}" --split $s --retrieval-only
  ev "$R/retrieval_hybrid_$s.json" --model "$M" "${IDX[@]}" --retrieval hybrid "${EVAL[@]}" --split $s --retrieval-only
done
# The trained projection of the same states (contrastive, in-batch negatives; positives as the re-ranker's, from the
# closed-book mixture's train questions), its own graph in the index, then dense and hybrid through it.
[ -f "$R/dense_projection/projection.json" ] || "$F" train dense-projection --model "$M" --index "$R/index" --candidates $CAND \
    --mixture "$QA" --steps 3000 --batch-size 128 --lr 1e-3 --temperature 0.05 --eval-every 250 --out "$R/dense_projection" --threads "$THREADS"
grep -q '"projection"' "$R/index/manifest.json" || "$F" index project --index "$R/index" --projection "$R/dense_projection"
for s in test test_heldout; do
  ev "$R/retrieval_dense_projected_$s.json" --model "$M" "${IDX[@]}" --retrieval dense --dense-projection "${EVAL[@]}" --split $s --retrieval-only
  ev "$R/retrieval_hybrid_projected_$s.json" --model "$M" "${IDX[@]}" --retrieval hybrid --dense-projection "${EVAL[@]}" --split $s --retrieval-only
done
reader dense_reader --retrieval dense
reader hybrid_reader --retrieval hybrid
reader dense_projected_reader --retrieval dense --dense-projection
reader hybrid_projected_reader --retrieval hybrid --dense-projection
fi
if part closed; then
# Closed book and the oracle (gold passage in the input), from the testbed v2 baselines' modules, on the same questions.
for s in test test_heldout; do
  if [ -d "$V2/closed_book_prompt" ]; then
    ev "$R/closed_book_prompt_$s.json" --model "$M" --module "$V2/closed_book_prompt" "${EVAL[@]}" --split $s --max-new-tokens 12
  fi
  if [ -d "$V2/closed_book_finetune" ]; then
    ev "$R/closed_book_finetune_$s.json" --model "$V2/closed_book_finetune" "${EVAL[@]}" --split $s --max-new-tokens 12
  fi
  if [ -d "$V2/open_book_prompt" ]; then
    ev "$R/gold_passage_prompt_$s.json" --model "$M" --module "$V2/open_book_prompt" --mixture "$B/tasks/mix_open_book.json" \
        --limit "$LIMIT" --threads "$THREADS" --split $s --max-new-tokens 12
  fi
done
fi
[ "$PARTS" = all ] && /usr/bin/python3 "$ROOT/scripts/experiments/frozen_reader_tables.py" "$R"
exit 0
