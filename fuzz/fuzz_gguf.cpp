// libFuzzer target: the GGUF parser (core/gguf_file.h) and, when the file parses and has a vocabulary, the GGUF
// tokenizer built from it (tokenizer/gguf_vocab.h), which then encodes and decodes a short text. Malformed input ends
// in frozenlm::Error; an accepted header keeps every tensor inside the file, aligned and without overlaps.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "core/gguf_file.h"
#include "tokenizer/gguf_vocab.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const frozenlm::GgufHeader h = frozenlm::parse_gguf(data, size, "fuzz.gguf");
    for (const auto& t : h.tensors)
      if (h.data_start + t.offset + t.nbytes > size || t.offset % h.alignment != 0) __builtin_trap();
    if (!h.find("tokenizer.ggml.model")) return 0;
    auto tok = frozenlm::make_gguf_tokenizer(frozenlm::read_gguf_vocab(h, "fuzz.gguf"), "fuzz.gguf");
    const auto ids = tok->encode("Hello world, \xC3\xA9t\xC3\xA9 <s> 123!\n", true);
    for (int64_t id : ids)
      if (id < 0 || id >= tok->vocab_size()) __builtin_trap();
    tok->decode(ids);
  } catch (const frozenlm::Error&) {
  }
  return 0;
}
