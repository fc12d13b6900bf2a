// What every benchmark shares: the random-init model shapes (weights N(0, 0.02): speed and memory only) and timing.
#pragma once
#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

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

// Median wall time of `reps` calls of fn, after one warm-up call.
template <typename Fn>
double median_seconds(int reps, Fn&& fn) {
  fn();
  std::vector<double> s;
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    s.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(s.begin(), s.end());
  return s[s.size() / 2];
}

}  // namespace frozenlm
