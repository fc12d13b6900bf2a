// Evaluating the frozen LM (optionally with a trained module) on a task split.
#pragma once
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/generate.h"
#include "core/transformer.h"
#include "modules/trainable_module.h"
#include "tasks/task.h"

namespace frozenlm {

struct EvalOptions {
  size_t limit = 0;              // 0: every example
  int64_t max_new_tokens = 24;   // generation
  int64_t batch_size = 8;
  bool per_example = false;      // include each example's prediction in the report
  bool keep_scores = false;      // include "example_scores" (per-example 0/1 or EM) for aggregate statistics
  bool squad_v2_f1 = false;      // token F1 with SQuAD v2.0's empty-answer rule (default: v1.1, the official script)
  // Generation: what the LM (with the module) reads instead of each example's input (a textual recursion's pass 2
  // reads pass 1's candidates and the question). Null: the input as it is.
  std::function<std::string(const Task&, const std::string& input)> rewrite_input;
};

// One generated answer of a generation task: the text up to the task's first stop string, and how sure the model was
// of each generated token.
struct Answer {
  std::string text;
  std::vector<TokenScore> tokens;
  double mean_logprob() const;   // mean log p over the generated tokens (0 for none)
  double first_margin() const;   // the first token's top-1 − top-2 log-prob margin (0 for none)
};

// Generates the answer to `input` as evaluate() does (BOS, the input cut to leave room for the module's prefix and
// max_new_tokens, stop at EOS or the task's stop strings). Greedy unless `sampling` is given; with
// sampling and n > 1, n answers drawn together from one batch (the same prompt repeated).
Answer generate_answer(const FrozenLM& lm, const TrainableModule* module, const Tokenizer& tok, const Task& task,
                       const std::string& input, int64_t max_new_tokens);
std::vector<Answer> sample_answers(const FrozenLM& lm, const TrainableModule* module, const Tokenizer& tok, const Task& task,
                                   const std::string& input, const SamplingParams& sampling, int64_t n);

// Classification: rank the choices by the summed log-likelihood of their tokens (accuracy). Generation: greedy
// decoding until a newline or EOS, exact match and token F1 against the aliases. LM: perplexity over the text.
// Returns {"task", "split", "n", "metric", "score", <metric fields>, "ci95" (bootstrap, not for lm), "truncated",
// ["examples"]}.
nlohmann::json evaluate(const FrozenLM& lm, const TrainableModule* module, const Tokenizer& tok, const Task& task,
                        const std::vector<Example>& examples, const EvalOptions& opt);

// Sum of log p(target tokens | prompt) for each (prompt, target) pair, batched.
std::vector<double> target_logprobs(const FrozenLM& lm, const TrainableModule* module, const std::vector<EncodedExample>& items,
                                    int64_t batch_size, std::vector<int64_t>* n_tokens = nullptr);

// log p(next token | prompt) over the whole vocabulary after each prompt (its ids; target ignored): [N, V] fp32 CPU.
// Scoring several one-token continuations of the same prompt (a re-ranker's " yes" / " no") in one forward.
at::Tensor next_token_logprobs(const FrozenLM& lm, const TrainableModule* module, const std::vector<EncodedExample>& prompts,
                               int64_t batch_size);

// The padded batch tensors for encoded examples: ids [B, T] (right-padded), mask, targets (-100 outside the target).
struct Batch {
  at::Tensor ids, mask, targets;
  at::Tensor input_mask;  // [B, T] bool: real tokens before the target (what an input-dependent module may read)
  int64_t target_tokens = 0;
};
Batch make_batch(const std::vector<EncodedExample>& items, const at::Device& device);

}  // namespace frozenlm
