// Tokenizers, written here (libsentencepiece crashes in a process that also loads LibTorch):
// Hugging Face tokenizer.json (BPE: byte-level and SentencePiece-style with byte fallback) and llama2.c tokenizer.bin.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace frozenlm {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Text -> ids; add_special adds what the tokenizer's post-processor adds (BOS for Llama).
  virtual std::vector<int64_t> encode(const std::string& text, bool add_special = true) const = 0;
  // Text that continues other text (a training target after its prompt): no special tokens, and none of the
  // start-of-text handling (SentencePiece's '▁' prefix, ByteLevel's add_prefix_space), so that prompt ids + these ids
  // are what a model generating after the prompt emits. Tokenizers without such handling: encode(text, false).
  virtual std::vector<int64_t> encode_continuation(const std::string& text) const { return encode(text, false); }
  // Ids -> text; skip_special drops special tokens (BOS/EOS/...) by id. (The `tokenizers` library skips by token
  // string, which misses normalized special tokens such as tinystories-656k's; dropping them by id is what users mean.)
  virtual std::string decode(const std::vector<int64_t>& ids, bool skip_special = true) const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual std::string id_to_token(int64_t id) const = 0;
  virtual int64_t token_to_id(const std::string& token) const = 0;  // -1 if absent
  virtual int64_t bos_id() const { return -1; }
  virtual int64_t eos_id() const { return -1; }
};

// `path` is a tokenizer.json (Hugging Face) or a llama2.c tokenizer.bin. Errors name the file and the problem.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path);

struct ModelConfig;
// The BOS id every encoded input starts with: the checkpoint's bos_token_id when it has one, else the tokenizer's
// (-1: none). One rule for training, evaluation, generation prompts, retrieval and re-ranking.
int64_t bos_for(const ModelConfig& model, const Tokenizer& tok);

// The tokenizer that goes with a model: `tokenizer_path` if given, else MODEL_DIR/tokenizer.json for a Hugging Face
// directory, else tokenizer.bin / tok<vocab>.bin next to a llama2.c checkpoint.
std::unique_ptr<Tokenizer> load_tokenizer_for_model(const std::string& model_path, const std::string& tokenizer_path,
                                                    int64_t vocab_size = 0);
// The file load_tokenizer_for_model would read (a model directory may also hold a llama2.c tokenizer.bin).
std::string resolve_tokenizer_path(const std::string& model_path, const std::string& tokenizer_path, int64_t vocab_size = 0);

// Incremental detokenizer for streaming: feed ids, get the newly completed text (never half a UTF-8 character).
class StreamDecoder {
 public:
  StreamDecoder(const Tokenizer& tok, std::vector<int64_t> prefix) : tok_(tok), ids_(std::move(prefix)) {
    emitted_ = tok_.decode(ids_).size();
  }
  std::string push(int64_t id);
  // Whatever is still held back (call once at the end).
  std::string flush();
  std::string text() const { return tok_.decode(ids_); }

 private:
  const Tokenizer& tok_;
  std::vector<int64_t> ids_;
  size_t emitted_ = 0;
};

}  // namespace frozenlm
