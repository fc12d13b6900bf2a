// libFuzzer target: tokenizer.json parsing (and, when it parses, encoding and decoding a fixed text).
// Any malformed file must end in frozenlm::Error, never a crash, hang or out-of-bounds access.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "tokenizer/hf_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    frozenlm::HFTokenizer tok(std::string(reinterpret_cast<const char*>(data), size), "fuzz/tokenizer.json");
    auto ids = tok.encode("Hello wörld 1234 <|x|>  \n\t😀", true);
    tok.decode(ids, false);
    tok.decode(ids, true);
  } catch (const frozenlm::Error&) {
  }
  return 0;
}
