#include "tokenizer/gguf_vocab.h"

#include <algorithm>
#include <cstdio>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <queue>
#include <unordered_map>

#include "core/error.h"
#include "core/gguf_file.h"
#include "tokenizer/hf_tokenizer.h"
#include "tokenizer/llama2c_tokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace frozenlm {

using nlohmann::json;

namespace {

const std::string kSpace = "\xE2\x96\x81";  // '▁'

using unicode::parse_byte_token;
using unicode::replace_all;

// Splits text on whole special tokens (control, user-defined, unknown), longest match first, as llama.cpp's
// tokenizer_st_partition with parse_special: (text, -1) for plain pieces, ("", id) for tokens.
class SpecialSplitter {
 public:
  SpecialSplitter(const std::vector<std::string>& tokens, const std::vector<int32_t>& types) {
    for (size_t i = 0; i < tokens.size(); ++i)
      if ((types[i] == kTokControl || types[i] == kTokUserDefined || types[i] == kTokUnknown) && !tokens[i].empty()) {
        specials_.push_back({tokens[i], int64_t(i)});
        first_[static_cast<unsigned char>(tokens[i][0])] = true;
      }
    std::stable_sort(specials_.begin(), specials_.end(), [](auto& a, auto& b) { return a.first.size() > b.first.size(); });
  }
  std::vector<std::pair<std::string, int64_t>> split(const std::string& text) const {
    std::vector<std::pair<std::string, int64_t>> out;
    size_t start = 0, i = 0;
    while (i < text.size()) {
      const std::pair<std::string, int64_t>* hit = nullptr;
      if (first_[static_cast<unsigned char>(text[i])])
        for (const auto& s : specials_)
          if (text.compare(i, s.first.size(), s.first) == 0) { hit = &s; break; }
      if (!hit) { ++i; continue; }
      if (i > start) out.push_back({text.substr(start, i - start), -1});
      out.push_back({"", hit->second});
      start = i = i + hit->first.size();
    }
    if (start < text.size()) out.push_back({text.substr(start), -1});
    return out;
  }

