// Evaluation metrics, as the usual open-domain QA and classification evaluations define them.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace frozenlm {

// SQuAD v1.1's official normalize_answer, exactly (on Unicode codepoints, as the script runs on Python str): lower
// case (str.lower), drop ASCII punctuation (string.punctuation), replace \b(a|an|the)\b by a space (Python's Unicode
// word characters), split on Unicode whitespace (str.split) and join with single spaces.
std::string normalize_answer(const std::string& s);
// 1 if the normalised prediction equals any normalised gold answer.
double exact_match(const std::string& prediction, const std::vector<std::string>& golds);
// Token-level F1 between normalised prediction and gold, maximised over the gold aliases, as SQuAD v1.1: 0 when no
// token overlaps, including two empty strings. v2_empty_rule: SQuAD v2.0's rule instead (an empty prediction and an
// empty answer score 1, one empty side 0).
double token_f1(const std::string& prediction, const std::vector<std::string>& golds, bool v2_empty_rule = false);

}  // namespace frozenlm

namespace frozenlm {

// Percentile bootstrap confidence interval of the mean of per-example scores: `resamples` resamples with replacement,
// deterministic from `seed`. Returns {low, high}; {mean, mean} for fewer than 2 examples.
std::pair<double, double> bootstrap_ci(const std::vector<double>& scores, double level = 0.95, int resamples = 2000, uint64_t seed = 0);
// The same for the average over tasks of per-task means, each task resampled independently (a mixture's average).
// Tasks with no scores are left out of the average (a task whose score is not a mean of per-example scores, such as
// perplexity, enters as a one-element vector: a constant).
std::pair<double, double> bootstrap_ci_of_task_average(const std::vector<std::vector<double>>& per_task, double level = 0.95,
                                                      int resamples = 2000, uint64_t seed = 0);

}  // namespace frozenlm
