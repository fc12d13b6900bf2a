// frozenlm train reranker | train reader: the frozen reader's two trained modules (methods/reader). Each first builds
// its data from QA tasks and a passage index into OUT/data/ (a task file and JSONL rows: inspectable, reused when the
// options are the same), then prompt-tunes the frozen LM on it with the usual harness (checkpoints, --resume, best
// module on dev). The reader also saves its pipeline options (OUT/reader.json) for `answer` and `eval --reader`.
// frozenlm train dense-projection: the dense retriever's small trained projection (retrieval/dense_projection.h) on
// question–positive-passage pairs found by the pipeline's retrieval; `index project` puts it into an index.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "cli/reader_args.h"
#include "cli/train_common.h"
#include "train/data_parallel.h"
#include "core/atomic_file.h"
#include "core/error.h"
#include "core/transformer.h"
#include "methods/reader/reader_data.h"
#include "methods/reader/reader_pipeline.h"
#include "methods/reader/reranker.h"
#include "modules/prompt_tuning.h"
#include "retrieval/dense_projection.h"
#include "tasks/mixture.h"
#include "tokenizer/tokenizer.h"
#include "train/data_parallel.h"

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
std::vector<QaItem> qa_items(const std::string& task_path, const std::string& mixture_path, const std::string& split, size_t limit) {
  std::vector<Task> tasks;
  if (!task_path.empty()) tasks.push_back(load_task(task_path));
  else if (!mixture_path.empty()) tasks = load_mixture(mixture_path).tasks;
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
  // Data parallel: every rank builds the same rows (deterministic), rank 0 in OUT/data, the others in their own
  // OUT/data/rank-<r>, so that no two processes write one file.
  const DataParallel* dp = a.to.data_parallel;
  const std::string dir = a.out_dir + "/data" + (dp && !dp->is_main() ? "/rank-" + std::to_string(dp->rank()) : "");
  const std::string manifest = dir + "/" + kind + "_data.json", task = dir + "/" + kind + "_task.json";
  fs::create_directories(dir);
  if (std::ifstream f{manifest}) {
    const json old = json::parse(f, nullptr, false);
    if (!old.is_discarded() && old.value("identity", json()) == identity && fs::exists(task)) {
      std::fprintf(stderr, "[%s] reusing the data in %s\n", kind.c_str(), dir.c_str());
      return task;
    }
  }
  const json train = write_rows(qa_items(a.task_path, a.mixture_path, a.train_split, a.train_limit), dir + "/" + kind + "_train.jsonl");
  const json dev = a.dev_split.empty() ? json() : write_rows(qa_items(a.task_path, a.mixture_path, a.dev_split, a.dev_limit), dir + "/" + kind + "_dev.jsonl");
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
  if (!a.to.data_parallel || a.to.data_parallel->is_main()) write_file_atomically(a.out_dir + "/" + kind + ".json", saved.dump(2) + "\n");
  return train_prompt_on(a, task, *lm, *tok);
}

struct ProjectionArgs {
  ModelArgs model;
  int nproc = 1;
  ReaderOptions pipe;
  std::string task_path, mixture_path, out_dir, train_split = "train", dev_split = "dev";
  size_t train_limit = 0, dev_limit = 0;
  ProjectionOptions po;
};

// Pairs of `split`, their questions embedded as the index's passages were, their positives as rows of the cached vectors.
struct EmbeddedPairs {
  at::Tensor questions;
  std::vector<int64_t> rows;
  json counts;
};

