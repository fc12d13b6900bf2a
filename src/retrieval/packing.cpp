#include "retrieval/packing.h"

#include "core/error.h"
#include "data/records.h"

namespace frozenlm {

std::string render_passage(const Passage& p, const std::string& format) {
  return render_template(format, nlohmann::json{{"title", p.title}, {"text", p.text}}, "passage format");
}

PackedContext pack_passages(const std::vector<Passage>& ranked, int64_t budget,
                            const std::function<int64_t(const std::string&)>& count_tokens, const PackOptions& opt) {
  if (budget < 1) throw Error("no room for any passage: the reader's context budget is " + std::to_string(budget) + " tokens");
  if (opt.max_passages < 0) throw Error("max_passages must be >= 0 (0: as many as fit)");
  PackedContext out;
  for (size_t i = 0; i < ranked.size(); ++i) {
    if (opt.max_passages > 0 && int64_t(out.included.size()) == opt.max_passages) break;
    const std::string piece = render_passage(ranked[i], opt.passage_format);
    const std::string candidate = out.included.empty() ? piece : out.context + opt.separator + piece;
    const int64_t n = count_tokens(candidate);
    if (n <= budget) {
      out.context = candidate;
      out.tokens = n;
      out.included.push_back(i);
      continue;
    }
    if (out.included.empty()) {  // the best passage alone overflows: keep its longest word prefix that fits
      const std::vector<std::string> words = split_words(piece);
      auto prefix = [&](size_t w) {
        std::string s;
        for (size_t j = 0; j < w; ++j) s += (j ? " " : "") + words[j];
        return s;
      };
      size_t lo = 0, hi = words.size();  // the largest w with count(prefix(w)) <= budget; prefix(0) = "" fits
      while (lo < hi) {
        const size_t mid = (lo + hi + 1) / 2;
        if (count_tokens(prefix(mid)) <= budget) lo = mid;
        else hi = mid - 1;
      }
      if (lo > 0) {
        out.context = prefix(lo);
        out.tokens = count_tokens(out.context);
        out.included.push_back(i);
        out.first_cut = true;
      }
    }
    break;
  }
  if (opt.best_last && out.included.size() > 1) {
    // The same passages in reverse; counted again (merges at the separators may differ), and should the reversed
    // text not fit, the lowest-ranked passage goes until it does.
    while (true) {
      std::string ctx;
      for (auto it = out.included.rbegin(); it != out.included.rend(); ++it)
        ctx += (ctx.empty() ? "" : opt.separator) + render_passage(ranked[*it], opt.passage_format);
      const int64_t n = count_tokens(ctx);
      if (n <= budget || out.included.size() == 1) {
        out.context = ctx;
        out.tokens = n;
        break;
      }
      out.included.pop_back();
    }
  }
  return out;
}

}  // namespace frozenlm
