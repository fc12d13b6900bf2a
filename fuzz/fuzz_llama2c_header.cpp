// libFuzzer target: the llama2.c checkpoint header. The first 8 input bytes give the file size the header is checked
// against (so huge sizes are reached), the rest is the file's start. Malformed headers end in frozenlm::Error; an
// accepted one has a positive, consistent shape and needs no more bytes than the file has.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "core/error.h"
#include "core/llama2c_header.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 8) return 0;
  int64_t file_size;
  std::memcpy(&file_size, data, 8);
  try {
    int64_t expected = 0;
    auto c = frozenlm::parse_llama2c_header(data + 8, size - 8, file_size, "fuzz/model.bin", &expected);
    if (c.dim <= 0 || c.n_heads <= 0 || c.dim % c.n_heads || c.n_heads % c.n_kv_heads || expected > file_size || expected < 28)
      __builtin_trap();
  } catch (const frozenlm::Error&) {
  }
  return 0;
}
