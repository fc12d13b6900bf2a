// Reciprocal-rank fusion (Cormack et al. 2009) of several rankings of the same passages (e.g. BM25 and dense):
//   score(d) = sum over rankings r that contain d of 1 / (c + rank_r(d)),  rank from 1, c = 60 by default.
// Ties: the better best single rank first, then the lower docid. No LibTorch here.
#pragma once
#include <vector>

#include "retrieval/bm25.h"

namespace frozenlm {

std::vector<RetrievalHit> reciprocal_rank_fusion(const std::vector<std::vector<RetrievalHit>>& rankings, int64_t k,
                                                 double c = 60.0);

}  // namespace frozenlm
