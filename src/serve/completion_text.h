// The text of one completion as it is generated: detokenised incrementally (never half a UTF-8 character), cut at
// the first stop string (which is not part of the text, as OpenAI's API returns it), and streamed in pieces that
// never include text a stop string could still swallow.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace frozenlm::serve {

class CompletionText {
 public:
  // `prompt`: the ids before the completion (its last few decide how the first token decodes, e.g. a leading space).
  CompletionText(const Tokenizer& tok, const std::vector<int64_t>& prompt, std::vector<std::string> stops);
  // Adds a generated token; returns the text that became final (may be empty). Sets stopped() when a stop string
  // appeared: the text then ends before it and later tokens must not be pushed.
  std::string push(int64_t id);
  // The rest of the text at the end of the completion (held-back bytes; nothing after a stop).
  std::string finish();
  bool stopped() const { return stopped_; }
  const std::string& text() const { return final_; }          // the text so far, up to what was emitted
  const std::vector<int64_t>& tokens() const { return ids_; }
  // Byte offset in the full decoded text where each token's text starts (OpenAI's logprobs.text_offset).
  const std::vector<size_t>& token_offsets() const { return offsets_; }

 private:
  std::string decoded() const;
  const Tokenizer& tok_;
  std::vector<std::string> stops_;
  size_t max_stop_ = 0;
  std::vector<int64_t> context_;  // the prompt's last tokens
  std::string context_text_;
  std::vector<int64_t> ids_;
  std::vector<size_t> offsets_;
  std::string final_;  // emitted so far
  bool stopped_ = false;
  std::string last_full_;
};

}  // namespace frozenlm::serve
