// Writing a model as a Hugging Face directory (config.json, generation_config.json, model.safetensors) that
// `transformers` and our own loader read back: the inverse of the loader for the Llama family and GPT-2. The fused
// tensors we compute with (q|k|v, gate|up) are split back into HF's names; GPT-2's Conv1D weights are transposed.
#pragma once
#include <string>

#include "core/transformer.h"

namespace frozenlm {

enum class ExportDtype { F32, BF16 };

// Writes DIR/config.json, DIR/generation_config.json and DIR/model.safetensors, each atomically (DIR is created).
// Compact in-memory storage (bf16/int8) is dequantised first. Tokenizer files are the caller's business.
void save_hf_model(const FrozenLM& lm, const std::string& dir, ExportDtype dtype = ExportDtype::F32);

// The config.json text for a model shape (architectures, model_type and every field our loader reads).
std::string hf_config_json(const ModelConfig& cfg);

}  // namespace frozenlm
