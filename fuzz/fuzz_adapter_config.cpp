// libFuzzer target: PEFT adapter_config.json (prompt tuning). Malformed input ends in frozenlm::Error; an accepted
// config has positive sizes and a known init.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "modules/peft_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  frozenlm::peft_type_of(text);  // never throws
  try {
    auto c = frozenlm::parse_peft_prompt_config(text, "fuzz/adapter_config.json");
    if (c.num_transformer_submodules <= 0 || c.num_virtual_tokens == 0 || c.token_dim == 0) __builtin_trap();
    if (c.init != "TEXT" && c.init != "RANDOM" && c.init != "SAMPLE_VOCAB") __builtin_trap();
  } catch (const frozenlm::Error&) {
  }
  return 0;
}
