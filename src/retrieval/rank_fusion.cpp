#include "retrieval/rank_fusion.h"

#include <algorithm>
#include <limits>
#include <map>

namespace frozenlm {

std::vector<RetrievalHit> reciprocal_rank_fusion(const std::vector<std::vector<RetrievalHit>>& rankings, int64_t k, double c) {
  struct Acc {
    double score = 0;
    size_t best_rank = std::numeric_limits<size_t>::max();
  };
  std::map<uint32_t, Acc> acc;
  for (const auto& ranking : rankings)
    for (size_t r = 0; r < ranking.size(); ++r) {
      Acc& a = acc[ranking[r].docid];
      a.score += 1.0 / (c + double(r + 1));
      a.best_rank = std::min(a.best_rank, r + 1);
    }
  std::vector<std::pair<uint32_t, Acc>> all(acc.begin(), acc.end());
  std::sort(all.begin(), all.end(), [](const auto& x, const auto& y) {
    if (x.second.score != y.second.score) return x.second.score > y.second.score;
    if (x.second.best_rank != y.second.best_rank) return x.second.best_rank < y.second.best_rank;
    return x.first < y.first;
  });
  std::vector<RetrievalHit> out;
  for (size_t i = 0; i < all.size() && int64_t(i) < k; ++i) out.push_back({all[i].first, all[i].second.score});
  return out;
}

}  // namespace frozenlm
