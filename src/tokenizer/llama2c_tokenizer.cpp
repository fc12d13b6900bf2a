#include "tokenizer/llama2c_tokenizer.h"

#include <fstream>

#include "core/error.h"
#include "tokenizer/unicode.h"

namespace frozenlm {

Llama2cTokenizer::Llama2cTokenizer(const std::string& path) : path_(path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open tokenizer");
  int32_t max_len = 0;
  if (!f.read(reinterpret_cast<char*>(&max_len), 4) || max_len <= 0 || max_len > 4096)
    throw Error(path + ": not a llama2.c tokenizer.bin (bad max_token_length header)");
  while (true) {
    float score;
    int32_t len;
    if (!f.read(reinterpret_cast<char*>(&score), 4)) break;
    if (!f.read(reinterpret_cast<char*>(&len), 4) || len < 0 || len > max_len)
      throw Error(path + ": token " + std::to_string(pieces_.size()) + ": bad length (truncated or corrupt file)");
    std::string s(len, '\0');
    if (len && !f.read(&s[0], len)) throw Error(path + ": token " + std::to_string(pieces_.size()) + ": truncated");
    index_.emplace(s, int64_t(pieces_.size()));  // first occurrence wins, as in run.c's sorted lookup
    pieces_.push_back(std::move(s));
    scores_.push_back(score);
  }
  if (pieces_.size() < 259) throw Error(path + ": only " + std::to_string(pieces_.size()) + " tokens (needs <unk>, <s>, </s> and 256 byte tokens)");
}

std::string Llama2cTokenizer::id_to_token(int64_t id) const {
  if (id < 0 || id >= int64_t(pieces_.size())) throw Error("token id " + std::to_string(id) + " is out of range for " + path_);
  return pieces_[id];
}

int64_t Llama2cTokenizer::token_to_id(const std::string& t) const {
  auto it = index_.find(t);
  return it == index_.end() ? -1 : it->second;
}

std::vector<int64_t> Llama2cTokenizer::encode(const std::string& text, bool add_special) const { return encode_impl(text, add_special, true); }

std::vector<int64_t> Llama2cTokenizer::encode_impl(const std::string& text, bool add_special, bool dummy_prefix) const {
  std::vector<int64_t> ids;
  if (add_special) ids.push_back(bos_id());
  if (text.empty()) return ids;
  std::vector<int64_t> sym;
  if (int64_t sp = token_to_id(" "); sp >= 0 && dummy_prefix) sym.push_back(sp);  // dummy prefix, as sentencepiece's add_dummy_prefix
  for (const std::string& ch : unicode::utf8_chars(text)) {
    int64_t id = token_to_id(ch);
    if (id >= 0) sym.push_back(id);
    else for (unsigned char c : ch) sym.push_back(int64_t(c) + 3);  // byte tokens <0x00>.. start at id 3
  }
  while (true) {
    float best = -1e10f;
    int64_t best_id = -1;
    size_t best_i = 0;
    for (size_t i = 0; i + 1 < sym.size(); ++i) {
      int64_t id = token_to_id(pieces_[sym[i]] + pieces_[sym[i + 1]]);
      if (id >= 0 && scores_[id] > best) { best = scores_[id]; best_id = id; best_i = i; }
    }
    if (best_id < 0) break;
    sym[best_i] = best_id;
    sym.erase(sym.begin() + best_i + 1);
  }
  ids.insert(ids.end(), sym.begin(), sym.end());
  return ids;
}

std::string Llama2cTokenizer::decode(const std::vector<int64_t>& ids, bool skip_special) const {
  std::string out;
  int64_t prev = -1;
  for (int64_t id : ids) {
    if (skip_special && (id == bos_id() || id == eos_id())) { prev = id; continue; }
    std::string piece = id_to_token(id);
    if (prev == bos_id() && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);  // run.c: strip after BOS
    int byte;
    if (unicode::parse_byte_token(piece, &byte)) piece = std::string(1, char(byte));
    out += piece;
    prev = id;
  }
  return out;
}

}  // namespace frozenlm
