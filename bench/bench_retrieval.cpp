// Retrieval and re-ranking cost (BENCHMARKS.md "Frozen reader: retrieval and re-ranking cost", issue 11): per-query
// latency (p50 / p99 / mean) of BM25 and of dense search over an index, the re-ranking of N candidates by the frozen
// LM (likelihood, or a trained re-ranker module) against one reading pass of the same pipeline, and peak RSS.
//   frozenlm_bench_retrieval --index IDX --mixture QA_MIX [--split test] [--queries 300] [--model M]
//                            [--reranker DIR] [--candidates 20] [--reader-tokens 256] [--threads N]
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "core/loader.h"
#include "core/runtime.h"
#include "core/torch_pch.h"
#include "methods/reader/reader_data.h"
#include "methods/reader/reader_pipeline.h"
#include "methods/reader/reranker.h"
#include "modules/trainable_module.h"
#include "retrieval/bm25.h"
#include "retrieval/dense_index.h"
#include "retrieval/passage_index.h"
#include "tasks/mixture.h"
#include "tokenizer/tokenizer.h"

using namespace frozenlm;

static long peak_rss_kb() {
  std::ifstream f("/proc/self/status");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
  return 0;
}

// Runs f(i) for every query, returns the sorted per-call milliseconds.
static std::vector<double> time_each(size_t n, const std::function<void(size_t)>& f) {
  std::vector<double> ms;
  for (size_t i = 0; i < n; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f(i);
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms;
}

static void report(const char* what, const std::vector<double>& ms) {
  double sum = 0;
  for (double x : ms) sum += x;
  auto pct = [&](double p) { return ms[std::min(ms.size() - 1, size_t(p * double(ms.size())))]; };
  std::printf("%-44s n %4zu  p50 %9.3f ms  p99 %9.3f ms  mean %9.3f ms\n", what, ms.size(), pct(0.5), pct(0.99), sum / double(ms.size()));
}

int main(int argc, char** argv) {
  CLI::App app{"frozenlm_bench_retrieval: retrieval and re-ranking latency"};
  std::string index, mixture, split = "test", model, reranker;
  size_t queries = 300;
  int64_t candidates = 20, reader_tokens = 256;
  int threads = 0;
  app.add_option("--index", index)->required();
  app.add_option("--mixture", mixture, "QA mixture whose questions are the queries")->required();
  app.add_option("--split", split);
  app.add_option("--queries", queries);
  app.add_option("--model", model, "the frozen LM (dense search, re-ranking, reading)");
  app.add_option("--reranker", reranker, "a trained re-ranker module");
  app.add_option("--candidates", candidates);
  app.add_option("--reader-tokens", reader_tokens);
  app.add_option("--threads", threads);
  CLI11_PARSE(app, argc, argv);
  init_runtime(threads);

  std::vector<QaItem> items;
  for (const Task& t : load_mixture(mixture).tasks) {
    if (t.type != TaskType::Generation || !t.splits.count(split)) continue;
    auto v = read_qa_items(t, split);
    items.insert(items.end(), v.begin(), v.end());
  }
  // Every k-th question, so all relations are in the sample.
  std::vector<QaItem> q;
  for (size_t i = 0; i < items.size() && q.size() < queries; i += std::max<size_t>(1, items.size() / queries)) q.push_back(items[i]);
  const IndexManifest m = read_index_manifest(index);
  std::printf("index %s: %lld passages; %zu queries from %s (%s); %d threads\n", index.c_str(), (long long)m.passages, q.size(),
              mixture.c_str(), split.c_str(), num_threads());

  Bm25Searcher bm25({index + "/bm25"});
  bm25.search(q[0].question, candidates, m.bm25);  // warm the database's pages
  report("BM25 top-20", time_each(q.size(), [&](size_t i) { bm25.search(q[i].question, candidates, m.bm25); }));
  report("BM25 top-100", time_each(q.size(), [&](size_t i) { bm25.search(q[i].question, 100, m.bm25); }));
  if (model.empty()) {
    std::printf("peak RSS %.1f MiB\n", peak_rss_kb() / 1024.0);
    return 0;
  }
  auto lm = load_model(model);
  auto tok = load_tokenizer_for_model(model, "", lm->vocab_size());
  if (!m.dense.is_null()) {
    DenseSearcher dense(index, *lm);
    report("dense top-20 (query embedding + HNSW)", time_each(q.size(), [&](size_t i) { dense.search(*lm, *tok, q[i].question, candidates); }));
    report("dense top-100", time_each(q.size(), [&](size_t i) { dense.search(*lm, *tok, q[i].question, 100); }));
    if (m.dense.contains("projection")) {
      DenseSearcher projected(index, *lm, true);
      report("dense top-20 through the trained projection", time_each(q.size(), [&](size_t i) { projected.search(*lm, *tok, q[i].question, candidates); }));
    }
    // The graph's size in memory: hnswlib keeps every vector and its links.
    std::error_code ec;
    const auto graph_bytes = std::filesystem::file_size(index + "/dense/hnsw.bin", ec);
    if (!ec) std::printf("dense graph on disk and in memory: %.1f MiB\n", double(graph_bytes) / (1 << 20));
  }
  const size_t nq = std::min<size_t>(q.size(), 50);  // the LM-side costs: fewer queries
  std::vector<std::vector<Passage>> cands(nq);
  for (size_t i = 0; i < nq; ++i)
    for (const auto& h : bm25.search(q[i].question, candidates, m.bm25)) cands[i].push_back(bm25.passage(h.docid));
  report("re-rank 20 candidates: LM likelihood", time_each(nq, [&](size_t i) { likelihood_scores(*lm, *tok, q[i].question, cands[i], reader_tokens); }));
  std::unique_ptr<TrainableModule> rr;
  if (!reranker.empty()) {
    rr = load_module(reranker, *lm);
    report("re-rank 20 candidates: trained re-ranker", time_each(nq, [&](size_t i) { reranker_scores(*lm, *rr, *tok, q[i].question, cands[i], reader_tokens); }));
  }
  ReaderOptions ro;
  ro.index = index;
  ro.candidates = candidates;
  ro.reader_tokens = reader_tokens;
  ReaderPipeline pipe(*lm, *tok, ro, nullptr);
  report("whole pipeline, BM25 (retrieve, pack, read)", time_each(nq, [&](size_t i) { pipe.answer(q[i].question); }));
  std::printf("peak RSS %.1f MiB\n", peak_rss_kb() / 1024.0);
  return 0;
}
