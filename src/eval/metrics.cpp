#include "eval/metrics.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <random>

#include "tokenizer/unicode.h"

namespace frozenlm {

// Splits on single spaces (normalize_answer's output separates tokens by exactly one space).
static std::vector<std::string> split_spaces(const std::string& s) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < s.size()) {
    size_t j = s.find(' ', i);
    if (j == std::string::npos) j = s.size();
    if (j > i) out.push_back(s.substr(i, j - i));
    i = j + 1;
  }
  return out;
}

namespace uc = unicode;

// SQuAD v1.1's normalize_answer, step by step as the official script (on Python str, i.e. Unicode codepoints):
//   lower -> remove string.punctuation -> re.sub(r'\b(a|an|the)\b', ' ') -> ' '.join(text.split())
std::string normalize_answer(const std::string& s) {
  // 1. str.lower(): per-codepoint mappings, U+0130 -> "i̇", and Greek final sigma (Σ at a word's end -> ς).
  const std::vector<uint32_t> in = uc::decode_utf8(s);
  std::vector<uint32_t> low;
  low.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    const uint32_t c = in[i];
    if (c == 0x130) { low.push_back('i'); low.push_back(0x307); continue; }
    if (c == 0x3A3) {  // final sigma: after a cased letter and not before one
      const bool after = i > 0 && uc::is_letter(in[i - 1]);
      const bool before = i + 1 < in.size() && uc::is_letter(in[i + 1]);
      low.push_back(after && !before ? 0x3C2 : 0x3C3);
      continue;
    }
    low.push_back(uc::to_lower(c));
  }
  // 2. remove string.punctuation (ASCII only: !"#$%&'()*+,-./:;<=>?@[\]^_`{|}~).
  std::vector<uint32_t> t;
  t.reserve(low.size());
  for (uint32_t c : low)
    if (!(c < 0x80 && std::ispunct(int(c)))) t.push_back(c);
  // 3. \b(a|an|the)\b -> ' ', alternatives tried left to right at each position, word characters as Python's re.
  auto word = [&](size_t i) { return i < t.size() && uc::is_python_word(t[i]); };
  std::vector<uint32_t> u;
  u.reserve(t.size());
  for (size_t i = 0; i < t.size();) {
    size_t end = 0;
    if (word(i) && (i == 0 || !word(i - 1))) {
      for (const char* art : {"a", "an", "the"}) {
        size_t k = 0;
        while (art[k] && i + k < t.size() && t[i + k] == uint32_t(art[k])) ++k;
        if (!art[k] && !word(i + k)) { end = i + k; break; }
      }
    }
    if (end) { u.push_back(' '); i = end; }
    else u.push_back(t[i++]);
  }
  // 4. ' '.join(text.split()): split on str.isspace() characters.
  std::string out, cur;
  auto flush = [&] {
    if (cur.empty()) return;
    if (!out.empty()) out += ' ';
    out += cur;
    cur.clear();
  };
  for (uint32_t c : u) {
    if (uc::is_python_space(c)) flush();
    else uc::append_utf8(cur, c);
  }
  flush();
  return out;
}

double exact_match(const std::string& prediction, const std::vector<std::string>& golds) {
  const std::string p = normalize_answer(prediction);
  for (const std::string& g : golds)
    if (normalize_answer(g) == p) return 1.0;
  return 0.0;
}

double token_f1(const std::string& prediction, const std::vector<std::string>& golds, bool v2_empty_rule) {
  const std::vector<std::string> p = split_spaces(normalize_answer(prediction));
  double best = 0.0;
  for (const std::string& gold : golds) {
    const std::vector<std::string> g = split_spaces(normalize_answer(gold));
    if (v2_empty_rule && (p.empty() || g.empty())) {  // SQuAD v2.0: int(gold_toks == pred_toks)
      best = std::max(best, p == g ? 1.0 : 0.0);
      continue;
    }
    std::map<std::string, int> count;
    for (auto& w : g) ++count[w];
    int same = 0;
    for (auto& w : p)
      if (count[w]-- > 0) ++same;
    if (same == 0) continue;  // v1.1: no overlap (two empty strings included) scores 0
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
  const size_t n_tasks = std::count_if(per_task.begin(), per_task.end(), [](const std::vector<double>& s) { return !s.empty(); });
  if (n_tasks == 0) return {0.0, 0.0};
  for (int r = 0; r < resamples; ++r) {
    double avg = 0;
    for (const auto& s : per_task) {
      if (s.empty()) continue;
      std::uniform_int_distribution<size_t> pick(0, s.size() - 1);
      double sum = 0;
      for (size_t i = 0; i < s.size(); ++i) sum += s[pick(rng)];
      avg += sum / s.size();
    }
    stats.push_back(avg / n_tasks);  // tasks without scores do not count
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
