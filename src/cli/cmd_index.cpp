// frozenlm index build|add|stats, and frozenlm retrieve: the passage index of the frozen-reader pipeline
// (retrieval/). Thin: parse, call the library, print.
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/cli_common.h"
#include "core/error.h"
#include "core/transformer.h"
#include "retrieval/dense_index.h"
#include "retrieval/dense_projection.h"
#include "retrieval/passage_index.h"
#include "retrieval/rank_fusion.h"
#include "tokenizer/tokenizer.h"

namespace frozenlm::cli {
namespace {
using nlohmann::json;

struct IndexArgs {
  std::string corpus, out, index, projection;
  int64_t chunk_words = 100;
  double k1 = 1.2, b = 0.75;
  bool json_out = false;
  ModelArgs model;
  DenseOptions dense;
};

struct RetrieveArgs {
  std::vector<std::string> indexes;
  std::string query, method = "bm25";
  int64_t k = 10, ef = 0, candidates = 100;
  double k1 = -1, b = -1;  // <0: the index's own
  bool json_out = false, projected = false;
  int64_t snippet = 160;
  ModelArgs model;
  CLI::Option* model_opt = nullptr;
};

int run_retrieve(const RetrieveArgs& a) {
  // Local indexes give their bm25/ database (and parameters); host:port names a remote xapian-tcpsrv shard.
  std::vector<std::string> shards;
  IndexManifest first;
  bool have_local = false;
  for (const std::string& i : a.indexes) {
    if (is_remote_shard(i)) { shards.push_back(i); continue; }
    IndexManifest m = read_index_manifest(i);
    if (!have_local) { first = m; have_local = true; }
    shards.push_back(i + "/bm25");
  }
  Bm25Params p = first.bm25;
  if (a.k1 >= 0) p.k1 = a.k1;
  if (a.b >= 0) p.b = a.b;
  Bm25Searcher s(shards);
  std::vector<RetrievalHit> hits;
  if (a.projected && a.method == "bm25") throw Error("--projection applies to --method dense or hybrid");
  if (a.method == "bm25") {
    hits = s.search(a.query, a.k, p);
  } else {
    if (!a.model_opt || a.model_opt->count() == 0) throw Error("--method " + a.method + " needs --model (the model the index was embedded with)");
    if (a.indexes.size() != 1 || shards[0] != a.indexes[0] + "/bm25") throw Error("--method " + a.method + " searches one local index (dense vectors are not sharded)");
    auto lm = open_model(a.model);
    auto tok = open_tokenizer(a.model, *lm, true);
    DenseSearcher dense(a.indexes[0], *lm, a.projected);
    if (a.method == "dense") {
      hits = dense.search(*lm, *tok, a.query, a.k, a.ef);
    } else {  // hybrid: reciprocal-rank fusion of the two candidate lists
      const int64_t c = std::max(a.k, a.candidates);
      hits = reciprocal_rank_fusion({s.search(a.query, c, p), dense.search(*lm, *tok, a.query, c, a.ef)}, a.k);
    }
  }
  if (a.json_out) {
    json out = {{"query", a.query}, {"method", a.method}, {"projection", a.projected}, {"k", a.k}, {"bm25", {{"k1", p.k1}, {"b", p.b}}}, {"hits", json::array()}};
    for (size_t r = 0; r < hits.size(); ++r) {
      const Passage ps = s.passage(hits[r].docid);
      out["hits"].push_back({{"rank", r + 1}, {"id", ps.id}, {"score", hits[r].score}, {"title", ps.title}, {"text", ps.text}});
    }
    std::cout << out.dump() << "\n";
    return 0;
  }
  if (hits.empty()) std::printf("no passage matches\n");
  for (size_t r = 0; r < hits.size(); ++r) {
    const Passage ps = s.passage(hits[r].docid);
    std::string text = ps.text.size() > size_t(a.snippet) ? ps.text.substr(0, size_t(a.snippet)) + "..." : ps.text;
    std::printf("%3zu  %8.4f  %s%s%s\n     %s\n", r + 1, hits[r].score, ps.id.c_str(), ps.title.empty() ? "" : "  | ",
                ps.title.c_str(), text.c_str());
  }
  return 0;
}

}  // namespace

void add_index_commands(CLI::App& app, Commands& cmds) {
  auto* index = app.add_subcommand("index", "build, extend and describe a passage index (BM25 through Xapian)");
  index->require_subcommand(1);
  static IndexArgs a;
  auto* build = index->add_subcommand("build", "index a JSONL corpus of {id, title, text} into a new directory");
  build->add_option("--corpus", a.corpus, "JSONL corpus, one {\"id\", \"title\", \"text\"} a line")->required();
  build->add_option("--out", a.out, "new index directory")->required();
  build->add_option("--chunk-words", a.chunk_words, "cut longer documents into passages of about this many words (0: never)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  build->add_option("--k1", a.k1, "BM25 k1 (term-frequency saturation), the index's default")->capture_default_str()->check(CLI::NonNegativeNumber);
  build->add_option("--b", a.b, "BM25 b (length normalisation, 0..1), the index's default")->capture_default_str()->check(CLI::Range(0.0, 1.0));
  cmds.add(build, [] {
    IndexBuildOptions o;
    o.chunk_words = a.chunk_words;
    o.bm25 = {a.k1, a.b};
    const IndexManifest m = build_index(a.corpus, a.out, o);
    std::printf("indexed %lld documents as %lld passages into %s\n", (long long)m.documents, (long long)m.passages, a.out.c_str());
    return 0;
  });
  auto* add = index->add_subcommand("add", "add a JSONL corpus to an existing index (all or nothing)");
  add->add_option("--index", a.index, "index directory")->required();
  add->add_option("--corpus", a.corpus, "JSONL corpus, one {\"id\", \"title\", \"text\"} a line")->required();
  cmds.add(add, [] {
    const int64_t before = read_index_manifest(a.index).passages;
    const IndexManifest m = add_to_index(a.index, a.corpus);
    std::printf("added %lld passages: %lld in %s\n", (long long)(m.passages - before), (long long)m.passages, a.index.c_str());
    return 0;
  });
  auto* stats = index->add_subcommand("stats", "an index's counts, parameters and size");
  stats->add_option("--index", a.index, "index directory")->required();
  stats->add_flag("--json", a.json_out, "JSON output");
  cmds.add(stats, [] {
    const json j = index_stats(a.index);
    if (a.json_out) { std::cout << j.dump(2) << "\n"; return 0; }
    std::printf("index        %s\ndocuments    %lld\npassages     %lld (chunks of ~%lld words)\n", a.index.c_str(),
                (long long)j["documents"].get<int64_t>(), (long long)j["passages"].get<int64_t>(), (long long)j["chunk_words"].get<int64_t>());
    std::printf("bm25         k1 %.3g, b %.3g; %.1f terms a passage, %llu distinct terms\n", j["bm25"]["k1"].get<double>(),
                j["bm25"]["b"].get<double>(), j["database"]["average_terms_per_passage"].get<double>(),
                (unsigned long long)j["database"]["distinct_terms"].get<uint64_t>());
    std::printf("dense        %s\non disk      %s\n", j["dense"].is_null() ? "none" : j["dense"].dump().c_str(),
                human_bytes(j["database"]["bytes_on_disk"].get<double>()).c_str());
    return 0;
  });

  auto* embed = index->add_subcommand("embed", "add dense vectors from the frozen LM (mean-pooled hidden states) and an HNSW graph");
  embed->add_option("--index", a.index, "index directory")->required();
  add_model_args(embed, a.model);
  embed->add_option("--layer", a.dense.layer, "hidden states after this many layers (-1: all)")->capture_default_str();
  embed->add_option("--max-tokens", a.dense.max_tokens, "cut longer passages at this many tokens")->capture_default_str();
  embed->add_option("--batch", a.dense.batch, "passages per forward")->capture_default_str()->check(CLI::PositiveNumber);
  embed->add_option("--hnsw-m", a.dense.hnsw_m, "HNSW graph degree")->capture_default_str()->check(CLI::PositiveNumber);
  embed->add_option("--ef-construction", a.dense.ef_construction, "HNSW build beam")->capture_default_str()->check(CLI::PositiveNumber);
  cmds.add(embed, [] {
    auto lm = open_model(a.model);
    auto tok = open_tokenizer(a.model, *lm, true);
    build_dense_index(a.index, *lm, *tok, a.dense);
    std::printf("embedded %s with %s (layer %lld)\n", a.index.c_str(), a.model.model.c_str(), (long long)a.dense.layer);
    return 0;
  });

  auto* project = index->add_subcommand("project", "search the dense vectors through a trained projection (`frozenlm train dense-projection`): "
                                                   "projects the cached vectors and builds their HNSW graph beside the raw one");
  project->add_option("--index", a.index, "index directory (with dense vectors)")->required();
  project->add_option("--projection", a.projection, "the trained projection's directory")->required();
  project->add_option("--hnsw-m", a.dense.hnsw_m, "HNSW graph degree")->capture_default_str()->check(CLI::PositiveNumber);
  project->add_option("--ef-construction", a.dense.ef_construction, "HNSW build beam")->capture_default_str()->check(CLI::PositiveNumber);
  cmds.add(project, [] {
    const DenseProjection p = DenseProjection::load(a.projection);
    build_projected_graph(a.index, p, a.dense);
    std::printf("projected %s through %s (%lld -> %lld)\n", a.index.c_str(), a.projection.c_str(), (long long)p.weight.size(1),
                (long long)p.weight.size(0));
    return 0;
  });

  static RetrieveArgs r;
  auto* ret = app.add_subcommand("retrieve", "the best passages of an index for a query");
  ret->add_option("--index", r.indexes, "index directory; repeat it (or give host:port of a xapian-tcpsrv shard) to search several as one")
      ->required();
  ret->add_option("--query", r.query, "the query (plain words; no query syntax)")->required();
  ret->add_option("--k", r.k, "passages to return")->capture_default_str()->check(CLI::PositiveNumber);
  ret->add_option("--k1", r.k1, "BM25 k1 (default: the index's)")->check(CLI::NonNegativeNumber);
  ret->add_option("--b", r.b, "BM25 b (default: the index's)")->check(CLI::Range(0.0, 1.0));
  ret->add_option("--method", r.method, "bm25 | dense (needs --model) | hybrid (reciprocal-rank fusion of both)")
      ->capture_default_str()->check(CLI::IsMember({"bm25", "dense", "hybrid"}));
  ret->add_flag("--projection", r.projected, "dense / hybrid: search through the index's trained projection (`index project`)");
  ret->add_option("--ef", r.ef, "dense: HNSW search beam (default: k)");
  ret->add_option("--candidates", r.candidates, "hybrid: candidates from each retriever before fusion")->capture_default_str();
  add_model_args(ret, r.model);
  r.model_opt = ret->get_option("--model");
  ret->add_flag("--json", r.json_out, "JSON output (every passage's full text)");
  cmds.add(ret, [] { return run_retrieve(r); });
}

}  // namespace frozenlm::cli
