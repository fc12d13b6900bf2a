// Throughput of the frozen LM on a random-init Llama shape: (a) forward, (b) forward + backward to the input
// embeddings (what prompt tuning costs per step, weights frozen). Prints one JSON line.
// Usage: frozenlm_bench [--shape 100m|1b|tiny] [--weights f32|bf16|int8|q8_0] [--batch 8] [--seq 256] [--threads 2] [--reps 5]
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bench_shapes.h"
#include "core/loader.h"
#include "core/losses.h"
#include "eval/evaluate.h"
#include "modules/prompt_tuning.h"
#include "core/runtime.h"
#include "core/torch_pch.h"
#include <torch/version.h>
#if TORCH_VERSION_MAJOR < 2  // the legacy trace writer (LibTorch 1.13); newer builds: use their profiler instead
#include <torch/csrc/autograd/profiler_legacy.h>
#define FROZENLM_LEGACY_PROFILER 1
#endif
#include <cstdlib>
#include <memory>

using namespace frozenlm;

int main(int argc, char** argv) {
  std::string shape_name = "100m", weights = "f32";
  int64_t B = 8, T = 256;
  int threads = 2, reps = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--shape") shape_name = v;
    else if (k == "--weights") weights = v;
    else if (k == "--batch") B = std::stoll(v);
    else if (k == "--seq") T = std::stoll(v);
    else if (k == "--threads") threads = std::stoi(v);
    else if (k == "--reps") reps = std::stoi(v);
    else { std::fprintf(stderr, "unknown flag %s\n", k.c_str()); return 2; }
  }
  init_runtime(threads);
  const ModelConfig cfg = bench_shape(shape_name);
  auto lm = make_random_model(cfg, parse_weight_format(weights), 0);
  at::Tensor ids = at::randint(0, cfg.vocab_size, {B, T}, at::kLong);
  at::Tensor targets = at::roll(ids, {-1}, {1});
  targets.select(1, T - 1).fill_(-100);

  auto time_it = [&](auto&& fn) { return median_seconds(reps, fn); };
  const double fwd_s = time_it([&] {
    at::NoGradGuard ng;
    ForwardInput in;
    in.ids = ids;
    lm->forward(in);
  });
  const double bwd_s = time_it([&] {
    ForwardInput in;
    in.embeds = lm->embed(ids).requires_grad_(true);
    at::Tensor logits = lm->forward(in).logits;
    // Next-token cross-entropy at every position (the last one has no target).
    token_cross_entropy(logits.view({-1, cfg.vocab_size}), targets.view({-1})).backward();
  });
  // (c) one prompt-tuning training step through the harness's pieces: batch assembly from encoded examples
  // (T − P tokens each, the second half the target), the soft prompt prepended, loss on target tokens, backward,
  // gradient clipping and an AdamW step. Same B × T positions as (b).
  const int64_t P = 20;
  auto pt = PromptTuning::create(*lm, P, PromptInit::SampledVocab, {}, 0);
  std::vector<EncodedExample> items(B);
  for (int64_t b = 0; b < B; ++b) {
    auto row = ids[b].narrow(0, 0, T - P).contiguous();
    items[b].ids.assign(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + row.numel());
    items[b].target_start = (T - P) / 2;
  }
  auto params = pt->parameters();
  torch::optim::AdamW optim(params, torch::optim::AdamWOptions(0.3));
  const double pt_s = time_it([&] {
    optim.zero_grad();
    Batch batch = make_batch(items, lm->device());
    ModuleInput mi;
    mi.embeds = lm->embed(batch.ids);
    mi.mask = batch.mask;
    at::Tensor logits = module_forward_logits(*lm, *pt, mi);
    token_cross_entropy(logits.reshape({-1, cfg.vocab_size}), batch.targets.reshape({-1})).backward();
    torch::nn::utils::clip_grad_norm_(params, 1.0);
    optim.step();
  });

#ifdef FROZENLM_LEGACY_PROFILER
  if (const char* trace = std::getenv("FROZENLM_PROFILE")) {  // chrome://tracing file of one fwd+bwd step
    auto guard = std::make_unique<torch::autograd::profiler::RecordProfile>(std::string(trace));
    ForwardInput in;
    in.embeds = lm->embed(ids).requires_grad_(true);
    at::Tensor logits = lm->forward(in).logits;
    token_cross_entropy(logits.view({-1, cfg.vocab_size}), targets.view({-1})).backward();
  }
#endif
  // Model FLOPs: forward = 2·(matmul params) + 4·T·d·L attention (+ head); backward to the inputs only ≈ forward.
  const double fwd_flops = cfg.forward_flops_per_token(T) * B * T;
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  std::printf(
      "{\"impl\": \"frozenlm\", \"shape\": \"%s\", \"params\": %lld, \"weights\": \"%s\", \"weight_bytes\": %lld, \"batch\": %lld, "
      "\"seq\": %lld, \"threads\": %d, \"fwd_s\": %.4f, \"fwd_tok_s\": %.1f, \"fwd_gflops\": %.1f, \"fwdbwd_s\": %.4f, "
      "\"fwdbwd_tok_s\": %.1f, \"fwdbwd_gflops\": %.1f, \"pt_step_s\": %.4f, \"pt_step_tok_s\": %.1f, \"pt_overhead_pct\": %.1f, "
      "\"peak_rss_mb\": %.0f}\n",
      shape_name.c_str(), (long long)lm->num_parameters(), weights.c_str(), (long long)lm->weight_bytes(), (long long)B,
      (long long)T, threads, fwd_s, B * T / fwd_s, fwd_flops / fwd_s / 1e9, bwd_s, B * T / bwd_s, 2 * fwd_flops / bwd_s / 1e9,
      pt_s, B * T / pt_s, 100.0 * (pt_s / bwd_s - 1.0), ru.ru_maxrss / 1024.0);
  return 0;
}
