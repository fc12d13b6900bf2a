#include "serve/completion_text.h"

#include <algorithm>

#include "tokenizer/unicode.h"

namespace frozenlm::serve {

namespace {
const std::string kReplacement = "\xEF\xBF\xBD";  // what a partial byte sequence decodes to
}

CompletionText::CompletionText(const Tokenizer& tok, const std::vector<int64_t>& prompt, std::vector<std::string> stops)
    : tok_(tok) {
  const size_t keep = std::min<size_t>(prompt.size(), 8);
  context_.assign(prompt.end() - keep, prompt.end());
  context_text_ = tok_.decode(context_, /*skip_special=*/true);
  for (auto& s : stops)
    if (!s.empty()) stops_.push_back(std::move(s));
  for (auto& s : stops_) max_stop_ = std::max(max_stop_, s.size());
}

// The completion's text: decoded after the prompt's last tokens, then the prompt's own text taken off.
std::string CompletionText::decoded() const {
  std::vector<int64_t> all = context_;
  all.insert(all.end(), ids_.begin(), ids_.end());
  const std::string full = tok_.decode(all, /*skip_special=*/true);
  size_t common = 0;
  while (common < context_text_.size() && common < full.size() && full[common] == context_text_[common]) ++common;
  return full.substr(common);
}

std::string CompletionText::push(int64_t id) {
  if (stopped_) return "";
  offsets_.push_back(last_full_.size());
  ids_.push_back(id);
  const std::string full = decoded();
  last_full_ = full;
  // A stop string anywhere in the text not yet emitted (or straddling what was): cut before the first one.
  if (!stops_.empty()) {
    const size_t from = final_.size() >= max_stop_ ? final_.size() - max_stop_ + 1 : 0;
    size_t cut = std::string::npos;
    for (const std::string& s : stops_) cut = std::min(cut, full.find(s, from));
    if (cut != std::string::npos) {
      stopped_ = true;
      std::string out = cut > final_.size() ? full.substr(final_.size(), cut - final_.size()) : "";
      final_ += out;
      return out;
    }
  }
  // Hold back an incomplete character, and the bytes a stop string could still begin with.
  size_t end = unicode::complete_utf8_prefix(full);
  while (end >= kReplacement.size() && full.compare(end - kReplacement.size(), kReplacement.size(), kReplacement) == 0)
    end -= kReplacement.size();
  if (max_stop_ > 1) {
    size_t hold = end >= max_stop_ - 1 ? end - (max_stop_ - 1) : 0;
    // Only hold back a tail that is a prefix of some stop string.
    size_t safe = end;
    for (size_t start = hold; start < end; ++start) {
      bool prefix = false;
      for (const std::string& s : stops_)
        if (s.compare(0, end - start, full, start, end - start) == 0) prefix = true;
      if (prefix) {
        safe = start;
        break;
      }
    }
    end = std::min(end, safe);
    while (end > final_.size() && end < full.size() && (static_cast<unsigned char>(full[end]) & 0xC0) == 0x80) --end;  // char boundary
  }
  if (end <= final_.size()) return "";
  std::string out = full.substr(final_.size(), end - final_.size());
  final_ += out;
  return out;
}

std::string CompletionText::finish() {
  if (stopped_) return "";
  const std::string full = decoded();
  std::string out = full.size() > final_.size() ? full.substr(final_.size()) : "";
  final_ += out;
  return out;
}

}  // namespace frozenlm::serve
