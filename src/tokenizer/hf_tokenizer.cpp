#include "tokenizer/hf_tokenizer.h"

#include <cstdio>
#include <fstream>
#include <functional>
#include <tuple>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <sstream>

#include "core/error.h"
#include "tokenizer/unicode.h"

namespace frozenlm {

using nlohmann::json;
namespace uc = unicode;

namespace hf_regex {
const char* const kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char* const kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
}  // namespace hf_regex

namespace {

std::mutex g_cache_mutex;

using hf_regex::kGpt2Pattern;
using hf_regex::kLlama3Pattern;
using hf_regex::kQwen2Pattern;

enum class RegexKind { Gpt2, Llama3, Qwen2 };

bool is_other(uint32_t c) { return !uc::is_whitespace(c) && !uc::is_letter(c) && !uc::is_number(c); }
bool is_nl(uint32_t c) { return c == '\r' || c == '\n'; }
uint32_t lower_ascii(uint32_t c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

// Length of the contraction ('s 't 're 've 'm 'll 'd) at i, or 0.
size_t contraction(const std::vector<uint32_t>& s, size_t i, bool ignore_case) {
  if (s[i] != '\'' || i + 1 >= s.size()) return 0;
  auto c = [&](size_t k) { return k < s.size() ? (ignore_case ? lower_ascii(s[k]) : s[k]) : 0u; };
  const uint32_t a = c(i + 1), b = c(i + 2);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  return 0;
}

// Leftmost-first match of the pattern at i (every codepoint is covered by some alternative): returns its length.
size_t match_at(RegexKind kind, const std::vector<uint32_t>& s, size_t i) {
  const size_t n = s.size();
  auto run = [&](size_t j, bool (*pred)(uint32_t)) { while (j < n && pred(s[j])) ++j; return j; };
  auto L = [](uint32_t c) { return uc::is_letter(c); };
  auto N = [](uint32_t c) { return uc::is_number(c); };
  auto W = [](uint32_t c) { return uc::is_whitespace(c); };
  if (size_t c = contraction(s, i, kind != RegexKind::Gpt2)) return c;
  if (kind == RegexKind::Gpt2) {
    const size_t j = s[i] == ' ' ? i + 1 : i;
    if (j < n && L(s[j])) return run(j, +L) - i;
    if (j < n && N(s[j])) return run(j, +N) - i;
    if (j < n && is_other(s[j])) return run(j, is_other) - i;
  } else {
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if (!is_nl(s[i]) && !L(s[i]) && !N(s[i]) && i + 1 < n && L(s[i + 1])) return run(i + 1, +L) - i;
    if (L(s[i])) return run(i, +L) - i;
    if (N(s[i])) {  // \p{N}{1,3} or \p{N}
      const size_t cap = kind == RegexKind::Llama3 ? 3 : 1;
      size_t j = i;
      while (j < n && j - i < cap && N(s[j])) ++j;
      return j - i;
    }
    //  ?[^\s\p{L}\p{N}]+[\r\n]*
    const size_t j = s[i] == ' ' ? i + 1 : i;
    if (j < n && is_other(s[j])) return run(run(j, is_other), is_nl) - i;
    // \s*[\r\n]+ : the whitespace run up to and including its last newline
    if (W(s[i])) {
      const size_t end = run(i, +W);
      for (size_t k = end; k-- > i;)
        if (is_nl(s[k])) return k + 1 - i;
    }
  }
  if (W(s[i])) {
    const size_t end = run(i, +W);
    if (end == n || end - i == 1) return end - i;  // \s+(?!\S) needs ≥ 2 before a non-space; else \s+
    return end - 1 - i;
  }
  return 1;
}

std::vector<std::string> split_to_strings(const std::vector<uint32_t>& cps, const std::vector<std::pair<size_t, size_t>>& spans) {
  std::vector<std::string> out;
  for (auto [a, b] : spans)
    if (b > a) out.push_back(uc::encode_utf8(std::vector<uint32_t>(cps.begin() + a, cps.begin() + b)));
  return out;
}

// Applies a Split behaviour given the match spans over the codepoints.
std::vector<std::string> apply_split(const std::vector<uint32_t>& cps, const std::vector<std::pair<size_t, size_t>>& matches,
                                     const std::string& behavior, const std::string& where) {
  std::vector<std::pair<size_t, size_t>> pieces;  // (begin, end) in order
  std::vector<bool> is_match;
  size_t prev = 0;
  for (auto [a, b] : matches) {
    if (a > prev) { pieces.push_back({prev, a}); is_match.push_back(false); }
    pieces.push_back({a, b});
    is_match.push_back(true);
    prev = b;
  }
  if (prev < cps.size()) { pieces.push_back({prev, cps.size()}); is_match.push_back(false); }
  std::vector<std::pair<size_t, size_t>> out;
  if (behavior == "Isolated") {
    out = pieces;
  } else if (behavior == "Removed") {
    for (size_t k = 0; k < pieces.size(); ++k) if (!is_match[k]) out.push_back(pieces[k]);
  } else if (behavior == "MergedWithPrevious") {
    for (size_t k = 0; k < pieces.size(); ++k) {
      if (is_match[k] && !out.empty()) out.back().second = pieces[k].second;
      else out.push_back(pieces[k]);
    }
  } else if (behavior == "MergedWithNext") {
    bool pending = false;
    for (size_t k = 0; k < pieces.size(); ++k) {
      if (pending) { out.back().second = pieces[k].second; pending = false; }
      else out.push_back(pieces[k]);
      if (is_match[k]) pending = true;
    }
  } else if (behavior == "Contiguous") {
    for (size_t k = 0; k < pieces.size(); ++k) {
      if (is_match[k] && k > 0 && is_match[k - 1] && !out.empty()) out.back().second = pieces[k].second;
      else out.push_back(pieces[k]);
    }
  } else {
    throw Error(where + ": unsupported Split behavior '" + behavior + "'");
  }
  return split_to_strings(cps, out);
}

std::string pattern_string(const json& p, const std::string& where) {
  if (p.is_object() && p.contains("String") && p["String"].is_string()) return p["String"].get<std::string>();
  if (p.is_string()) return p.get<std::string>();
  throw Error(where + ": only literal String patterns are supported here");
}

uint64_t pair_key(int64_t a, int64_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

}  // namespace

HFTokenizer::HFTokenizer(const std::string& path) : path_(path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open tokenizer");
  std::stringstream ss;
  ss << f.rdbuf();
  parse(ss.str());
}

HFTokenizer::HFTokenizer(const std::string& json_text, const std::string& path) : path_(path) { parse(json_text); }

void HFTokenizer::parse(const std::string& text) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw Error(path_ + ": not valid JSON: " + e.what());
  }
  const std::string& P = path_;
  auto str = [&](const json& o, const char* k, const std::string& where) -> std::string {
    if (!o.contains(k) || !o[k].is_string()) throw Error(P + ": " + where + ": missing string field '" + k + "'");
    return o[k].get<std::string>();
  };
  auto boolean = [&](const json& o, const char* k, bool dflt) { return o.contains(k) && o[k].is_boolean() ? o[k].get<bool>() : dflt; };
  // An optional integer field in [lo, hi] (a float or a huge number is an error, not an undefined conversion).
  auto integer = [&](const json& o, const char* k, int64_t dflt, int64_t lo, int64_t hi, const std::string& where) -> int64_t {
    if (!o.contains(k) || o[k].is_null()) return dflt;
    if (!o[k].is_number_integer() || o[k].get<int64_t>() < lo || o[k].get<int64_t>() > hi)
      throw Error(P + ": " + where + ": '" + k + "' must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                  "], got " + o[k].dump().substr(0, 40));
    return o[k].get<int64_t>();
  };
  auto token_id = [&](const json& x, const std::string& where) -> int64_t {
    if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() > (1 << 24))
      throw Error(P + ": " + where + ": token id must be an integer in [0, 2^24], got " + x.dump().substr(0, 40));
    return x.get<int64_t>();
  };
  if (!j.is_object()) throw Error(P + ": not a JSON object");
  if (!j.contains("model") || !j["model"].is_object()) throw Error(P + ": missing 'model' object");

