// Hugging Face tokenizer.json with a BPE model, following the `tokenizers` library's pipeline:
// added tokens -> normalizer -> pre-tokenizer -> BPE -> post-processor; decoding: the declared decoders.
#pragma once
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace frozenlm {

struct GgufVocab;

// The pre-tokenizer regexes matched by hand (std::regex has no \p{L}): a Split with one of these exact strings.
namespace hf_regex {
extern const char* const kGpt2Pattern;
extern const char* const kLlama3Pattern;
extern const char* const kQwen2Pattern;
}  // namespace hf_regex

class HFTokenizer : public Tokenizer {
 public:
  explicit HFTokenizer(const std::string& path);
  // Parses tokenizer.json text; `path` is only used in error messages (fuzz target entry point).
  HFTokenizer(const std::string& json_text, const std::string& path);

  std::vector<int64_t> encode(const std::string& text, bool add_special = true) const override;
  std::vector<int64_t> encode_continuation(const std::string& text) const override;
  std::string decode(const std::vector<int64_t>& ids, bool skip_special = true) const override;
  int64_t vocab_size() const override { return int64_t(id_to_token_.size()); }
  std::string id_to_token(int64_t id) const override;
  int64_t token_to_id(const std::string& token) const override;
  int64_t bos_id() const override { return bos_id_; }
  int64_t eos_id() const override { return eos_id_; }

  // This vocabulary as GGUF metadata (tokenizer/gguf_vocab.cpp): byte-level BPE -> "gpt2" with merges,
  // SentencePiece-style BPE (byte fallback, '▁') -> "llama" with score = -id. Throws for other pipelines.
  GgufVocab to_gguf_vocab() const;

  struct Step {  // one normalizer / pre-tokenizer / decoder step
    std::string type;
    std::string a, b;  // pattern/content, replacement, prepend text, ...
    bool flag1 = false, flag2 = false;
    int64_t n1 = 0, n2 = 0;
  };

 private:
  struct AddedToken {
    std::string content, match;  // match: the content as normalised when `normalized` is set
    int64_t id;
    bool special, lstrip, rstrip, normalized;
  };
  void parse(const std::string& json_text);
  // at_start = false: the text continues other text (no Prepend normalizer, no prefix space / Metaspace prepend).
  std::string normalize(const std::string& s, bool at_start = true) const;
  std::vector<std::string> pre_tokenize(const std::string& s, bool at_start = true) const;
  std::vector<int64_t> encode_impl(const std::string& text, bool add_special, bool continuation) const;
  void bpe(const std::string& word, std::vector<int64_t>& out) const;
  void encode_plain(const std::string& text, std::vector<int64_t>& out, bool at_start = true) const;
  void split_added(const std::string& text, bool normalized_pass, std::vector<std::pair<std::string, int64_t>>& out) const;

  std::string path_;
  std::unordered_map<std::string, int64_t> vocab_;
  std::vector<std::string> id_to_token_;
  std::unordered_map<uint64_t, std::pair<int32_t, int64_t>> merges_;  // (left id, right id) -> (rank, merged id)
  int64_t unk_id_ = -1;
  bool byte_fallback_ = false, fuse_unk_ = false, ignore_merges_ = false;
  std::vector<AddedToken> added_;
  bool added_first_byte_[256] = {};  // bytes that can start an added token
  std::vector<Step> normalizers_, pre_tokenizers_, decoders_;
  std::vector<int64_t> post_prefix_, post_suffix_;  // TemplateProcessing (single sequence)
  int64_t bos_id_ = -1, eos_id_ = -1;
  mutable std::unordered_map<std::string, std::vector<int64_t>> cache_;
};

}  // namespace frozenlm