// Data parallel (dp): each rank retrieves and embeds a contiguous share of the questions (the frozen LM's work), and
// every rank gets all pairs back in the 1-rank order.
EmbeddedPairs embedded_pairs(const ProjectionArgs& a, const ReaderPipeline& pipe, const FrozenLM& lm, const Tokenizer& tok,
                             const std::string& split, size_t limit, const DataParallel* dp) {
  std::vector<QaItem> items = qa_items(a.task_path, a.mixture_path, split, limit);
  if (dp) {
    const auto [b, e] = dp->share(items.size());
    std::fprintf(stderr, "[projection] rank %d of %d: %s questions [%zu, %zu) of %zu\n", dp->rank(), dp->world(), split.c_str(), b, e, items.size());
    items = std::vector<QaItem>(items.begin() + long(b), items.begin() + long(e));
  }
  const ProjectionPairs pairs = projection_pairs(pipe, items, !dp || dp->is_main());
  EmbeddedPairs e;
  e.counts = pairs.counts;
  for (uint32_t d : pairs.docids) e.rows.push_back(int64_t(d) - 1);
  DenseOptions o = index_dense_options(a.pipe.index, lm);
  o.progress = false;
  e.questions = pairs.questions.empty() ? at::zeros({0, lm.dim()}) : embed_texts(lm, tok, pairs.questions, o);
  if (!dp) return e;
  e.questions = dp->all_gather_rows(e.questions.to(at::kFloat).contiguous());
  const at::Tensor rows = dp->all_gather_rows(at::tensor(e.rows, at::kLong));
  e.rows.assign(rows.data_ptr<int64_t>(), rows.data_ptr<int64_t>() + rows.numel());
  json counts = json::object();
  for (const std::string& part : dp->all_gather_text(e.counts.dump())) {
    const json rank_counts = json::parse(part);
    for (auto& [k, v] : rank_counts.items()) counts[k] = counts.value(k, int64_t(0)) + v.get<int64_t>();
  }
  e.counts = counts;
  return e;
}