  // ---- model ----
  const json& m = j["model"];
  const std::string mtype = m.contains("type") && m["type"].is_string() ? m["type"].get<std::string>() : "BPE";
  if (mtype != "BPE") throw Error(P + ": model.type '" + mtype + "' is not supported (only BPE)");
  if (!m.contains("vocab") || !m["vocab"].is_object()) throw Error(P + ": model.vocab must be an object {token: id}");
  for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (m.contains(k) && m[k].is_string() && !m[k].get<std::string>().empty())
      throw Error(P + ": model." + k + " is not supported");
  int64_t max_id = -1;
  for (auto it = m["vocab"].begin(); it != m["vocab"].end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 || it.value().get<int64_t>() > (1 << 24))
      throw Error(P + ": model.vocab['" + it.key() + "'] is not a valid id");
    vocab_[it.key()] = it.value().get<int64_t>();
    max_id = std::max(max_id, it.value().get<int64_t>());
  }
  if (j.contains("added_tokens") && j["added_tokens"].is_array())
    for (const json& a : j["added_tokens"])
      if (a.is_object() && a.contains("id") && a["id"].is_number_integer() && a["id"].get<int64_t>() >= 0 && a["id"].get<int64_t>() <= (1 << 24))
        max_id = std::max(max_id, a["id"].get<int64_t>());
  id_to_token_.assign(max_id + 1, "");
  for (auto& [t, id] : vocab_) id_to_token_[id] = t;
  byte_fallback_ = boolean(m, "byte_fallback", false);
  fuse_unk_ = boolean(m, "fuse_unk", false);
  ignore_merges_ = boolean(m, "ignore_merges", false);
  if (m.contains("unk_token") && m["unk_token"].is_string()) {
    auto it = vocab_.find(m["unk_token"].get<std::string>());
    if (it == vocab_.end()) throw Error(P + ": model.unk_token '" + m["unk_token"].get<std::string>() + "' is not in the vocabulary");
    unk_id_ = it->second;
  }
  if (m.contains("merges")) {
    if (!m["merges"].is_array()) throw Error(P + ": model.merges must be an array");
    int32_t rank = 0;
    for (const json& mg : m["merges"]) {
      std::string a, b;
      if (mg.is_string()) {
        const std::string s = mg.get<std::string>();
        const size_t sp = s.find(' ', 1);
        if (sp == std::string::npos) throw Error(P + ": merge #" + std::to_string(rank) + " '" + s + "' is not 'a b'");
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (mg.is_array() && mg.size() == 2 && mg[0].is_string() && mg[1].is_string()) {
        a = mg[0].get<std::string>();
        b = mg[1].get<std::string>();
      } else {
        throw Error(P + ": merge #" + std::to_string(rank) + " is neither \"a b\" nor [a, b]");
      }
      auto ia = vocab_.find(a), ib = vocab_.find(b), iab = vocab_.find(a + b);
      if (ia == vocab_.end() || ib == vocab_.end() || iab == vocab_.end())
        throw Error(P + ": merge #" + std::to_string(rank) + " ('" + a + "', '" + b + "') uses a token missing from the vocabulary");
      merges_.emplace(pair_key(ia->second, ib->second), std::make_pair(rank, iab->second));
      ++rank;
    }
  }

  // ---- normalizer (before added tokens: normalized added tokens are matched in normalized form) ----
  std::function<void(const json&, std::vector<Step>&, const std::string&)> parse_steps;
  parse_steps = [&](const json& n, std::vector<Step>& out, const std::string& kind) {
    if (n.is_null()) return;
    if (!n.is_object()) throw Error(P + ": " + kind + " must be an object or null");
    const std::string t = str(n, "type", kind);
    const std::string where = kind + " " + t;
    Step s;
    s.type = t;
    if (t == "Sequence") {
      const char* key = kind == "normalizer" ? "normalizers" : kind == "pre_tokenizer" ? "pretokenizers" : kind == "decoder" ? "decoders" : "processors";
      if (!n.contains(key) || !n[key].is_array()) throw Error(P + ": " + where + ": missing array '" + key + "'");
      for (const json& c : n[key]) parse_steps(c, out, kind);
      return;
    }
    if (kind == "normalizer") {
      if (t == "Prepend") s.a = str(n, "prepend", where);
      else if (t == "Replace") { s.a = pattern_string(n.value("pattern", json()), P + ": " + where); s.b = str(n, "content", where); }
      else if (t == "Lowercase" || t == "NFC") {}
      else if (t == "Strip") { s.flag1 = boolean(n, "strip_left", true); s.flag2 = boolean(n, "strip_right", true); }
      else throw Error(P + ": normalizer type '" + t + "' is not supported (Sequence, Prepend, Replace, Lowercase, NFC, Strip)");
    } else if (kind == "pre_tokenizer") {
      if (t == "ByteLevel") { s.flag1 = boolean(n, "add_prefix_space", true); s.flag2 = boolean(n, "use_regex", true); }
      else if (t == "Split") {
        const json& p = n.value("pattern", json());
        if (p.is_object() && p.contains("Regex") && p["Regex"].is_string()) {
          const std::string r = p["Regex"].get<std::string>();
          if (r == kGpt2Pattern) s.n1 = int64_t(RegexKind::Gpt2);
          else if (r == kLlama3Pattern) s.n1 = int64_t(RegexKind::Llama3);
          else if (r == kQwen2Pattern) s.n1 = int64_t(RegexKind::Qwen2);
          else throw Error(P + ": pre_tokenizer Split: unsupported regex " + json(r).dump() + " (supported: the GPT-2, Llama-3 and Qwen2 patterns)");
          s.n2 = 1;  // regex
        } else {
          s.a = pattern_string(p, P + ": " + where);
        }
        s.b = n.value("behavior", std::string("Isolated"));
        s.flag1 = boolean(n, "invert", false);
        if (s.flag1) throw Error(P + ": pre_tokenizer Split with invert=true is not supported");
      } else if (t == "Metaspace") {
        s.a = n.value("replacement", std::string("\xE2\x96\x81"));
        std::string scheme = n.value("prepend_scheme", std::string(boolean(n, "add_prefix_space", true) ? "always" : "never"));
        s.n1 = scheme == "always" ? 0 : scheme == "first" ? 1 : 2;
        s.flag1 = boolean(n, "split", true);
      } else if (t == "Digits") s.flag1 = boolean(n, "individual_digits", false);
      else if (t == "WhitespaceSplit") {}
      else throw Error(P + ": pre_tokenizer type '" + t + "' is not supported (Sequence, ByteLevel, Split, Metaspace, Digits, WhitespaceSplit)");
    } else if (kind == "decoder") {
      if (t == "Replace") { s.a = pattern_string(n.value("pattern", json()), P + ": " + where); s.b = str(n, "content", where); }
      else if (t == "ByteFallback" || t == "Fuse" || t == "ByteLevel") {}
      else if (t == "Strip") { s.a = str(n, "content", where); s.n1 = integer(n, "start", 0, 0, 1 << 20, where); s.n2 = integer(n, "stop", 0, 0, 1 << 20, where); }
      else if (t == "Metaspace") {
        s.a = n.value("replacement", std::string("\xE2\x96\x81"));
        std::string scheme = n.value("prepend_scheme", std::string(boolean(n, "add_prefix_space", true) ? "always" : "never"));
        s.n1 = scheme == "never" ? 2 : 0;
      } else throw Error(P + ": decoder type '" + t + "' is not supported (Sequence, Replace, ByteFallback, Fuse, Strip, ByteLevel, Metaspace)");
    }
    out.push_back(s);
  };
  parse_steps(j.value("normalizer", json()), normalizers_, "normalizer");
  parse_steps(j.value("pre_tokenizer", json()), pre_tokenizers_, "pre_tokenizer");
  parse_steps(j.value("decoder", json()), decoders_, "decoder");

  // ---- added tokens ----
  if (j.contains("added_tokens") && !j["added_tokens"].is_null()) {
    if (!j["added_tokens"].is_array()) throw Error(P + ": added_tokens must be an array");
    for (const json& a : j["added_tokens"]) {
      if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() || a["id"].get<int64_t>() < 0 ||
          a["id"].get<int64_t>() > (1 << 24))
        throw Error(P + ": added_tokens entry without a valid 'id'");
      AddedToken t;
      t.id = a["id"].get<int64_t>();
      t.content = str(a, "content", "added_tokens");
      if (t.content.empty()) throw Error(P + ": added token " + std::to_string(t.id) + " has empty content");
      t.special = boolean(a, "special", false);
      t.lstrip = boolean(a, "lstrip", false);
      t.rstrip = boolean(a, "rstrip", false);
      t.normalized = boolean(a, "normalized", !t.special);
      t.match = t.normalized ? normalize(t.content) : t.content;
      if (t.match.empty()) t.match = t.content;  // a normalizer that erases it entirely: match it raw
      // As `tokenizers` does, a normalized added token reads back in its normalized form (e.g. '▁<unk>').
      id_to_token_[t.id] = t.match;
      added_first_byte_[static_cast<unsigned char>(t.match[0])] = true;
      added_.push_back(t);
    }
  }

  // ---- post-processor ----
  std::function<void(const json&)> parse_post = [&](const json& pp) {
    if (pp.is_null()) return;
    if (!pp.is_object()) throw Error(P + ": post_processor must be an object or null");
    const std::string t = str(pp, "type", "post_processor");
    if (t == "Sequence") {
      for (const json& c : pp.value("processors", json::array())) parse_post(c);
    } else if (t == "ByteLevel") {
    } else if (t == "TemplateProcessing") {
      const json& single = pp.value("single", json::array());
      const json& specials = pp.value("special_tokens", json::object());
      bool seen_seq = false;
      for (const json& item : single) {
        if (item.contains("Sequence")) { seen_seq = true; continue; }
        if (!item.contains("SpecialToken")) throw Error(P + ": post_processor TemplateProcessing: unknown item " + item.dump());
        const std::string id = str(item["SpecialToken"], "id", "post_processor SpecialToken");
        if (!specials.contains(id) || !specials[id].contains("ids")) throw Error(P + ": post_processor: special token '" + id + "' has no ids");
        if (!specials[id]["ids"].is_array()) throw Error(P + ": post_processor: special token '" + id + "': ids must be a list");
        for (const json& x : specials[id]["ids"]) (seen_seq ? post_suffix_ : post_prefix_).push_back(token_id(x, "post_processor ids"));
      }
    } else if (t == "BertProcessing" || t == "RobertaProcessing") {
      for (const char* k : {"cls", "sep"})
        if (!pp.contains(k) || !pp[k].is_array() || pp[k].size() != 2) throw Error(P + ": post_processor " + t + ": '" + k + "' must be [token, id]");
      post_prefix_.push_back(token_id(pp["cls"][1], "post_processor cls"));
      post_suffix_.push_back(token_id(pp["sep"][1], "post_processor sep"));
    } else {
      throw Error(P + ": post_processor type '" + t + "' is not supported (TemplateProcessing, ByteLevel, Sequence, Bert/RobertaProcessing)");
    }
  };
  parse_post(j.value("post_processor", json()));
  for (int64_t id : post_prefix_) if (id < 0 || id >= int64_t(id_to_token_.size())) throw Error(P + ": post_processor id " + std::to_string(id) + " out of range");
  for (int64_t id : post_suffix_) if (id < 0 || id >= int64_t(id_to_token_.size())) throw Error(P + ": post_processor id " + std::to_string(id) + " out of range");

  if (!post_prefix_.empty()) bos_id_ = post_prefix_.front();
  for (const char* name : {"<s>", "<|begin_of_text|>", "<|start_story|>", "<|endoftext|>"})
    if (bos_id_ < 0) bos_id_ = token_to_id(name);
  for (const char* name : {"</s>", "<|end_of_text|>", "<|end_story|>", "<|endoftext|>", "<|im_end|>", "<|eot_id|>"})
    if (eos_id_ < 0) eos_id_ = token_to_id(name);
}

