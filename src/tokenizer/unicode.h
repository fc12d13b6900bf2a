// UTF-8 and the few Unicode properties the pre-tokenizer regexes (\p{L}, \p{N}, \s) and the SQuAD normaliser need,
// and two text helpers every tokenizer uses.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace frozenlm::unicode {

// Every occurrence of `from` (non-empty) replaced by `to`, left to right.
std::string replace_all(std::string s, const std::string& from, const std::string& to);
// A SentencePiece byte token "<0xAB>" (hex digits in either case): true and its byte in *byte.
bool parse_byte_token(const std::string& token, int* byte);

// Decodes UTF-8; each invalid byte becomes U+FFFD.
std::vector<uint32_t> decode_utf8(const std::string& s);
void append_utf8(std::string& out, uint32_t cp);
std::string encode_utf8(const std::vector<uint32_t>& cps);
// Splits a string into its UTF-8 characters (invalid bytes stay as single-byte strings).
std::vector<std::string> utf8_chars(const std::string& s);
// Length of a complete UTF-8 prefix: s.substr(0, n) never ends inside a character.
size_t complete_utf8_prefix(const std::string& s);
bool is_valid_utf8(const std::string& s);

bool is_letter(uint32_t cp);      // general category L*
bool is_number(uint32_t cp);      // general category N*
bool is_whitespace(uint32_t cp);  // White_Space
uint32_t to_lower(uint32_t cp);   // Unicode lowercase mapping of one codepoint (Python's str.lower where it is 1:1)
bool is_python_word(uint32_t cp); // a word character of Python's re (\w, \b): str.isalnum() or '_'
bool is_python_space(uint32_t cp);// what Python's str.split() splits on: str.isspace()

// GPT-2's byte-to-unicode map: 256 printable codepoints standing for the bytes.
const std::vector<uint32_t>& byte_to_unicode();
int unicode_to_byte(uint32_t cp);  // -1 if not in the map

}  // namespace frozenlm::unicode
