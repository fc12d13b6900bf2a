// frozenlm generate: stream a continuation of a prompt (optionally through a trained module) to stdout.
#include <chrono>
#include <cstdio>
#include <iostream>

#include "cli/cli_common.h"
#include "core/generate.h"
#include "core/torch_pch.h"
#include "methods/recursive/textual_recursion.h"
#include "modules/trainable_module.h"
#include "tokenizer/prompt_tokens.h"
#include "tokenizer/tokenizer.h"

namespace frozenlm::cli {

void add_generate_command(CLI::App& app, Commands& cmds) {
  struct Args {
    ModelArgs model;
    std::string prompt, module_dir;
    SamplingParams sp;
    std::vector<std::string> stops;
  };
  auto a = std::make_shared<Args>();
  a->sp.temperature = 0.8;
  SamplingParams& sp = a->sp;
  auto* gen = app.add_subcommand("generate", "Stream a continuation of a prompt to stdout");
  add_model_args(gen, a->model);
  gen->add_option("--prompt", a->prompt, "prompt text (default: start from BOS alone)");
  gen->add_option("--max-new-tokens", sp.max_new_tokens, "tokens to generate")->capture_default_str();
  gen->add_option("--temperature", sp.temperature, "0: greedy")->capture_default_str()->check(CLI::NonNegativeNumber);
  gen->add_option("--top-k", sp.top_k, "keep the k most likely tokens (0: off)")->capture_default_str()->check(CLI::NonNegativeNumber);
  gen->add_option("--top-p", sp.top_p, "nucleus sampling mass (1: off)")->capture_default_str()->check(CLI::Range(0.0, 1.0));
  gen->add_option("--seed", sp.seed, "random seed")->capture_default_str();
  gen->add_option("--stop", a->stops, "stop when the output contains this string (repeatable)");
  gen->add_option("--module", a->module_dir, "a trained module directory (e.g. a prompt-tuning adapter) to apply");
  cmds.add(gen, [a] {
    auto lm = open_model(a->model);
    auto tok = open_tokenizer(a->model, *lm, true);
    SamplingParams sp = a->sp;
    sp.eos_ids = eos_ids_for(lm->config(), *tok);
    std::string prompt = a->prompt;
    std::unique_ptr<TextualRecursion> textual;
    if (!a->module_dir.empty() && TextualRecursion::is_saved_in(a->module_dir)) {
      // A textual recursion: pass 1 proposes candidates for the prompt (stopping at --stop, default a newline), and
      // the continuation is pass 2's, from "candidates + prompt".
      textual = TextualRecursion::load(a->module_dir, *lm);
      Task t;
      if (!a->stops.empty()) t.stop = a->stops;
      t.max_tokens = 1 << 30;
      const Proposal p = textual->propose(*lm, *tok, t, prompt);
      std::string line;
      for (size_t i = 0; i < p.candidates.size(); ++i) line += (i ? " | " : "") + p.candidates[i] + " (" + std::to_string(p.counts[i]) + ")";
      std::fprintf(stderr, "[pass 1] candidates: %s\n", line.empty() ? "(none)" : line.c_str());
      prompt = candidates_input(p.candidates, prompt);
    }
    std::vector<int64_t> ids = prompt_ids(*lm, *tok, prompt);
    StreamDecoder stream(*tok, ids);
    std::cout << a->prompt << std::flush;
    auto t0 = std::chrono::steady_clock::now(), t_first = t0;
    size_t n = 0;
    TokenFn on_token = [&](int64_t, int64_t t) {
      if (n++ == 0) t_first = std::chrono::steady_clock::now();  // the prompt's prefill ends with the first token
      for (auto e : sp.eos_ids)
        if (t == e) return;
      std::cout << stream.push(t) << std::flush;
    };
    if (a->module_dir.empty()) {
      generate(*lm, {ids}, sp, on_token, stop_at_strings(*tok, a->stops));
    } else {
      std::unique_ptr<TrainableModule> own = textual ? nullptr : load_module(a->module_dir, *lm);
      const TrainableModule* module = textual ? &textual->pass2() : own.get();
      at::NoGradGuard ng;
      ModuleInput x = module->apply(*lm, module_input(*lm, at::tensor(ids, at::kLong).view({1, -1})));
      generate_from_embeds(*lm, x.embeds, x.mask, sp, on_token, stop_at_strings(*tok, a->stops));
    }
    const auto t_end = std::chrono::steady_clock::now();
    const double prompt_s = std::chrono::duration<double>(t_first - t0).count();
    const double decode_s = std::chrono::duration<double>(t_end - t_first).count();
    std::cout << stream.flush() << std::endl;  // flushed before the speed line on stderr (a pipe would reorder them)
    // As llama.cpp reports it: the prompt (prefill, up to the first token) and decoding (every later token) apart.
    std::fprintf(stderr, "[prompt: %zu tokens in %.3f s, %.1f tokens/s | decode: %zu tokens in %.3f s, %.1f tokens/s]\n", ids.size(),
                 prompt_s, ids.size() / std::max(prompt_s, 1e-9), n > 0 ? n - 1 : 0, decode_s, (n > 1 ? n - 1 : 0) / std::max(decode_s, 1e-9));
    return 0;
  });
}

}  // namespace frozenlm::cli