std::string HFTokenizer::id_to_token(int64_t id) const {
  if (id < 0 || id >= int64_t(id_to_token_.size())) throw Error("token id " + std::to_string(id) + " is out of range for " + path_);
  return id_to_token_[id];
}

int64_t HFTokenizer::token_to_id(const std::string& token) const {
  for (auto& a : added_) if (a.content == token) return a.id;
  auto it = vocab_.find(token);
  return it == vocab_.end() ? -1 : it->second;
}

std::string HFTokenizer::normalize(const std::string& in, bool at_start) const {
  std::string s = in;
  // Real normalizers grow a text by a few bytes per character ('▁' for ' ' is 3×); a chain of Replace steps whose
  // content contains the pattern grows it exponentially (found by fuzz_tokenizer_json): refuse instead of hanging.
  const size_t limit = 16 * in.size() + 4096;
  for (const Step& st : normalizers_) {
    if (s.size() > limit)
      throw Error(path_ + ": the normalizer grows a " + std::to_string(in.size()) + "-byte text beyond " + std::to_string(limit) +
                  " bytes (Replace steps that re-insert their own pattern?)");
    if (st.type == "Prepend") { if (!s.empty() && at_start) s = st.a + s; }
    else if (st.type == "Replace") s = uc::replace_all(s, st.a, st.b);
    else if (st.type == "Lowercase") { auto c = uc::decode_utf8(s); for (auto& x : c) x = uc::to_lower(x); s = uc::encode_utf8(c); }
    else if (st.type == "Strip") {
      auto c = uc::decode_utf8(s);
      size_t a = 0, b = c.size();
      if (st.flag1) while (a < b && uc::is_whitespace(c[a])) ++a;
      if (st.flag2) while (b > a && uc::is_whitespace(c[b - 1])) --b;
      s = uc::encode_utf8(std::vector<uint32_t>(c.begin() + a, c.begin() + b));
    }
    // NFC: treated as the identity (exact for text that is already NFC, as almost all text is).
  }
  if (s.size() > limit)
    throw Error(path_ + ": the normalizer grows a " + std::to_string(in.size()) + "-byte text beyond " + std::to_string(limit) + " bytes");
  return s;
}

