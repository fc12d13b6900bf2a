// llama2.c tokenizer.bin: int32 max_token_length, then per token: float score, int32 length, bytes.
// Encoding follows run.c: a dummy-prefix space, UTF-8 characters (bytes +3 when absent), then greedy merges of the
// adjacent pair whose union has the highest score.
#pragma once
#include <string>
#include <unordered_map>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace frozenlm {

struct GgufVocab;

class Llama2cTokenizer : public Tokenizer {
 public:
  explicit Llama2cTokenizer(const std::string& path);
  std::vector<int64_t> encode(const std::string& text, bool add_special = true) const override;
  std::vector<int64_t> encode_continuation(const std::string& text) const override { return encode_impl(text, false, false); }
  std::string decode(const std::vector<int64_t>& ids, bool skip_special = true) const override;
  int64_t vocab_size() const override { return int64_t(pieces_.size()); }
  std::string id_to_token(int64_t id) const override;
  int64_t token_to_id(const std::string& token) const override;
  int64_t bos_id() const override { return 1; }
  int64_t eos_id() const override { return 2; }
  GgufVocab to_gguf_vocab() const;  // "llama" with the file's scores (tokenizer/gguf_vocab.cpp)

 private:
  std::vector<int64_t> encode_impl(const std::string& text, bool add_special, bool dummy_prefix) const;
  std::string path_;
  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::unordered_map<std::string, int64_t> index_;
};

}  // namespace frozenlm
