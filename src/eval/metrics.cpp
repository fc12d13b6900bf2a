#include <algorithm>
#include <random>
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

namespace frozenlm {

std::pair<double, double> bootstrap_ci_of_task_average(const std::vector<std::vector<double>>& per_task, double level, int resamples,
                                                      uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<double> stats;
  stats.reserve(resamples);
  for (int r = 0; r < resamples; ++r) {
    double avg = 0;
    for (const auto& s : per_task) {
      if (s.empty()) continue;
      std::uniform_int_distribution<size_t> pick(0, s.size() - 1);
      double sum = 0;
      for (size_t i = 0; i < s.size(); ++i) sum += s[pick(rng)];
      avg += sum / s.size();
    }
    stats.push_back(avg / per_task.size());
  }
  std::sort(stats.begin(), stats.end());
  const double a = (1 - level) / 2;
  auto at = [&](double q) { return stats[std::min(stats.size() - 1, size_t(q * stats.size()))]; };
  return {at(a), at(1 - a)};
}

std::pair<double, double> bootstrap_ci(const std::vector<double>& scores, double level, int resamples, uint64_t seed) {
  if (scores.size() < 2) {
    const double m = scores.empty() ? 0.0 : scores[0];
    return {m, m};
  }
  return bootstrap_ci_of_task_average({scores}, level, resamples, seed);
}

}  // namespace frozenlm