std::vector<std::string> HFTokenizer::pre_tokenize(const std::string& s, bool at_start) const {
  std::vector<std::string> pieces{s};
  for (const Step& st : pre_tokenizers_) {
    std::vector<std::string> next;
    for (size_t pi = 0; pi < pieces.size(); ++pi) {
      const std::string& p = pieces[pi];
      if (st.type == "ByteLevel") {
        std::string q = p;
        if (st.flag1 && at_start && (q.empty() || q[0] != ' ')) q = " " + q;
        std::vector<std::string> words;
        if (st.flag2) {
          auto cps = uc::decode_utf8(q);
          for (size_t i = 0; i < cps.size();) {
            size_t n = match_at(RegexKind::Gpt2, cps, i);
            words.push_back(uc::encode_utf8(std::vector<uint32_t>(cps.begin() + i, cps.begin() + i + n)));
            i += n;
          }
        } else {
          words.push_back(q);
        }
        const auto& b2u = uc::byte_to_unicode();
        for (auto& w : words) {
          std::string mapped;
          for (unsigned char c : w) uc::append_utf8(mapped, b2u[c]);
          next.push_back(mapped);
        }
      } else if (st.type == "Split") {
        auto cps = uc::decode_utf8(p);
        std::vector<std::pair<size_t, size_t>> matches;
        if (st.n2 == 1) {
          for (size_t i = 0; i < cps.size();) {
            size_t n = match_at(RegexKind(st.n1), cps, i);
            matches.push_back({i, i + n});
            i += n;
          }
        } else {
          auto pat = uc::decode_utf8(st.a);
          for (size_t i = 0; !pat.empty() && i + pat.size() <= cps.size();) {
            if (std::equal(pat.begin(), pat.end(), cps.begin() + i)) { matches.push_back({i, i + pat.size()}); i += pat.size(); }
            else ++i;
          }
        }
        for (auto& w : apply_split(cps, matches, st.b, path_)) next.push_back(w);
      } else if (st.type == "Metaspace") {
        std::string q = uc::replace_all(p, " ", st.a);
        const bool first = pi == 0;
        if (at_start && (st.n1 == 0 || (st.n1 == 1 && first)) && q.compare(0, st.a.size(), st.a) != 0) q = st.a + q;
        if (!st.flag1) { next.push_back(q); continue; }
        auto cps = uc::decode_utf8(q);
        auto rep = uc::decode_utf8(st.a);
        std::vector<std::pair<size_t, size_t>> matches;
        for (size_t i = 0; i < cps.size(); ++i) if (rep.size() == 1 && cps[i] == rep[0]) matches.push_back({i, i + 1});
        for (auto& w : apply_split(cps, matches, "MergedWithNext", path_)) next.push_back(w);
      } else if (st.type == "Digits") {
        auto cps = uc::decode_utf8(p);
        std::vector<std::pair<size_t, size_t>> matches;
        for (size_t i = 0; i < cps.size();) {
          if (cps[i] >= '0' && cps[i] <= '9') {
            size_t j = i + 1;
            if (!st.flag1) while (j < cps.size() && cps[j] >= '0' && cps[j] <= '9') ++j;
            matches.push_back({i, j});
            i = j;
          } else ++i;
        }
        for (auto& w : apply_split(cps, matches, "Isolated", path_)) next.push_back(w);
      } else if (st.type == "WhitespaceSplit") {
        auto cps = uc::decode_utf8(p);
        std::vector<std::pair<size_t, size_t>> matches;
        for (size_t i = 0; i < cps.size(); ++i) if (uc::is_whitespace(cps[i])) matches.push_back({i, i + 1});
        for (auto& w : apply_split(cps, matches, "Removed", path_)) next.push_back(w);
      }
    }
    pieces.swap(next);
  }
  return pieces;
}

