// frozenlm train prompt-tuning | idpt | finetune: the shared training options, the training set of a task or a
// mixture, and one subcommand per trainable module (fine-tuning, the baseline, also pretrains from random init).
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli/cli_common.h"
#include "cli/train_common.h"
#include "core/error.h"
#include "core/gguf_file.h"
#include "core/hf_export.h"
#include "core/loader.h"
#include "core/runtime.h"
#include "core/torch_pch.h"
#include "methods/recursive/textual_recursion.h"
#include "modules/finetune.h"
#include "modules/idpt.h"
#include "modules/neural_recursion.h"
#include "modules/prompt_tuning.h"
#include "tasks/mixture.h"
#include "tasks/task.h"
#include "tokenizer/tokenizer.h"
#include "train/data_parallel.h"
#include "train/trainer.h"

namespace frozenlm::cli {
using nlohmann::json;

// Prompt tuning and ID-PT without --lr: the rate follows the frozen embeddings' scale (default_prompt_lr).
TrainOptions prompt_train_options(const TrainArgs& a, const FrozenLM& lm) {
  TrainOptions to = a.to;
  if (a.lr_option && a.lr_option->count() == 0) {
    to.lr = default_prompt_lr(lm);
    std::fprintf(stderr, "[train] lr %g (default: 0.6 × the token embeddings' RMS %.4f; --lr to override)\n", to.lr, embedding_rms(lm));
  }
  return to;
}

void add_train_args(CLI::App* c, TrainArgs& a) {
  add_model_args(c, a.model);
  TrainOptions& to = a.to;
  auto* t = c->add_option("--task", a.task_path, "task file (JSON)");
  auto* m = c->add_option("--mixture", a.mixture_path, "mixture file (JSON): multi-task training, dev score = mean over tasks");
  t->excludes(m);
  m->excludes(t);
  c->add_option("--out", a.out_dir, "output directory (best module, checkpoint/, metrics.jsonl, curve.svg, run.json)")->required();
  c->add_option("--train-split", a.train_split, "task split to train on")->capture_default_str();
  c->add_option("--dev-split", a.dev_split, "task split to evaluate on ('' for none)")->capture_default_str();
  c->add_option("--train-limit", a.train_limit, "use at most this many training examples (0: all)")->capture_default_str();
  c->add_option("--steps", to.steps, "optimiser steps")->capture_default_str();
  c->add_option("--batch-size", to.batch_size, "examples per micro-batch")->capture_default_str();
  c->add_option("--grad-accum", to.grad_accum, "micro-batches per step")->capture_default_str();
  a.lr_option = c->add_option("--lr", to.lr, "peak learning rate (AdamW); prompt tuning and ID-PT default to 0.6 × the RMS of the "
                                             "frozen token embeddings (tinystories-656k: 0.3)");
  c->add_option("--weight-decay", to.weight_decay, "AdamW weight decay")->capture_default_str();
  c->add_option("--warmup", to.warmup, "linear warm-up steps")->capture_default_str();
  c->add_option("--schedule", to.schedule, "constant | linear | cosine")->capture_default_str()->check(CLI::IsMember({"constant", "linear", "cosine"}));
  c->add_option("--clip", to.clip, "gradient-norm clip (0: off)")->capture_default_str();
  c->add_option("--eval-every", to.eval_every, "evaluate on the dev split every N steps")->capture_default_str();
  c->add_option("--eval-limit", to.eval_limit, "dev examples per evaluation")->capture_default_str();
  c->add_option("--patience", to.patience, "early stopping after N evaluations without improvement (0: off)")->capture_default_str();
  c->add_option("--checkpoint-every", to.checkpoint_every, "checkpoint every N steps")->capture_default_str();
  c->add_option("--snapshot-every", to.snapshot_every, "also keep the module as it is every N steps in OUT/snapshots/step-<N>, "
                                                     "for probes during training (0: off)")->capture_default_str()->check(CLI::NonNegativeNumber);
  c->add_option("--seed", to.seed, "seed (data order, initialisation)")->capture_default_str();
  c->add_flag("--resume", to.resume, "continue from OUT/checkpoint exactly (an error if there is none yet)");
  c->add_flag("--resume-or-start", to.resume_or_start, "resume when OUT has a checkpoint, start fresh when it has none (for supervisors)");
  c->add_flag("--allow-steps-change", to.allow_steps_change, "resume with another --steps (a linear/cosine schedule is recomputed for the new total)");
  c->add_flag("--skip-bad", a.skip_bad, "skip (and count) malformed data lines instead of failing");
}

void add_data_parallel_args(CLI::App* c, int& nproc) {
  c->add_option("--nproc", nproc, "data-parallel: run N local ranks (c10d Gloo), each on its share of every batch; or launch "
                                  "ranks yourself with torchrun's RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT")
      ->capture_default_str()->check(CLI::Range(1, 256));
}

int run_data_parallel(int nproc, ModelArgs& model, const std::string& out_dir, const std::function<int(const DataParallel*)>& run) {
  if (nproc > 1 && !std::getenv("RANK")) return launch_local_ranks(command_argc(), command_argv(), nproc);
  auto dp = DataParallel::from_environment(model.device);
  if (!dp) return run(nullptr);
  if (model.threads == 0) model.threads = DataParallel::threads_per_local_rank();
  if (!dp->is_main() && !std::freopen("/dev/null", "w", stdout)) throw Error("data parallel: cannot silence rank " + std::to_string(dp->rank()));
  if (dp->is_main())
    std::fprintf(stderr, "[train] data parallel: %d ranks, %d thread(s) each; rank 0 writes %s\n", dp->world(), model.threads, out_dir.c_str());
  return run(dp.get());
}

std::function<int()> data_parallel(std::shared_ptr<TrainArgs> a, std::function<int()> run) {
  return [a, run] {
    return run_data_parallel(a->nproc, a->model, a->out_dir, [&](const DataParallel* dp) {
      a->to.data_parallel = dp;
      const int rc = run();
      a->to.data_parallel = nullptr;
      return rc;
    });
  };
}

// The training set of `--task` or `--mixture` (examples-proportional with the mixture's cap; dev per task).
TrainingSet load_training_set(const TrainArgs& a) {
  const std::string& task_path = a.task_path, &mixture_path = a.mixture_path;
  const bool skip_bad = a.skip_bad;
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

namespace {

// The tokenizer files a saved Hugging Face directory should carry: tokenizer.json and its companions, or a llama2.c
// tokenizer .bin.
std::vector<std::string> tokenizer_files(const std::string& tokenizer_path) {
  if (is_gguf_file(tokenizer_path)) {  // the vocabulary is inside a (possibly large) model file: not copied
    std::fprintf(stderr, "[train] the tokenizer is %s's vocabulary: use the output with --tokenizer %s\n", tokenizer_path.c_str(),
                 tokenizer_path.c_str());
    return {};
  }
  std::vector<std::string> files{tokenizer_path};
  const std::string dir = tokenizer_path.find('/') == std::string::npos ? "." : tokenizer_path.substr(0, tokenizer_path.rfind('/'));
  if (tokenizer_path.size() > 5 && tokenizer_path.compare(tokenizer_path.size() - 5, 5, ".json") == 0)
    for (const char* f : {"tokenizer_config.json", "special_tokens_map.json"})
      if (std::ifstream(dir + "/" + f)) files.push_back(dir + "/" + f);
  return files;
}

struct FinetuneArgs : TrainArgs {
  int64_t last_k = -1;
  std::string init = "pretrained", config, save_dtype = "f32";
};

int cmd_finetune(const FinetuneArgs& a) {
  ModelArgs ma = a.model;
  if (ma.weights == "auto") ma.weights = "f32";  // a GGUF's Q8_0 matrices are widened: the weights are trained
  const std::string& init = a.init, &config_path = a.config, &out_dir = a.out_dir;
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
  TrainingSet set = load_training_set(a);
  FineTune ft(*lm, a.last_k, tokenizer_files(tok_path));
  std::fprintf(stderr, "[train] %s: %zu train / %zu dev examples; fine-tuning %s (%lld trainable parameters, %.1f%% of the LM)\n",
               set.name.c_str(), set.train.size(), dev_size(set), a.last_k < 0 ? "every weight" : ("the last " + std::to_string(a.last_k) + " blocks").c_str(),
               (long long)ft.num_parameters(), 100.0 * ft.num_parameters() / lm->num_parameters());
  TrainResult r = train_module(*lm, ft, *tok, set, out_dir, a.to);
  if (a.save_dtype == "bf16" && (!a.to.data_parallel || a.to.data_parallel->is_main())) {  // the best model, rewritten compactly (the checkpoint stays f32 for an exact --resume)
    auto best = load_model(out_dir);
    save_hf_model(*best, out_dir, ExportDtype::BF16);
  }
  print_train_result(out_dir, r);
  return 0;
}

struct PromptTuningArgs : TrainArgs {
  std::string init = "vocab", init_text;
  int64_t virtual_tokens = 20;
};

int cmd_prompt_tuning(const PromptTuningArgs& a) {
  auto lm = open_model(a.model);
  auto tok = open_tokenizer(a.model, *lm, false);
  TrainingSet set = load_training_set(a);
  const TrainOptions to = prompt_train_options(a, *lm);
  std::unique_ptr<PromptTuning> pt;
  if (const std::string ck = resume_checkpoint(a.out_dir, to); !ck.empty()) {
    pt = PromptTuning::load(ck, *lm);
  } else {
    const std::string& init = a.init;
    PromptInit pi = init == "random" ? PromptInit::RandomUniform : init == "text" ? PromptInit::Text : PromptInit::SampledVocab;
    if (init != "random" && init != "text" && init != "vocab") throw Error("--init: unknown '" + init + "' (random, vocab, text)");
    if (pi != PromptInit::Text && !a.init_text.empty()) throw Error("--init-text is only for --init text");
    pt = pi == PromptInit::Text ? PromptTuning::create_from_text(*lm, a.virtual_tokens, *tok, a.init_text, a.model.model)
                                : PromptTuning::create(*lm, a.virtual_tokens, pi, {}, to.seed, a.model.model);
  }
  std::fprintf(stderr, "[train] %s: %zu train / %zu dev examples; prompt tuning P=%lld (%lld trainable parameters, %.4f%% of the LM)\n",
               set.name.c_str(), set.train.size(), dev_size(set), (long long)pt->prefix_length(), (long long)pt->num_parameters(),
               100.0 * pt->num_parameters() / lm->num_parameters());
  TrainResult r = train_module(*lm, *pt, *tok, set, a.out_dir, to);
  print_train_result(a.out_dir, r);
  return 0;
}

struct IdptArgs : TrainArgs {
  IdptConfig ic;
};

int cmd_idpt(const IdptArgs& a) {
  auto lm = open_model(a.model);
  auto tok = open_tokenizer(a.model, *lm, false);
  TrainingSet set = load_training_set(a);
  const TrainOptions to = prompt_train_options(a, *lm);
  IdptConfig ic = a.ic;
  ic.seed = to.seed;
  const std::string ck = resume_checkpoint(a.out_dir, to);
  std::unique_ptr<IdPromptTuning> m = !ck.empty() ? IdPromptTuning::load(ck, *lm) : IdPromptTuning::create(*lm, ic, a.model.model);
  std::fprintf(stderr, "[train] %s: %zu train / %zu dev examples; ID-PT P=%lld, encoder %s (layer %lld), generator %lld×%lld (%lld trainable parameters, %.2f%% of the LM)\n",
               set.name.c_str(), set.train.size(), dev_size(set), (long long)ic.prompt_tokens, ic.encoder.c_str(), (long long)ic.encoder_layer,
               (long long)ic.blocks, (long long)ic.dim, (long long)m->num_parameters(), 100.0 * m->num_parameters() / lm->num_parameters());
  TrainResult r = train_module(*lm, *m, *tok, set, a.out_dir, to);
  print_train_result(a.out_dir, r);
  return 0;
}

struct RecursionArgs : TrainArgs {
  RecursionConfig rc;
  int64_t pretrain_steps = 0;
  std::string pretrain_task, pretrain_split = "train";
  size_t pretrain_limit = 0;
};

// Neural recursion in two stages (modules/neural_recursion.h):
//   A (--connector-pretrain-steps N > 0): plain language modelling through LM–C–LM on --pretrain-task (an lm task),
//     every position passed on; into OUT/stage_a (resumable on its own), no dev selection (the last step is kept);
//   B: the task, the input's positions passed on, starting from stage A's module; into OUT.
int cmd_recursive_neural(const RecursionArgs& a) {
  auto lm = open_model(a.model);
  auto tok = open_tokenizer(a.model, *lm, false);
  const TrainOptions to = prompt_train_options(a, *lm);
  RecursionConfig rc = a.rc;
  rc.seed = to.seed;
  std::unique_ptr<NeuralRecursion> m;
  const std::string ck = resume_checkpoint(a.out_dir, to);
  if (!ck.empty()) {
    m = NeuralRecursion::load(ck, *lm);  // stage B was under way: stage A (if any) is inside it
  } else if (a.pretrain_steps > 0) {
    if (a.pretrain_task.empty()) throw Error("train recursive-neural: --connector-pretrain-steps needs --pretrain-task (an lm task of plain text)");
    const std::string stage_a = a.out_dir + "/stage_a";
    Task lm_task = load_task(a.pretrain_task);
    if (lm_task.type != TaskType::LanguageModel) throw Error(a.pretrain_task + ": stage A needs an lm task (plain text), this one is not");
    ReadOptions ro;
    ro.limit = a.pretrain_limit;
    TrainOptions ta = to;
    ta.steps = a.pretrain_steps;
    ta.eval_every = 0;
    ta.patience = 0;
    ta.resume_or_start = true;  // stage A resumes on its own: a finished stage A is reused
    ta.resume = false;
    std::unique_ptr<NeuralRecursion> s;
    const std::string cka = resume_checkpoint(stage_a, ta);
    if (!cka.empty()) s = NeuralRecursion::load(cka, *lm);
    else s = NeuralRecursion::create(*lm, rc, a.model.model);
    s->set_positions("all");
    if (!std::ifstream(stage_a + "/run.json")) {
      std::fprintf(stderr, "[train] stage A: %lld steps of language modelling through LM-C-LM on %s (%lld trainable parameters)\n",
                   (long long)a.pretrain_steps, a.pretrain_task.c_str(), (long long)s->num_parameters());
      train_module(*lm, *s, *tok, lm_task, lm_task.examples(a.pretrain_split, ro), {}, stage_a, ta);
    }
    m = NeuralRecursion::load(stage_a, *lm);
    m->set_positions(rc.positions);
    const json run = json::parse(std::ifstream(stage_a + "/run.json"), nullptr, false);
    m->add_stage({{"stage", "A"}, {"task", a.pretrain_task}, {"steps", a.pretrain_steps},
                  {"first_loss", run.is_object() ? run.value("first_loss", json()) : json()},
                  {"last_loss", run.is_object() ? run.value("last_loss", json()) : json()}});
  } else {
    m = NeuralRecursion::create(*lm, rc, a.model.model);
  }
  TrainingSet set = load_training_set(a);
  std::fprintf(stderr, "[train] %s: %zu train / %zu dev examples; neural recursion P1=%lld P2=%lld, %s connector %lld wide (%lld trainable parameters, %.2f%% of the LM)\n",
               set.name.c_str(), set.train.size(), dev_size(set), (long long)m->config().pass1_prompt, (long long)m->config().pass2_prompt,
               m->config().connector.c_str(), (long long)m->config().dim, (long long)m->num_parameters(), 100.0 * m->num_parameters() / lm->num_parameters());
  TrainResult r = train_module(*lm, *m, *tok, set, a.out_dir, to);
  print_train_result(a.out_dir, r);
  return 0;
}

struct TextualArgs : TrainArgs {
  TextualRecursionConfig tc;
  std::string pass1;
  int64_t virtual_tokens = 20;
  int64_t folds = 0;
  bool no_greedy = false;
};

// Textual recursion (methods/recursive/textual_recursion.h): pass 1 = --pass1-module samples candidates for every
// training question, pass 2 = a new prompt trained on "candidates + question".
int cmd_recursive_text(const TextualArgs& a) {
  auto lm = open_model(a.model);
  auto tok = open_tokenizer(a.model, *lm, false);
  const TrainOptions to = prompt_train_options(a, *lm);
  TextualRecursionConfig tc = a.tc;
  tc.include_greedy = !a.no_greedy;
  tc.seed = to.seed;
  textual_recursion_config_from_json(to_json(tc), "train recursive-text");  // the same checks as a saved one
  TrainingSet set = load_training_set(a);
  std::fprintf(stderr, "[train] %s: %zu train / %zu dev examples; textual recursion: pass 1 %s, %lld samples at temperature %g%s\n",
               set.name.c_str(), set.train.size(), dev_size(set), a.pass1.c_str(), (long long)tc.samples, tc.temperature,
               tc.include_greedy ? " + its greedy answer" : "");
  TrainResult r = train_textual_recursion(*lm, *tok, a.pass1, set, a.out_dir, tc, a.virtual_tokens, to, a.model.model, a.folds);
  print_train_result(a.out_dir, r);
  return 0;
}

}  // namespace

void add_train_commands(CLI::App& app, Commands& cmds) {
  auto* train = app.add_subcommand("train", "Train a module around the frozen LM (or fine-tune it: the baseline)");
  train->require_subcommand(1);

  auto pa = std::make_shared<PromptTuningArgs>();
  auto* pt = train->add_subcommand("prompt-tuning", "Prompt tuning: learn P soft-prompt vectors (saved as a PEFT adapter)");
  add_train_args(pt, *pa);
  pt->add_option("--virtual-tokens", pa->virtual_tokens, "soft-prompt length P")->capture_default_str();
  pt->add_option("--init", pa->init, "random | vocab | text")->capture_default_str();
  pt->add_option("--init-text", pa->init_text, "text whose embeddings initialise the prompt (--init text)");
  add_data_parallel_args(pt, pa->nproc);
  cmds.add(pt, data_parallel(pa, [pa] { return cmd_prompt_tuning(*pa); }));

  auto ia = std::make_shared<IdptArgs>();
  IdptConfig& ic = ia->ic;
  auto* idpt = train->add_subcommand("idpt", "Input-dependent prompt tuning: a prompt generator reads each input and writes its soft prompt");
  add_train_args(idpt, *ia);
  idpt->add_option("--virtual-tokens", ic.prompt_tokens, "generated prompt length P")->capture_default_str();
  idpt->add_option("--fixed-tokens", ic.fixed_tokens, "a learned prompt shared by every input, in front of the generated one")->capture_default_str();
  idpt->add_option("--encoder", ic.encoder, "self (the frozen LM) or a second checkpoint with the same vocabulary")->capture_default_str();
  idpt->add_option("--encoder-layer", ic.encoder_layer, "read the encoder's hidden states after this many layers (-1: all)")->capture_default_str();
  idpt->add_option("--encoder-prompt", ic.encoder_prompt, "trainable soft prompt on the encoder's input")->capture_default_str();
  idpt->add_option("--gen-dim", ic.dim, "generator width")->capture_default_str();
  idpt->add_option("--gen-blocks", ic.blocks, "generator cross-attention blocks")->capture_default_str();
  idpt->add_option("--gen-heads", ic.heads, "generator attention heads")->capture_default_str();
  idpt->add_option("--gen-ffn-mult", ic.ffn_mult, "generator FFN width / generator width")->capture_default_str();
  idpt->add_option("--gen-lr-scale", ic.generator_lr_scale, "generator weights train at lr × this (prompts at lr)")->capture_default_str();
  add_data_parallel_args(idpt, ia->nproc);
  cmds.add(idpt, data_parallel(ia, [ia] { return cmd_idpt(*ia); }));

  auto ra = std::make_shared<RecursionArgs>();
  RecursionConfig& rc = ra->rc;
  auto ta = std::make_shared<TextualArgs>();
  auto* rt = train->add_subcommand("recursive-text", "Textual recursion: a prompt-tuned pass 1 samples candidate answers, a second "
                                                     "prompt (pass 2) is trained to answer from the candidates and the question");
  add_train_args(rt, *ta);
  rt->add_option("--pass1-module", ta->pass1, "pass 1: a trained module that answers the task (e.g. `train prompt-tuning`); copied into OUT/pass1")
      ->required()->check(CLI::ExistingDirectory);
  rt->add_option("--virtual-tokens", ta->virtual_tokens, "pass 2's prompt length P")->capture_default_str()->check(CLI::PositiveNumber);
  rt->add_option("--samples", ta->tc.samples, "answers pass 1 draws per question")->capture_default_str()->check(CLI::NonNegativeNumber);
  rt->add_option("--temperature", ta->tc.temperature, "pass 1's sampling temperature")->capture_default_str();
  rt->add_option("--top-k", ta->tc.top_k, "pass 1 samples among the k most likely tokens (0: off)")->capture_default_str()->check(CLI::NonNegativeNumber);
  rt->add_option("--max-answer-tokens", ta->tc.max_answer_tokens, "tokens per candidate answer")->capture_default_str();
  rt->add_option("--pass1-folds", ta->folds, "cross-fitting: each training question's candidates come from a pass-1 prompt trained "
                                            "(as this run) without its fold (0: --pass1-module samples every question)")->capture_default_str();
  rt->add_flag("--no-greedy", ta->no_greedy, "do not add pass 1's greedy answer to the candidates");
  add_data_parallel_args(rt, ta->nproc);
  cmds.add(rt, data_parallel(ta, [ta] { return cmd_recursive_text(*ta); }));

  auto* rn = train->add_subcommand("recursive-neural", "Neural recursion: the frozen LM twice, a trained connector maps pass 1's output "
                                                       "vectors to pass 2's input vectors (LM-Connector-LM)");
  add_train_args(rn, *ra);
  rn->add_option("--virtual-tokens", rc.pass2_prompt, "pass-2 soft-prompt length")->capture_default_str();
  rn->add_option("--pass1-tokens", rc.pass1_prompt, "pass-1 soft-prompt length")->capture_default_str();
  rn->add_option("--connector", rc.connector, "mlp | transformer")->capture_default_str()->check(CLI::IsMember({"mlp", "transformer"}));
  rn->add_option("--connector-dim", rc.dim, "connector width")->capture_default_str();
  rn->add_option("--connector-blocks", rc.blocks, "transformer connector: blocks")->capture_default_str();
  rn->add_option("--connector-heads", rc.heads, "transformer connector: attention heads")->capture_default_str();
  rn->add_flag("--residual,!--no-residual", rc.residual, "pass 2 reads embedding + connector output (default) instead of the connector output alone");
  rn->add_option("--connector-lr-scale", rc.connector_lr_scale, "connector weights train at lr × this (prompts at lr)")->capture_default_str();
  rn->add_option("--connector-pretrain-steps", ra->pretrain_steps, "stage A: steps of language modelling through LM-C-LM first (0: none)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  rn->add_option("--pretrain-task", ra->pretrain_task, "stage A's lm task (plain text, e.g. the pretraining corpus)");
  rn->add_option("--pretrain-split", ra->pretrain_split, "stage A's split")->capture_default_str();
  rn->add_option("--pretrain-limit", ra->pretrain_limit, "stage A: read at most this many rows (0: all)")->capture_default_str();
  add_data_parallel_args(rn, ra->nproc);
  cmds.add(rn, data_parallel(ra, [ra] { return cmd_recursive_neural(*ra); }));

  auto fa = std::make_shared<FinetuneArgs>();
  fa->to.lr = 1e-4;
  fa->to.weight_decay = 0.0;
  auto* ft = train->add_subcommand("finetune", "Fine-tuning baseline: train the LM's own weights (all or the last k blocks); "
                                               "saves a Hugging Face model directory. Also pretrains from random init");
  add_train_args(ft, *fa);
  ft->add_option("--last-k", fa->last_k, "train only the last k blocks + final norm (-1: every weight)")->capture_default_str();
  ft->add_option("--init", fa->init, "pretrained (from --model) | random (shape from --config; needs --tokenizer)")
      ->capture_default_str()->check(CLI::IsMember({"pretrained", "random"}));
  ft->add_option("--config", fa->config, "Hugging Face config.json giving the shape for --init random");
  ft->add_option("--save-dtype", fa->save_dtype, "dtype of the saved best model: f32 | bf16")->capture_default_str()
      ->check(CLI::IsMember({"f32", "bf16"}));
  add_data_parallel_args(ft, fa->nproc);
  cmds.add(ft, data_parallel(fa, [fa] { return cmd_finetune(*fa); }));

  add_reader_train_commands(train, cmds);
}

}  // namespace frozenlm::cli
