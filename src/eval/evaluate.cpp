#include "eval/evaluate.h"

#include <cmath>

#include "core/error.h"
#include "core/generate.h"
#include "core/torch_pch.h"
#include "eval/metrics.h"

namespace frozenlm {

using nlohmann::json;

Batch make_batch(const std::vector<EncodedExample>& items, const at::Device& device) {
  int64_t T = 0;
  for (auto& e : items) T = std::max<int64_t>(T, e.ids.size());
  const int64_t B = items.size();
  at::Tensor ids = at::zeros({B, T}, at::kLong), mask = at::zeros({B, T}, at::kBool), tgt = at::full({B, T}, -100, at::kLong);
  at::Tensor inp = at::zeros({B, T}, at::kBool);
  auto ia = ids.accessor<int64_t, 2>();
  auto ma = mask.accessor<bool, 2>();
  auto pa = inp.accessor<bool, 2>();
  auto ta = tgt.accessor<int64_t, 2>();
  Batch b;
  for (int64_t r = 0; r < B; ++r) {
    const auto& e = items[r];
    for (size_t i = 0; i < e.ids.size(); ++i) {
      ia[r][i] = e.ids[i];
      ma[r][i] = true;
      pa[r][i] = int64_t(i) < e.target_start;
      // position i predicts token i+1; only target tokens are learned
      if (int64_t(i) + 1 >= e.target_start && i + 1 < e.ids.size()) { ta[r][i] = e.ids[i + 1]; ++b.target_tokens; }
    }
  }
  b.ids = ids.to(device);
  b.mask = mask.to(device);
  b.targets = tgt.to(device);
  b.input_mask = inp.to(device);
  return b;
}

// Final hidden states [B, T, d] of the batch's own positions (after the module's prefix, if any).
static at::Tensor batch_hidden(const FrozenLM& lm, const TrainableModule* module, const Batch& b) {
  ForwardOptions fo;
  fo.logits = false;
  fo.hidden = true;
  ForwardInput in;
  if (!module) {
    in.ids = b.ids;
    in.mask = b.mask;
    return lm.forward(in, nullptr, fo).hidden;
  }
  ModuleInput x = module->apply(lm, module_input(lm, b.ids, b.mask, b.input_mask));
  in.embeds = x.embeds;
  in.mask = x.mask;
  at::Tensor h = lm.forward(in, nullptr, fo).hidden;
  return h.narrow(1, module->prefix_length(), h.size(1) - module->prefix_length());
}

std::vector<double> target_logprobs(const FrozenLM& lm, const TrainableModule* module, const std::vector<EncodedExample>& items,
                                    int64_t batch_size, std::vector<int64_t>* n_tokens) {
  at::NoGradGuard ng;
  std::vector<double> out;
  for (size_t s = 0; s < items.size(); s += batch_size) {
    std::vector<EncodedExample> chunk(items.begin() + s, items.begin() + std::min(items.size(), s + batch_size));
    Batch b = make_batch(chunk, lm.device());
    // The LM head and its softmax only where a target token is predicted (a choice or a question after a long input
    // is a few positions of many): [N, d] -> [N, V].
    at::Tensor keep = b.targets != -100;                                                   // [B, T]
    at::Tensor where = keep.nonzero();                                                     // [N, 2]
    at::Tensor h = batch_hidden(lm, module, b).index({where.select(1, 0), where.select(1, 1)});  // [N, d]
    at::Tensor lp = at::log_softmax(lm.head(h), -1);                                       // [N, V]
    at::Tensor tgt = b.targets.index({where.select(1, 0), where.select(1, 1)});            // [N]
    at::Tensor picked = lp.gather(1, tgt.unsqueeze(1)).squeeze(1).to(at::kDouble);         // [N]
    at::Tensor sums = at::zeros({b.ids.size(0)}, picked.options()).index_add_(0, where.select(1, 0), picked).to(at::kCPU);
    at::Tensor counts = keep.sum(1).to(at::kCPU);
    for (int64_t r = 0; r < sums.size(0); ++r) {
      out.push_back(sums[r].item<double>());
      if (n_tokens) n_tokens->push_back(counts[r].item<int64_t>());
    }
  }
  return out;
}

at::Tensor next_token_logprobs(const FrozenLM& lm, const TrainableModule* module, const std::vector<EncodedExample>& prompts,
                               int64_t batch_size) {
  at::NoGradGuard ng;
  std::vector<at::Tensor> out;
  for (size_t s = 0; s < prompts.size(); s += batch_size) {
    std::vector<EncodedExample> chunk;
    for (size_t i = s; i < std::min(prompts.size(), s + batch_size); ++i) {
      EncodedExample e = prompts[i];
      e.ids.resize(size_t(e.target_start));  // the prompt alone: its last position predicts the next token
      e.target_start = int64_t(e.ids.size());
      chunk.push_back(std::move(e));
    }
    Batch b = make_batch(chunk, lm.device());
    at::Tensor last = b.mask.sum(1) - 1;                                                   // [B] right padding
    at::Tensor h = batch_hidden(lm, module, b);                                            // [B, T, d]
    at::Tensor hl = h.index({at::arange(h.size(0), last.options()), last});               // [B, d]
    out.push_back(at::log_softmax(lm.head(hl), -1).to(at::kCPU, at::kFloat));
  }
  return out.empty() ? at::zeros({0, lm.vocab_size()}) : at::cat(out, 0);
}

double Answer::mean_logprob() const {
  double s = 0;
  for (const TokenScore& t : tokens) s += t.logprob;
  return tokens.empty() ? 0.0 : s / double(tokens.size());
}

double Answer::first_margin() const { return tokens.empty() ? 0.0 : tokens.front().margin; }

// The answers, and each token's scores only when asked (evaluation needs the text alone: no log-softmax per token).
static std::vector<Answer> answers_for(const FrozenLM& lm, const TrainableModule* module, const Tokenizer& tok, const Task& task,
                                       const std::string& input, const SamplingParams& sampling, int64_t n, bool with_scores) {
  const int64_t prefix = module ? module->prefix_length() : 0;
  const EncodedExample enc = encode_example(tok, bos_for(lm.config(), tok), input, "", task.max_tokens - prefix - sampling.max_new_tokens);
  at::NoGradGuard ng;
  at::Tensor ids = at::tensor(enc.ids, at::kLong).view({1, -1}).to(lm.device());
  ModuleInput mi = module_input(lm, ids);
  if (module) mi = module->apply(lm, mi);
  if (n > 1) {
    mi.embeds = mi.embeds.expand({n, -1, -1}).contiguous();
    mi.mask = mi.mask.expand({n, -1}).contiguous();
  }
  SamplingParams sp = sampling;
  if (sp.eos_ids.empty()) sp.eos_ids = lm.config().eos_ids;
  std::vector<std::vector<TokenScore>> scores;
  auto outs = generate_from_embeds(lm, mi.embeds, mi.mask, sp, nullptr, stop_at_strings(tok, task.stop), with_scores ? &scores : nullptr);
  std::vector<Answer> answers;
  for (size_t r = 0; r < outs.size(); ++r) {
    Answer a;
    a.text = tok.decode(outs[r], true);
    for (const std::string& st : task.stop)
      if (auto at = a.text.find(st); at != std::string::npos) a.text.resize(at);
    if (with_scores) a.tokens = std::move(scores[r]);
    answers.push_back(std::move(a));
  }
  return answers;
}

std::vector<Answer> sample_answers(const FrozenLM& lm, const TrainableModule* module, const Tokenizer& tok, const Task& task,
                                   const std::string& input, const SamplingParams& sampling, int64_t n) {
  return answers_for(lm, module, tok, task, input, sampling, n, true);
}

static SamplingParams greedy(int64_t max_new_tokens) {
  SamplingParams sp;
  sp.temperature = 0;
  sp.max_new_tokens = max_new_tokens;
  return sp;
}

Answer generate_answer(const FrozenLM& lm, const TrainableModule* module, const Tokenizer& tok, const Task& task,
                       const std::string& input, int64_t max_new_tokens) {
  return answers_for(lm, module, tok, task, input, greedy(max_new_tokens), 1, true).at(0);
}

json evaluate(const FrozenLM& lm, const TrainableModule* module, const Tokenizer& tok, const Task& task,
              const std::vector<Example>& all, const EvalOptions& opt) {
  std::vector<Example> ex(all.begin(), all.begin() + (opt.limit ? std::min(opt.limit, all.size()) : all.size()));
  const int64_t bos = bos_for(lm.config(), tok);
  const int64_t prefix = module ? module->prefix_length() : 0;
  const int64_t room = task.max_tokens - prefix;
  // What the input keeps: max_tokens minus the module's prefix (and, for generation, the tokens to generate); BOS and at
  // least one input token must fit.
  const int64_t input_room = room - (task.type == TaskType::Generation ? opt.max_new_tokens : 0);
  if (input_room < 2)
    throw Error(task.file + ": task '" + task.name + "' has max_tokens " + std::to_string(task.max_tokens) + ", which leaves " +
                std::to_string(input_room) + " positions for the input after the module's " + std::to_string(prefix) +
                " prefix positions" + (task.type == TaskType::Generation ? " and --max-new-tokens " + std::to_string(opt.max_new_tokens) : std::string()) +
                " (BOS and at least one input token need 2): raise max_tokens or lower those");
  json report = {{"task", task.name}, {"type", task_type_name(task.type)}, {"n", ex.size()}};
  json per = json::array();
  std::vector<double> scores;  // per example: 1/0 correct, or exact match
  size_t truncated = 0;
  if (task.type == TaskType::Classification) {
    std::vector<EncodedExample> items;
    for (auto& e : ex)
      for (auto& c : e.choices) {
        items.push_back(encode_example(tok, bos, e.input, c, room));
        truncated += items.back().truncated;
      }
    std::vector<double> lp = target_logprobs(lm, module, items, opt.batch_size);
    size_t k = 0, correct = 0;
    for (auto& e : ex) {
      size_t best = 0;
      for (size_t c = 0; c < e.choices.size(); ++c)
        if (lp[k + c] > lp[k + best]) best = c;
      correct += int64_t(best) == e.label;
      scores.push_back(int64_t(best) == e.label ? 1.0 : 0.0);
      if (opt.per_example) per.push_back({{"input", e.input}, {"prediction", e.choices[best]}, {"label", e.choices[e.label]}});
      k += e.choices.size();
    }
    report["metric"] = "accuracy";
    report["accuracy"] = ex.empty() ? 0.0 : double(correct) / ex.size();
    report["score"] = report["accuracy"];
  } else if (task.type == TaskType::LanguageModel) {
    std::vector<EncodedExample> items;
    for (auto& e : ex) items.push_back(encode_example(tok, bos, "", e.targets[0], room));
    std::vector<int64_t> counts;
    std::vector<double> lp = target_logprobs(lm, module, items, opt.batch_size, &counts);
    double total = 0;
    int64_t n = 0;
    for (size_t i = 0; i < lp.size(); ++i) { total += lp[i]; n += counts[i]; }
    report["metric"] = "perplexity";
    report["perplexity"] = n ? std::exp(-total / n) : 0.0;
    report["score"] = -report["perplexity"].get<double>();
    report["tokens"] = n;
  } else {
    double em = 0, f1 = 0;
    for (auto& e : ex) {
      const std::string input = opt.rewrite_input ? opt.rewrite_input(task, e.input) : e.input;
      truncated += encode_example(tok, bos, input, "", room - opt.max_new_tokens).truncated;
      const std::string pred = answers_for(lm, module, tok, task, input, greedy(opt.max_new_tokens), 1, false).at(0).text;
      const std::vector<std::string>& golds = e.targets;  // the rendered target and every alias
      const double m = exact_match(pred, golds), f = token_f1(pred, golds, opt.squad_v2_f1);
      em += m;
      f1 += f;
      scores.push_back(m);
      if (opt.per_example) {
        per.push_back({{"input", e.input}, {"prediction", pred}, {"answers", golds}, {"em", m}, {"f1", f}});
        if (opt.rewrite_input) per.back()["read"] = input;
      }
    }
    report["metric"] = "exact_match";
    report["exact_match"] = ex.empty() ? 0.0 : em / ex.size();
    report["f1"] = ex.empty() ? 0.0 : f1 / ex.size();
    report["f1_rule"] = opt.squad_v2_f1 ? "squad-v2.0" : "squad-v1.1";
    report["score"] = report["exact_match"];
  }
  report["truncated_inputs"] = truncated;
  if (!scores.empty()) {
    auto [lo, hi] = bootstrap_ci(scores);
    report["ci95"] = {lo, hi};  // percentile bootstrap of the score over examples
  }
  if (opt.keep_scores) report["example_scores"] = scores;
  if (opt.per_example) report["examples"] = per;
  return report;
}

}  // namespace frozenlm