// BPE on one pre-token: characters -> ids (byte fallback / unk), then repeatedly apply the lowest-ranked merge
// (leftmost first), as the `tokenizers` library does, with a priority queue so long words stay O(n log n).
void HFTokenizer::bpe(const std::string& word, std::vector<int64_t>& out) const {
  if (word.empty()) return;
  {
    std::lock_guard<std::mutex> lock(g_cache_mutex);
    auto it = cache_.find(word);
    if (it != cache_.end()) { out.insert(out.end(), it->second.begin(), it->second.end()); return; }
  }
  std::vector<int64_t> result;
  auto whole = vocab_.find(word);
  if (ignore_merges_ && whole != vocab_.end()) {
    result.push_back(whole->second);
  } else {
    std::vector<int64_t> sym;
    bool prev_unk = false;
    for (const std::string& ch : uc::utf8_chars(word)) {
      auto it = vocab_.find(ch);
      if (it != vocab_.end()) { sym.push_back(it->second); prev_unk = false; continue; }
      if (byte_fallback_) {
        std::vector<int64_t> bytes;
        for (unsigned char c : ch) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "<0x%02X>", c);
          auto bt = vocab_.find(buf);
          if (bt == vocab_.end()) { bytes.clear(); break; }
          bytes.push_back(bt->second);
        }
        if (!bytes.empty()) { sym.insert(sym.end(), bytes.begin(), bytes.end()); prev_unk = false; continue; }
      }
      if (unk_id_ < 0) throw Error(path_ + ": character '" + ch + "' is not in the vocabulary and there is no unk_token");
      if (!(fuse_unk_ && prev_unk)) sym.push_back(unk_id_);
      prev_unk = true;
    }
    // Doubly linked symbols + min-heap of candidate merges (rank, position).
    const int n = int(sym.size());
    std::vector<int> prev(n), next(n);
    std::vector<bool> alive(n, true);
    for (int i = 0; i < n; ++i) { prev[i] = i - 1; next[i] = i + 1 < n ? i + 1 : -1; }
    using Cand = std::tuple<int32_t, int, int64_t, int64_t>;  // rank, left pos, left id, right id
    std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
    auto push = [&](int i) {
      if (i < 0 || next[i] < 0) return;
      auto it = merges_.find(pair_key(sym[i], sym[next[i]]));
      if (it != merges_.end()) heap.push({it->second.first, i, sym[i], sym[next[i]]});
    };
    for (int i = 0; i + 1 < n; ++i) push(i);
    while (!heap.empty()) {
      auto [rank, i, a, b] = heap.top();
      heap.pop();
      if (!alive[i] || next[i] < 0 || sym[i] != a || sym[next[i]] != b) continue;  // stale
      const int j = next[i];
      sym[i] = merges_.at(pair_key(a, b)).second;
      alive[j] = false;
      next[i] = next[j];
      if (next[j] >= 0) prev[next[j]] = i;
      push(prev[i]);
      push(i);
    }
    for (int i = 0; i >= 0 && i < n; i = next[i]) result.push_back(sym[i]);
  }
  out.insert(out.end(), result.begin(), result.end());
  std::lock_guard<std::mutex> lock(g_cache_mutex);
  if (cache_.size() > 100000) cache_.clear();
  cache_.emplace(word, std::move(result));
}

