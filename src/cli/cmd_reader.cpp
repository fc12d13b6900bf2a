// frozenlm train reranker | train reader: the frozen reader's two trained modules (methods/reader). Each first builds
// its data from QA tasks and a passage index into OUT/data/ (a task file and JSONL rows: inspectable, reused when the
// options are the same), then prompt-tunes the frozen LM on it with the usual harness (checkpoints, --resume, best
// module on dev). The reader also saves its pipeline options (OUT/reader.json) for `answer` and `eval --reader`.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "cli/reader_args.h"
#include "cli/train_common.h"
#include "core/atomic_file.h"
#include "core/error.h"
#include "core/transformer.h"
#include "methods/reader/reader_data.h"
#include "methods/reader/reader_pipeline.h"
#include "methods/reader/reranker.h"
#include "modules/prompt_tuning.h"
#include "tasks/mixture.h"
#include "tokenizer/tokenizer.h"

namespace frozenlm::cli {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

struct ReaderTrainArgs : TrainArgs {
  ReaderOptions pipe;
  std::vector<CLI::Option*> pipe_opts;
  int64_t virtual_tokens = 20, negatives = 3;
  bool balanced = true;
  size_t dev_limit = 100;
  std::string question_field = "question";
};

// The QA items of --task or every generation task of --mixture, `limit` per task (0: all).
std::vector<QaItem> qa_items(const TrainArgs& a, const std::string& split, size_t limit) {
  std::vector<Task> tasks;
  if (!a.task_path.empty()) tasks.push_back(load_task(a.task_path));
  else if (!a.mixture_path.empty()) tasks = load_mixture(a.mixture_path).tasks;
  else throw Error("give --task QA_TASK or --mixture QA_MIXTURE (the questions to build the data from)");
  std::vector<QaItem> items;
  for (const Task& t : tasks) {
    if (t.type != TaskType::Generation || !t.splits.count(split)) continue;
    auto v = read_qa_items(t, split, limit, "question");
    items.insert(items.end(), v.begin(), v.end());
  }
  if (items.empty()) throw Error("no QA question in split '" + split + "' of the given task(s)");
  return items;
}

// Builds OUT/data/{kind}_{train,dev}.jsonl and OUT/data/{kind}_task.json unless OUT/data/{kind}_data.json records the
// same inputs; returns the task file's path.
template <class WriteRows>
std::string build_data(const ReaderTrainArgs& a, const std::string& kind, const json& identity, const std::string& task_json_text,
                       WriteRows&& write_rows) {
  const std::string dir = a.out_dir + "/data", manifest = dir + "/" + kind + "_data.json", task = dir + "/" + kind + "_task.json";
  fs::create_directories(dir);
  if (std::ifstream f{manifest}) {
    const json old = json::parse(f, nullptr, false);
    if (!old.is_discarded() && old.value("identity", json()) == identity && fs::exists(task)) {
      std::fprintf(stderr, "[%s] reusing the data in %s\n", kind.c_str(), dir.c_str());
      return task;
    }
  }
  const json train = write_rows(qa_items(a, a.train_split, a.train_limit), dir + "/" + kind + "_train.jsonl");
  const json dev = a.dev_split.empty() ? json() : write_rows(qa_items(a, a.dev_split, a.dev_limit), dir + "/" + kind + "_dev.jsonl");
  if (a.dev_split.empty()) std::ofstream(dir + "/" + kind + "_dev.jsonl");
  std::fprintf(stderr, "[%s] data: train %s; dev %s\n", kind.c_str(), train.dump().c_str(), dev.dump().c_str());
  write_file_atomically(task, task_json_text);
  write_file_atomically(manifest, json{{"identity", identity}, {"train", train}, {"dev", dev}}.dump(2) + "\n");
  return task;
}

int train_prompt_on(const ReaderTrainArgs& a, const std::string& task_path, const FrozenLM& lm, const Tokenizer& tok) {
  TrainArgs t = a;
  t.task_path = task_path;
  t.mixture_path.clear();
  t.train_split = "train";
  t.dev_split = a.dev_split.empty() ? "" : "dev";
  t.train_limit = 0;
  TrainingSet set = load_training_set(t);
  const TrainOptions to = prompt_train_options(a, lm);
  std::unique_ptr<PromptTuning> pt;
  if (const std::string ck = resume_checkpoint(a.out_dir, to); !ck.empty()) pt = PromptTuning::load(ck, lm);
  else pt = PromptTuning::create(lm, a.virtual_tokens, PromptInit::SampledVocab, {}, to.seed, a.model.model);
  std::fprintf(stderr, "[train] %s: %zu train / %zu dev examples; prompt tuning P=%lld (%lld trainable parameters)\n", set.name.c_str(),
               set.train.size(), dev_size(set), (long long)pt->prefix_length(), (long long)pt->num_parameters());
  TrainResult r = train_module(lm, *pt, tok, set, a.out_dir, to);
  print_train_result(a.out_dir, r);
  return 0;
}

json data_identity(const ReaderTrainArgs& a, const FrozenLM& lm, const ReaderOptions& o) {
  return {{"qa", a.task_path.empty() ? a.mixture_path : a.task_path}, {"train_split", a.train_split}, {"dev_split", a.dev_split},
          {"train_limit", a.train_limit}, {"dev_limit", a.dev_limit}, {"pipeline", o.to_json()}, {"negatives", a.negatives},
          {"model", lm.checkpoint_id()}};
}

void add_common(CLI::App* c, ReaderTrainArgs& a) {
  add_train_args(c, a);
  a.pipe_opts = add_reader_pipeline_args(c, a.pipe);
  c->add_option("--virtual-tokens", a.virtual_tokens, "soft-prompt length P")->capture_default_str();
  c->add_option("--dev-limit", a.dev_limit, "dev questions per task for the data (0: all)")->capture_default_str();
}

// Opens the model, builds the data of `kind` through a pipeline with options `o` (make_task: the task file's text;
// write_rows: the rows of a split), saves OUT/<kind>.json = `saved` (what reading with the module needs: the reader's
// pipeline options, the re-ranker's input template), then prompt-tunes.
int build_and_train(const ReaderTrainArgs& a, const std::string& kind, ReaderOptions o, const json& saved,
                    const std::function<std::string(const ReaderPipeline&)>& make_task,
                    const std::function<json(const ReaderPipeline&, const std::vector<QaItem>&, const std::string&)>& write_rows) {
  if (o.index.empty()) throw Error("train " + kind + ": give --index");
  auto lm = open_model(a.model);
  auto tok = open_tokenizer(a.model, *lm, false);
  ReaderPipeline pipe(*lm, *tok, o, nullptr);
  json identity = data_identity(a, *lm, o);
  if (kind == "reranker") identity["balanced"] = a.balanced;
  const std::string task = build_data(a, kind, identity, make_task(pipe),
                                      [&](const std::vector<QaItem>& items, const std::string& path) { return write_rows(pipe, items, path); });
  fs::create_directories(a.out_dir);
  write_file_atomically(a.out_dir + "/" + kind + ".json", saved.dump(2) + "\n");
  return train_prompt_on(a, task, *lm, *tok);
}

}  // namespace

