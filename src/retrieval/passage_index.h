// A passage index directory (IDX), what `frozenlm index build|add|stats` writes and `retrieve` reads:
//   IDX/manifest.json   format, counts, chunking, BM25 parameters, and the dense part's description when there is one
//   IDX/bm25/           the Xapian database (passages stored in it: id, title, text)
//   IDX/dense.*         optional dense vectors (retrieval/dense_index.h)
// No LibTorch here.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "retrieval/bm25.h"

namespace frozenlm {

struct IndexManifest {
  int64_t documents = 0;    // corpus lines read
  int64_t passages = 0;     // after chunking
  int64_t chunk_words = 100;
  Bm25Params bm25;          // defaults for retrieval (a query may override them)
  nlohmann::json dense;     // null, or what dense_index.h records (model checkpoint id, layer, dimension, ...)
};

struct IndexBuildOptions {
  int64_t chunk_words = 100;
  Bm25Params bm25;
  bool progress = true;     // a line on stderr every 10,000 passages
};

// Reads IDX/manifest.json; a missing or corrupt manifest is an error naming IDX and what is wrong.
IndexManifest read_index_manifest(const std::string& dir);
void write_index_manifest(const std::string& dir, const IndexManifest& m);
nlohmann::json to_json(const IndexManifest& m);

// Builds a new index in `dir` (which must not exist or be empty) from a JSONL corpus. A duplicate passage id, a bad
// line or an empty corpus is an error naming file:line, and leaves no index behind.
IndexManifest build_index(const std::string& corpus, const std::string& dir, const IndexBuildOptions& opt);
// Adds a corpus to an existing index, all or nothing: a passage id already in the index (or twice in the corpus) is an
// error naming file:line, and the index stays as it was. An index with dense vectors is refused (rebuild it).
IndexManifest add_to_index(const std::string& dir, const std::string& corpus, bool progress = true);

// Counts and sizes for `index stats`: the manifest plus the database's own view (passages, average length, terms,
// bytes on disk).
nlohmann::json index_stats(const std::string& dir);

}  // namespace frozenlm