// Splits `text` on added tokens (non-normalized ones on raw text, normalized ones on normalized text);
// out: (text, -1) for plain segments, ("", id) for tokens.
void HFTokenizer::split_added(const std::string& text, bool normalized_pass, std::vector<std::pair<std::string, int64_t>>& out) const {
  size_t start = 0, i = 0;
  std::string pending;
  while (i < text.size()) {
    if (!added_first_byte_[static_cast<unsigned char>(text[i])]) { ++i; continue; }  // fast skip
    const AddedToken* best = nullptr;
    for (const AddedToken& a : added_) {
      if (a.normalized != normalized_pass) continue;
      if (text.compare(i, a.match.size(), a.match) == 0 && (!best || a.match.size() > best->match.size())) best = &a;
    }
    if (!best) { ++i; continue; }
    size_t seg_end = i, after = i + best->match.size();
    if (best->lstrip) while (seg_end > start && (text[seg_end - 1] == ' ' || text[seg_end - 1] == '\n' || text[seg_end - 1] == '\t')) --seg_end;
    if (best->rstrip) while (after < text.size() && (text[after] == ' ' || text[after] == '\n' || text[after] == '\t')) ++after;
    if (seg_end > start) out.push_back({text.substr(start, seg_end - start), -1});
    out.push_back({"", best->id});
    start = i = after;
  }
  if (start < text.size()) out.push_back({text.substr(start), -1});
}

