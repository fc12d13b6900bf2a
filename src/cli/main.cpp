// frozenlm: thin command-line front end over the core library.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/generate.h"
#include "core/hf_export.h"
#include "core/loader.h"
#include "core/runtime.h"
#include "eval/evaluate.h"
#include "eval/metrics.h"
#include "modules/finetune.h"
#include "modules/idpt.h"
#include "modules/prompt_tuning.h"
#include "modules/trainable_module.h"
#include "tasks/mixture.h"
#include "tasks/task.h"
#include "train/trainer.h"
#include "core/torch_pch.h"
#include "tokenizer/tokenizer.h"

using namespace frozenlm;
using nlohmann::json;

namespace {

struct ModelArgs {
  std::string model = "../shared/models/tinystories-656k";
  std::string tokenizer;
  std::string weights = "f32";
  std::string device = "cpu";
  int threads = 0;
};

void add_model_args(CLI::App* app, ModelArgs& a, bool need_tokenizer = true) {
  app->add_option("--model", a.model, "Hugging Face model directory or llama2.c .bin checkpoint")->capture_default_str();
  if (need_tokenizer) app->add_option("--tokenizer", a.tokenizer, "tokenizer.json or llama2.c tokenizer.bin (default: beside the model)");
  app->add_option("--weights", a.weights, "in-memory weight storage: f32 | bf16 | int8 (compute is fp32)")->capture_default_str();
  app->add_option("--device", a.device, "cpu | cuda | cuda:N")->capture_default_str();
  app->add_option("--threads", a.threads, "CPU threads (0: all cores)")->capture_default_str();
}

std::unique_ptr<FrozenLM> open_model(const ModelArgs& a) {
  init_runtime(a.threads);
  LoadOptions lo;
  lo.weights = parse_weight_format(a.weights);
  lo.device = a.device;
  return load_model(a.model, lo);
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB"};
  int u = 0;
  while (b >= 1024 && u < 3) { b /= 1024; ++u; }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f %s", b, units[u]);
  return buf;
}

int64_t bos_of(const FrozenLM& lm, const Tokenizer& tok) { return lm.config().bos_id >= 0 ? lm.config().bos_id : tok.bos_id(); }

std::vector<int64_t> prompt_ids(const FrozenLM& lm, const Tokenizer& tok, const std::string& text) {
  std::vector<int64_t> ids = tok.encode(text, /*add_special=*/true);
  const int64_t bos = bos_of(lm, tok);
  if (bos >= 0 && (ids.empty() || ids.front() != bos) && text.empty()) ids.insert(ids.begin(), bos);
  if (ids.empty()) throw Error("the prompt encodes to no tokens and the model has no BOS token: give --prompt");
  return ids;
}

// A module's size and its measured inference-time overhead: the frozen LM's forward on a batch of 4 × 128 random
// tokens alone vs with the module (the module's own work plus the longer sequence), best of 5 after a warm-up.
json module_info(const FrozenLM& lm, const std::string& dir) {
  auto module = load_module(dir, lm);
  at::NoGradGuard ng;
  const int64_t B = 4, T = std::min<int64_t>(128, lm.config().max_seq_len - module->prefix_length());
  at::Tensor ids = at::randint(0, lm.vocab_size(), {B, T}, at::kLong);
  auto best_of = [](const std::function<void()>& f) {
    f();
    double best = 1e30;
    for (int r = 0; r < 5; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      f();
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return best;
  };
  ForwardInput plain;
  plain.ids = ids;
  const double t_lm = best_of([&] { lm.forward(plain); });
  const double t_apply = best_of([&] { module->apply(lm, module_input(lm, ids)); });
  const double t_total = best_of([&] { module_forward_logits(lm, *module, module_input(lm, ids)); });
  const int64_t n = module->num_parameters();
  return {{"module", dir}, {"kind", module->kind()}, {"trainable_parameters", n},
          {"percent_of_lm", 100.0 * n / lm.num_parameters()}, {"prefix_positions", module->prefix_length()},
          {"timing_batch", {B, T}}, {"lm_forward_s", t_lm}, {"module_apply_s", t_apply}, {"lm_with_module_s", t_total},
          {"module_overhead_percent", 100.0 * t_apply / t_lm}, {"total_overhead_percent", 100.0 * (t_total - t_lm) / t_lm}};
}

int cmd_info(const ModelArgs& a, bool as_json, const std::string& module_dir) {
  auto lm = open_model(a);
  if (!module_dir.empty()) {
    json m = module_info(*lm, module_dir);
    if (as_json) {
      std::cout << m.dump(2) << "\n";
    } else {
      std::printf("module       %s (%s), %d prefix positions\n", module_dir.c_str(), m["kind"].get<std::string>().c_str(), m["prefix_positions"].get<int>());
      std::printf("parameters   %lld trainable = %.4f%% of the frozen LM's %lld\n", m["trainable_parameters"].get<long long>(),
                  m["percent_of_lm"].get<double>(), (long long)lm->num_parameters());
      std::printf("time         batch 4 x %d: LM forward %.2f ms; module %.2f ms (%.1f%%); LM + module %.2f ms (+%.1f%%)\n",
                  m["timing_batch"][1].get<int>(), 1e3 * m["lm_forward_s"].get<double>(), 1e3 * m["module_apply_s"].get<double>(),
                  m["module_overhead_percent"].get<double>(), 1e3 * m["lm_with_module_s"].get<double>(), m["total_overhead_percent"].get<double>());
    }
    return 0;
  }
  const ModelConfig& c = lm->config();
  const int64_t params = lm->num_parameters();
  json j = {{"model", a.model},
            {"family", c.family},
            {"model_type", c.model_type},
            {"vocab_size", c.vocab_size},
            {"dim", c.dim},
            {"n_layers", c.n_layers},
            {"n_heads", c.n_heads},
            {"n_kv_heads", c.n_kv_heads},
            {"head_dim", c.head_dim},
            {"ffn_dim", c.ffn_dim},
            {"max_seq_len", c.max_seq_len},
            {"norm", c.norm == NormKind::RMSNorm ? "rmsnorm" : "layernorm"},
            {"positions", c.rope ? "rope" : "learned"},
            {"rope_theta", c.rope_theta},
            {"rope_scaling", c.rope_scaling.type.empty() ? "none" : c.rope_scaling.type},
            {"tied_embeddings", c.tied_embeddings},
            {"parameters", params},
            {"weights", weight_format_name(lm->weight_format())},
            {"weight_bytes", lm->weight_bytes()},
            {"compute_dtype", "f32"},
            {"device", lm->device().str()},
            {"bos_id", c.bos_id},
            {"eos_ids", c.eos_ids},
            {"weights_hash", lm->weights_hash()},
            {"checkpoint_id", lm->checkpoint_id()}};
  if (as_json) {
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  std::printf("model        %s\n", a.model.c_str());
  std::printf("architecture %s (%s): %lld layers, d=%lld, %lld heads / %lld KV heads (head_dim %lld), FFN %lld\n",
              c.family.c_str(), c.model_type.c_str(), (long long)c.n_layers, (long long)c.dim, (long long)c.n_heads,
              (long long)c.n_kv_heads, (long long)c.head_dim, (long long)c.ffn_dim);
  std::printf("             %s, %s positions%s, %s embeddings, vocab %lld, context %lld\n",
              c.norm == NormKind::RMSNorm ? "RMSNorm" : "LayerNorm", c.rope ? "rotary" : "learned",
              c.rope ? (" (theta " + std::to_string((long long)c.rope_theta) + (c.rope_scaling.type.empty() ? "" : ", " + c.rope_scaling.type + " scaling") + ")").c_str() : "",
              c.tied_embeddings ? "tied" : "untied", (long long)c.vocab_size, (long long)c.max_seq_len);
  std::printf("parameters   %lld (%.3f M)\n", (long long)params, params / 1e6);
  std::printf("weights      %s storage, fp32 compute, %s in memory, on %s\n", weight_format_name(lm->weight_format()),
              human_bytes(lm->weight_bytes()).c_str(), lm->device().str().c_str());
  std::printf("identity     checkpoint %s, stored weights hash %s\n", lm->checkpoint_id().c_str(), lm->weights_hash().c_str());
  return 0;
}


// Options every `train` subcommand shares.
struct TrainArgs {
  TrainOptions to;
  std::string train_split = "train", dev_split = "dev";
  size_t train_limit = 0;
};

void add_train_args(CLI::App* c, TrainArgs& a, std::string& task_path, std::string& mixture_path, std::string& out_dir, bool& skip_bad) {
  TrainOptions& to = a.to;
  auto* t = c->add_option("--task", task_path, "task file (JSON)");
  auto* m = c->add_option("--mixture", mixture_path, "mixture file (JSON): multi-task training, dev score = mean over tasks");
  t->excludes(m);
  m->excludes(t);
  c->add_option("--out", out_dir, "output directory (best module, checkpoint/, metrics.jsonl, curve.svg, run.json)")->required();
  c->add_option("--train-split", a.train_split, "task split to train on")->capture_default_str();
  c->add_option("--dev-split", a.dev_split, "task split to evaluate on ('' for none)")->capture_default_str();
  c->add_option("--train-limit", a.train_limit, "use at most this many training examples (0: all)")->capture_default_str();
  c->add_option("--steps", to.steps, "optimiser steps")->capture_default_str();
  c->add_option("--batch-size", to.batch_size, "examples per micro-batch")->capture_default_str();
  c->add_option("--grad-accum", to.grad_accum, "micro-batches per step")->capture_default_str();
  c->add_option("--lr", to.lr, "peak learning rate (AdamW)")->capture_default_str();
  c->add_option("--weight-decay", to.weight_decay, "AdamW weight decay")->capture_default_str();
  c->add_option("--warmup", to.warmup, "linear warm-up steps")->capture_default_str();
  c->add_option("--schedule", to.schedule, "constant | linear | cosine")->capture_default_str()->check(CLI::IsMember({"constant", "linear", "cosine"}));
  c->add_option("--clip", to.clip, "gradient-norm clip (0: off)")->capture_default_str();
  c->add_option("--eval-every", to.eval_every, "evaluate on the dev split every N steps")->capture_default_str();
  c->add_option("--eval-limit", to.eval_limit, "dev examples per evaluation")->capture_default_str();
  c->add_option("--patience", to.patience, "early stopping after N evaluations without improvement (0: off)")->capture_default_str();
  c->add_option("--checkpoint-every", to.checkpoint_every, "checkpoint every N steps")->capture_default_str();
  c->add_option("--seed", to.seed, "seed (data order, initialisation)")->capture_default_str();
  c->add_flag("--resume", to.resume, "continue from OUT/checkpoint exactly");
  c->add_flag("--skip-bad", skip_bad, "skip (and count) malformed data lines instead of failing");
}

// The training set of `--task` or `--mixture` (examples-proportional with the mixture's cap; dev per task).
TrainingSet load_training_set(const std::string& task_path, const std::string& mixture_path, const TrainArgs& a, bool skip_bad) {
  if (task_path.empty() == mixture_path.empty()) throw Error("train: give --task TASK or --mixture MIXTURE");
  ReadOptions ro;
  ro.skip_bad = skip_bad;
  ro.limit = a.train_limit;
  TrainingSet set;
  if (!task_path.empty()) {
    Task task = load_task(task_path);
    size_t skipped = 0;
    auto train_ex = task.examples(a.train_split, ro, &skipped);
    if (skipped) std::fprintf(stderr, "[train] skipped %zu malformed lines\n", skipped);
    std::vector<Example> dev_ex;
    if (!a.dev_split.empty()) dev_ex = task.examples(a.dev_split, ReadOptions{skip_bad, 0, {}});
    return TrainingSet::single(task, train_ex, dev_ex);
  }
  Mixture m = load_mixture(mixture_path);
  set.name = m.name;
  set.tasks = m.tasks;
  for (auto& me : mix_examples(m, a.train_split, ro)) set.train.push_back({me.task, std::move(me.example)});
  for (auto& t : m.tasks)
    set.dev.push_back(!a.dev_split.empty() && t.splits.count(a.dev_split) ? t.examples(a.dev_split, ReadOptions{skip_bad, 0, {}}) : std::vector<Example>{});
  std::vector<size_t> per_task(m.tasks.size());
  for (auto& [t, e] : set.train) ++per_task[t];
  for (size_t t = 0; t < m.tasks.size(); ++t)
    std::fprintf(stderr, "[train] mixture %s: %-14s %6zu train / %5zu dev\n", m.name.c_str(), m.tasks[t].name.c_str(), per_task[t], set.dev[t].size());
  return set;
}

size_t dev_size(const TrainingSet& s) {
  size_t n = 0;
  for (auto& d : s.dev) n += d.size();
  return n;
}

void print_train_result(const std::string& out_dir, const TrainResult& r) {
  std::printf("%s\n", json({{"out", out_dir}, {"steps", r.steps_done}, {"first_loss", r.first_loss}, {"last_loss", r.last_loss},
                             {"best_dev_score", r.best_score}, {"nan_steps", r.nan_steps}, {"stopped_early", r.stopped_early}}).dump().c_str());
}

// The tokenizer files a saved Hugging Face directory should carry: tokenizer.json and its companions, or a llama2.c
// tokenizer .bin.
std::vector<std::string> tokenizer_files(const std::string& tokenizer_path) {
  std::vector<std::string> files{tokenizer_path};
  const std::string dir = tokenizer_path.find('/') == std::string::npos ? "." : tokenizer_path.substr(0, tokenizer_path.rfind('/'));
  if (tokenizer_path.size() > 5 && tokenizer_path.compare(tokenizer_path.size() - 5, 5, ".json") == 0)
    for (const char* f : {"tokenizer_config.json", "special_tokens_map.json"})
      if (std::ifstream(dir + "/" + f)) files.push_back(dir + "/" + f);
  return files;
}

int cmd_finetune(const ModelArgs& ma, TrainArgs& a, const std::string& task_path, const std::string& mixture_path, const std::string& out_dir, bool skip_bad,
                 int64_t last_k, const std::string& init, const std::string& config_path, const std::string& save_dtype) {
  if (parse_weight_format(ma.weights) != WeightFormat::F32) throw Error("train finetune: --weights must be f32 (the weights are trained)");
  std::unique_ptr<FrozenLM> lm;
  std::string tok_path;
  if (init == "random") {
    if (config_path.empty()) throw Error("train finetune --init random: give the model shape with --config CONFIG.json");
    if (ma.tokenizer.empty()) throw Error("train finetune --init random: give the tokenizer with --tokenizer PATH");
    init_runtime(ma.threads);
    ModelConfig cfg = load_hf_config(config_path);
    lm = make_random_model(cfg, WeightFormat::F32, a.to.seed);
    lm->set_checkpoint_id("random-init:" + std::to_string(a.to.seed));
    if (ma.device != "cpu") lm->to(at::Device(ma.device));
    tok_path = ma.tokenizer;
  } else {
    if (!config_path.empty()) throw Error("train finetune: --config is only for --init random (the model brings its own)");
    lm = open_model(ma);
    tok_path = resolve_tokenizer_path(ma.model, ma.tokenizer, lm->vocab_size());
  }
  auto tok = load_tokenizer(tok_path);
  if (tok->vocab_size() > lm->vocab_size())
    throw Error(tok_path + ": tokenizer has " + std::to_string(tok->vocab_size()) + " tokens, the model's vocab_size is " +
                std::to_string(lm->vocab_size()));
  TrainingSet set = load_training_set(task_path, mixture_path, a, skip_bad);
  FineTune ft(*lm, last_k, tokenizer_files(tok_path));
  std::fprintf(stderr, "[train] %s: %zu train / %zu dev examples; fine-tuning %s (%lld trainable parameters, %.1f%% of the LM)\n",
               set.name.c_str(), set.train.size(), dev_size(set), last_k < 0 ? "every weight" : ("the last " + std::to_string(last_k) + " blocks").c_str(),
               (long long)ft.num_parameters(), 100.0 * ft.num_parameters() / lm->num_parameters());
  TrainResult r = train_module(*lm, ft, *tok, set, out_dir, a.to);
  if (save_dtype == "bf16") {  // the best model, rewritten compactly (the checkpoint stays f32 for an exact --resume)
    auto best = load_model(out_dir);
    save_hf_model(*best, out_dir, ExportDtype::BF16);
  }
  print_train_result(out_dir, r);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"frozenlm: many skills from one frozen language model"};
  app.require_subcommand(1);
  ModelArgs ma;
  std::string module_dir;  // --module of info, generate, score, eval

  bool info_json = false;
  auto* info = app.add_subcommand("info", "Architecture, parameter count, storage and memory of a model");
  add_model_args(info, ma, false);
  info->add_flag("--json", info_json, "print JSON");
  info->add_option("--module", module_dir, "report a trained module instead: trainable parameters (and % of the LM), measured time overhead");

  std::string text;
  bool tok_json = false, tok_no_special = false;
  auto* tokenize = app.add_subcommand("tokenize", "Print the token ids of a text");
  add_model_args(tokenize, ma);
  std::string text_file;
  auto* tok_text = tokenize->add_option("--text", text, "text to tokenize");
  auto* tok_file = tokenize->add_option("--file", text_file, "read the text from this file instead");
  tok_text->excludes(tok_file);
  tokenize->add_flag("--json", tok_json, "print {\"ids\": [...], \"tokens\": [...]}");
  tokenize->add_flag("--no-special", tok_no_special, "do not add BOS/EOS");

  std::string prompt;
  SamplingParams sp;
  sp.temperature = 0.8;
  std::vector<std::string> stops;
  auto* gen = app.add_subcommand("generate", "Stream a continuation of a prompt to stdout");
  add_model_args(gen, ma);
  gen->add_option("--prompt", prompt, "prompt text (default: start from BOS alone)");
  gen->add_option("--max-new-tokens", sp.max_new_tokens, "tokens to generate")->capture_default_str();
  gen->add_option("--temperature", sp.temperature, "0: greedy")->capture_default_str()->check(CLI::NonNegativeNumber);
  gen->add_option("--top-k", sp.top_k, "keep the k most likely tokens (0: off)")->capture_default_str()->check(CLI::NonNegativeNumber);
  gen->add_option("--top-p", sp.top_p, "nucleus sampling mass (1: off)")->capture_default_str()->check(CLI::Range(0.0, 1.0));
  gen->add_option("--seed", sp.seed, "random seed")->capture_default_str();
  gen->add_option("--stop", stops, "stop when the output contains this string (repeatable)");
  gen->add_option("--module", module_dir, "a trained module directory (e.g. a prompt-tuning adapter) to apply");

  bool score_json = false;
  auto* score = app.add_subcommand("score", "Log-probability of every token of a text");
  add_model_args(score, ma);
  auto* score_text = score->add_option("--text", text, "text to score");
  auto* score_file = score->add_option("--file", text_file, "read the text from this file instead");
  score_text->excludes(score_file);
  score->add_flag("--json", score_json, "print {\"tokens\", \"logprobs\", \"total\"}");
  score->add_option("--module", module_dir, "a trained module directory to apply");

  // ---- train prompt-tuning | finetune ----
  auto* train = app.add_subcommand("train", "Train a module around the frozen LM (or fine-tune it: the baseline)");
  train->require_subcommand(1);
  std::string task_path, mixture_path, out_dir;
  bool skip_bad = false;
  auto* train_pt = train->add_subcommand("prompt-tuning", "Prompt tuning: learn P soft-prompt vectors (saved as a PEFT adapter)");
  add_model_args(train_pt, ma);
  TrainArgs pt_args;
  add_train_args(train_pt, pt_args, task_path, mixture_path, out_dir, skip_bad);
  std::string init = "vocab", init_text;
  int64_t virtual_tokens = 20;
  train_pt->add_option("--virtual-tokens", virtual_tokens, "soft-prompt length P")->capture_default_str();
  train_pt->add_option("--init", init, "random | vocab | text")->capture_default_str();
  train_pt->add_option("--init-text", init_text, "text whose embeddings initialise the prompt (--init text)");

  auto* train_idpt = train->add_subcommand("idpt", "Input-dependent prompt tuning: a prompt generator reads each input and writes its soft prompt");
  add_model_args(train_idpt, ma);
  TrainArgs idpt_args;
  add_train_args(train_idpt, idpt_args, task_path, mixture_path, out_dir, skip_bad);
  IdptConfig ic;
  train_idpt->add_option("--virtual-tokens", ic.prompt_tokens, "generated prompt length P")->capture_default_str();
  train_idpt->add_option("--fixed-tokens", ic.fixed_tokens, "a learned prompt shared by every input, in front of the generated one")->capture_default_str();
  train_idpt->add_option("--encoder", ic.encoder, "self (the frozen LM) or a second checkpoint with the same vocabulary")->capture_default_str();
  train_idpt->add_option("--encoder-layer", ic.encoder_layer, "read the encoder's hidden states after this many layers (-1: all)")->capture_default_str();
  train_idpt->add_option("--encoder-prompt", ic.encoder_prompt, "trainable soft prompt on the encoder's input")->capture_default_str();
  train_idpt->add_option("--gen-dim", ic.dim, "generator width")->capture_default_str();
  train_idpt->add_option("--gen-blocks", ic.blocks, "generator cross-attention blocks")->capture_default_str();
  train_idpt->add_option("--gen-heads", ic.heads, "generator attention heads")->capture_default_str();
  train_idpt->add_option("--gen-ffn-mult", ic.ffn_mult, "generator FFN width / generator width")->capture_default_str();
  train_idpt->add_option("--gen-lr-scale", ic.generator_lr_scale, "generator weights train at lr × this (prompts at lr)")->capture_default_str();

  auto* train_ft = train->add_subcommand("finetune", "Fine-tuning baseline: train the LM's own weights (all or the last k blocks); "
                                                     "saves a Hugging Face model directory. Also pretrains from random init");
  add_model_args(train_ft, ma);
  TrainArgs ft_args;
  ft_args.to.lr = 1e-4;
  ft_args.to.weight_decay = 0.0;
  add_train_args(train_ft, ft_args, task_path, mixture_path, out_dir, skip_bad);
  int64_t last_k = -1;
  std::string ft_init = "pretrained", ft_config, save_dtype = "f32";
  train_ft->add_option("--last-k", last_k, "train only the last k blocks + final norm (-1: every weight)")->capture_default_str();
  train_ft->add_option("--init", ft_init, "pretrained (from --model) | random (shape from --config; needs --tokenizer)")
      ->capture_default_str()->check(CLI::IsMember({"pretrained", "random"}));
  train_ft->add_option("--config", ft_config, "Hugging Face config.json giving the shape for --init random");
  train_ft->add_option("--save-dtype", save_dtype, "dtype of the saved best model: f32 | bf16")->capture_default_str()
      ->check(CLI::IsMember({"f32", "bf16"}));

  // ---- eval ----
  auto* ev = app.add_subcommand("eval", "Evaluate the frozen LM (optionally with a module) on a task split; prints a JSON report");
  add_model_args(ev, ma);
  std::string eval_split = "dev", report_path;
  EvalOptions eo;
  auto* ev_task = ev->add_option("--task", task_path, "task file (JSON)");
  auto* ev_mix = ev->add_option("--mixture", mixture_path, "evaluate every task of a mixture (per-task reports and their mean)");
  ev_task->excludes(ev_mix);
  ev_mix->excludes(ev_task);
  std::vector<std::string> module_for;
  ev->add_option("--module-for", module_for, "with --mixture: TASK=DIR, a module for one task (repeatable; e.g. per-task prompts)");
  ev->add_option("--module", module_dir, "trained module directory");
  ev->add_option("--split", eval_split, "task split")->capture_default_str();
  ev->add_option("--limit", eo.limit, "at most this many examples (0: all)")->capture_default_str();
  ev->add_option("--max-new-tokens", eo.max_new_tokens, "generation tasks: tokens to generate")->capture_default_str();
  ev->add_flag("--per-example", eo.per_example, "include every example's prediction in the report");
  ev->add_option("--report", report_path, "also write the report to this file");
  ev->add_flag("--skip-bad", skip_bad, "skip (and count) malformed data lines");

  CLI11_PARSE(app, argc, argv);
  try {
    if ((*tokenize || *score) && text_file.empty() && !(*tokenize ? tok_text : score_text)->count())
      throw Error("give --text TEXT or --file PATH");
    if (!text_file.empty()) {
      std::ifstream f(text_file, std::ios::binary);
      if (!f) throw Error(text_file + ": cannot open");
      text.assign(std::istreambuf_iterator<char>(f), {});
    }
    if (*info) return cmd_info(ma, info_json, module_dir);

    if (*tokenize) {
      auto tok = load_tokenizer_for_model(ma.model, ma.tokenizer, 0);
      auto ids = tok->encode(text, !tok_no_special);
      if (tok_json) {
        json toks = json::array();
        for (auto id : ids) toks.push_back(tok->id_to_token(id));
        std::cout << json({{"ids", ids}, {"tokens", toks}}).dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
      } else {
        for (size_t i = 0; i < ids.size(); ++i) std::cout << (i ? " " : "") << ids[i];
        std::cout << "\n";
      }
      return 0;
    }

    if (*train_ft) return cmd_finetune(ma, ft_args, task_path, mixture_path, out_dir, skip_bad, last_k, ft_init, ft_config, save_dtype);

    auto lm = open_model(ma);
    auto tok = load_tokenizer_for_model(ma.model, ma.tokenizer, lm->vocab_size());

    if (*train_idpt) {
      TrainingSet set = load_training_set(task_path, mixture_path, idpt_args, skip_bad);
      const TrainOptions& to = idpt_args.to;
      ic.seed = to.seed;
      std::unique_ptr<IdPromptTuning> m = to.resume ? IdPromptTuning::load(out_dir + "/checkpoint", *lm) : IdPromptTuning::create(*lm, ic, ma.model);
      std::fprintf(stderr, "[train] %s: %zu train / %zu dev examples; ID-PT P=%lld, encoder %s (layer %lld), generator %lld×%lld (%lld trainable parameters, %.2f%% of the LM)\n",
                   set.name.c_str(), set.train.size(), dev_size(set), (long long)ic.prompt_tokens, ic.encoder.c_str(), (long long)ic.encoder_layer,
                   (long long)ic.blocks, (long long)ic.dim, (long long)m->num_parameters(), 100.0 * m->num_parameters() / lm->num_parameters());
      TrainResult r = train_module(*lm, *m, *tok, set, out_dir, to);
      print_train_result(out_dir, r);
      return 0;
    }

    if (*train_pt) {
      TrainingSet set = load_training_set(task_path, mixture_path, pt_args, skip_bad);
      const TrainOptions& to = pt_args.to;
      std::unique_ptr<PromptTuning> pt;
      if (to.resume) {
        pt = PromptTuning::load(out_dir + "/checkpoint", *lm);
      } else {
        PromptInit pi = init == "random" ? PromptInit::RandomUniform : init == "text" ? PromptInit::Text : PromptInit::SampledVocab;
        if (init != "random" && init != "text" && init != "vocab") throw Error("--init: unknown '" + init + "' (random, vocab, text)");
        pt = PromptTuning::create(*lm, virtual_tokens, pi, pi == PromptInit::Text ? tok->encode(init_text, false) : std::vector<int64_t>{},
                                  to.seed, ma.model, init_text);
      }
      std::fprintf(stderr, "[train] %s: %zu train / %zu dev examples; prompt tuning P=%lld (%lld trainable parameters, %.4f%% of the LM)\n",
                   set.name.c_str(), set.train.size(), dev_size(set), (long long)pt->prefix_length(), (long long)pt->num_parameters(),
                   100.0 * pt->num_parameters() / lm->num_parameters());
      TrainResult r = train_module(*lm, *pt, *tok, set, out_dir, to);
      print_train_result(out_dir, r);
      return 0;
    }

    if (*ev) {
      if (task_path.empty() == mixture_path.empty()) throw Error("eval: give --task TASK or --mixture MIXTURE");
      std::unique_ptr<TrainableModule> module;
      if (!module_dir.empty()) module = load_module(module_dir, *lm);
      json r;
      if (!task_path.empty()) {
        Task task = load_task(task_path);
        r = evaluate(*lm, module.get(), *tok, task, task.examples(eval_split, ReadOptions{skip_bad, 0, {}}), eo);
      } else {
        Mixture m = load_mixture(mixture_path);
        for (const std::string& mf : module_for) {
          const auto eq = mf.find('=');
          if (eq == std::string::npos) throw Error("--module-for '" + mf + "': expected TASK=DIR");
          if (std::none_of(m.tasks.begin(), m.tasks.end(), [&](const Task& t) { return t.name == mf.substr(0, eq); }))
            throw Error("--module-for '" + mf + "': mixture " + m.name + " has no task '" + mf.substr(0, eq) + "'");
        }
        json per_task = json::array();
        std::vector<std::vector<double>> task_scores;
        double sum = 0;
        EvalOptions teo = eo;
        teo.keep_scores = true;
        for (const Task& t : m.tasks) {
          if (!t.splits.count(eval_split)) {
            std::fprintf(stderr, "[eval] %s has no '%s' split: skipped\n", t.name.c_str(), eval_split.c_str());
            continue;
          }
          std::unique_ptr<TrainableModule> own;
          for (const std::string& mf : module_for)
            if (mf.rfind(t.name + "=", 0) == 0) own = load_module(mf.substr(t.name.size() + 1), *lm);
          per_task.push_back(evaluate(*lm, own ? own.get() : module.get(), *tok, t, t.examples(eval_split, ReadOptions{skip_bad, 0, {}}), teo));
          if (per_task.back().contains("example_scores")) {
            task_scores.push_back(per_task.back()["example_scores"].get<std::vector<double>>());
            per_task.back().erase("example_scores");
          }
          sum += per_task.back()["score"].get<double>();
          std::fprintf(stderr, "[eval] %-14s %s %.4f\n", t.name.c_str(), per_task.back()["metric"].get<std::string>().c_str(),
                       per_task.back()["score"].get<double>());
        }
        if (per_task.empty()) throw Error(mixture_path + ": no task has a '" + eval_split + "' split");
        r = {{"mixture", m.name}, {"tasks", per_task}, {"metric", "mean_task_score"}, {"score", sum / per_task.size()}};
        if (task_scores.size() == per_task.size()) {
          auto [lo, hi] = bootstrap_ci_of_task_average(task_scores);
          r["ci95"] = {lo, hi};
        }
      }
      r["split"] = eval_split;
      r["model"] = ma.model;
      r["module"] = module_dir;
      const std::string text = r.dump(2, ' ', false, json::error_handler_t::replace);
      std::printf("%s\n", text.c_str());
      if (!report_path.empty()) std::ofstream(report_path) << text << "\n";
      return 0;
    }
    if (tok->vocab_size() > lm->vocab_size())
      throw Error("tokenizer has " + std::to_string(tok->vocab_size()) + " tokens but the model only " + std::to_string(lm->vocab_size()));

    if (*gen) {
      sp.eos_ids = lm->config().eos_ids;
      if (sp.eos_ids.empty() && tok->eos_id() >= 0) sp.eos_ids.push_back(tok->eos_id());
      std::vector<int64_t> ids = prompt_ids(*lm, *tok, prompt);
      StreamDecoder stream(*tok, ids);
      std::cout << prompt << std::flush;
      auto t0 = std::chrono::steady_clock::now();
      size_t n = 0;
      TokenFn on_token = [&](int64_t, int64_t t) {
        ++n;
        for (auto e : sp.eos_ids)
          if (t == e) return;
        std::cout << stream.push(t) << std::flush;
      };
      if (module_dir.empty()) {
        generate(*lm, {ids}, sp, on_token, stop_at_strings(*tok, stops));
      } else {
        auto module = load_module(module_dir, *lm);
        at::NoGradGuard ng;
        ModuleInput x = module->apply(*lm, module_input(*lm, at::tensor(ids, at::kLong).view({1, -1})));
        generate_from_embeds(*lm, x.embeds, x.mask, sp, on_token, stop_at_strings(*tok, stops));
      }
      double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::cout << stream.flush() << "\n";
      std::fprintf(stderr, "[%zu tokens in %.2f s, %.1f tokens/s]\n", n, secs, n / std::max(secs, 1e-9));
      return 0;
    }

    if (*score) {
      std::vector<int64_t> ids = tok->encode(text, true);
      const int64_t bos = bos_of(*lm, *tok);
      if (bos >= 0 && (ids.empty() || ids.front() != bos)) ids.insert(ids.begin(), bos);
      if (ids.size() < 2) throw Error("--text encodes to fewer than 2 tokens: nothing to score");
      at::NoGradGuard ng;
      at::Tensor logits;
      if (module_dir.empty()) {
        ForwardInput in;
        in.ids = at::tensor(ids, at::kLong).view({1, -1});
        logits = lm->forward(in).logits;
      } else {
        auto module = load_module(module_dir, *lm);
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
      if (score_json) {
        std::cout << json({{"tokens", ids}, {"logprobs", logprobs}, {"total", total}}).dump() << "\n";
      } else {
        for (size_t i = 1; i < ids.size(); ++i) std::printf("%8lld  %-20s %10.4f\n", (long long)ids[i], tok->id_to_token(ids[i]).c_str(), logprobs[i - 1]);
        std::printf("total %.4f over %zu tokens (perplexity %.3f)\n", total, logprobs.size(), std::exp(-total / logprobs.size()));
      }
      return 0;
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "frozenlm: error: %s\n", e.what());
    return 1;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "frozenlm: error (torch): %s\n", e.what_without_backtrace());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "frozenlm: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
