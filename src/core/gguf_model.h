// A frozen LM from / to llama.cpp's GGUF (core/gguf_file.h for the container).
//
// Reading: architectures `llama` and `qwen2` (Qwen2 = Llama + q/k/v biases, no Q/K row permutation); tensors in F32,
// F16, BF16 or Q8_0. llama.cpp's converter permutes the rows of Llama's Q and K weights (and biases) so that RoPE
// rotates interleaved pairs; they are permuted back to the rotate-half convention we compute with (exact: a row
// permutation, applied to Q8_0's int8 rows and their block scales alike). Q8_0 tensors stay Q8_0 in memory when
// `keep_q8_0` (bit-exact with the file) unless another storage format is asked for; everything else is stored as
// `fmt`. Per-frequency RoPE factors (rope_freqs.weight, Llama 3.x) are applied as they are.
//
// Writing: the Llama family without biases as `llama`, Qwen2 as `qwen2`, in F32, F16, BF16 or Q8_0 (Q8_0-stored matrices
// are written as they are, f32/bf16/int8 ones quantised with ggml's own rule), with the tokenizer's vocabulary in
// GGUF metadata (tokenizer/gguf_vocab.h) — the tensor names, layout and keys llama.cpp's converter writes.
#pragma once
#include <memory>
#include <string>

#include "core/frozen_weights.h"
#include "core/gguf_file.h"
#include "core/model_config.h"

namespace frozenlm {

class FrozenLM;
struct GgufVocab;

// The model shape from a GGUF's metadata (and tensor shapes). Throws frozenlm::Error naming the file and the key.
ModelConfig gguf_model_config(const GgufHeader& h, const std::string& path);

std::unique_ptr<FrozenLM> load_gguf_model(const std::string& path, WeightFormat fmt, bool keep_q8_0);

enum class GgufExportType { F32, F16, BF16, Q8_0 };
GgufExportType parse_gguf_export_type(const std::string& s);  // "f32" | "f16" | "bf16" | "q8_0"

// Writes `lm` and `vocab` as one GGUF file (atomically). `name` goes to general.name.
void save_gguf_model(const FrozenLM& lm, const GgufVocab& vocab, const std::string& path, GgufExportType type,
                     const std::string& name);

}  // namespace frozenlm
