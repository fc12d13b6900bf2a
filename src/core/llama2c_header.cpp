#include "core/llama2c_header.h"

#include <cstring>

#include "core/error.h"

namespace frozenlm {

ModelConfig parse_llama2c_header(const uint8_t* bytes, size_t avail, int64_t file_size, const std::string& path,
                                 int64_t* expected_size) {
  int32_t h[7];
  if (avail < sizeof h || file_size < int64_t(sizeof h)) throw Error(path + ": too short for a llama2.c header (28 bytes)");
  std::memcpy(h, bytes, sizeof h);
  ModelConfig c;
  c.family = "llama";
  c.model_type = "llama2c";
  c.dim = h[0]; c.ffn_dim = h[1]; c.n_layers = h[2]; c.n_heads = h[3]; c.n_kv_heads = h[4];
  c.tied_embeddings = h[5] > 0;
  c.vocab_size = h[5] > 0 ? h[5] : -int64_t(h[5]);
  c.max_seq_len = h[6];
  // Bounds keep every size below 2^62 bytes (no overflow in `expected`).
  if (c.dim <= 0 || c.ffn_dim <= 0 || c.n_layers <= 0 || c.n_heads <= 0 || c.n_kv_heads <= 0 || c.vocab_size <= 0 ||
      c.max_seq_len <= 0 || c.dim % c.n_heads != 0 || c.n_heads % c.n_kv_heads != 0 || c.dim > (1 << 16) ||
      c.ffn_dim > (1 << 20) || c.n_layers > 1024 || c.vocab_size > (1 << 22) || c.max_seq_len > (1 << 22))
    throw Error(path + ": not a llama2.c checkpoint (implausible header: dim " + std::to_string(h[0]) + ", hidden " +
                std::to_string(h[1]) + ", layers " + std::to_string(h[2]) + ", heads " + std::to_string(h[3]) + "/" +
                std::to_string(h[4]) + ", vocab " + std::to_string(h[5]) + ", seq_len " + std::to_string(h[6]) + ")");
  c.head_dim = c.dim / c.n_heads;
  c.norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  c.bos_id = 1;
  c.eos_ids = {2};
  const int64_t d = c.dim, L = c.n_layers, kvd = c.kv_dim(), fd = c.ffn_dim, V = c.vocab_size, hd = c.head_dim;
  const int64_t expected = 28 + 4 * (V * d + L * d + L * d * d + 2 * L * kvd * d + L * d * d + L * d + 3 * L * fd * d + d +
                                     c.max_seq_len * hd + (c.tied_embeddings ? 0 : V * d));
  if (file_size < expected)
    throw Error(path + ": truncated llama2.c checkpoint: " + std::to_string(file_size) + " bytes, header implies " + std::to_string(expected));
  if (expected_size) *expected_size = expected;
  return c;
}

}  // namespace frozenlm