void add_reader_train_commands(CLI::App* train, Commands& cmds) {
  auto ra = std::make_shared<ReaderTrainArgs>();
  auto* rr = train->add_subcommand("reranker", "a cross-encoder re-ranker on the frozen LM: a soft prompt trained to say whether a "
                                               "retrieved passage answers the question (positives contain a gold answer; hard negatives from retrieval)");
  add_common(rr, *ra);
  rr->add_option("--negatives", ra->negatives, "hard negatives per question")->capture_default_str();
  rr->add_flag("--balanced,!--no-balanced", ra->balanced,
               "write the positive once per negative, so the classes are 1 : 1 (default); --no-balanced writes it once");
  cmds.add(rr, [ra] {
    ReaderOptions o = ra->pipe;
    o.rerank = "none";  // candidates come from retrieval alone
    RerankerDataOptions ro;
    ro.negatives = ra->negatives;
    ro.balanced = ra->balanced;
    return build_and_train(
        *ra, "reranker", o, json{{"input", kRerankerInput}},
        [](const ReaderPipeline& p) { return reranker_task_json("reranker_train.jsonl", "reranker_dev.jsonl", p.max_tokens()); },
        [ro](const ReaderPipeline& p, const std::vector<QaItem>& items, const std::string& path) { return write_reranker_rows(p, items, path, ro, true); });
  });

  auto da = std::make_shared<ReaderTrainArgs>();
  auto* rd = train->add_subcommand("reader", "prompt-tune the frozen LM to read packed retrieved passages (the frozen reader)");
  add_common(rd, *da);
  cmds.add(rd, [da] {
    ReaderOptions o = da->pipe;
    o.reader_prefix = da->virtual_tokens;  // the packed contexts leave room for the prompt being trained
    return build_and_train(
        *da, "reader", o, o.to_json(), [](const ReaderPipeline& p) { return reader_task_json(p, "reader_train.jsonl", "reader_dev.jsonl"); },
        [](const ReaderPipeline& p, const std::vector<QaItem>& items, const std::string& path) { return write_reader_rows(p, items, path, true); });
  });
}

}  // namespace frozenlm::cli
