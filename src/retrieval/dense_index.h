// Dense retrieval on the frozen LM's own representations, so the whole pipeline rests on one frozen model: a text's
// vector is the mean of the LM's hidden states after layer L over its tokens (BOS excluded), L2-normalised; passages
// and queries are embedded the same way and compared by inner product in an HNSW graph (hnswlib).
// Files in the index directory: dense/vectors.f32 (N × d raw pooled vectors, docid order, for later projection
// training), dense/hnsw.bin (the graph); the manifest's "dense" records the model's checkpoint id, the layer and the
// graph's parameters, and an index is refused with another model.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "retrieval/bm25.h"

namespace at {
class Tensor;
}

namespace frozenlm {

class FrozenLM;
class Tokenizer;

struct DenseOptions {
  int64_t layer = -1;            // hidden states after this many layers (-1: all layers, before the final norm)
  int64_t max_tokens = 256;      // longer texts are cut at the end
  int64_t batch = 32;            // texts per forward
  int64_t hnsw_m = 16;           // graph degree
  int64_t ef_construction = 200;
  uint64_t seed = 100;           // the graph's level assignment
  bool progress = true;
};

// The text a passage is embedded as: "title\ntext" (text alone without a title).
std::string dense_text(const Passage& p);

// [N, d] fp32 CPU: the mean of layer-`layer` hidden states over each text's tokens (after BOS), L2-normalised.
at::Tensor embed_texts(const FrozenLM& lm, const Tokenizer& tok, const std::vector<std::string>& texts, const DenseOptions& opt);

// Embeds every passage of the index in `dir` (one database, docids 1..N) and builds its HNSW graph; rewrites the
// manifest's "dense" entry. Replaces earlier dense vectors. Progress on stderr.
void build_dense_index(const std::string& dir, const FrozenLM& lm, const Tokenizer& tok, const DenseOptions& opt);

class DenseSearcher {
 public:
  // Opens dir/dense; an error when it has none, or when `lm` is not the model its vectors came from.
  DenseSearcher(const std::string& dir, const FrozenLM& lm);
  ~DenseSearcher();
  // The k nearest passages by inner product (score = cosine similarity), best first. ef: the search beam (>= k).
  std::vector<RetrievalHit> search(const FrozenLM& lm, const Tokenizer& tok, const std::string& query, int64_t k,
                                   int64_t ef = 0) const;
  int64_t size() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace frozenlm
