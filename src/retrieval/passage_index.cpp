#include "retrieval/passage_index.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unordered_set>

#include "core/atomic_file.h"
#include "core/error.h"

namespace frozenlm {

namespace fs = std::filesystem;
using nlohmann::json;

static const char* kFormat = "frozenlm-passage-index";
static const int kVersion = 1;

json to_json(const IndexManifest& m) {
  return {{"format", kFormat}, {"version", kVersion}, {"documents", m.documents}, {"passages", m.passages},
          {"chunk_words", m.chunk_words}, {"bm25", {{"k1", m.bm25.k1}, {"b", m.bm25.b}}}, {"dense", m.dense}};
}

IndexManifest read_index_manifest(const std::string& dir) {
  const std::string path = dir + "/manifest.json";
  if (!fs::is_directory(dir)) throw Error(dir + ": no such index (build one with `frozenlm index build`)");
  std::ifstream f(path);
  if (!f) throw Error(dir + ": not a frozenlm index (no manifest.json)");
  const json j = json::parse(f, nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw Error(path + ": corrupt (not a JSON object)");
  if (j.value("format", "") != kFormat) throw Error(path + ": not a frozenlm passage index (\"format\" is not \"" + std::string(kFormat) + "\")");
  if (j.value("version", 0) != kVersion) throw Error(path + ": index version " + j.value("version", json(0)).dump() + ", this frozenlm reads version " + std::to_string(kVersion));
  IndexManifest m;
  try {
    m.documents = j.at("documents").get<int64_t>();
    m.passages = j.at("passages").get<int64_t>();
    m.chunk_words = j.at("chunk_words").get<int64_t>();
    m.bm25.k1 = j.at("bm25").at("k1").get<double>();
    m.bm25.b = j.at("bm25").at("b").get<double>();
    m.dense = j.value("dense", json());
  } catch (const json::exception& e) {
    throw Error(path + ": corrupt (" + e.what() + ")");
  }
  if (!fs::is_directory(dir + "/bm25")) throw Error(dir + ": the index has no bm25/ database (incomplete or damaged)");
  return m;
}

void write_index_manifest(const std::string& dir, const IndexManifest& m) {
  write_file_atomically(dir + "/manifest.json", to_json(m).dump(2) + "\n");
}

namespace {

struct Progress {
  bool on;
  std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
  void tick(int64_t n, bool last = false) {
    if (!on || (!last && n % 10000 != 0)) return;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "[index] %lld passages, %.0f passages/s\n", (long long)n, s > 0 ? n / s : 0.0);
  }
};

// Adds every passage of `corpus` through `w`, refusing ids already there or repeated. Returns documents read.
int64_t add_corpus(Bm25Writer& w, const std::string& corpus, int64_t chunk_words, Progress& prog, int64_t& added) {
  std::unordered_set<std::string> seen;
  return read_corpus(corpus, chunk_words, [&](const Passage& p, const std::string& where) {
    if (!seen.insert(p.id).second) throw Error(where + ": duplicate passage id '" + p.id + "' (earlier in this corpus)");
    if (w.contains(p.id)) throw Error(where + ": duplicate passage id '" + p.id + "' (already in the index)");
    w.add(p);
    prog.tick(++added);
  });
}

}  // namespace

IndexManifest build_index(const std::string& corpus, const std::string& dir, const IndexBuildOptions& opt) {
  if (opt.chunk_words < 0) throw Error("chunk size must be >= 0 words (0: never cut)");
  if (fs::exists(dir) && !(fs::is_directory(dir) && fs::is_empty(dir)))
    throw Error(dir + ": already exists (build into a new directory, or add to it with `frozenlm index add`)");
  // Built beside its destination and renamed in when complete: a killed build leaves DIR.partial (removed by the next
  // build), never a DIR that looks like an index.
  const std::string partial = dir + ".partial";
  if (fs::exists(partial)) {
    if (opt.progress) std::fprintf(stderr, "[index] removing %s (an interrupted build)\n", partial.c_str());
    fs::remove_all(partial);
  }
  fs::create_directories(partial);
  try {
    IndexManifest m;
    m.chunk_words = opt.chunk_words;
    m.bm25 = opt.bm25;
    Progress prog{opt.progress};
    {
      Bm25Writer w(partial + "/bm25", true);
      m.documents = add_corpus(w, corpus, opt.chunk_words, prog, m.passages);
      w.commit();
    }
    prog.tick(m.passages, true);
    write_index_manifest(partial, m);
    fsync_tree(partial);
    if (fs::exists(dir)) fs::remove(dir);  // empty (checked above)
    fs::rename(partial, dir);
    fsync_path(fs::path(dir).parent_path().empty() ? "." : fs::path(dir).parent_path().string());
    return m;
  } catch (...) {
    fs::remove_all(partial);
    throw;
  }
}

IndexManifest add_to_index(const std::string& dir, const std::string& corpus, bool progress) {
  IndexManifest m = read_index_manifest(dir);
  if (!m.dense.is_null())
    throw Error(dir + ": has dense vectors; adding passages would leave them without vectors (rebuild the index with the new corpus)");
  Bm25Writer w(dir + "/bm25", false);
  Progress prog{progress};
  int64_t added = 0;
  w.begin_transaction();
  try {
    m.documents += add_corpus(w, corpus, m.chunk_words, prog, added);
    w.commit_transaction();
  } catch (...) {
    w.cancel_transaction();
    throw;
  }
  prog.tick(added, true);
  m.passages += added;
  write_index_manifest(dir, m);
  return m;
}

json index_stats(const std::string& dir) {
  const IndexManifest m = read_index_manifest(dir);
  json j = to_json(m);
  Bm25Searcher s({dir + "/bm25"});
  uint64_t bytes = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) bytes += e.file_size();
  j["database"] = {{"passages", s.size()}, {"average_terms_per_passage", s.average_length()}, {"distinct_terms", s.distinct_terms()},
                   {"bytes_on_disk", bytes}};
  return j;
}

}  // namespace frozenlm
