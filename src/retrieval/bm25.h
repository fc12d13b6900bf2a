// BM25 over passages through Xapian (on-disk databases, English Snowball stemming of every term). Scores are Xapian's
// BM25Weight(k1, k2 = 0, k3 = 1, b, min_normlen = 0.5):
//   score(q, d) = sum over query terms t in d of  log(w_t) (k1 + 1) * 2 qf_t / (1 + qf_t) * tf / (k1 ((1 - b) + b L) + tf)
//   w_t = (N - n_t + 0.5) / (n_t + 0.5), replaced by w_t / 2 + 1 when below 2 (so a very common term still counts a
//   little), L = max(|d| / avg|d|, 0.5), tf = the term's count in d, |d| = the words of title + text,
//   qf_t = the term's count in the query.
// A query is tokenised exactly as passages are (no query syntax: a question is just words). Several databases
// ("shards": local directories or xapian-tcpsrv servers as host:port) are searched as one, with global statistics.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "retrieval/passages.h"

namespace frozenlm {

struct Bm25Params {
  double k1 = 1.2;
  double b = 0.75;
};

// A retrieved passage: its docid in the searcher's (combined) database and its score (higher is better).
struct RetrievalHit {
  uint32_t docid;
  double score;
};

// Adds passages to one Xapian database directory. Nothing is visible to searchers until commit().
class Bm25Writer {
 public:
  // create: a new database in `dir` (an error if one is there); otherwise an existing one, to add to.
  Bm25Writer(const std::string& dir, bool create);
  ~Bm25Writer();
  bool contains(const std::string& passage_id) const;
  void add(const Passage& p);
  uint64_t size() const;       // passages, including uncommitted ones
  void begin_transaction();    // add() until commit_transaction() is all-or-nothing
  void commit_transaction();
  void cancel_transaction();
  void commit();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

class Bm25Searcher {
 public:
  // shards: database directories, or "host:port" of a `xapian-tcpsrv` serving one. Errors name the shard.
  explicit Bm25Searcher(const std::vector<std::string>& shards);
  ~Bm25Searcher();
  // The k best passages, best first (ties: lower docid first). An empty query (no word) returns nothing.
  std::vector<RetrievalHit> search(const std::string& query, int64_t k, const Bm25Params& params) const;
  Passage passage(uint32_t docid) const;
  // The passage with this id, if the index has it.
  bool find(const std::string& passage_id, Passage* out) const;
  // The docid of the passage with this id (0: none).
  uint32_t docid_of(const std::string& passage_id) const;
  uint64_t size() const;
  double average_length() const;
  uint64_t distinct_terms() const;  // distinct indexed terms over all shards (walks the term list: for reports)

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Whether a shard spec names a remote xapian-tcpsrv ("host:port": digits after the last colon, no '/', not an
// existing path) rather than a database directory.
bool is_remote_shard(const std::string& spec);

// The terms Xapian indexes for `text` (lower-cased, stemmed), in order, for tests and reports.
std::vector<std::string> bm25_terms(const std::string& text);

}  // namespace frozenlm
