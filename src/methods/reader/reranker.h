// Re-ranking retrieved passages with the frozen LM (Levine et al. 2022, §3), two ways:
//  - zero-shot, the LM's own likelihood (In-Context RALM's re-ranking, Ram et al. 2023):
//      score = log p(question | "Context: {passage}\nQuestion:")
//  - a trained cross-encoder: the frozen LM reads question and passage together, a small module in front of it (a soft
//    prompt, or ID-PT) is trained on a relevance classification task, and the score is the LM head's margin
//      score = log p(" yes") − log p(" no")  after  kRerankerInput
//    (the two rows of the frozen LM head act as the scoring head: nothing of the LM is trained).
#pragma once
#include <string>
#include <vector>

#include "retrieval/passages.h"

namespace frozenlm {

class FrozenLM;
class Tokenizer;
class TrainableModule;

// The re-ranker's input: {passage} and {question}; choices " no" / " yes".
extern const char* const kRerankerInput;
extern const char* const kLikelihoodPrefix;  // "Context: {passage}\nQuestion:" (the question follows as the target)

// A passage "has the answer" when one of the aliases occurs in it as a whole-token sequence after SQuAD
// normalisation (lower case, no punctuation or articles): "Paris" is in "in Paris, France", not in "Parisian".
bool passage_has_answer(const Passage& p, const std::vector<std::string>& aliases);

// One score per passage, higher = more relevant. max_tokens: each input is cut from the left (after BOS) to fit.
std::vector<double> likelihood_scores(const FrozenLM& lm, const Tokenizer& tok, const std::string& question,
                                      const std::vector<Passage>& passages, int64_t max_tokens, int64_t batch = 16);
std::vector<double> reranker_scores(const FrozenLM& lm, const TrainableModule& reranker, const Tokenizer& tok,
                                    const std::string& question, const std::vector<Passage>& passages, int64_t max_tokens,
                                    int64_t batch = 16, const std::string& input_template = kRerankerInput);
// The input template a trained re-ranker was trained with (MODULE_DIR/reranker.json, written by `train reranker`);
// an error naming the directory when it is missing or has no {passage} / {question}.
std::string reranker_input_of(const std::string& module_dir);

}  // namespace frozenlm
