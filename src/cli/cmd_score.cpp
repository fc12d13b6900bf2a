// frozenlm score: the log-probability of every token of a text (optionally through a trained module), or of a text as
// the continuation of a --prompt (an answer given its question; what a textual recursion needs: pass 1 proposes
// candidates for the prompt, pass 2 reads them with it and scores the text).
#include <cmath>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/cli_common.h"
#include "core/error.h"
#include "core/torch_pch.h"
#include "methods/recursive/textual_recursion.h"
#include "modules/trainable_module.h"
#include "tasks/task.h"
#include "tokenizer/tokenizer.h"

namespace frozenlm::cli {

void add_score_command(CLI::App& app, Commands& cmds) {
  struct Args {
    ModelArgs model;
    TextArgs text;
    bool json = false;
    std::string module_dir, prompt;
    std::vector<std::string> stops;
  };
  auto a = std::make_shared<Args>();
  auto* score = app.add_subcommand("score", "Log-probability of every token of a text");
  add_model_args(score, a->model);
  add_text_args(score, a->text, "score");
  score->add_flag("--json", a->json, "print {\"tokens\", \"logprobs\", \"total\"}");
  score->add_option("--module", a->module_dir, "a trained module directory to apply (a textual recursion needs --prompt)");
  score->add_option("--prompt", a->prompt, "score the text as the continuation of this prompt (only the text's tokens are scored)");
  score->add_option("--stop", a->stops, "textual recursion: where pass 1's candidate answers end (repeatable; default a newline)");
  cmds.add(score, [a] {
    const std::string text = a->text.get();
    auto lm = open_model(a->model);
    auto tok = open_tokenizer(a->model, *lm, true);
    const int64_t bos = bos_for(lm->config(), *tok);
    std::string prompt = a->prompt;
    std::unique_ptr<TextualRecursion> textual;
    std::unique_ptr<TrainableModule> own;
    if (!a->module_dir.empty() && TextualRecursion::is_saved_in(a->module_dir)) {
      if (a->prompt.empty())
        throw Error("score --module " + a->module_dir + ": a textual recursion scores an answer to a question: give the question as --prompt "
                    "(pass 1 proposes candidates for it, pass 2 reads them with it and scores --text)");
      textual = TextualRecursion::load(a->module_dir, *lm);
      Task t;
      if (!a->stops.empty()) t.stop = a->stops;
      t.max_tokens = 1 << 30;
      prompt = textual->pass2_input(*lm, *tok, t, a->prompt);
    } else if (!a->module_dir.empty()) {
      own = load_module(a->module_dir, *lm);
    }
    const TrainableModule* module = textual ? &textual->pass2() : own.get();
    // Without --prompt: every token after BOS; with it: the text's tokens only, as the prompt's continuation.
    std::vector<int64_t> ids;
    int64_t first = 1;
    if (a->prompt.empty()) {
      ids = tok->encode(text, true);
      if (bos >= 0 && (ids.empty() || ids.front() != bos)) ids.insert(ids.begin(), bos);
      if (ids.size() < 2) throw Error("--text encodes to fewer than 2 tokens: nothing to score");
    } else {
      const EncodedExample e = encode_example(*tok, bos, prompt, text, int64_t(1) << 30);
      ids = e.ids;
      first = e.target_start;
      if (first == int64_t(ids.size())) throw Error("--text encodes to no tokens: nothing to score");
      if (first == 0) throw Error("score --prompt: the model has no BOS and the prompt encodes to no tokens");
    }
    at::NoGradGuard ng;
    at::Tensor logits;
    if (!module) {
      ForwardInput in;
      in.ids = at::tensor(ids, at::kLong).view({1, -1});
      logits = lm->forward(in).logits;
    } else {
      const at::Tensor t = at::tensor(ids, at::kLong).view({1, -1});
      at::Tensor input_mask = at::zeros({1, int64_t(ids.size())}, at::kBool);
      input_mask.narrow(1, 0, first).fill_(true);  // what a module may read: the prompt, never the scored text
      logits = module_forward_logits(*lm, *module, module_input(*lm, t, {}, a->prompt.empty() ? at::Tensor() : input_mask));
    }
    at::Tensor lp = at::log_softmax(logits[0], -1).to(at::kCPU);  // [T, V]
    std::vector<double> logprobs;
    double total = 0;
    for (size_t i = first; i < ids.size(); ++i) {
      double v = lp[i - 1][ids[i]].item<double>();
      logprobs.push_back(v);
      total += v;
    }
    if (a->json) {
      nlohmann::json j = {{"tokens", std::vector<int64_t>(ids.begin() + (a->prompt.empty() ? 0 : first), ids.end())}, {"logprobs", logprobs}, {"total", total}};
      if (!a->prompt.empty()) j["prompt_tokens"] = first;  // with --prompt, "tokens" are the text's own
      if (textual) j["read"] = prompt;                      // what pass 2 read in front of the text
      std::cout << j.dump() << "\n";
    } else {
      if (textual) std::printf("pass 2 read: %s\n", prompt.c_str());
      for (size_t i = first; i < ids.size(); ++i) std::printf("%8lld  %-20s %10.4f\n", (long long)ids[i], tok->id_to_token(ids[i]).c_str(), logprobs[i - first]);
      std::printf("total %.4f over %zu tokens (perplexity %.3f)\n", total, logprobs.size(), std::exp(-total / logprobs.size()));
    }
    return 0;
  });
}

}  // namespace frozenlm::cli
