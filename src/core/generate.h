// Batched autoregressive generation over the frozen LM, with a KV cache. Prompts may be token ids or any
// embeddings prefix (a soft prompt, a connector's output), so every method shares one decoding loop.
#pragma once
#include <ATen/Tensor.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "core/transformer.h"
#include "tokenizer/tokenizer.h"

namespace frozenlm {

// Temperatures below this are greedy (as vLLM's _SAMPLING_EPS): dividing logits by 1e-40 overflows to inf and the
// softmax of inf - inf is NaN, so a "nearly greedy" request would otherwise fail in the sampler.
constexpr double kGreedyBelowTemperature = 1e-5;

struct SamplingParams {
  int64_t max_new_tokens = 64;
  double temperature = 1.0;  // below kGreedyBelowTemperature (0 included): greedy
  bool greedy() const { return temperature < kGreedyBelowTemperature; }
  int64_t top_k = 0;         // 0: off
  double top_p = 1.0;        // 1: off
  uint64_t seed = 0;
  std::vector<int64_t> eos_ids;  // stop a row at any of these (the EOS token is kept in its output)
};

// Called after each step with the row and its tokens so far; return true to stop that row (stop strings).
using StopFn = std::function<bool(int64_t row, const std::vector<int64_t>& generated)>;
// Called for every new token (streaming).
using TokenFn = std::function<void(int64_t row, int64_t token)>;

// How sure the model was of a generated token, from the untempered distribution it was drawn from.
struct TokenScore {
  float logprob = 0;  // log p(token)
  float margin = 0;   // log p(top-1) − log p(top-2): how far the best token led the runner-up
};

// Stops a row once its decoded output contains any of `stops` (the tokenizer must outlive the returned function).
StopFn stop_at_strings(const Tokenizer& tok, std::vector<std::string> stops);

// Picks the next token from logits [V] (CPU or device); deterministic given the generator state.
int64_t sample_token(const at::Tensor& logits, const SamplingParams& p, at::Generator& gen);

// Generates from prompts of token ids (different lengths allowed: they are left-padded).
std::vector<std::vector<int64_t>> generate(const FrozenLM& lm, const std::vector<std::vector<int64_t>>& prompts,
                                           const SamplingParams& p, const TokenFn& on_token = nullptr,
                                           const StopFn& should_stop = nullptr);

// Generates from an embeddings prefix [B, T, d] with mask [B, T] (left-padded: real tokens at the end).
// `scores` (optional): each row's TokenScore per generated token (confidence gates).
std::vector<std::vector<int64_t>> generate_from_embeds(const FrozenLM& lm, const at::Tensor& embeds, const at::Tensor& mask,
                                                       const SamplingParams& p, const TokenFn& on_token = nullptr,
                                                       const StopFn& should_stop = nullptr,
                                                       std::vector<std::vector<TokenScore>>* scores = nullptr);

}  // namespace frozenlm
