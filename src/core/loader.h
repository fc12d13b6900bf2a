// Loading a frozen LM from its own files: a Hugging Face directory (config.json + model.safetensors, or sharded
// with model.safetensors.index.json) of the Llama or GPT-2 family, a llama.cpp GGUF file (core/gguf_model.h), or a
// llama2.c legacy .bin checkpoint.
#pragma once
#include <memory>
#include <string>

#include "core/frozen_weights.h"
#include "core/transformer.h"

namespace frozenlm {

struct LoadOptions {
  WeightFormat weights = WeightFormat::F32;  // in-memory storage
  std::string device = "cpu";                // "cpu" | "cuda" | "cuda:N"
  bool keep_q8_0 = false;                    // a GGUF's Q8_0 matrices stay Q8_0 (bit-exact) whatever `weights` says
};

// Throws frozenlm::Error naming the file and the problem (missing file, corrupt safetensors, unknown
// architecture, missing/mis-shaped tensor, truncated .bin).
std::unique_ptr<FrozenLM> load_model(const std::string& path, const LoadOptions& opt = {});

// A randomly initialised model of any shape (N(0, 0.02) weights, unit norms): for speed and memory benchmarks.
std::unique_ptr<FrozenLM> make_random_model(const ModelConfig& cfg, WeightFormat fmt, uint64_t seed = 0);

// True when `path` looks like a llama2.c checkpoint (a file, not a directory, and not GGUF).
bool is_llama2c_checkpoint(const std::string& path);

}  // namespace frozenlm