void HFTokenizer::encode_plain(const std::string& text, std::vector<int64_t>& out, bool at_start) const {
  for (const std::string& w : pre_tokenize(text, at_start)) bpe(w, out);
}

std::vector<int64_t> HFTokenizer::encode(const std::string& text, bool add_special) const { return encode_impl(text, add_special, false); }

std::vector<int64_t> HFTokenizer::encode_continuation(const std::string& text) const { return encode_impl(text, false, true); }

std::vector<int64_t> HFTokenizer::encode_impl(const std::string& text, bool add_special, bool continuation) const {
  std::vector<int64_t> ids;
  if (add_special) ids = post_prefix_;
  std::vector<std::pair<std::string, int64_t>> raw;
  split_added(text, false, raw);
  for (size_t r = 0; r < raw.size(); ++r) {
    const auto& [seg, id] = raw[r];
    if (id >= 0) { ids.push_back(id); continue; }
    // A continuation's first segment continues the text before it: no start-of-text prefix.
    const bool at_start = !(continuation && r == 0);
    std::vector<std::pair<std::string, int64_t>> norm;
    split_added(normalize(seg, at_start), true, norm);
    for (size_t k = 0; k < norm.size(); ++k) {
      if (norm[k].second >= 0) ids.push_back(norm[k].second);
      else encode_plain(norm[k].first, ids, at_start || k > 0);
    }
  }
  if (add_special) ids.insert(ids.end(), post_suffix_.begin(), post_suffix_.end());
  return ids;
}

