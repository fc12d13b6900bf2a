// The shape of a decoder-only transformer, independent of the file it came from.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace frozenlm {

enum class NormKind { RMSNorm, LayerNorm };
enum class Activation { SiLU, GeluTanh, Gelu };

struct RopeScaling {
  std::string type;  // "" (none), "linear", "llama3", "factors" (per-frequency divisors, as GGUF's rope_freqs.weight)
  double factor = 1.0;
  double low_freq_factor = 1.0, high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
  std::vector<float> freq_factors;  // "factors": inv_freq[i] / freq_factors[i], head_dim / 2 of them
};

struct ModelConfig {
  std::string family;          // "llama" (Llama, Mistral, Qwen2, SmolLM, TinyLlama), "gpt2", "llama2c"
  std::string model_type;      // as the checkpoint names it
  int64_t vocab_size = 0;
  int64_t dim = 0;             // d_model
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;      // < n_heads: grouped-query attention
  int64_t head_dim = 0;
  int64_t ffn_dim = 0;
  int64_t max_seq_len = 0;
  NormKind norm = NormKind::RMSNorm;
  double norm_eps = 1e-5;
  bool rope = true;            // false: learned absolute positions (GPT-2)
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool gated_mlp = true;       // SwiGLU (gate, up, down) vs fc → act → proj
  Activation act = Activation::SiLU;
  bool qkv_bias = false, o_bias = false, mlp_bias = false, norm_bias = false;
  bool tied_embeddings = false;
  int64_t bos_id = -1;
  std::vector<int64_t> eos_ids;

  int64_t q_dim() const { return n_heads * head_dim; }
  int64_t kv_dim() const { return n_kv_heads * head_dim; }
  // Parameters of the model as stored (tied embeddings counted once).
  int64_t num_parameters() const;
  // Forward FLOPs per token at context length T (matmuls only: 2·params_nonembedding + attention 4·T·d·L).
  double forward_flops_per_token(int64_t context) const;
};

// Reads a Hugging Face config.json. Throws frozenlm::Error naming the file and the missing/bad field.
ModelConfig load_hf_config(const std::string& path);

}  // namespace frozenlm
