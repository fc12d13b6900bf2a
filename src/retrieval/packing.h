// Greedy context packing for a frozen reader (Levine et al. 2022, §3): passages in the order given (best first) are
// added whole while the packed context still fits the token budget; the first passage that does not fit ends the
// packing — except when it is the very first one, which is then cut at the end (at a word boundary) to fill the budget,
// so a reader never gets an empty context. Counted in the reader's own tokens, on the whole context string (so
// merges across the separator are counted as the reader will see them). Deterministic. No LibTorch here.
// Options: at most max_passages passages; and where they stand — best first, or best last (next to the question that
// follows the context: a small reader copies from the nearest matching sentence, docs/RESULTS.md "Frozen readers").
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "retrieval/passages.h"

namespace frozenlm {

struct PackOptions {
  std::string separator = "\n";          // between passages (the testbed's reading documents use a newline)
  std::string passage_format = "{text}";  // {title} and {text}; e.g. "{title}: {text}"
  int64_t max_passages = 0;               // 0: as many as fit
  bool best_last = false;                 // the context lists the chosen passages worst first, the best one last
};

struct PackedContext {
  std::string context;
  std::vector<size_t> included;  // indices into the ranked passages, in the order chosen (best first; the context
                                 // lists them in reverse when best_last)
  int64_t tokens = 0;            // of `context`
  bool first_cut = false;        // the first passage alone overflowed and was cut
};

// count_tokens: the reader tokenizer's count for a string (no special tokens). budget >= 1.
PackedContext pack_passages(const std::vector<Passage>& ranked, int64_t budget,
                            const std::function<int64_t(const std::string&)>& count_tokens, const PackOptions& opt = {});

// A passage rendered by `format` ({title}, {text}; "{{" and "}}" are braces).
std::string render_passage(const Passage& p, const std::string& format);

}  // namespace frozenlm