std::string HFTokenizer::decode(const std::vector<int64_t>& ids, bool skip_special) const {
  std::vector<std::string> toks;
  for (int64_t id : ids) {
    if (skip_special) {
      bool special = false;
      for (auto& a : added_) special |= a.special && a.id == id;
      if (special) continue;
    }
    toks.push_back(id_to_token(id));
  }
  for (const Step& st : decoders_) {
    if (st.type == "Replace") {
      for (auto& t : toks) t = uc::replace_all(t, st.a, st.b);
    } else if (st.type == "ByteFallback") {
      std::vector<std::string> next;
      std::string bytes;
      size_t nbytes = 0;
      auto flush = [&] {
        if (!nbytes) return;
        if (uc::is_valid_utf8(bytes)) next.push_back(bytes);
        else for (size_t k = 0; k < nbytes; ++k) next.push_back("\xEF\xBF\xBD");
        bytes.clear();
        nbytes = 0;
      };
      for (auto& t : toks) {
        int b;
        if (uc::parse_byte_token(t, &b)) { bytes += char(b); ++nbytes; }
        else { flush(); next.push_back(t); }
      }
      flush();
      toks.swap(next);
    } else if (st.type == "Fuse") {
      std::string all;
      for (auto& t : toks) all += t;
      toks = {all};
    } else if (st.type == "Strip") {
      auto c = uc::decode_utf8(st.a);
      for (auto& t : toks) {
        auto cps = uc::decode_utf8(t);
        size_t a = 0, b = cps.size();
        for (int64_t k = 0; k < st.n1 && a < b && c.size() == 1 && cps[a] == c[0]; ++k) ++a;
        for (int64_t k = 0; k < st.n2 && b > a && c.size() == 1 && cps[b - 1] == c[0]; ++k) --b;
        t = uc::encode_utf8(std::vector<uint32_t>(cps.begin() + a, cps.begin() + b));
      }
    } else if (st.type == "ByteLevel") {
      std::string bytes;
      for (auto& t : toks) {
        std::string tb;
        bool ok = true;
        for (uint32_t cp : uc::decode_utf8(t)) {
          int b = uc::unicode_to_byte(cp);
          if (b < 0) { ok = false; break; }
          tb += char(b);
        }
        bytes += ok ? tb : t;
      }
      toks = {uc::encode_utf8(uc::decode_utf8(bytes))};
    } else if (st.type == "Metaspace") {
      for (size_t i = 0; i < toks.size(); ++i) {
        toks[i] = uc::replace_all(toks[i], st.a, " ");
        if (i == 0 && st.n1 != 2 && !toks[i].empty() && toks[i][0] == ' ') toks[i].erase(0, 1);
      }
    }
  }
  std::string out;
  for (auto& t : toks) out += t;
  return out;
}

}  // namespace frozenlm
