#include "core/generate.h"

#include <ATen/CPUGeneratorImpl.h>

#include "core/error.h"
#include "core/kernels/decode_ops.h"
#include "core/torch_pch.h"

namespace frozenlm {

int64_t sample_token(const at::Tensor& logits_in, const SamplingParams& p, at::Generator& gen) {
  at::Tensor logits = logits_in.to(at::kCPU, at::kFloat).reshape({-1});
  if (p.greedy()) return logits.argmax().item<int64_t>();
  logits = logits / p.temperature;
  const int64_t V = logits.size(0);
  if (p.top_k > 0 && p.top_k < V) {
    at::Tensor kth = std::get<0>(logits.topk(p.top_k)).min();
    logits = logits.masked_fill(logits < kth, -INFINITY);
  }
  if (p.top_p < 1.0) {
    // Nucleus: keep the smallest set of most-likely tokens whose probability reaches top_p.
    auto [sorted, idx] = logits.sort(/*dim=*/0, /*descending=*/true);
    at::Tensor cum = sorted.softmax(0).cumsum(0);
    at::Tensor drop = (cum - sorted.softmax(0)) >= p.top_p;  // tokens whose predecessors already reach top_p
    logits = logits.index_put({idx.masked_select(drop)}, at::scalar_tensor(-INFINITY));
  }
  at::Tensor probs = logits.softmax(0);
  return at::multinomial(probs, 1, /*replacement=*/false, gen).item<int64_t>();
}

std::vector<std::vector<int64_t>> generate_from_embeds(const FrozenLM& lm, const at::Tensor& embeds, const at::Tensor& mask,
                                                       const SamplingParams& p, const TokenFn& on_token,
                                                       const StopFn& should_stop, std::vector<std::vector<TokenScore>>* scores) {
  at::NoGradGuard no_grad;
  const int64_t B = embeds.size(0);
  std::vector<std::vector<int64_t>> out(B);
  if (scores) scores->assign(B, {});
  if (p.max_new_tokens <= 0 || B == 0) return out;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(p.seed);
  KVCache cache = lm.new_cache(B, embeds.size(1) + p.max_new_tokens);
  ForwardOptions fo;
  fo.last_logits_only = true;
  ForwardInput in;
  in.embeds = embeds;
  in.mask = mask;
  at::Tensor logits = lm.forward(in, &cache, fo).logits.squeeze(1).to(at::kCPU, at::kFloat).contiguous();  // [B, V]
  std::vector<bool> done(B, false);
  int64_t live = B;
  for (int64_t step = 0; step < p.max_new_tokens && live > 0; ++step) {
    std::vector<int64_t> next(B, 0);
    std::vector<uint8_t> step_mask(B, 0);  // 0 / 1 bytes: read as bool
    const int64_t V = logits.size(1);
    for (int64_t b = 0; b < B; ++b) {
      if (done[b]) continue;
      // Greedy picks the first largest logit (as argmax) straight from the buffer; sampling goes through LibTorch.
      int64_t t = 0;
      if (p.greedy()) {
        t = kernels::argmax(logits.data_ptr<float>() + b * V, V);
      } else {
        t = sample_token(logits[b], p, gen);
      }
      if (scores) {
        const at::Tensor lp = at::log_softmax(logits[b].to(at::kFloat), -1);  // [V]
        const at::Tensor top2 = std::get<0>(lp.topk(2));
        (*scores)[b].push_back({lp[t].item<float>(), (top2[0] - top2[1]).item<float>()});
      }
      next[b] = t;
      step_mask[b] = 1;
      out[b].push_back(t);
      if (on_token) on_token(b, t);
      bool stop = false;
      for (int64_t e : p.eos_ids) stop |= t == e;
      if (!stop && should_stop) stop = should_stop(b, out[b]);
      if (stop) { done[b] = true; --live; }
    }
    if (live == 0 || step + 1 == p.max_new_tokens) break;
    ForwardInput ni;
    // (views of the vectors, which outlive the call: no tensor ops per token)
    ni.ids = at::from_blob(next.data(), {B, 1}, at::kLong);
    ni.mask = at::from_blob(step_mask.data(), {B, 1}, at::kBool);  // finished rows feed a masked dummy token
    logits = lm.forward(ni, &cache, fo).logits.squeeze(1).to(at::kCPU, at::kFloat).contiguous();
  }
  return out;
}

StopFn stop_at_strings(const Tokenizer& tok, std::vector<std::string> stops) {
  return [&tok, stops = std::move(stops)](int64_t, const std::vector<int64_t>& generated) {
    if (stops.empty()) return false;
    const std::string text = tok.decode(generated, /*skip_special=*/true);
    for (const std::string& s : stops)
      if (!s.empty() && text.find(s) != std::string::npos) return true;
    return false;
  };
}

std::vector<std::vector<int64_t>> generate(const FrozenLM& lm, const std::vector<std::vector<int64_t>>& prompts,
                                           const SamplingParams& p, const TokenFn& on_token, const StopFn& should_stop) {
  const int64_t B = prompts.size();
  int64_t T = 0;
  for (auto& pr : prompts) {
    if (pr.empty()) throw Error("generate: empty prompt (start from at least the BOS token)");
    T = std::max<int64_t>(T, pr.size());
  }
  at::Tensor ids = at::zeros({B, T}, at::kLong), mask = at::zeros({B, T}, at::kBool);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t n = prompts[b].size();
    ids[b].narrow(0, T - n, n).copy_(at::tensor(prompts[b], at::kLong));
    mask[b].narrow(0, T - n, n).fill_(true);
  }
  return generate_from_embeds(lm, lm.embed(ids), mask.to(lm.device()), p, on_token, should_stop);
}

}  // namespace frozenlm
