#include "train/trainer.h"

#include "train/data_parallel.h"

#include <signal.h>
#include <cctype>
#include <filesystem>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <algorithm>
#include <sstream>
#include <thread>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/fnv1a.h"
#include "core/text_file.h"
#include "core/losses.h"
#include "core/torch_pch.h"
#include "eval/evaluate.h"
#include "train/trainer_state.h"

namespace frozenlm {

using nlohmann::json;
namespace fs = std::filesystem;

double lr_factor(const TrainOptions& o, int64_t step) {
  if (o.warmup > 0 && step < o.warmup) return double(step + 1) / o.warmup;
  const double span = std::max<int64_t>(1, o.steps - o.warmup);
  const double t = std::min(1.0, double(step - o.warmup) / span);
  if (o.schedule == "linear") return 1.0 - t;
  if (o.schedule == "cosine") return 0.5 * (1.0 + std::cos(M_PI * t));
  return 1.0;
}

void write_curve_svg(const std::string& path, const std::string& title,
                     const std::vector<std::pair<std::string, std::vector<std::pair<double, double>>>>& series) {
  const double W = 720, H = 360, L = 60, R = 20, T = 40, B = 40;
  std::ostringstream s;
  s << "<svg xmlns='http://www.w3.org/2000/svg' width='" << W << "' height='" << H << "' font-family='sans-serif' font-size='12'>\n"
    << "<rect width='100%' height='100%' fill='white'/>\n<text x='" << L << "' y='22' font-size='14'>" << title << "</text>\n";
  const char* colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd"};
  double xmax = 1;
  for (auto& [n, pts] : series) for (auto& p : pts) xmax = std::max(xmax, p.first);
  s << "<line x1='" << L << "' y1='" << H - B << "' x2='" << W - R << "' y2='" << H - B << "' stroke='black'/>\n"
    << "<text x='" << W - R << "' y='" << H - 10 << "' text-anchor='end'>step (max " << xmax << ")</text>\n";
  int k = 0;
  for (auto& [name, pts] : series) {
    if (pts.empty()) { ++k; continue; }
    double lo = pts[0].second, hi = pts[0].second;
    for (auto& p : pts) { lo = std::min(lo, p.second); hi = std::max(hi, p.second); }
    if (hi - lo < 1e-12) hi = lo + 1;
    s << "<polyline fill='none' stroke='" << colors[k % 4] << "' stroke-width='1.5' points='";
    for (auto& p : pts) s << L + (W - L - R) * p.first / xmax << "," << (H - B) - (H - T - B) * (p.second - lo) / (hi - lo) << " ";
    s << "'/>\n<text x='" << L + 10 + 230 * k << "' y='" << T - 4 << "' fill='" << colors[k % 4] << "'>" << name << " (" << lo << " … " << hi << ")</text>\n";
    ++k;
  }
  s << "</svg>\n";
  write_file_atomically(path, s.str());
}

namespace {

torch::optim::AdamWOptions AdamWOptionsFor(double lr, double wd) { return torch::optim::AdamWOptions(lr).weight_decay(wd); }

bool exists(const std::string& p) { return fs::exists(fs::symlink_status(p)); }

bool complete_checkpoint(const fs::path& d) { return fs::exists(d / "trainer_state.json"); }

// checkpoint-<step>[.<n>] (a complete version; ".tmp" ones are being written)
bool is_version_name(const std::string& n) {
  return n.rfind("checkpoint-", 0) == 0 && n.size() > 11 && std::isdigit((unsigned char)n[11]) && n.find(".tmp") == std::string::npos;
}

// FNV-1a over the encoded training examples: resuming on other data (another split, --train-limit, tokenizer) is refused.
std::string data_fingerprint(const std::vector<EncodedExample>& data) {
  Fnv1a h;
  for (auto& e : data) {
    const int64_t head[2] = {int64_t(e.ids.size()), e.target_start};
    h.mix(head, sizeof head);
    h.mix(e.ids.data(), e.ids.size() * sizeof(int64_t));
  }
  return h.hex();
}

// Epoch-wise order: shuffle, then sort windows of 50 batches by length (less padding), then shuffle the batches.
std::vector<std::vector<size_t>> epoch_batches(const std::vector<EncodedExample>& data, int64_t bs, uint64_t seed, int64_t epoch) {
  std::mt19937_64 rng(seed * 1000003 + epoch);
  std::vector<size_t> idx(data.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  std::shuffle(idx.begin(), idx.end(), rng);
  const size_t window = bs * 50;
  for (size_t s = 0; s < idx.size(); s += window) {
    auto e = idx.begin() + std::min(idx.size(), s + window);
    std::stable_sort(idx.begin() + s, e, [&](size_t a, size_t b) { return data[a].ids.size() < data[b].ids.size(); });
  }
  std::vector<std::vector<size_t>> batches;
  for (size_t s = 0; s < idx.size(); s += bs) batches.emplace_back(idx.begin() + s, idx.begin() + std::min(idx.size(), s + bs));
  std::shuffle(batches.begin(), batches.end(), rng);
  return batches;
}

}  // namespace

std::string find_checkpoint(const std::string& out_dir) {
  const fs::path out(out_dir);
  if (!fs::is_directory(out)) return "";
  if (complete_checkpoint(out / "checkpoint")) return (out / "checkpoint").string();  // the link (or an older plain dir)
  // No usable link: a kill before the first link was made, or an older frozenlm killed inside its swap.
  std::string best;
  int64_t best_step = -1;
  for (const auto& e : fs::directory_iterator(out)) {
    const std::string n = e.path().filename().string();
    if (!is_version_name(n) || !e.is_directory() || !complete_checkpoint(e.path())) continue;
    const int64_t st = std::atoll(n.c_str() + 11);
    if (st > best_step || (st == best_step && n > fs::path(best).filename().string())) best_step = st, best = e.path().string();
  }
  if (!best.empty()) return best;
  if (complete_checkpoint(out / "checkpoint.old")) return (out / "checkpoint.old").string();
  return "";
}

std::string resume_checkpoint(const std::string& out_dir, const TrainOptions& opt) {
  if (!opt.resume && !opt.resume_or_start) return "";
  const std::string ck = find_checkpoint(out_dir);
  if (ck.empty() && opt.resume && !opt.resume_or_start)
    throw Error(out_dir + ": no checkpoint yet to resume from (" +
                (fs::is_directory(out_dir) ? std::string("the run stopped before its first checkpoint")
                                           : std::string("the output directory does not exist")) +
                "; one is written every --checkpoint-every steps): run again without --resume to start fresh, or pass "
                "--resume-or-start, which resumes when there is a checkpoint and starts fresh when there is none");
  return ck;
}

TrainingSet TrainingSet::single(const Task& task, const std::vector<Example>& train, const std::vector<Example>& dev) {
  TrainingSet s;
  s.name = task.name;
  s.tasks = {task};
  for (auto& e : train) s.train.push_back({0, e});
  s.dev = {dev};
  return s;
}

TrainResult train_module(const FrozenLM& lm, TrainableModule& module, const Tokenizer& tok, const Task& task,
                         const std::vector<Example>& train, const std::vector<Example>& dev, const std::string& out_dir,
                         const TrainOptions& opt) {
  return train_module(lm, module, tok, TrainingSet::single(task, train, dev), out_dir, opt);
}

static const char* metric_of(const Task& t) {
  return t.type == TaskType::Classification ? "accuracy" : t.type == TaskType::Generation ? "exact_match" : "neg_perplexity";
}

static TrainResult train_module_rank(const FrozenLM& lm, TrainableModule& module, const Tokenizer& tok, const TrainingSet& set,
                                     const std::string& out_dir, const TrainOptions& opt, const DataParallel* dp, bool main_rank);

TrainResult train_module(const FrozenLM& lm, TrainableModule& module, const Tokenizer& tok, const TrainingSet& set,
                         const std::string& out_dir, const TrainOptions& opt) {
  if (set.train.empty()) throw Error("train: the training set is empty");
  if (set.dev.size() != set.tasks.size()) throw Error("train: dev examples must be given per task");
  const DataParallel* dp = opt.data_parallel;
  const bool main_rank = !dp || dp->is_main();  // files, metrics and progress come from rank 0 alone
  TrainOptions opt_rank = opt;
  opt_rank.progress = opt.progress && main_rank;
  return train_module_rank(lm, module, tok, set, out_dir, opt_rank, dp, main_rank);
}

static TrainResult train_module_rank(const FrozenLM& lm, TrainableModule& module, const Tokenizer& tok, const TrainingSet& set,
                                     const std::string& out_dir, const TrainOptions& opt, const DataParallel* dp, bool main_rank) {
  const std::string ckpt = resume_checkpoint(out_dir, opt);  // "" : a fresh start
  fs::create_directories(out_dir);
  const std::string hash_before = lm.weights_hash();
  const int64_t bos = bos_for(lm.config(), tok);
  // Generation targets end with EOS (where generation stops), so that a trained module also learns to stop.
  const int64_t eos = !lm.config().eos_ids.empty() ? lm.config().eos_ids.front() : tok.eos_id();
  std::vector<EncodedExample> data;
  std::vector<size_t> truncated(set.tasks.size());
  for (auto& [t, e] : set.train) {
    const int64_t room = set.tasks.at(t).max_tokens - module.prefix_length();
    if (room < 2) throw Error(set.tasks[t].file + ": max_tokens " + std::to_string(set.tasks[t].max_tokens) + " leaves no room after the module's " +
                               std::to_string(module.prefix_length()) + " prefix positions");
    data.push_back(encode_example(tok, bos, e.input, e.training_target(), room,
                                  set.tasks.at(t).type == TaskType::Generation ? eos : -1));
    truncated[t] += data.back().truncated;
  }
  std::vector<size_t> data_task;
  for (auto& te : set.train) data_task.push_back(te.first);
  // lm tasks marked "pack": their documents become packed windows of max_tokens (fixed shapes, little padding).
  for (size_t t = 0; t < set.tasks.size(); ++t) {
    if (!set.tasks[t].pack) continue;
    std::vector<EncodedExample> docs, rest;
    std::vector<size_t> rest_task;
    for (size_t i = 0; i < data.size(); ++i) {
      if (data_task[i] == t) {
        docs.push_back(std::move(data[i]));
      } else {
        rest.push_back(std::move(data[i]));
        rest_task.push_back(data_task[i]);
      }
    }
    const int64_t room = set.tasks[t].max_tokens - module.prefix_length();
    std::vector<EncodedExample> packed = pack_documents(docs, room, opt.seed);
    int64_t tokens = 0;
    for (auto& w : packed) tokens += int64_t(w.ids.size());
    if (opt.progress)
      std::fprintf(stderr, "[train] %s: %zu documents packed into %zu windows of %lld tokens (%.1f%% filled)\n", set.tasks[t].name.c_str(),
                   docs.size(), packed.size(), (long long)room, packed.empty() ? 0.0 : 100.0 * tokens / (double(packed.size()) * room));
    data = std::move(rest);
    data_task = std::move(rest_task);
    data_task.resize(data.size() + packed.size(), t);
    data.insert(data.end(), std::make_move_iterator(packed.begin()), std::make_move_iterator(packed.end()));
  }
  for (size_t t = 0; t < set.tasks.size(); ++t)
    if (truncated[t])
      std::fprintf(stderr, "[train] %s: %zu training inputs truncated to %lld tokens (input cut from the left)\n", set.tasks[t].name.c_str(),
                   truncated[t], (long long)(set.tasks[t].max_tokens - module.prefix_length()));

  auto params = module.parameters();
  // One AdamW parameter group per distinct learning-rate scale (prompts and generator weights train at different rates).
  std::vector<double> scales;
  std::vector<torch::optim::OptimizerParamGroup> groups;
  for (size_t i = 0; i < params.size(); ++i) {
    const double sc = module.lr_scale(i);
    size_t g = std::find(scales.begin(), scales.end(), sc) - scales.begin();
    if (g == scales.size()) {
      scales.push_back(sc);
      groups.emplace_back(std::vector<at::Tensor>{}, std::make_unique<torch::optim::AdamWOptions>(AdamWOptionsFor(opt.lr * sc, opt.weight_decay)));
    }
    groups[g].params().push_back(params[i]);
  }
  torch::optim::AdamW optim(std::move(groups), torch::optim::AdamWOptions(opt.lr).weight_decay(opt.weight_decay));
  TrainResult res;
  int64_t step = 0, epoch = 0, batch_pos = 0, since_best = 0;
  double best = -INFINITY;
  std::vector<std::pair<double, double>> loss_curve, eval_curve;
  std::ofstream metrics;

  // What must be the same for a resumed run to continue the same run (checkpoint_every and progress may differ).
  json dev_sizes = json::array(), task_names = json::array();
  for (size_t t = 0; t < set.tasks.size(); ++t) { dev_sizes.push_back(set.dev[t].size()); task_names.push_back(set.tasks[t].name); }
  const json run_identity = {
      {"steps", opt.steps}, {"batch_size", opt.batch_size}, {"grad_accum", opt.grad_accum}, {"lr", opt.lr},
      {"weight_decay", opt.weight_decay}, {"warmup", opt.warmup}, {"schedule", opt.schedule}, {"clip", opt.clip},
      {"eval_every", opt.eval_every}, {"eval_limit", opt.eval_limit}, {"patience", opt.patience}, {"seed", opt.seed},
      {"max_nan_steps", opt.max_nan_steps}, {"training_set", set.name}, {"tasks", task_names},
      {"train_examples", data.size()}, {"train_data_fingerprint", data_fingerprint(data)}, {"dev_examples", dev_sizes},
      {"module", module.kind()}, {"trainable_parameters", module.num_parameters()}, {"base_checkpoint_id", lm.checkpoint_id()}};
  int64_t consecutive_nan = 0;
  int64_t resumed_from = -1;

  if (!ckpt.empty()) {
    const std::string state_path = ckpt + "/trainer_state.json";
    std::string state_text;
    if (!read_text_file(state_path, &state_text)) throw Error(state_path + ": cannot open: cannot resume from it");
    const TrainerState st = parse_trainer_state(state_text, state_path);
    step = st.step; epoch = st.epoch; batch_pos = st.batch_pos; since_best = st.since_best; best = st.best;
    res.first_loss = st.first_loss; res.last_loss = st.last_loss; res.nan_steps = st.nan_steps;
    consecutive_nan = st.consecutive_nan;
    res.stopped_early = st.stopped_early;
    loss_curve = st.loss_curve;
    eval_curve = st.eval_curve;
    if (st.run.is_object()) {
      std::string diff;
      for (auto it = run_identity.begin(); it != run_identity.end(); ++it) {
        if (it.key() == "steps" && opt.allow_steps_change) continue;
        const json& was = st.run.contains(it.key()) ? st.run[it.key()] : json();
        if (was != it.value()) diff += "\n  " + it.key() + ": checkpoint " + was.dump() + ", now " + it.value().dump();
      }
      if (!diff.empty())
        throw Error(ckpt + ": cannot resume: this run differs from the checkpoint's in" + diff +
                    "\n(pass the checkpoint's options, or a new --out; --allow-steps-change permits another --steps)");
    } else {
      std::fprintf(stderr, "[train] warning: %s records no options (an older frozenlm): resuming without checking them\n", state_path.c_str());
    }
    if (opt.allow_steps_change && st.run.is_object() && st.run.contains("steps") && st.run["steps"] != json(opt.steps))
      std::fprintf(stderr, "[train] --steps changed from %s to %lld: the schedule is recomputed for the new total\n",
                   st.run["steps"].dump().c_str(), (long long)opt.steps);
    module.restore(ckpt, lm);
    torch::load(optim, ckpt + "/optimizer.pt");
    // metrics.jsonl: keep the lines up to the checkpoint's step
    std::ifstream old(out_dir + "/metrics.jsonl");
    std::string kept, line;
    while (std::getline(old, line)) {
      json j = json::parse(line, nullptr, false);
      if (j.is_object() && j.contains("step") && j["step"].is_number_integer() && j["step"].get<int64_t>() <= step) kept += line + "\n";
    }
    if (main_rank) write_file_atomically(out_dir + "/metrics.jsonl", kept);
    resumed_from = step;
    if (main_rank) std::fprintf(stderr, "[train] resumed from %s at step %lld (epoch %lld, batch %lld)%s\n", ckpt.c_str(), (long long)step, (long long)epoch,
                 (long long)batch_pos, res.stopped_early ? ": the run had already stopped early" : "");
  } else if (main_rank) {
    write_file_atomically(out_dir + "/metrics.jsonl", "");
  }
  if (main_rank) metrics.open(out_dir + "/metrics.jsonl", std::ios::app);
  if (dp) {  // every rank must continue the same run: the same step and the same module numbers
    double checksum = 0;
    for (const auto& p : params) checksum += p.detach().to(at::kDouble).abs().sum().item<double>();
    dp->check_same(double(step), checksum, ckpt.empty() ? "initial module" : "checkpoint (" + ckpt + ")");
  }

  // Mean of the per-task dev scores (per-task scores into `scores`); without dev data: −training loss.
  auto run_eval = [&](json& scores) -> double {
    double sum = 0;
    int n = 0;
    for (size_t t = 0; t < set.tasks.size(); ++t) {
      if (set.dev[t].empty()) continue;
      EvalOptions eo;
      eo.limit = opt.eval_limit;
      const double s = evaluate(lm, &module, tok, set.tasks[t], set.dev[t], eo)["score"].get<double>();
      scores[set.tasks[t].name] = s;
      sum += s;
      ++n;
    }
    return n ? sum / n : -loss_curve.back().second;
  };
  const bool any_dev = std::any_of(set.dev.begin(), set.dev.end(), [](auto& d) { return !d.empty(); });
  const std::string eval_metric = !any_dev ? "neg_train_loss" : set.tasks.size() == 1 ? metric_of(set.tasks[0]) : "mean_task_score";
  // A checkpoint is a complete directory OUT/checkpoint-<step>, written as .tmp, fsynced, renamed into place; then the
  // link OUT/checkpoint is pointed at it by renaming a new link over it (atomic), and older versions are removed. A
  // kill at any moment leaves OUT/checkpoint (or, before the first link, the newest complete version) resumable.
  const char* kill_in_swap = std::getenv("FROZENLM_KILL_IN_CHECKPOINT_SWAP");  // tests: SIGKILL between the renames
  const char* checkpoint_delay = std::getenv("FROZENLM_CHECKPOINT_DELAY_MS");  // tests: a slow disk
  auto save_checkpoint = [&] {
    if (checkpoint_delay) std::this_thread::sleep_for(std::chrono::milliseconds(std::atoll(checkpoint_delay)));
    const fs::path out(out_dir), link = out / "checkpoint", link_tmp = out / "checkpoint.link.tmp";
    char base[40];
    std::snprintf(base, sizeof base, "checkpoint-%08lld", (long long)step);
    std::string name = base;
    for (int n = 1; exists((out / name).string()); ++n) name = std::string(base) + "." + std::to_string(n);  // never touch a live one
    const fs::path tmp = out / (name + ".tmp"), ver = out / name;
    fs::remove_all(tmp);
    module.save(tmp.string());
    torch::save(optim, (tmp / "optimizer.pt").string());
    TrainerState st;
    st.step = step; st.epoch = epoch; st.batch_pos = batch_pos; st.best = best; st.since_best = since_best;
    st.first_loss = res.first_loss; st.last_loss = res.last_loss; st.nan_steps = res.nan_steps;
    st.consecutive_nan = consecutive_nan; st.stopped_early = res.stopped_early; st.run = run_identity;
    st.loss_curve = loss_curve; st.eval_curve = eval_curve;
    write_file_atomically((tmp / "trainer_state.json").string(), trainer_state_json(st));  // last: its presence marks a complete one
    fsync_tree(tmp.string());
    fs::rename(tmp, ver);
    fsync_path(out_dir);
    if (kill_in_swap && step == std::atoll(kill_in_swap)) ::kill(::getpid(), SIGKILL);
    // An older frozenlm's plain directory cannot be replaced by a link in one rename: move it aside first (the new
    // version is already complete, so a kill here still leaves a resumable checkpoint).
    if (fs::is_directory(fs::symlink_status(link))) {
      fs::remove_all(out / "checkpoint.old");  // an older frozenlm killed after its second rename leaves both
      fs::rename(link, out / "checkpoint.old");
    }
    fs::remove(link_tmp);
    fs::create_symlink(name, link_tmp);
    fs::rename(link_tmp, link);
    fsync_path(out_dir);
    for (const auto& e : fs::directory_iterator(out)) {  // older versions and leftovers of interrupted writes
      const std::string n = e.path().filename().string();
      if (n != name && n != "checkpoint" && (n.rfind("checkpoint-", 0) == 0 || n == "checkpoint.old" || n == "checkpoint.tmp"))
        fs::remove_all(e.path());
    }
  };

  // A snapshot is the module as it is at a step (not the best one), complete or absent: written as .tmp, renamed.
  // A resumed run rewrites the snapshot of a step it repeats (the same weights: resume is exact).
  auto save_snapshot = [&] {
    char base[40];
    std::snprintf(base, sizeof base, "step-%08lld", (long long)step);
    const fs::path dir = fs::path(out_dir) / "snapshots", ver = dir / base, tmp = dir / (std::string(base) + ".tmp");
    fs::create_directories(dir);
    fs::remove_all(tmp);
    module.save(tmp.string());
    fsync_tree(tmp.string());
    fs::remove_all(ver);
    fs::rename(tmp, ver);
    fsync_path(dir.string());
  };

  auto batches = epoch_batches(data, opt.batch_size, opt.seed, epoch);
  const auto t_start = std::chrono::steady_clock::now();
  int64_t tokens_seen = 0;
  const int64_t start_step = step;
  const char* kill_at = std::getenv("FROZENLM_KILL_AT_STEP");
  const char* kill_rank = std::getenv("FROZENLM_KILL_RANK");  // data parallel tests: only this rank dies
  const bool tty = ::isatty(2);  // tests: SIGKILL ourselves mid-run
  double step_seconds = 0;  // forward, backward, collectives and optimiser steps (not evaluation or checkpoints)
  const double collective_before = dp ? dp->collective_seconds() : 0;
  while (step < opt.steps && !res.stopped_early) {
    const auto t_step = std::chrono::steady_clock::now();
    optim.zero_grad();
    double loss_sum = 0;
    int64_t step_tokens = 0;
    for (int64_t a = 0; a < opt.grad_accum; ++a) {
      if (batch_pos >= int64_t(batches.size())) {
        ++epoch;
        batch_pos = 0;
        batches = epoch_batches(data, opt.batch_size, opt.seed, epoch);
      }
      std::vector<EncodedExample> items;
      const auto& global = batches[batch_pos];
      for (size_t k = 0; k < global.size(); ++k)  // data parallel: this rank's share (examples k ≡ rank mod world)
        if (!dp || int(k % dp->world()) == dp->rank()) items.push_back(data[global[k]]);
      ++batch_pos;
      // Data parallel: the global batch's mean token loss = Σ over ranks of (this rank's mean × its share of the
      // global batch's target tokens); one rank: share 1.
      Batch b;
      int64_t n_targets = 0;
      if (!items.empty()) {
        b = make_batch(items, lm.device());
        if (dp) n_targets = (b.targets != -100).sum().item<int64_t>();
      }
      double share = 1;
      if (dp) {
        const double total = dp->sum(double(n_targets));  // every rank takes part, with or without examples
        share = n_targets > 0 ? double(n_targets) / total : 0.0;
      }
      if (share > 0) {
        at::Tensor loss = module_target_loss(lm, module, module_input(lm, b.ids, b.mask, b.input_mask), b.targets) * share / double(opt.grad_accum);
        loss.backward();
        loss_sum += loss.item<double>();
        step_tokens += b.mask.sum().item<int64_t>();
      }
    }
    if (dp) {  // sum the gradients (and the loss and token counts) over the ranks: every rank then takes the same step
      std::vector<at::Tensor> grads;
      for (auto& p : params) {
        if (!p.grad().defined()) p.mutable_grad() = at::zeros_like(p);
        grads.push_back(p.mutable_grad());
      }
      dp->all_reduce_sum(grads);
      loss_sum = dp->sum(loss_sum);
      step_tokens = int64_t(dp->sum(double(step_tokens)));
    }
    tokens_seen += step_tokens;
    if (!std::isfinite(loss_sum)) {  // skip the step, keep the last good state
      ++res.nan_steps;
      if (++consecutive_nan >= opt.max_nan_steps) {
        std::fprintf(stderr, "\n[train] %lld consecutive non-finite losses: stopping; the last good checkpoint is intact\n", (long long)consecutive_nan);
        res.stopped_early = true;
        break;
      }
      ++step;
      continue;
    }
    consecutive_nan = 0;
    if (opt.clip > 0) torch::nn::utils::clip_grad_norm_(params, opt.clip);
    for (size_t g = 0; g < optim.param_groups().size(); ++g)
      static_cast<torch::optim::AdamWOptions&>(optim.param_groups()[g].options()).lr(opt.lr * scales[g] * lr_factor(opt, step));
    optim.step();
    step_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t_step).count();
    ++step;
    if (step == 1 && start_step == 0) res.first_loss = loss_sum;
    res.last_loss = loss_sum;
    loss_curve.push_back({double(step), loss_sum});
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    const double tps = tokens_seen / std::max(secs, 1e-9);
    const double eta = secs / std::max<int64_t>(1, step - start_step) * (opt.steps - step);
    if (main_rank) metrics << json({{"step", step}, {"loss", loss_sum}, {"lr", opt.lr * lr_factor(opt, step - 1)}, {"tokens_per_s", tps}}).dump() << "\n";
    // A terminal gets a bar redrawn in place; a log file a line every ~5% of the run.
    if (opt.progress && (tty || step % std::max<int64_t>(1, opt.steps / 20) == 0 || step == opt.steps))
      std::fprintf(stderr, tty ? "\r[train] step %lld/%lld  loss %.4f  %.0f tok/s  ETA %.0fs   " : "[train] step %lld/%lld  loss %.4f  %.0f tok/s  ETA %.0fs\n",
                   (long long)step, (long long)opt.steps, loss_sum, tps, eta);
    const bool last = step == opt.steps;
    if ((opt.eval_every > 0 && step % opt.eval_every == 0) || last) {
      json scores = json::object();
      const double score = run_eval(scores);
      eval_curve.push_back({double(step), score});
      json line = {{"step", step}, {"eval_score", score}, {"eval_metric", eval_metric}};
      if (set.tasks.size() > 1) line["task_scores"] = scores;
      if (main_rank) metrics << line.dump() << "\n";
      if (opt.progress && any_dev)
        std::fprintf(stderr, "%s[train] step %lld: dev %s %.4f (best so far %.4f)\n", tty ? "\n" : "", (long long)step, eval_metric.c_str(),
                     score, std::max(score, best));
      if (score > best || !any_dev) {  // without dev data the latest module is the output
        best = score;
        since_best = 0;
        if (main_rank) module.save(out_dir);  // the best module is the output
      } else if (opt.patience > 0 && ++since_best >= opt.patience) {
        if (main_rank) std::fprintf(stderr, "\n[train] no improvement in %lld evaluations: early stop at step %lld\n", (long long)since_best, (long long)step);
        res.stopped_early = true;
      }
    }
    const bool checkpoint_now = (opt.checkpoint_every > 0 && step % opt.checkpoint_every == 0) || last || res.stopped_early;
    if (main_rank) {
      metrics.flush();
      // The snapshot first: a kill between the two resumes from an earlier checkpoint and rewrites it, never skips it.
      if (opt.snapshot_every > 0 && step % opt.snapshot_every == 0) save_snapshot();
      if (checkpoint_now) save_checkpoint();
    }
    // Data parallel: no rank goes past a checkpoint step before rank 0 has written it, so a rank that dies after step k
    // (and the SIGTERM the launcher then sends rank 0) cannot cut short the checkpoint of step k.
    if (dp && checkpoint_now) dp->sum(0.0);
    if (kill_at && step == std::atoll(kill_at) && (!kill_rank || (dp && dp->rank() == std::atoi(kill_rank)))) ::kill(::getpid(), SIGKILL);
    if (res.stopped_early) break;
  }
  if (opt.progress && tty) std::fprintf(stderr, "\n");
  if (res.nan_steps) std::fprintf(stderr, "[train] %lld step(s) skipped for a non-finite loss\n", (long long)res.nan_steps);
  res.steps_done = step;
  res.best_score = best;
  if (!main_rank) {
    dp->sum(0.0);  // wait for rank 0's files (the caller may read the module it wrote)
    return res;
  }
  write_curve_svg(out_dir + "/curve.svg", set.name + ": training loss and dev " + eval_metric,
                  {{"train loss", loss_curve}, {"dev score", eval_curve}});
  const std::string hash_after = lm.weights_hash();
  if (!module.modifies_base_model() && hash_after != hash_before) throw Error("frozen weights changed during training (hash " + hash_before + " -> " + hash_after + ")");
  json run = {{"task", set.name}, {"tasks", task_names}, {"eval_metric", eval_metric}, {"steps", step}, {"first_loss", res.first_loss}, {"last_loss", res.last_loss},
              {"best_dev_score", best}, {"nan_steps", res.nan_steps}, {"stopped_early", res.stopped_early},
              {"resumed_from_step", resumed_from >= 0 ? json(resumed_from) : json(nullptr)}, {"steps_this_process", step - start_step},
              {"frozen_weights_hash_before", hash_before}, {"frozen_weights_hash_after", hash_after},
              {"checkpoint_id", lm.checkpoint_id()}, {"module", module.kind()},
              {"trainable_parameters", module.num_parameters()}, {"base_model_trained", module.modifies_base_model()},
              {"seconds_in_steps_this_process", step_seconds},
              {"data_parallel", dp ? json{{"world", dp->world()}, {"rank0_seconds_in_collectives", dp->collective_seconds() - collective_before}}
                                   : json(nullptr)},
              {"options", {{"steps", opt.steps}, {"batch_size", opt.batch_size}, {"grad_accum", opt.grad_accum}, {"lr", opt.lr},
                           {"weight_decay", opt.weight_decay}, {"warmup", opt.warmup}, {"schedule", opt.schedule}, {"clip", opt.clip},
                           {"seed", opt.seed}, {"eval_every", opt.eval_every}, {"eval_limit", opt.eval_limit},
                           {"patience", opt.patience}}}};
  write_file_atomically(out_dir + "/run.json", run.dump(2) + "\n");
  if (dp) dp->sum(0.0);  // the other ranks wait for these files
  return res;
}

}  // namespace frozenlm
