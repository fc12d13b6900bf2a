#include "methods/reader/reader_eval.h"

#include <chrono>
#include <cstdio>
#include <numeric>

#include "eval/metrics.h"
#include "methods/reader/reader_pipeline.h"
#include "methods/reader/reranker.h"

namespace frozenlm {

using nlohmann::json;

json evaluate_reader(const ReaderPipeline& pipe, const std::vector<QaItem>& items, const ReaderEvalOptions& opt) {
  const std::vector<int64_t> ks{1, 2, 4, 8, pipe.options().candidates};
  std::vector<std::vector<double>> hit_at(ks.size());
  std::vector<double> em, f1, in_context, read, tokens;
  json per = json::array();
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t qi = 0; qi < items.size(); ++qi) {
    const QaItem& q = items[qi];
    ReaderOutput out;
    if (opt.retrieval_only) {
      out.ranked = pipe.candidates(q.question);
      out.packed = pipe.pack(q.question, out.ranked);
    } else {
      out = pipe.answer(q.question);
    }
    int64_t first = -1;  // rank (from 0) of the first answer-bearing candidate
    for (size_t i = 0; i < out.ranked.size() && first < 0; ++i)
      if (passage_has_answer(out.ranked[i].passage, q.answers)) first = int64_t(i);
    for (size_t k = 0; k < ks.size(); ++k) hit_at[k].push_back(first >= 0 && first < ks[k] ? 1.0 : 0.0);
    const bool has = passage_has_answer({"", "", out.packed.context}, q.answers);
    in_context.push_back(has ? 1.0 : 0.0);
    read.push_back(double(out.packed.included.size()));
    tokens.push_back(double(out.packed.tokens));
    json ex = {{"question", q.question}, {"answers", q.answers}, {"first_answer_rank", first >= 0 ? json(first + 1) : json(nullptr)},
               {"answer_in_context", has}, {"passages_read", out.packed.included.size()}};
    if (!opt.retrieval_only) {
      em.push_back(exact_match(out.answer, q.answers));
      f1.push_back(token_f1(out.answer, q.answers));
      ex["prediction"] = out.answer;
      ex["em"] = em.back();
    }
    if (opt.per_example) per.push_back(ex);
    if (opt.progress && ((qi + 1) % 50 == 0 || qi + 1 == items.size())) {
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const double em_so_far = em.empty() ? 0.0 : 100.0 * std::accumulate(em.begin(), em.end(), 0.0) / double(em.size());
      std::fprintf(stderr, "[reader eval] %zu/%zu questions, %.1f/s, answer in context %.1f%%, EM %.1f%%\n", qi + 1, items.size(),
                   double(qi + 1) / std::max(s, 1e-9), 100.0 * std::accumulate(in_context.begin(), in_context.end(), 0.0) / double(qi + 1),
                   em_so_far);
    }
  }
  auto mean = [](const std::vector<double>& v) { return v.empty() ? 0.0 : std::accumulate(v.begin(), v.end(), 0.0) / double(v.size()); };
  auto with_ci = [&](const std::vector<double>& v) {
    const auto [lo, hi] = bootstrap_ci(v);
    return json{{"value", mean(v)}, {"ci95", {lo, hi}}};
  };
  json recall = json::object();
  for (size_t k = 0; k < ks.size(); ++k) recall[std::to_string(ks[k])] = with_ci(hit_at[k]);
  json r = {{"n", items.size()}, {"options", pipe.options().to_json()}, {"recall_at", recall}, {"answer_in_context", with_ci(in_context)},
            {"mean_passages_read", mean(read)}, {"mean_context_tokens", mean(tokens)}};
  if (!opt.retrieval_only) {
    r["metric"] = "exact_match";
    r["exact_match"] = mean(em);
    r["f1"] = mean(f1);
    r["score"] = mean(em);
    const auto [lo, hi] = bootstrap_ci(em);
    r["ci95"] = {lo, hi};
  }
  if (opt.per_example) r["examples"] = per;
  if (opt.keep_scores) r["example_scores"] = opt.retrieval_only ? in_context : em;
  return r;
}

}  // namespace frozenlm