 private:
  std::vector<std::pair<std::string, int64_t>> specials_;
  bool first_[256] = {};
};

// tokenizer.ggml.model = "llama": llama.cpp's SentencePiece-style tokenizer.
class GgufSpmTokenizer : public Tokenizer {
 public:
  GgufSpmTokenizer(GgufVocab v, const std::string& path) : v_(std::move(v)), path_(path), specials_(v_.tokens, v_.types) {
    for (size_t i = 0; i < v_.tokens.size(); ++i) index_[v_.tokens[i]] = int64_t(i);  // a later duplicate wins, as in llama.cpp
    if (v_.scores.empty()) v_.scores.assign(v_.tokens.size(), 0.f);
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof name, "<0x%02X>", b);
      auto it = index_.find(name);
      if (it == index_.end()) it = index_.find(std::string(1, char(b)));
      byte_id_[b] = it != index_.end() ? it->second : v_.unk;
    }
  }
  std::vector<int64_t> encode(const std::string& text, bool add_special) const override { return encode_impl(text, add_special, true); }
  std::vector<int64_t> encode_continuation(const std::string& text) const override { return encode_impl(text, false, false); }
  std::string decode(const std::vector<int64_t>& ids, bool skip_special) const override {
    std::string out;
    for (int64_t id : ids) {
      const std::string& t = v_.tokens.at(check(id));
      const int32_t type = v_.types[id];
      int byte;
      if (type == kTokControl) { if (!skip_special) out += t; }
      else if (type == kTokUnknown) out += skip_special ? "" : "\xE2\x96\x85";  // llama.cpp's '▅'
      else if (type == kTokByte && parse_byte_token(t, &byte)) out += char(byte);
      else if (type == kTokUserDefined) out += t;
      else out += replace_all(t, kSpace, " ");
    }
    if (add_space_prefix() && !out.empty() && out[0] == ' ') out.erase(0, 1);  // the prefix encode added
    return out;
  }
  int64_t vocab_size() const override { return int64_t(v_.tokens.size()); }
  std::string id_to_token(int64_t id) const override { return v_.tokens.at(check(id)); }
  int64_t token_to_id(const std::string& token) const override {
    auto it = index_.find(token);
    return it == index_.end() ? -1 : it->second;
  }
  int64_t bos_id() const override { return v_.bos; }
  int64_t eos_id() const override { return v_.eos; }
  const GgufVocab& vocab() const { return v_; }

 private:
  bool add_space_prefix() const { return v_.add_space_prefix != 0; }
  int64_t check(int64_t id) const {
    if (id < 0 || id >= vocab_size()) throw Error("token id " + std::to_string(id) + " is out of range for " + path_);
    return id;
  }
  std::vector<int64_t> encode_impl(const std::string& text, bool add_special, bool at_start) const {
    std::vector<int64_t> out;
    if (add_special && v_.add_bos != 0 && v_.bos >= 0) out.push_back(v_.bos);
    bool prev_special = at_start;  // a space prefix at the start and after each special token
    for (const auto& [piece, id] : specials_.split(text)) {
      if (id >= 0) { out.push_back(id); prev_special = true; continue; }
      std::string s = (add_space_prefix() && prev_special ? " " : "") + piece;
      spm(replace_all(s, " ", kSpace), out);
      prev_special = false;
    }
    if (add_special && v_.add_eos == 1 && v_.eos >= 0) out.push_back(v_.eos);
    return out;
  }

  // llama.cpp's llm_tokenizer_spm: symbols are UTF-8 characters (length from the lead byte); merge the adjacent pair
  // whose union is the highest-scoring token (leftmost on ties) until none is a token; then each symbol is its token,
  // or is split back along the merges that built it, or falls back to byte tokens.
  struct Symbol {
    size_t start, n;
    int prev, next;
  };
  struct Bigram {
    int left, right;
    float score;
    size_t size;
    bool operator<(const Bigram& o) const { return score < o.score || (score == o.score && left > o.left); }
  };
  void spm(const std::string& text, std::vector<int64_t>& out) const {
    static const size_t kLen[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    std::vector<Symbol> sym;
    for (size_t off = 0; off < text.size();) {
      const size_t n = std::min(kLen[static_cast<unsigned char>(text[off]) >> 4], text.size() - off);
      sym.push_back({off, n, int(sym.size()) - 1, off + n == text.size() ? -1 : int(sym.size()) + 1});
      off += n;
    }
    std::priority_queue<Bigram> queue;
    std::map<std::string, std::pair<int, int>> rev_merge;
    auto try_add = [&](int l, int r) {
      if (l < 0 || r < 0) return;
      const std::string s = text.substr(sym[l].start, sym[l].n + sym[r].n);
      auto it = index_.find(s);
      if (it == index_.end()) return;
      queue.push({l, r, v_.scores[it->second], s.size()});
      rev_merge[s] = {l, r};
    };
    for (int i = 1; i < int(sym.size()); ++i) try_add(i - 1, i);
    while (!queue.empty()) {
      const Bigram b = queue.top();
      queue.pop();
      Symbol &L = sym[b.left], &R = sym[b.right];
      if (L.n == 0 || R.n == 0 || L.n + R.n != b.size) continue;  // outdated
      L.n += R.n;
      R.n = 0;
      L.next = R.next;
      if (R.next >= 0) sym[R.next].prev = b.left;
      try_add(L.prev, b.left);
      try_add(b.left, L.next);
    }
    std::function<void(int)> resegment = [&](int i) {
      const std::string s = text.substr(sym[i].start, sym[i].n);
      if (auto it = index_.find(s); it != index_.end()) return out.push_back(it->second);
      auto m = rev_merge.find(s);
      if (m == rev_merge.end()) {
        for (unsigned char c : s) {
          if (byte_id_[c] < 0) throw Error(path_ + ": cannot encode byte " + std::to_string(c) + ": no <0xXX> token and no unknown token");
          out.push_back(byte_id_[c]);
        }
        return;
      }
      resegment(m->second.first);
      resegment(m->second.second);
    };
    for (int i = sym.empty() ? -1 : 0; i != -1; i = sym[i].next) resegment(i);
  }

  GgufVocab v_;
  std::string path_;
  SpecialSplitter specials_;
  std::unordered_map<std::string, int64_t> index_;
  int64_t byte_id_[256];
};

