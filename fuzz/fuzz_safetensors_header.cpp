// libFuzzer target: the safetensors header parser must reject any malformed input with frozenlm::Error and never
// read out of bounds. The input is treated as a whole file.
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "core/safetensors_header.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    uint64_t data_start = 0;
    auto tensors = frozenlm::parse_safetensors_header(data, size, size, "fuzz.safetensors", &data_start);
    // Every accepted tensor must lie inside the file.
    for (auto& [name, info] : tensors)
      if (data_start + info.end > size || info.begin > info.end) __builtin_trap();
  } catch (const frozenlm::Error&) {
  }
  return 0;
}
