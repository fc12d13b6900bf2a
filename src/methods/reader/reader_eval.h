// Evaluating the frozen-reader pipeline on QA items: exact match and token F1 of its answers (bootstrap 95%
// intervals), and the retrieval side — recall@k of the (re-ranked) candidates (an answer-bearing passage among the first
// k) and whether the answer is inside the packed context the reader read.
#pragma once
#include <nlohmann/json.hpp>
#include <vector>

#include "methods/reader/reader_data.h"

namespace frozenlm {

class ReaderPipeline;

struct ReaderEvalOptions {
  bool retrieval_only = false;  // recall only: no reading pass
  bool per_example = false;
  bool keep_scores = false;     // "example_scores": per question EM (answer in context with retrieval_only)
  bool progress = true;
};

nlohmann::json evaluate_reader(const ReaderPipeline& pipe, const std::vector<QaItem>& items, const ReaderEvalOptions& opt);

}  // namespace frozenlm
