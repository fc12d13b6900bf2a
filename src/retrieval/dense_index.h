// Dense retrieval on the frozen LM's own representations, so the whole pipeline rests on one frozen model: a text's
// vector is the mean of the LM's hidden states after layer L over its tokens (BOS excluded), L2-normalised; passages
// and queries are embedded the same way and compared by inner product in an HNSW graph (hnswlib).
// Files in the index directory: dense/vectors.f32 (N × d raw pooled vectors, docid order, for projection training),
// dense/hnsw.bin (the graph); the manifest's "dense" records the model's checkpoint id, the layer and the graph's
// parameters, and an index is refused with another model. With a trained projection (retrieval/dense_projection.h,
// `index project`): dense/projected/{projection.*, hnsw.bin}, the graph over the projected vectors, and the manifest's
// "dense"."projection"; searching it is a choice (projected = true), so both graphs stay comparable.
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
// The same for texts given as token ids (without BOS; `bos` (-1: none) goes in front, as embed_texts puts it).
at::Tensor embed_token_ids(const FrozenLM& lm, int64_t bos, std::vector<std::vector<int64_t>> ids, const DenseOptions& opt);

// Embeds every passage of the index in `dir` (one database, docids 1..N) and builds its HNSW graph; rewrites the
// manifest's "dense" entry. Replaces earlier dense vectors. Progress on stderr.
void build_dense_index(const std::string& dir, const FrozenLM& lm, const Tokenizer& tok, const DenseOptions& opt);

// The options the index's passages were embedded with (layer, max_tokens), for embedding questions the same way; an
// error when the index has no dense vectors or `lm` is not their model.
DenseOptions index_dense_options(const std::string& dir, const FrozenLM& lm);
// dense/vectors.f32 as an [N, d] fp32 tensor (row i = docid i + 1); an error when its size is not N × d.
at::Tensor read_dense_vectors(const std::string& dir);

struct DenseProjection;
// Projects the cached vectors with `projection` (trained on this model and layer: checked) and builds their HNSW graph
// in dense/projected/ (replacing an earlier one); records it in the manifest. Progress on stderr.
void build_projected_graph(const std::string& dir, const DenseProjection& projection, const DenseOptions& opt);

class DenseSearcher {
 public:
  // Opens dir/dense (projected: dir/dense/projected, the trained projection's graph); an error when it has none, or
  // when `lm` is not the model its vectors came from.
  DenseSearcher(const std::string& dir, const FrozenLM& lm, bool projected = false);
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
