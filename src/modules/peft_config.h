// PEFT's adapter_config.json for prompt tuning, read and validated without LibTorch (the fuzz target runs it alone).
// Fields read (PEFT's PromptTuningConfig / PromptLearningConfig; README "PEFT format" lists what is written):
//   peft_type ("PROMPT_TUNING", required), num_virtual_tokens, num_transformer_submodules, token_dim,
//   base_model_name_or_path, prompt_tuning_init (TEXT | RANDOM | SAMPLE_VOCAB), prompt_tuning_init_text.
// Other fields (task_type, inference_mode, revision, tokenizer_name_or_path, ...) are ignored.
#pragma once
#include <cstdint>
#include <string>

namespace frozenlm {

struct PeftPromptConfig {
  int64_t num_virtual_tokens = -1;  // -1: not given (the tensor's rows decide)
  int64_t num_transformer_submodules = 1;
  int64_t token_dim = -1;           // -1: not given
  std::string base_model, init = "RANDOM", init_text;
};

// The peft_type of an adapter_config.json text ("" when absent or not a JSON object). Never throws on bad input.
std::string peft_type_of(const std::string& text);
// Parses and validates; errors name `path` and the field (wrong type, non-positive sizes, unknown init, not JSON).
PeftPromptConfig parse_peft_prompt_config(const std::string& text, const std::string& path);

}  // namespace frozenlm
