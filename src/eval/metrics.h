// Evaluation metrics, as the usual open-domain QA and classification evaluations define them.
#pragma once
#include <string>
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
