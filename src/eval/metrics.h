// Evaluation metrics, as the usual open-domain QA and classification evaluations define them.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace frozenlm {

// SQuAD answer normalisation: lower case (ASCII letters only; the official script also lower-cases other scripts),
// drop ASCII punctuation, drop the articles a/an/the, collapse whitespace.
std::string normalize_answer(const std::string& s);
// 1 if the normalised prediction equals any normalised gold answer.
double exact_match(const std::string& prediction, const std::vector<std::string>& golds);
// Token-level F1 between normalised prediction and gold, maximised over the gold aliases (SQuAD). Two empty strings
// score 1; one empty string scores 0.
double token_f1(const std::string& prediction, const std::vector<std::string>& golds);

}  // namespace frozenlm

namespace frozenlm {

// Percentile bootstrap confidence interval of the mean of per-example scores: `resamples` resamples with replacement,
// deterministic from `seed`. Returns {low, high}; {mean, mean} for fewer than 2 examples.
std::pair<double, double> bootstrap_ci(const std::vector<double>& scores, double level = 0.95, int resamples = 2000, uint64_t seed = 0);
// The same for the average over tasks of per-task means, each task resampled independently (a mixture's average).
std::pair<double, double> bootstrap_ci_of_task_average(const std::vector<std::vector<double>>& per_task, double level = 0.95,
                                                      int resamples = 2000, uint64_t seed = 0);

}  // namespace frozenlm
