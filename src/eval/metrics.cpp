#include "eval/metrics.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <sstream>

namespace frozenlm {

static std::vector<std::string> split_ws(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

std::string normalize_answer(const std::string& s) {
  std::string t;
  for (unsigned char c : s) {
    if (std::ispunct(c)) continue;  // ASCII punctuation only, as Python's string.punctuation
    t += static_cast<char>(std::tolower(c));
  }
  std::string out;
  for (const std::string& w : split_ws(t)) {
    if (w == "a" || w == "an" || w == "the") continue;
    if (!out.empty()) out += ' ';
    out += w;
  }
  return out;
}

double exact_match(const std::string& prediction, const std::vector<std::string>& golds) {
  const std::string p = normalize_answer(prediction);
  for (const std::string& g : golds)
    if (normalize_answer(g) == p) return 1.0;
  return 0.0;
}

double token_f1(const std::string& prediction, const std::vector<std::string>& golds) {
  const std::vector<std::string> p = split_ws(normalize_answer(prediction));
  double best = 0.0;
  for (const std::string& gold : golds) {
    const std::vector<std::string> g = split_ws(normalize_answer(gold));
    if (p.empty() || g.empty()) {
      best = std::max(best, p.empty() && g.empty() ? 1.0 : 0.0);
      continue;
    }
    std::map<std::string, int> count;
    for (auto& w : g) ++count[w];
    int same = 0;
    for (auto& w : p)
      if (count[w]-- > 0) ++same;
    if (same == 0) continue;
    const double precision = double(same) / p.size(), recall = double(same) / g.size();
    best = std::max(best, 2 * precision * recall / (precision + recall));
  }
  return best;
}

}  // namespace frozenlm
