// The cost of recursion (issue 12) on a random-init Llama shape: time per question of one pass (prompt tuning,
// P = 20), neural recursion (pass 1 over [P1 | question], the MLP connector, pass 2 over [P2 | question] + decoding)
// and textual recursion (pass 1: its greedy answer + n sampled answers decoded as one batch; pass 2 reads the
// candidates + the question and decodes). A question is Q random tokens, an answer A generated tokens (no early stop).
// Prints JSON lines; ratios to one pass.
// Usage: frozenlm_bench_recursion [--shape 100m|1b|tiny] [--question 32] [--answer 6] [--samples 4] [--threads 2] [--reps 5]
#include <cstdio>
#include <string>

#include "bench_shapes.h"
#include "core/generate.h"
#include "core/loader.h"
#include "core/runtime.h"
#include "core/torch_pch.h"
#include "modules/neural_recursion.h"
#include "modules/prompt_tuning.h"

using namespace frozenlm;

int main(int argc, char** argv) {
  std::string shape_name = "100m";
  int64_t Q = 32, A = 6, n = 4;
  int threads = 2, reps = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--shape") shape_name = v;
    else if (k == "--question") Q = std::stoll(v);
    else if (k == "--answer") A = std::stoll(v);
    else if (k == "--samples") n = std::stoll(v);
    else if (k == "--threads") threads = std::stoi(v);
    else if (k == "--reps") reps = std::stoi(v);
    else { std::fprintf(stderr, "unknown flag %s\n", k.c_str()); return 2; }
  }
  init_runtime(threads);
  const ModelConfig cfg = bench_shape(shape_name);
  auto lm = make_random_model(cfg, WeightFormat::F32, 0);
  at::NoGradGuard ng;
  const at::Tensor question = at::randint(3, cfg.vocab_size, {1, Q}, at::kLong);
  // Pass 2 of textual recursion reads "Candidates: a | b | ... \n" + the question: (n + 1) answers of A tokens, a
  // separator each, and 4 tokens of frame.
  const at::Tensor with_candidates = at::randint(3, cfg.vocab_size, {1, Q + (n + 1) * (A + 1) + 4}, at::kLong);
  SamplingParams greedy;
  greedy.temperature = 0;
  greedy.max_new_tokens = A;
  SamplingParams sampled = greedy;
  sampled.temperature = 1.0;

  auto pt1 = PromptTuning::create(*lm, 20, PromptInit::SampledVocab, {}, 1);
  auto pt2 = PromptTuning::create(*lm, 20, PromptInit::SampledVocab, {}, 2);
  RecursionConfig rc;
  rc.dim = 256;
  auto nr = NeuralRecursion::create(*lm, rc);
  auto answer = [&](const TrainableModule& m, const at::Tensor& ids, const SamplingParams& sp, int64_t rows) {
    ModuleInput x = m.apply(*lm, module_input(*lm, ids));
    if (rows > 1) {
      x.embeds = x.embeds.expand({rows, -1, -1}).contiguous();
      x.mask = x.mask.expand({rows, -1}).contiguous();
    }
    generate_from_embeds(*lm, x.embeds, x.mask, sp);
  };
  const double one = median_seconds(reps, [&] { answer(*pt1, question, greedy, 1); });
  const double neural = median_seconds(reps, [&] { answer(*nr, question, greedy, 1); });
  const double textual_pass1 = median_seconds(reps, [&] { answer(*pt1, question, greedy, 1); answer(*pt1, question, sampled, n); });
  const double textual_pass2 = median_seconds(reps, [&] { answer(*pt2, with_candidates, greedy, 1); });
  const double textual = textual_pass1 + textual_pass2;
  // The prefill alone (one forward over [P | question], no decoding): what neural recursion's pass 1 costs.
  const double prefill = median_seconds(reps, [&] { module_forward_logits(*lm, *pt1, module_input(*lm, question)); });
  std::printf("{\"impl\": \"frozenlm\", \"bench\": \"recursion\", \"shape\": \"%s\", \"lm_params\": %lld, \"question_tokens\": %lld, "
              "\"answer_tokens\": %lld, \"samples\": %lld, \"threads\": %d, \"one_pass_s\": %.4f, \"prefill_s\": %.4f, "
              "\"neural_s\": %.4f, \"neural_ratio\": %.3f, \"neural_connector_params\": %lld, \"textual_pass1_s\": %.4f, "
              "\"textual_pass2_s\": %.4f, \"textual_s\": %.4f, \"textual_ratio\": %.3f}\n",
              shape_name.c_str(), (long long)lm->num_parameters(), (long long)Q, (long long)A, (long long)n, threads, one, prefill, neural,
              neural / one, (long long)nr->num_parameters(), textual_pass1, textual_pass2, textual, textual / one);
  return 0;
}
