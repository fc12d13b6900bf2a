#include "methods/recursive/textual_recursion.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/fnv1a.h"
#include "core/text_file.h"
#include "core/torch_pch.h"
#include "eval/metrics.h"
#include "modules/prompt_tuning.h"
#include "train/data_parallel.h"

namespace frozenlm {

using nlohmann::json;
namespace fs = std::filesystem;

static const char* kConfigFile = "textual_recursion.json";

json to_json(const TextualRecursionConfig& c) {
  return {{"samples", c.samples}, {"temperature", c.temperature}, {"top_k", c.top_k}, {"include_greedy", c.include_greedy},
          {"max_answer_tokens", c.max_answer_tokens}, {"seed", c.seed}};
}

TextualRecursionConfig textual_recursion_config_from_json(const json& j, const std::string& where) {
  TextualRecursionConfig c;
  try {
    c.samples = j.at("samples").get<int64_t>();
    c.temperature = j.at("temperature").get<double>();
    c.top_k = j.at("top_k").get<int64_t>();
    c.include_greedy = j.at("include_greedy").get<bool>();
    c.max_answer_tokens = j.at("max_answer_tokens").get<int64_t>();
    c.seed = j.at("seed").get<uint64_t>();
  } catch (const json::exception& e) {
    throw Error(where + ": bad textual recursion configuration: " + e.what());
  }
  if (c.samples < 0 || (c.samples == 0 && !c.include_greedy)) throw Error(where + ": \"samples\" must be ≥ 1 (or ≥ 0 with include_greedy)");
  if (c.temperature <= 0 && c.samples > 0) throw Error(where + ": \"temperature\" must be > 0 to sample");
  if (c.max_answer_tokens < 1) throw Error(where + ": \"max_answer_tokens\" must be ≥ 1");
  return c;
}

std::vector<std::pair<std::string, int>> merge_candidates(const std::vector<std::string>& answers) {
  std::vector<std::pair<std::string, int>> merged;
  std::map<std::string, size_t> at;  // normalised form -> index in merged
  for (const std::string& a : answers) {
    const std::string key = normalize_answer(a);
    if (key.empty()) continue;
    auto [it, fresh] = at.emplace(key, merged.size());
    if (fresh) {
      size_t b = a.find_first_not_of(" \t"), e = a.find_last_not_of(" \t");
      merged.push_back({a.substr(b, e - b + 1), 0});
    }
    ++merged[it->second].second;
  }
  std::stable_sort(merged.begin(), merged.end(), [](auto& x, auto& y) { return x.second > y.second; });
  return merged;
}

std::string candidates_input(const std::vector<std::string>& candidates, const std::string& input) {
  std::string s = "Candidates: ";
  for (size_t i = 0; i < candidates.size(); ++i) s += (i ? " | " : "") + candidates[i];
  if (candidates.empty()) s += "(none)";
  return s + "\n" + input;
}

bool TextualRecursion::is_saved_in(const std::string& dir) { return fs::is_regular_file(fs::path(dir) / kConfigFile); }

TextualRecursion::TextualRecursion(TextualRecursionConfig cfg, std::unique_ptr<TrainableModule> pass1, std::unique_ptr<TrainableModule> pass2)
    : cfg_(cfg), pass1_(std::move(pass1)), pass2_(std::move(pass2)) {}

std::unique_ptr<TextualRecursion> TextualRecursion::load(const std::string& dir, const FrozenLM& lm) {
  const std::string path = dir + "/" + kConfigFile;
  std::string text;
  if (!read_text_file(path, &text)) throw Error(path + ": cannot read (not a textual recursion directory)");
  const json j = json::parse(text, nullptr, false);
  if (!j.is_object() || !j.contains("config")) throw Error(path + ": not a textual recursion configuration (no \"config\" object)");
  check_module_base(j, lm, dir);
  return std::make_unique<TextualRecursion>(textual_recursion_config_from_json(j["config"], path), load_module(dir + "/pass1", lm),
                                            load_module(dir + "/pass2", lm));
}

Proposal TextualRecursion::propose(const FrozenLM& lm, const Tokenizer& tok, const Task& task, const std::string& input,
                                   const Answer* greedy) const {
  Proposal p;
  std::vector<std::string> drawn;
  if (cfg_.include_greedy) {
    p.greedy = greedy ? *greedy : generate_answer(lm, pass1_.get(), tok, task, input, cfg_.max_answer_tokens);
    drawn.push_back(p.greedy.text);
  }
  if (cfg_.samples > 0) {
    SamplingParams sp;
    sp.temperature = cfg_.temperature;
    sp.top_k = cfg_.top_k;
    sp.max_new_tokens = cfg_.max_answer_tokens;
    Fnv1a h;
    h.mix(input.data(), input.size());
    sp.seed = cfg_.seed ^ h.h;
    for (Answer& a : sample_answers(lm, pass1_.get(), tok, task, input, sp, cfg_.samples)) drawn.push_back(a.text);
  }
  for (auto& [c, n] : merge_candidates(drawn)) {
    p.candidates.push_back(c);
    p.counts.push_back(n);
  }
  return p;
}

Answer TextualRecursion::answer(const FrozenLM& lm, const Tokenizer& tok, const Task& task, const std::string& input,
                                int64_t max_new_tokens, const Proposal* proposal) const {
  const Proposal own = proposal ? Proposal{} : propose(lm, tok, task, input);
  const Proposal& p = proposal ? *proposal : own;
  return generate_answer(lm, pass2_.get(), tok, task, candidates_input(p.candidates, input), max_new_tokens);
}

std::string TextualRecursion::pass2_input(const FrozenLM& lm, const Tokenizer& tok, const Task& task, const std::string& input) const {
  return candidates_input(propose(lm, tok, task, input).candidates, input);
}

namespace {

// FNV-1a over the files of a module directory (names and bytes, sorted by name): which pass 1 the data came from.
std::string dir_fingerprint(const std::string& dir) {
  std::vector<std::string> names;
  for (auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file()) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  Fnv1a h;
  for (const std::string& n : names) {
    std::string bytes;
    read_text_file(dir + "/" + n, &bytes);
    h.mix(n.data(), n.size());
    h.mix(bytes.data(), bytes.size());
  }
  return h.hex();
}

void copy_module_dir(const std::string& from, const std::string& to) {
  if (!fs::is_directory(from)) throw Error("--pass1-module " + from + ": not a directory");
  if (fs::exists(to) && fs::equivalent(from, to)) return;
  const std::string tmp = to + ".tmp";
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  for (auto& e : fs::directory_iterator(from))  // the module's own files (not a training run's checkpoints)
    if (e.is_regular_file()) fs::copy_file(e.path(), fs::path(tmp) / e.path().filename());
  fs::remove_all(to);
  fs::rename(tmp, to);
}

json example_json(size_t task, const Example& e) { return {{"task", task}, {"input", e.input}, {"targets", e.targets}}; }

}  // namespace

TrainResult train_textual_recursion(const FrozenLM& lm, const Tokenizer& tok, const std::string& pass1_dir, const TrainingSet& set,
                                    const std::string& out_dir, const TextualRecursionConfig& cfg, int64_t pass2_tokens,
                                    const TrainOptions& to, const std::string& base_model, int64_t folds) {
  for (const Task& t : set.tasks)
    if (t.type != TaskType::Generation)
      throw Error(t.file + ": task '" + t.name + "' is not a generation task: textual recursion proposes and re-reads answers");
  // Data parallel (to.data_parallel): the ranks split pass 1's questions (contiguous shares, put back together in
  // the 1-rank order: every question's samples are seeded by its text, so the data is the 1-rank data byte for byte),
  // train the cross-fitting folds' prompts and pass 2 as any training; rank 0 writes OUT.
  const DataParallel* dp = to.data_parallel;
  const bool main_rank = !dp || dp->is_main();
  fs::create_directories(out_dir);
  const std::string p1 = out_dir + "/pass1";
  TextualRecursion proposer(cfg, load_module(pass1_dir, lm), nullptr);  // a module (checked before anything is copied)
  if (main_rank) copy_module_dir(pass1_dir, p1);                         // OUT/pass1: the same files

  // Pass 1 over the training questions (and the dev questions the trainer evaluates), once.
  if (folds == 1 || folds < 0) throw Error("--pass1-folds " + std::to_string(folds) + ": 0 (pass 1 samples every question) or ≥ 2");
  const json identity = {{"config", to_json(cfg)}, {"pass1", dir_fingerprint(pass1_dir)}, {"base_checkpoint_id", lm.checkpoint_id()},
                         {"train", set.train.size()}, {"eval_limit", to.eval_limit}, {"folds", folds}};
  const std::string data_path = out_dir + "/pass2_data.json";
  std::string cached;  // rank 0's pass-2 data of an earlier run with this identity, for every rank
  if (main_rank && read_text_file(data_path, &cached)) {
    const json old = json::parse(cached, nullptr, false);
    if (!old.is_object() || old.value("identity", json()) != identity) {
      std::fprintf(stderr, "[recursive-text] %s was made with another configuration or pass 1: sampling again\n", data_path.c_str());
      cached.clear();
    }
  }
  if (dp) dp->broadcast_text(cached);
  json data = cached.empty() ? json() : json::parse(cached);
  if (data.is_null()) {
    size_t total = set.train.size(), done = 0;
    for (auto& d : set.dev) total += std::min(d.size(), to.eval_limit);
    if (dp) total = (total + size_t(dp->world()) - 1) / size_t(dp->world());  // about rank 0's share (progress only)
    const auto t0 = std::chrono::steady_clock::now();
    // Rewrites `items` (task, example) with `by`'s candidates, this rank's share of them when data parallel; returns
    // them all in order, with how many have the answer among their candidates and how many candidates they have.
    struct Rewritten {
      std::vector<json> rows;
      size_t has_gold = 0, n_cand = 0;
    };
    auto rewrite = [&](const std::vector<std::pair<size_t, const Example*>>& items, const TextualRecursion& by) {
      const auto [b, e] = dp ? dp->share(items.size()) : std::pair<size_t, size_t>{0, items.size()};
      if (dp)
        std::fprintf(stderr, "[recursive-text] rank %d of %d: pass 1 on questions [%zu, %zu) of %zu\n", dp->rank(), dp->world(), b, e, items.size());
      Rewritten mine;
      for (size_t i = b; i < e; ++i) {
        const auto& [task, ex] = items[i];
        const Proposal p = by.propose(lm, tok, set.tasks[task], ex->input);
        mine.has_gold += std::any_of(p.candidates.begin(), p.candidates.end(), [&](auto& c) { return exact_match(c, ex->targets) > 0; });
        mine.n_cand += p.candidates.size();
        Example r = *ex;
        r.input = candidates_input(p.candidates, ex->input);
        mine.rows.push_back(example_json(task, r));
        if (main_rank && (++done % 200 == 0 || done == total)) {
          const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          std::fprintf(stderr, "[recursive-text] pass 1%s: %zu/%zu questions  %.1f/s  ETA %.0fs\n", dp ? " (rank 0's share)" : "", done,
                       total, done / s, (total - std::min(done, total)) * s / done);
        }
      }
      if (!dp) return mine;
      Rewritten all;  // every rank's share, in rank order
      const std::string text = json{{"rows", mine.rows}, {"has_gold", mine.has_gold}, {"n_cand", mine.n_cand}}.dump();
      for (const std::string& part : dp->all_gather_text(text)) {
        json j = json::parse(part);
        for (json& row : j["rows"]) all.rows.push_back(std::move(row));
        all.has_gold += j["has_gold"].get<size_t>();
        all.n_cand += j["n_cand"].get<size_t>();
      }
      return all;
    };
    json train = json::array(), dev = json::array();
    size_t train_has_gold = 0, train_n_cand = 0;
    if (folds < 2) {
      std::vector<std::pair<size_t, const Example*>> items;
      for (auto& [task, e] : set.train) items.push_back({task, &e});
      Rewritten r = rewrite(items, proposer);
      for (json& j : r.rows) train.push_back(std::move(j));
      train_has_gold = r.has_gold;
      train_n_cand = r.n_cand;
    } else {
      // Cross-fitting: fold k's candidates come from a prompt that never saw fold k's questions.
      std::vector<json> rewritten(set.train.size());
      for (int64_t k = 0; k < folds; ++k) {
        const std::string fold_dir = out_dir + "/folds/fold-" + std::to_string(k);
        TrainingSet rest;
        rest.name = set.name + "-without-fold-" + std::to_string(k);
        rest.tasks = set.tasks;
        rest.dev = set.dev;
        for (size_t i = 0; i < set.train.size(); ++i)
          if (int64_t(i % folds) != k) rest.train.push_back(set.train[i]);
        bool train_fold = main_rank && !fs::is_regular_file(fold_dir + "/run.json");  // rank 0 decides for all
        if (dp) train_fold = dp->sum(train_fold ? 1.0 : 0.0) > 0;
        if (train_fold) {
          TrainOptions fo = to;
          fo.resume_or_start = true;
          fo.resume = false;
          const std::string ck = resume_checkpoint(fold_dir, fo);
          std::unique_ptr<TrainableModule> pt = !ck.empty() ? std::unique_ptr<TrainableModule>(PromptTuning::load(ck, lm))
              : PromptTuning::create(lm, proposer.pass1().prefix_length(), PromptInit::SampledVocab, {}, to.seed + 1 + k, base_model);
          if (main_rank)
            std::fprintf(stderr, "[recursive-text] fold %lld/%lld: pass 1 without it (%zu questions) into %s\n", (long long)k + 1,
                         (long long)folds, rest.train.size(), fold_dir.c_str());
          train_module(lm, *pt, tok, rest, fold_dir, fo);  // data parallel too; returns once rank 0 has written fold_dir
        }
        TextualRecursion fold_proposer(cfg, load_module(fold_dir, lm), nullptr);
        std::vector<size_t> index;
        std::vector<std::pair<size_t, const Example*>> items;
        for (size_t i = size_t(k); i < set.train.size(); i += size_t(folds)) {
          index.push_back(i);
          items.push_back({set.train[i].first, &set.train[i].second});
        }
        Rewritten r = rewrite(items, fold_proposer);
        for (size_t j = 0; j < index.size(); ++j) rewritten[index[j]] = std::move(r.rows[j]);
        train_has_gold += r.has_gold;
        train_n_cand += r.n_cand;
      }
      for (json& j : rewritten) train.push_back(std::move(j));
    }
    std::vector<std::pair<size_t, const Example*>> dev_items;
    for (size_t t = 0; t < set.dev.size(); ++t)
      for (size_t i = 0; i < std::min(set.dev[t].size(), to.eval_limit); ++i) dev_items.push_back({t, &set.dev[t][i]});
    Rewritten d = rewrite(dev_items, proposer);
    for (json& j : d.rows) dev.push_back(std::move(j));
    const double train_gold = set.train.empty() ? 0.0 : double(train_has_gold) / set.train.size();
    const double train_cand = set.train.empty() ? 0.0 : double(train_n_cand) / set.train.size();
    data = {{"identity", identity}, {"train", train}, {"dev", dev},
            {"stats", {{"train_answer_among_candidates", train_gold}, {"train_mean_candidates", train_cand},
                       {"dev_answer_among_candidates", dev.empty() ? 0.0 : double(d.has_gold) / dev.size()}}}};
    if (main_rank) write_file_atomically(data_path, data.dump());
  }
  if (main_rank)
    std::fprintf(stderr, "[recursive-text] pass-2 data: %zu train / %zu dev; answer among pass 1's candidates: %.1f%% of train questions "
               "(%.2f candidates each)\n", data["train"].size(), data["dev"].size(),
               100 * data["stats"]["train_answer_among_candidates"].get<double>(), data["stats"]["train_mean_candidates"].get<double>());
  TrainingSet set2;
  set2.name = set.name;
  set2.tasks = set.tasks;
  set2.dev.assign(set.tasks.size(), {});
  auto to_example = [](const json& j) {
    Example e;
    e.input = j.at("input").get<std::string>();
    e.targets = j.at("targets").get<std::vector<std::string>>();
    return e;
  };
  for (const json& j : data["train"]) set2.train.push_back({j.at("task").get<size_t>(), to_example(j)});
  for (const json& j : data["dev"]) set2.dev.at(j.at("task").get<size_t>()).push_back(to_example(j));

  // Pass 2: a prompt on the rewritten questions (resumable like any training).
  const std::string p2 = out_dir + "/pass2";
  const std::string ck = resume_checkpoint(p2, to);
  std::unique_ptr<TrainableModule> pass2 = !ck.empty() ? std::unique_ptr<TrainableModule>(PromptTuning::load(ck, lm))
                                                       : PromptTuning::create(lm, pass2_tokens, PromptInit::SampledVocab, {}, to.seed, base_model);
  if (main_rank) std::fprintf(stderr, "[recursive-text] pass 2: a %lld-vector prompt on \"candidates + question\"\n", (long long)pass2->prefix_length());
  const TrainResult r = train_module(lm, *pass2, tok, set2, p2, to);
  if (!main_rank) return r;

  json cfg_file = {{"kind", "textual_recursion"}, {"config", to_json(cfg)}, {"token_dim", lm.dim()},
                   {"base_checkpoint_id", lm.checkpoint_id()}, {"base_model", base_model}, {"pass1_from", pass1_dir}, {"pass1_folds", folds},
                   {"pass2_data", data["stats"]}};
  write_file_atomically(out_dir + "/" + kConfigFile, cfg_file.dump(2));
  std::string run_text;
  json run = read_text_file(p2 + "/run.json", &run_text) ? json::parse(run_text, nullptr, false) : json::object();
  run["module"] = "textual_recursion";
  run["pass2_data"] = data["stats"];
  run["textual_recursion"] = to_json(cfg);
  run["pass1_folds"] = folds;
  write_file_atomically(out_dir + "/run.json", run.dump(2));
  return r;
}

}  // namespace frozenlm
