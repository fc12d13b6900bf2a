// frozenlm score: the log-probability of every token of a text (optionally through a trained module).
#include <cmath>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/cli_common.h"
#include "core/error.h"
#include "core/torch_pch.h"
#include "modules/trainable_module.h"
#include "tokenizer/tokenizer.h"

namespace frozenlm::cli {

void add_score_command(CLI::App& app, Commands& cmds) {
  struct Args {
    ModelArgs model;
    TextArgs text;
    bool json = false;
    std::string module_dir;
  };
  auto a = std::make_shared<Args>();
  auto* score = app.add_subcommand("score", "Log-probability of every token of a text");
  add_model_args(score, a->model);
  add_text_args(score, a->text, "score");
  score->add_flag("--json", a->json, "print {\"tokens\", \"logprobs\", \"total\"}");
  score->add_option("--module", a->module_dir, "a trained module directory to apply");
  cmds.add(score, [a] {
    const std::string text = a->text.get();
    auto lm = open_model(a->model);
    auto tok = open_tokenizer(a->model, *lm, true);
    std::vector<int64_t> ids = tok->encode(text, true);
    const int64_t bos = bos_for(lm->config(), *tok);
    if (bos >= 0 && (ids.empty() || ids.front() != bos)) ids.insert(ids.begin(), bos);
    if (ids.size() < 2) throw Error("--text encodes to fewer than 2 tokens: nothing to score");
    at::NoGradGuard ng;
    at::Tensor logits;
    if (a->module_dir.empty()) {
      ForwardInput in;
      in.ids = at::tensor(ids, at::kLong).view({1, -1});
      logits = lm->forward(in).logits;
    } else {
      auto module = load_module(a->module_dir, *lm);
      logits = module_forward_logits(*lm, *module, module_input(*lm, at::tensor(ids, at::kLong).view({1, -1})));
    }
    at::Tensor lp = at::log_softmax(logits[0], -1).to(at::kCPU);  // [T, V]
    std::vector<double> logprobs;
    double total = 0;
    for (size_t i = 1; i < ids.size(); ++i) {
      double v = lp[i - 1][ids[i]].item<double>();
      logprobs.push_back(v);
      total += v;
    }
    if (a->json) {
      std::cout << nlohmann::json({{"tokens", ids}, {"logprobs", logprobs}, {"total", total}}).dump() << "\n";
    } else {
      for (size_t i = 1; i < ids.size(); ++i) std::printf("%8lld  %-20s %10.4f\n", (long long)ids[i], tok->id_to_token(ids[i]).c_str(), logprobs[i - 1]);
      std::printf("total %.4f over %zu tokens (perplexity %.3f)\n", total, logprobs.size(), std::exp(-total / logprobs.size()));
    }
    return 0;
  });
}

}  // namespace frozenlm::cli
