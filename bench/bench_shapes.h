// The random-init model shapes every benchmark uses (weights N(0, 0.02): speed and memory only).
#pragma once
#include <string>

#include "core/model_config.h"

namespace frozenlm {

inline ModelConfig bench_shape(const std::string& name) {
  ModelConfig c;
  c.family = "llama";
  c.model_type = "llama-random-" + name;
  c.norm = NormKind::RMSNorm;
  c.norm_eps = 1e-5;
  c.tied_embeddings = true;
  c.max_seq_len = 4096;
  if (name == "100m") {  // 12 layers, d=768, 12 heads / 4 KV heads, FFN 2048, vocab 32000: 100.2M parameters
    c.vocab_size = 32000; c.dim = 768; c.n_layers = 12; c.n_heads = 12; c.n_kv_heads = 4; c.ffn_dim = 2048;
  } else if (name == "1b") {  // Llama-3.2-1B: 16 layers, d=2048, 32/8 heads, FFN 8192, vocab 128256
    c.vocab_size = 128256; c.dim = 2048; c.n_layers = 16; c.n_heads = 32; c.n_kv_heads = 8; c.ffn_dim = 8192;
    c.rope_theta = 500000.0;
  } else {
    c.vocab_size = 512; c.dim = 64; c.n_layers = 2; c.n_heads = 4; c.n_kv_heads = 2; c.ffn_dim = 128;
  }
  c.head_dim = c.dim / c.n_heads;
  return c;
}

}  // namespace frozenlm