int run_train_projection(const ProjectionArgs& a, const DataParallel* dp) {
  if (a.out_dir.empty()) throw Error("train dense-projection: give --out");
  auto lm = open_model(a.model);
  auto tok = open_tokenizer(a.model, *lm, false);
  ReaderOptions o = a.pipe;
  o.rerank = "none";
  o.dense_projection = false;
  ReaderPipeline pipe(*lm, *tok, o, nullptr);
  const at::Tensor corpus = read_dense_vectors(o.index);  // [N, d], checked against the manifest
  const EmbeddedPairs train = embedded_pairs(a, pipe, *lm, *tok, a.train_split, a.train_limit, dp);
  const EmbeddedPairs dev = a.dev_split.empty() ? EmbeddedPairs{at::zeros({0, lm->dim()}), {}, json()}
                                                : embedded_pairs(a, pipe, *lm, *tok, a.dev_split, a.dev_limit, dp);
  const bool main_rank = !dp || dp->is_main();
  if (main_rank) std::fprintf(stderr, "[projection] pairs: train %s; dev %s\n", train.counts.dump().c_str(), dev.counts.dump().c_str());
  const std::vector<int64_t> ks{1, 5, 20, 100};
  ProjectionOptions po = a.po;
  if (dp) {
    po.rank = dp->rank();
    po.world = dp->world();
    po.all_reduce = [dp](std::vector<at::Tensor>& t) { dp->all_reduce_sum(t); };
    po.progress = po.progress && main_rank;
  }
  DenseProjection p = train_dense_projection(train.questions, train.rows, dev.questions, dev.rows, corpus, po);
  if (!main_rank) return 0;  // rank 0 measures and writes
  const json before = positive_recall(at::Tensor(), dev.questions, corpus, dev.rows, ks);
  const json after = positive_recall(p.weight, dev.questions, corpus, dev.rows, ks);
  const json m = index_dense_options(o.index, *lm).layer;
  p.info["checkpoint_id"] = lm->checkpoint_id();
  p.info["layer"] = m;
  p.info["source"] = {{"index", o.index}, {"qa", a.task_path.empty() ? a.mixture_path : a.task_path}, {"retrieval", o.retrieval},
                      {"candidates", o.candidates}, {"train", train.counts}, {"dev", dev.counts}};
  p.info["dev_positive_recall_before"] = before;
  p.info["dev_positive_recall_after"] = after;
  p.save(a.out_dir);
  std::printf("dense projection %lld -> %lld saved to %s\n", (long long)p.weight.size(1), (long long)p.weight.size(0), a.out_dir.c_str());
  std::printf("dev: contrastive loss %s -> %s; the positive among the nearest k of %lld passages before %s, after %s\n",
              p.info["dev_loss_before"].dump().c_str(), p.info["dev_loss_after"].dump().c_str(), (long long)corpus.size(0),
              before.dump().c_str(), after.dump().c_str());
  return 0;
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
  add_data_parallel_args(rr, ra->nproc);
  cmds.add(rr, data_parallel(ra, [ra] {
    ReaderOptions o = ra->pipe;
    o.rerank = "none";  // candidates come from retrieval alone
    RerankerDataOptions ro;
    ro.negatives = ra->negatives;
    ro.balanced = ra->balanced;
    return build_and_train(
        *ra, "reranker", o, json{{"input", kRerankerInput}},
        [](const ReaderPipeline& p) { return reranker_task_json("reranker_train.jsonl", "reranker_dev.jsonl", p.max_tokens()); },
        [ro](const ReaderPipeline& p, const std::vector<QaItem>& items, const std::string& path) { return write_reranker_rows(p, items, path, ro, true); });
  }));

  auto pa = std::make_shared<ProjectionArgs>();
  auto* dp = train->add_subcommand("dense-projection", "a small projection of the frozen LM's pooled states for dense retrieval, trained "
                                                       "contrastively on question-positive passage pairs (in-batch negatives); "
                                                       "add it to an index with `index project`");
  add_model_args(dp, pa->model);
  add_reader_pipeline_args(dp, pa->pipe, false);
  dp->add_option("--task", pa->task_path, "a QA task: the questions to find positives for");
  dp->add_option("--mixture", pa->mixture_path, "or a mixture (every generation task)");
  dp->add_option("--out", pa->out_dir, "output directory (projection.safetensors, projection.json)")->required();
  dp->add_option("--train-split", pa->train_split, "split to train on")->capture_default_str();
  dp->add_option("--dev-split", pa->dev_split, "split that picks the best step and reports recall ('' for none)")->capture_default_str();
  dp->add_option("--train-limit", pa->train_limit, "train questions per task (0: all)")->capture_default_str();
  dp->add_option("--dev-limit", pa->dev_limit, "dev questions per task (0: all)")->capture_default_str();
  dp->add_option("--dim", pa->po.dim, "output width k (0: the LM's width; starts as the identity)")->capture_default_str()->check(CLI::NonNegativeNumber);
  dp->add_option("--steps", pa->po.steps, "optimizer steps")->capture_default_str()->check(CLI::PositiveNumber);
  dp->add_option("--batch-size", pa->po.batch, "pairs per step (each question's negatives: the other passages)")->capture_default_str()->check(CLI::Range(2, 1 << 20));
  dp->add_option("--lr", pa->po.lr, "Adam learning rate")->capture_default_str()->check(CLI::PositiveNumber);
  dp->add_option("--temperature", pa->po.temperature, "softmax temperature")->capture_default_str()->check(CLI::PositiveNumber);
  dp->add_option("--eval-every", pa->po.eval_every, "steps between dev evaluations (the best step is kept)")->capture_default_str()->check(CLI::PositiveNumber);
  dp->add_option("--seed", pa->po.seed, "batch order")->capture_default_str();
  add_data_parallel_args(dp, pa->nproc);
  cmds.add(dp, [pa] {
    if (pa->task_path.empty() == pa->mixture_path.empty()) throw Error("train dense-projection: give --task or --mixture (one of them)");
    return run_data_parallel(pa->nproc, pa->model, pa->out_dir, [pa](const DataParallel* group) { return run_train_projection(*pa, group); });
  });

  auto da = std::make_shared<ReaderTrainArgs>();
  auto* rd = train->add_subcommand("reader", "prompt-tune the frozen LM to read packed retrieved passages (the frozen reader)");
  add_common(rd, *da);
  add_data_parallel_args(rd, da->nproc);
  cmds.add(rd, data_parallel(da, [da] {
    ReaderOptions o = da->pipe;
    o.reader_prefix = da->virtual_tokens;  // the packed contexts leave room for the prompt being trained
    return build_and_train(
        *da, "reader", o, o.to_json(), [](const ReaderPipeline& p) { return reader_task_json(p, "reader_train.jsonl", "reader_dev.jsonl"); },
        [](const ReaderPipeline& p, const std::vector<QaItem>& items, const std::string& path) { return write_reader_rows(p, items, path, true); });
  }));
}

}  // namespace frozenlm::cli