// tokenizer.ggml.model = "gpt2": byte-level BPE, through the Hugging Face pipeline built from the GGUF vocabulary.
std::string hf_json_for(const GgufVocab& v, const std::string& path) {
  json vocab = json::object(), added = json::array();
  for (size_t i = 0; i < v.tokens.size(); ++i) {
    if (v.types[i] == kTokControl || v.types[i] == kTokUserDefined || v.types[i] == kTokUnknown)
      added.push_back({{"id", i}, {"content", v.tokens[i]}, {"special", v.types[i] != kTokUserDefined}, {"lstrip", false},
                       {"rstrip", false}, {"normalized", false}, {"single_word", false}});
    if (!vocab.contains(v.tokens[i])) vocab[v.tokens[i]] = i;
  }
  json pre;
  auto split = [](const char* re) { return json{{"type", "Split"}, {"pattern", {{"Regex", re}}}, {"behavior", "Isolated"}, {"invert", false}}; };
  const json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}};
  if (v.pre.empty() || v.pre == "gpt-2" || v.pre == "gpt2" || v.pre == "default")
    pre = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", true}};
  else if (v.pre == "llama-bpe" || v.pre == "llama3")
    pre = {{"type", "Sequence"}, {"pretokenizers", {split(hf_regex::kLlama3Pattern), byte_level}}};
  else if (v.pre == "qwen2")
    pre = {{"type", "Sequence"}, {"pretokenizers", {split(hf_regex::kQwen2Pattern), byte_level}}};
  else
    throw Error(path + ": GGUF tokenizer.ggml.pre '" + v.pre + "' is not supported (gpt-2, llama-bpe, qwen2)");
  json post = nullptr;
  if (v.add_bos == 1 && v.bos >= 0)
    post = {{"type", "TemplateProcessing"},
            {"single", {{{"SpecialToken", {{"id", "bos"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
            {"special_tokens", {{"bos", {{"id", "bos"}, {"ids", {v.bos}}, {"tokens", {v.tokens[v.bos]}}}}}}};
  json j = {{"version", "1.0"}, {"added_tokens", added}, {"normalizer", nullptr}, {"pre_tokenizer", pre},
            {"post_processor", post}, {"decoder", {{"type", "ByteLevel"}}},
            {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", v.merges}, {"byte_fallback", false}}}};
  return j.dump();
}

class GgufBpeTokenizer : public HFTokenizer {
 public:
  GgufBpeTokenizer(GgufVocab v, const std::string& path) : HFTokenizer(hf_json_for(v, path), path), v_(std::move(v)) {}
  int64_t bos_id() const override { return v_.bos; }
  int64_t eos_id() const override { return v_.eos; }
  const GgufVocab& vocab() const { return v_; }

 private:
  GgufVocab v_;
};

}  // namespace

GgufVocab read_gguf_vocab(const GgufHeader& h, const std::string& path) {
  GgufVocab v;
  v.model = h.get_string("tokenizer.ggml.model", path);
  if (v.model != "llama" && v.model != "gpt2")
    throw Error(path + ": GGUF tokenizer.ggml.model '" + v.model + "' is not supported (llama, gpt2)");
  auto array = [&](const char* key, GgufValueType elem, bool required) -> const GgufValue* {
    const GgufValue* a = h.find(key);
    if (!a) {
      if (required) throw Error(path + ": GGUF metadata key '" + std::string(key) + "' is missing");
      return nullptr;
    }
    const bool ok = a->is_array() && (elem == GgufValueType::STRING ? a->elem == elem : a->elem != GgufValueType::STRING);
    if (!ok) throw Error(path + ": GGUF metadata '" + std::string(key) + "' must be an array of " + (elem == GgufValueType::STRING ? "strings" : "numbers"));
    return a;
  };
  v.tokens = array("tokenizer.ggml.tokens", GgufValueType::STRING, true)->strs;
  const size_t n = v.tokens.size();
  if (n == 0) throw Error(path + ": GGUF tokenizer.ggml.tokens is empty");
  if (const GgufValue* s = array("tokenizer.ggml.scores", GgufValueType::FLOAT32, false)) {
    if (s->nums.size() != n) throw Error(path + ": GGUF tokenizer.ggml.scores has " + std::to_string(s->nums.size()) + " entries for " + std::to_string(n) + " tokens");
    for (double x : s->nums) v.scores.push_back(float(x));
  }
  if (const GgufValue* t = array("tokenizer.ggml.token_type", GgufValueType::INT32, false)) {
    if (t->nums.size() != n) throw Error(path + ": GGUF tokenizer.ggml.token_type has " + std::to_string(t->nums.size()) + " entries for " + std::to_string(n) + " tokens");
    for (double x : t->nums) {
      if (!(x >= 0 && x <= 6)) throw Error(path + ": GGUF tokenizer.ggml.token_type holds " + std::to_string(x) + " (0 to 6)");
      v.types.push_back(int32_t(x) == 0 ? kTokNormal : int32_t(x));
    }
  } else {
    v.types.assign(n, kTokNormal);
  }
  if (v.model == "gpt2") {
    v.merges = array("tokenizer.ggml.merges", GgufValueType::STRING, true)->strs;
    if (h.find("tokenizer.ggml.pre")) v.pre = h.get_string("tokenizer.ggml.pre", path);
    // Byte-level BPE spells every byte as a character: its tokens and merges are UTF-8 text (found by fuzz_gguf).
    for (size_t i = 0; i < n; ++i)
      if (!unicode::is_valid_utf8(v.tokens[i])) throw Error(path + ": GGUF tokenizer.ggml.tokens[" + std::to_string(i) + "] is not valid UTF-8");
    for (size_t i = 0; i < v.merges.size(); ++i)
      if (!unicode::is_valid_utf8(v.merges[i])) throw Error(path + ": GGUF tokenizer.ggml.merges[" + std::to_string(i) + "] is not valid UTF-8");
  }
  auto id = [&](const char* key) -> int64_t {
    const int64_t x = h.get_int(key, -1, path);
    if (x != -1 && (x < 0 || x >= int64_t(n)))
      throw Error(path + ": GGUF " + std::string(key) + " " + std::to_string(x) + " is not a token id (0 to " + std::to_string(n - 1) + ")");
    return x;
  };
  v.unk = id("tokenizer.ggml.unknown_token_id");
  v.bos = id("tokenizer.ggml.bos_token_id");
  v.eos = id("tokenizer.ggml.eos_token_id");
  v.pad = id("tokenizer.ggml.padding_token_id");
  auto flag = [&](const char* key) { return h.find(key) ? int(h.get_bool(key, false, path)) : -1; };
  v.add_bos = flag("tokenizer.ggml.add_bos_token");
  v.add_eos = flag("tokenizer.ggml.add_eos_token");
  v.add_space_prefix = flag("tokenizer.ggml.add_space_prefix");
  return v;
}

void write_gguf_vocab(GgufWriter& w, const GgufVocab& v0, int64_t model_vocab) {
  GgufVocab v = v0;
  if (int64_t(v.tokens.size()) > model_vocab)
    throw Error("export: the tokenizer has " + std::to_string(v.tokens.size()) + " tokens, the model only " + std::to_string(model_vocab));
  for (int64_t i = int64_t(v.tokens.size()); i < model_vocab; ++i) {  // embedding rows without a token
    v.tokens.push_back("[PAD" + std::to_string(i) + "]");
    v.types.push_back(kTokUnused);
    if (!v.scores.empty()) v.scores.push_back(0.f);
  }
  w.add_string("tokenizer.ggml.model", v.model);
  if (!v.pre.empty()) w.add_string("tokenizer.ggml.pre", v.pre);
  w.add_strings("tokenizer.ggml.tokens", v.tokens);
  if (!v.scores.empty()) w.add_f32s("tokenizer.ggml.scores", v.scores);
  w.add_i32s("tokenizer.ggml.token_type", v.types);
  if (v.model == "gpt2") w.add_strings("tokenizer.ggml.merges", v.merges);
  if (v.unk >= 0) w.add_u32("tokenizer.ggml.unknown_token_id", uint32_t(v.unk));
  if (v.bos >= 0) w.add_u32("tokenizer.ggml.bos_token_id", uint32_t(v.bos));
  if (v.eos >= 0) w.add_u32("tokenizer.ggml.eos_token_id", uint32_t(v.eos));
  if (v.pad >= 0) w.add_u32("tokenizer.ggml.padding_token_id", uint32_t(v.pad));
  if (v.add_bos >= 0) w.add_bool("tokenizer.ggml.add_bos_token", v.add_bos == 1);
  if (v.add_eos >= 0) w.add_bool("tokenizer.ggml.add_eos_token", v.add_eos == 1);
  if (v.add_space_prefix >= 0) w.add_bool("tokenizer.ggml.add_space_prefix", v.add_space_prefix == 1);
}

std::unique_ptr<Tokenizer> make_gguf_tokenizer(const GgufVocab& v, const std::string& path) {
  if (v.model == "llama") return std::make_unique<GgufSpmTokenizer>(v, path);
  return std::make_unique<GgufBpeTokenizer>(v, path);
}

GgufVocab HFTokenizer::to_gguf_vocab() const {
  GgufVocab v;
  bool byte_level = false, spm = byte_fallback_;
  std::string pre = "gpt-2";
  for (const Step& s : pre_tokenizers_) {
    if (s.type == "ByteLevel") byte_level = true;
    if (s.type == "Metaspace") spm = true;
    if (s.type == "Split" && s.n2 == 1) pre = s.n1 == 0 ? "gpt-2" : s.n1 == 1 ? "llama-bpe" : "qwen2";  // RegexKind order
  }
  for (const Step& s : normalizers_)
    if (s.type == "Replace" && s.b == kSpace) spm = true;
  if (byte_level == spm)
    throw Error(path_ + ": export --format gguf: this tokenizer is neither byte-level BPE nor SentencePiece-style BPE");
  v.model = byte_level ? "gpt2" : "llama";
  if (byte_level) v.pre = pre;
  v.tokens = id_to_token_;
  v.types.assign(v.tokens.size(), kTokNormal);
  for (const AddedToken& a : added_) {
    v.tokens[a.id] = a.content;
    v.types[a.id] = a.special ? kTokControl : kTokUserDefined;
  }
  for (size_t i = 0; i < v.tokens.size(); ++i) {
    int byte;
    if (v.tokens[i].empty()) { v.tokens[i] = "[PAD" + std::to_string(i) + "]"; v.types[i] = kTokUnused; }
    else if (!byte_level && v.types[i] == kTokNormal && parse_byte_token(v.tokens[i], &byte)) v.types[i] = kTokByte;
  }
  if (unk_id_ >= 0) {
    v.unk = unk_id_;
    v.types[unk_id_] = kTokUnknown;
  }
  if (!byte_level) {  // llama.cpp's converter for SentencePiece-style BPE without a .model file: score = -id
    for (size_t i = 0; i < v.tokens.size(); ++i) v.scores.push_back(float(-int64_t(i)));  // 0, not -0, for id 0
  } else {
    std::vector<std::pair<int32_t, uint64_t>> ranked;
    for (const auto& [key, rm] : merges_) ranked.push_back({rm.first, key});
    std::sort(ranked.begin(), ranked.end());
    for (const auto& [rank, key] : ranked) v.merges.push_back(id_to_token_[key >> 32] + " " + id_to_token_[key & 0xffffffffu]);
  }
  v.bos = bos_id_;
  v.eos = eos_id_;
  const bool adds_bos = !post_prefix_.empty();
  if (byte_level && adds_bos) v.add_bos = 1;   // llama.cpp's BPE default is no BOS
  if (!byte_level && !adds_bos) v.add_bos = 0; // its SPM default is BOS
  return v;
}

GgufVocab Llama2cTokenizer::to_gguf_vocab() const {
  GgufVocab v;
  v.model = "llama";
  v.scores = scores_;
  for (size_t i = 0; i < pieces_.size(); ++i) {
    int byte;
    const bool is_byte = parse_byte_token(pieces_[i], &byte);
    v.tokens.push_back(is_byte ? pieces_[i] : replace_all(pieces_[i], " ", kSpace));  // run.c's pieces hold ' ' for '▁'
    v.types.push_back(i == 0 ? kTokUnknown : (i == 1 || i == 2) ? kTokControl : is_byte ? kTokByte : kTokNormal);
  }
  v.unk = 0;
  v.bos = bos_id();
  v.eos = eos_id();
  return v;
}

GgufVocab gguf_vocab_of(const Tokenizer& tok) {
  if (auto* g = dynamic_cast<const GgufSpmTokenizer*>(&tok)) return g->vocab();
  if (auto* g = dynamic_cast<const GgufBpeTokenizer*>(&tok)) return g->vocab();
  if (auto* h = dynamic_cast<const HFTokenizer*>(&tok)) return h->to_gguf_vocab();
  if (auto* l = dynamic_cast<const Llama2cTokenizer*>(&tok)) return l->to_gguf_vocab();
  throw Error("export --format gguf: this tokenizer has no GGUF form");
}

}  // namespace frozenlm
