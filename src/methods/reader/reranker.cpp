#include "methods/reader/reranker.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/torch_pch.h"
#include "core/transformer.h"
#include "data/records.h"
#include "eval/evaluate.h"
#include "eval/metrics.h"
#include "modules/trainable_module.h"
#include "tasks/task.h"
#include "tokenizer/tokenizer.h"

namespace frozenlm {

// The context first, as in the testbed's reading formats. (Question first — so every passage token could attend to
// it — learned the synthetic relevance test's task less well in the same steps: Reader.ARerankerPromptLearns...)
const char* const kRerankerInput = "Context: {passage}\nQuestion: {question} Does the context answer it?\nAnswer:";
const char* const kLikelihoodPrefix = "Context: {passage}\nQuestion:";

bool passage_has_answer(const Passage& p, const std::vector<std::string>& aliases) {
  const std::vector<std::string> words = split_words(normalize_answer(p.title + " " + p.text));
  for (const std::string& a : aliases) {
    const std::vector<std::string> aw = split_words(normalize_answer(a));
    if (aw.empty() || aw.size() > words.size()) continue;
    for (size_t i = 0; i + aw.size() <= words.size(); ++i)
      if (std::equal(aw.begin(), aw.end(), words.begin() + int64_t(i))) return true;
  }
  return false;
}

std::vector<double> likelihood_scores(const FrozenLM& lm, const Tokenizer& tok, const std::string& question,
                                      const std::vector<Passage>& passages, int64_t max_tokens, int64_t batch) {
  std::vector<EncodedExample> items;
  for (const Passage& p : passages)
    items.push_back(encode_example(tok, bos_for(lm.config(), tok), render_template(kLikelihoodPrefix, {{"passage", p.text}}, "likelihood re-ranker"),
                                   " " + question, max_tokens));
  return target_logprobs(lm, nullptr, items, batch);
}

std::vector<double> reranker_scores(const FrozenLM& lm, const TrainableModule& reranker, const Tokenizer& tok,
                                    const std::string& question, const std::vector<Passage>& passages, int64_t max_tokens,
                                    int64_t batch, const std::string& input_template) {
  std::vector<EncodedExample> items;
  const int64_t room = max_tokens - reranker.prefix_length();
  const std::vector<int64_t> yes = tok.encode_continuation(" yes"), no = tok.encode_continuation(" no");
  const bool one_token = yes.size() == 1 && no.size() == 1;
  for (const Passage& p : passages) {
    const std::string input = render_template(input_template, {{"passage", p.text}, {"question", question}}, "re-ranker");
    items.push_back(encode_example(tok, bos_for(lm.config(), tok), input, " yes", room));
    if (!one_token) items.push_back(encode_example(tok, bos_for(lm.config(), tok), input, " no", room));
  }
  std::vector<double> out;
  if (one_token) {  // both answers from one forward: the next-token distribution after the input
    const at::Tensor lp = next_token_logprobs(lm, &reranker, items, batch);  // [N, V]
    for (int64_t i = 0; i < lp.size(0); ++i) out.push_back(lp[i][yes[0]].item<double>() - lp[i][no[0]].item<double>());
    return out;
  }
  const std::vector<double> lp = target_logprobs(lm, &reranker, items, batch);
  for (size_t i = 0; i < passages.size(); ++i) out.push_back(lp[2 * i] - lp[2 * i + 1]);
  return out;
}

std::string reranker_input_of(const std::string& module_dir) {
  const std::string path = module_dir + "/reranker.json";
  std::ifstream f(path);
  if (!f)
    throw Error(module_dir + ": no reranker.json (the input template the re-ranker was trained with): not a re-ranker "
                "trained by `frozenlm train reranker`");
  const nlohmann::json j = nlohmann::json::parse(f, nullptr, false);
  if (j.is_discarded() || !j.contains("input") || !j["input"].is_string()) throw Error(path + ": no \"input\" string (the re-ranker's input template)");
  const std::string t = j["input"].get<std::string>();
  for (const char* field : {"{passage}", "{question}"})
    if (t.find(field) == std::string::npos) throw Error(path + ": \"input\" must contain " + std::string(field) + ": " + t);
  return t;
}

}  // namespace frozenlm
