// frozenlm answer: open-domain QA through the frozen-reader pipeline (methods/reader): retrieve, re-rank, pack, read.
// Prints the answer and the passages read (ids, scores); --json for everything.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/cli_common.h"
#include "cli/reader_args.h"
#include "core/error.h"
#include "core/transformer.h"
#include "methods/reader/reader_pipeline.h"
#include "modules/trainable_module.h"
#include "tokenizer/tokenizer.h"

namespace frozenlm::cli {
namespace {
using nlohmann::json;

struct AnswerArgs {
  ModelArgs model;
  std::string reader, question;
  ReaderOptions opt;
  bool json_out = false;
  std::vector<CLI::Option*> pipeline_opts;  // given on the command line: override the reader's saved options
};

}  // namespace

// The pipeline options: a trained reader's reader.json, then what the command line sets explicitly.
ReaderOptions reader_options(const std::string& reader_dir, const ReaderOptions& cli, const std::vector<CLI::Option*>& given) {
  ReaderOptions o = cli;
  if (!reader_dir.empty() && std::filesystem::exists(reader_dir + "/reader.json")) {
    std::ifstream f(reader_dir + "/reader.json");
    const json j = json::parse(f, nullptr, false);
    if (j.is_discarded()) throw Error(reader_dir + "/reader.json: not valid JSON");
    o = ReaderOptions::from_json(j, reader_dir + "/reader.json");
    for (CLI::Option* opt : given) {
      if (!opt->count()) continue;
      const std::string n = opt->get_name();
      if (n == "--index") o.index = cli.index;
      else if (n == "--retrieval") o.retrieval = cli.retrieval;
      else if (n == "--dense-projection") o.dense_projection = cli.dense_projection;
      else if (n == "--candidates") o.candidates = cli.candidates;
      else if (n == "--rerank") o.rerank = cli.rerank;
      else if (n == "--reranker") o.reranker = cli.reranker;
      else if (n == "--max-new-tokens") o.max_new_tokens = cli.max_new_tokens;
      else if (n == "--reader-tokens") o.reader_tokens = cli.reader_tokens;
      else if (n == "--max-passages") o.pack.max_passages = cli.pack.max_passages;
      else if (n == "--pack-order") o.pack.best_last = cli.pack.best_last;
    }
  }
  if (o.index.empty()) throw Error("no index: give --index (or a --reader trained with one)");
  return o;
}

std::vector<CLI::Option*> add_reader_pipeline_args(CLI::App* c, ReaderOptions& o, bool with_max_new_tokens) {
  std::vector<CLI::Option*> v{c->add_option("--index", o.index, "passage index directory (`frozenlm index build`)"),
          c->add_option("--retrieval", o.retrieval, "bm25 | dense | hybrid")->capture_default_str()->check(CLI::IsMember({"bm25", "dense", "hybrid"})),
          c->add_flag("--dense-projection", o.dense_projection, "dense / hybrid: search the index's trained projection (`frozenlm index project`)"),
          c->add_option("--candidates", o.candidates, "passages retrieved and re-ranked per question")->capture_default_str()->check(CLI::PositiveNumber),
          c->add_option("--rerank", o.rerank, "none | lm (the frozen LM's likelihood of the question) | trained (--reranker)")
              ->capture_default_str()->check(CLI::IsMember({"none", "lm", "trained"})),
          c->add_option("--reranker", o.reranker, "a trained re-ranker module (`frozenlm train reranker`)"),
          c->add_option("--reader-tokens", o.reader_tokens, "the reader's whole input in tokens, context included (0: the model's "
                                                            "max_seq_len; give the length it was pretrained on)")->capture_default_str(),
          c->add_option("--max-passages", o.pack.max_passages, "at most this many passages in the reader's context (0: as many as fit)")
              ->capture_default_str()->check(CLI::NonNegativeNumber),
          c->add_option_function<std::string>("--pack-order", [&o](const std::string& v) { o.pack.best_last = v == "best_last"; },
                                              "best_first | best_last: where the best passage stands in the context (best_last: next "
                                              "to the question)")->default_str("best_first")->check(CLI::IsMember({"best_first", "best_last"}))};
  if (with_max_new_tokens) v.push_back(c->add_option("--max-new-tokens", o.max_new_tokens, "answer budget (reserved in the context)")->capture_default_str());
  return v;
}

void add_answer_command(CLI::App& app, Commands& cmds) {
  static AnswerArgs a;
  auto* c = app.add_subcommand("answer", "answer a question from an index through the frozen reader (retrieve, re-rank, pack, read)");
  add_model_args(c, a.model);
  c->add_option("--question", a.question, "the question")->required();
  c->add_option("--reader", a.reader, "a trained reader module (`frozenlm train reader`; its pipeline options are the defaults)");
  a.pipeline_opts = add_reader_pipeline_args(c, a.opt);
  c->add_flag("--json", a.json_out, "JSON output: the answer, every candidate with its scores, what was read");
  cmds.add(c, [] {
    auto lm = open_model(a.model);
    auto tok = open_tokenizer(a.model, *lm, true);
    const ReaderOptions o = reader_options(a.reader, a.opt, a.pipeline_opts);
    std::unique_ptr<TrainableModule> reader;
    if (!a.reader.empty()) reader = load_module(a.reader, *lm);
    if (o.rerank == "trained" && o.reranker.empty()) throw Error("--rerank trained needs --reranker DIR");
    ReaderPipeline pipe(*lm, *tok, o, reader.get());
    const ReaderOutput r = pipe.answer(a.question);
    if (a.json_out) {
      json cands = json::array();
      for (size_t i = 0; i < r.ranked.size(); ++i) {
        const bool read = std::find(r.packed.included.begin(), r.packed.included.end(), i) != r.packed.included.end();
        cands.push_back({{"id", r.ranked[i].passage.id}, {"title", r.ranked[i].passage.title}, {"text", r.ranked[i].passage.text},
                         {"retrieval_score", r.ranked[i].retrieval_score}, {"rerank_score", r.ranked[i].rerank_score}, {"read", read}});
      }
      std::cout << json{{"question", a.question}, {"answer", r.answer}, {"options", o.to_json()}, {"context_tokens", r.packed.tokens},
                        {"first_passage_cut", r.packed.first_cut}, {"candidates", cands}}.dump(2) << "\n";
      return 0;
    }
    std::printf("%s\n\nread %zu of %zu passages (%lld context tokens%s):\n", r.answer.c_str(), r.packed.included.size(), r.ranked.size(),
                (long long)r.packed.tokens, r.packed.first_cut ? ", the first one cut" : "");
    for (size_t i : r.packed.included)
      std::printf("  %-24s retrieval %8.4f  rerank %8.4f  %s\n", r.ranked[i].passage.id.c_str(), r.ranked[i].retrieval_score,
                  r.ranked[i].rerank_score, r.ranked[i].passage.title.c_str());
    return 0;
  });
}

}  // namespace frozenlm::cli
