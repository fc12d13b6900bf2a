#include "tokenizer/tokenizer.h"

#include <sys/stat.h>

#include "core/error.h"
#include "core/gguf_file.h"
#include "core/model_config.h"
#include "tokenizer/gguf_vocab.h"
#include "tokenizer/hf_tokenizer.h"
#include "tokenizer/llama2c_tokenizer.h"
#include "tokenizer/prompt_tokens.h"
#include "tokenizer/unicode.h"

namespace frozenlm {

int64_t bos_for(const ModelConfig& model, const Tokenizer& tok) { return model.bos_id >= 0 ? model.bos_id : tok.bos_id(); }

std::vector<int64_t> prompt_ids(const ModelConfig& model, const Tokenizer& tok, const std::string& text) {
  std::vector<int64_t> ids = tok.encode(text, /*add_special=*/true);
  const int64_t bos = bos_for(model, tok);
  if (bos >= 0 && (ids.empty() || ids.front() != bos)) ids.insert(ids.begin(), bos);  // as training and eval encode
  if (ids.empty()) throw Error("the prompt encodes to no tokens and the model has no BOS token: give a non-empty prompt");
  return ids;
}

std::vector<int64_t> eos_ids_for(const ModelConfig& model, const Tokenizer& tok) {
  std::vector<int64_t> eos = model.eos_ids;
  if (eos.empty() && tok.eos_id() >= 0) eos.push_back(tok.eos_id());
  return eos;
}

static bool exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}
static bool is_dir(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path) {
  if (!exists(path)) throw Error(path + ": tokenizer file not found");
  if (path.size() >= 5 && path.compare(path.size() - 5, 5, ".json") == 0) return std::make_unique<HFTokenizer>(path);
  if (is_gguf_file(path)) {  // the vocabulary in a GGUF model's (or tokenizer-only GGUF's) metadata
    const GgufFile f(path);
    return make_gguf_tokenizer(read_gguf_vocab(f.header(), path), path);
  }
  return std::make_unique<Llama2cTokenizer>(path);
}

std::string resolve_tokenizer_path(const std::string& model_path, const std::string& tokenizer_path, int64_t vocab_size) {
  if (!tokenizer_path.empty()) return tokenizer_path;
  if (is_dir(model_path)) {
    const std::string p = model_path + "/tokenizer.json";
    if (exists(p)) return p;
    if (exists(model_path + "/tokenizer.bin")) return model_path + "/tokenizer.bin";
    throw Error(p + ": not found (pass --tokenizer PATH)");
  }
  if (is_gguf_file(model_path)) return model_path;  // a GGUF model carries its tokenizer
  const std::string dir = model_path.find('/') == std::string::npos ? "." : model_path.substr(0, model_path.rfind('/'));
  for (const std::string& name : {std::string("tokenizer.bin"), "tok" + std::to_string(vocab_size) + ".bin"})
    if (exists(dir + "/" + name)) return dir + "/" + name;
  throw Error(model_path + ": no tokenizer.bin or tok" + std::to_string(vocab_size) + ".bin beside it (pass --tokenizer PATH)");
}

std::unique_ptr<Tokenizer> load_tokenizer_for_model(const std::string& model_path, const std::string& tokenizer_path,
                                                    int64_t vocab_size) {
  return load_tokenizer(resolve_tokenizer_path(model_path, tokenizer_path, vocab_size));
}

std::string StreamDecoder::push(int64_t id) {
  ids_.push_back(id);
  const std::string full = tok_.decode(ids_);
  // Hold back an incomplete character: either cut UTF-8 or the U+FFFD that a partial byte sequence decodes to.
  size_t end = unicode::complete_utf8_prefix(full);
  static const std::string kReplacement = "\xEF\xBF\xBD";
  while (end >= kReplacement.size() && full.compare(end - kReplacement.size(), kReplacement.size(), kReplacement) == 0)
    end -= kReplacement.size();
  if (end <= emitted_) return "";
  std::string out = full.substr(emitted_, end - emitted_);
  emitted_ = end;
  return out;
}

std::string StreamDecoder::flush() {
  const std::string full = tok_.decode(ids_);
  std::string out = full.size() > emitted_ ? full.substr(emitted_) : "";
  emitted_ = full.size();
  return out;
}

}  // namespace frozenlm
