#include "tokenizer/unicode.h"

#include <algorithm>
#include <unordered_map>

namespace frozenlm::unicode {

namespace {
struct CodepointRange {
  uint32_t lo, hi;
};
#include "tokenizer/unicode_tables.inc"

template <size_t N>
bool in_ranges(const CodepointRange (&r)[N], uint32_t cp) {
  auto it = std::upper_bound(std::begin(r), std::end(r), cp, [](uint32_t c, const CodepointRange& x) { return c < x.lo; });
  return it != std::begin(r) && cp <= (it - 1)->hi;
}
}  // namespace

bool is_letter(uint32_t cp) { return in_ranges(kLetterRanges, cp); }
bool is_number(uint32_t cp) { return in_ranges(kNumberRanges, cp); }
bool is_whitespace(uint32_t cp) { return in_ranges(kWhitespaceRanges, cp); }

uint32_t to_lower(uint32_t cp) {
  if (cp < 0x80) return cp >= 'A' && cp <= 'Z' ? cp + 0x20 : cp;
  auto it = std::lower_bound(std::begin(kLowercasePairs), std::end(kLowercasePairs), cp,
                             [](const CodepointRange& x, uint32_t c) { return x.lo < c; });
  return it != std::end(kLowercasePairs) && it->lo == cp ? it->hi : cp;
}

bool is_python_word(uint32_t cp) { return in_ranges(kPythonWordRanges, cp); }
bool is_python_space(uint32_t cp) { return in_ranges(kPythonSpaceRanges, cp); }

static int utf8_len(unsigned char c) {
  if (c < 0x80) return 1;
  if ((c >> 5) == 0x6) return 2;
  if ((c >> 4) == 0xE) return 3;
  if ((c >> 3) == 0x1E) return 4;
  return 0;
}

// Returns the length of the valid character at s[i] (0 if invalid) and its codepoint.
static int next_char(const std::string& s, size_t i, uint32_t* cp) {
  const unsigned char c = s[i];
  int n = utf8_len(c);
  if (n == 0 || i + n > s.size()) return 0;
  uint32_t v = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
  for (int k = 1; k < n; ++k) {
    const unsigned char d = s[i + k];
    if ((d & 0xC0) != 0x80) return 0;
    v = (v << 6) | (d & 0x3F);
  }
  // Reject overlong forms, surrogates and values beyond U+10FFFF.
  if ((n == 2 && v < 0x80) || (n == 3 && v < 0x800) || (n == 4 && v < 0x10000) || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
    return 0;
  *cp = v;
  return n;
}

std::vector<uint32_t> decode_utf8(const std::string& s) {
  std::vector<uint32_t> out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    uint32_t cp;
    int n = next_char(s, i, &cp);
    if (n == 0) { out.push_back(0xFFFD); i += 1; }
    else { out.push_back(cp); i += n; }
  }
  return out;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

std::string encode_utf8(const std::vector<uint32_t>& cps) {
  std::string out;
  for (uint32_t c : cps) append_utf8(out, c);
  return out;
}

std::vector<std::string> utf8_chars(const std::string& s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    uint32_t cp;
    int n = next_char(s, i, &cp);
    if (n == 0) n = 1;
    out.push_back(s.substr(i, n));
    i += n;
  }
  return out;
}

bool is_valid_utf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    uint32_t cp;
    int n = next_char(s, i, &cp);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

size_t complete_utf8_prefix(const std::string& s) {
  // Walk back over at most 3 continuation bytes to the last lead byte; drop it if its character is incomplete.
  size_t n = s.size();
  for (size_t back = 1; back <= 4 && back <= n; ++back) {
    const unsigned char c = s[n - back];
    if ((c & 0xC0) == 0x80) continue;
    const int need = utf8_len(c);
    return (need > int(back)) ? n - back : n;
  }
  return n;
}

const std::vector<uint32_t>& byte_to_unicode() {
  static const std::vector<uint32_t> table = [] {
    std::vector<uint32_t> t(256);
    std::vector<bool> printable(256, false);
    for (int b = '!'; b <= '~'; ++b) printable[b] = true;
    for (int b = 0xA1; b <= 0xAC; ++b) printable[b] = true;
    for (int b = 0xAE; b <= 0xFF; ++b) printable[b] = true;
    uint32_t extra = 256;
    for (int b = 0; b < 256; ++b) t[b] = printable[b] ? uint32_t(b) : extra++;
    return t;
  }();
  return table;
}

int unicode_to_byte(uint32_t cp) {
  static const std::unordered_map<uint32_t, int> inv = [] {
    std::unordered_map<uint32_t, int> m;
    const auto& t = byte_to_unicode();
    for (int b = 0; b < 256; ++b) m[t[b]] = b;
    return m;
  }();
  auto it = inv.find(cp);
  return it == inv.end() ? -1 : it->second;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  if (from.empty()) return s;
  for (size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size()) s.replace(pos, from.size(), to);
  return s;
}

bool parse_byte_token(const std::string& t, int* byte) {
  if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return false;
  auto hex = [](char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1; };
  const int hi = hex(t[3]), lo = hex(t[4]);
  if (hi < 0 || lo < 0) return false;
  *byte = hi * 16 + lo;
  return true;
}

}  // namespace frozenlm::unicode
