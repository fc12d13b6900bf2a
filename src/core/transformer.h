// The frozen decoder-only transformer: Llama family (RMSNorm, RoPE rotate-half, GQA, SwiGLU) and GPT-2
// (LayerNorm, learned positions, GELU-tanh) in one readable forward pass. Weights never require grad; gradients
// flow only to an embeddings input, which is how every trainable module around the frozen LM attaches.
#pragma once
#include <ATen/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "core/frozen_weights.h"
#include "core/model_config.h"

namespace frozenlm {

struct TransformerLayer {
  at::Tensor attn_norm_w, attn_norm_b;  // [d]
  FrozenLinear qkv;                     // fused [q_dim + 2·kv_dim, d]
  FrozenLinear o;                       // [d, q_dim]
  at::Tensor mlp_norm_w, mlp_norm_b;    // [d]
  FrozenLinear up;                      // gated: fused [gate; up] [2·ffn, d]; plain: fc [ffn, d]
  FrozenLinear down;                    // [d, ffn]
};

// Incremental-decoding state for a batch: keys/values of every layer plus which cached positions are real. The
// buffers are preallocated for `capacity` positions (grown by doubling when a forward needs more), so a decode step
// writes its one new key/value in place instead of copying the whole cache.
struct KVCache {
  std::vector<at::Tensor> k_buf, v_buf;  // per layer [B, n_kv_heads, capacity, head_dim]
  at::Tensor mask_buf;                   // [B, capacity] bool: key is a real (non-padding) token
  at::Tensor next_pos;                   // [B] int64: position id of the next real token
  int64_t len = 0;                       // positions filled

  int64_t length() const { return len; }
  int64_t capacity() const { return mask_buf.defined() ? mask_buf.size(1) : 0; }
  int64_t batch() const { return next_pos.defined() ? next_pos.size(0) : 0; }
  at::Tensor keys(size_t layer) const { return k_buf[layer].narrow(2, 0, len); }    // [B, Hkv, len, hd] (a view)
  at::Tensor values(size_t layer) const { return v_buf[layer].narrow(2, 0, len); }
  at::Tensor mask() const { return mask_buf.narrow(1, 0, len); }                    // [B, len]
  // Makes room for `positions` in all (keeps the contents; at least doubles when it grows).
  void reserve(int64_t positions);
  // Keep only rows `idx` (e.g. drop finished sequences).
  void select_rows(const at::Tensor& idx);
};

struct ForwardInput {
  at::Tensor ids;           // [B, T] int64, or
  at::Tensor embeds;        // [B, T, d] float (soft prompts, connector outputs, ...); gradients flow into it
  at::Tensor mask;          // [B, T] (bool/int): 1 = real token, 0 = padding. Default: all real
  at::Tensor position_ids;  // [B, T] int64. Default: count of real tokens before (+ cache), so left/right padding
                            // gives every example the positions it has alone
};

struct ForwardOptions {
  bool logits = true;            // compute the LM head
  bool last_logits_only = false; // only the last position's logits: [B, 1, V]
  bool hidden = false;           // final hidden states (post-norm, pre-head)
  bool all_hidden = false;       // input to every layer + final output (pre-norm): n_layers + 1 tensors
  int64_t stop_after_layer = -1; // ≥ 0: run only the first N layers and return their output (pre-norm) as `hidden`
                                 // (encoders that read an intermediate layer); no logits
};

struct ForwardOutput {
  at::Tensor logits;                      // [B, T, V] fp32
  at::Tensor hidden;                      // [B, T, d]
  std::vector<at::Tensor> layer_hidden;   // n_layers + 1 × [B, T, d]
};

class FrozenLM {
 public:
  FrozenLM(ModelConfig cfg, FrozenEmbedding tok_emb, at::Tensor pos_emb, std::vector<TransformerLayer> layers,
           at::Tensor final_norm_w, at::Tensor final_norm_b, FrozenLinear head /* undefined weight = tied */);

  const ModelConfig& config() const { return cfg_; }
  int64_t dim() const { return cfg_.dim; }
  int64_t vocab_size() const { return cfg_.vocab_size; }
  const at::Device& device() const { return device_; }
  WeightFormat weight_format() const { return fmt_; }

  // Frozen token-embedding lookup: [B, T] -> [B, T, d] (no grad).
  at::Tensor embed(const at::Tensor& ids) const;
  // The LM head on hidden states [.., d] -> [.., V].
  at::Tensor head(const at::Tensor& hidden) const;

  // One pass. With `cache`, the input continues the cached sequences and the cache is extended.
  ForwardOutput forward(const ForwardInput& in, KVCache* cache = nullptr, const ForwardOptions& opt = {}) const;
  // An empty cache for `batch` sequences with room for `capacity` positions (it grows on demand past that).
  KVCache new_cache(int64_t batch, int64_t capacity = 0) const;
  // Whether forward() may take the lean decode step (one new token per sequence with a cache, CPU fp32, no
  // gradient: core/decode_step.cpp) instead of the LibTorch graph. On by default; off for before/after benchmarks.
  static void set_lean_decode(bool on);
  static bool lean_decode_on();

  // Moves the weights to a device. dtype kDouble (fp32 storage only) makes every op run in fp64: for finite-
  // difference gradient checks. The compute dtype is otherwise fp32.
  void to(const at::Device& d, at::ScalarType dtype = at::kFloat);
  at::ScalarType compute_dtype() const { return dtype_; }
  int64_t weight_bytes() const;
  int64_t num_parameters() const;
  // Every stored tensor with a stable name (for hashing / checking that nothing changed).
  std::vector<std::pair<std::string, at::Tensor>> named_tensors() const;
  // The stored weights, read-only (exporters write them in their own storage format).
  const FrozenEmbedding& token_embedding() const { return tok_emb_; }
  const at::Tensor& position_embedding() const { return pos_emb_; }
  const std::vector<TransformerLayer>& layers() const { return layers_; }
  const at::Tensor& final_norm_weight() const { return final_norm_w_; }
  const at::Tensor& final_norm_bias() const { return final_norm_b_; }
  const FrozenLinear& output_head() const { return head_; }  // raw_weight() undefined: tied to the embedding
  // FNV-1a hash over all stored weight bytes (changes with the storage format): proves weights did not change.
  std::string weights_hash() const;
  // Identity of the checkpoint the weights came from, independent of --weights/--device (set by the loader from the
  // files' sizes, headers and leading/trailing bytes): modules record it and refuse another base model.
  const std::string& checkpoint_id() const { return checkpoint_id_; }
  void set_checkpoint_id(std::string id) { checkpoint_id_ = std::move(id); }

 private:
  at::Tensor norm(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) const;
  at::Tensor rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) const;
  std::pair<at::Tensor, at::Tensor> rope_tables(const at::Tensor& pos) const;
  // The lean decode step (core/decode_step.cpp): x [B, d] fp32 (the embedded new token of each row), written into
  // `cache`. can_decode_lean: whether the step applies to a batch of B (x itself checked by the caller).
  bool can_decode_lean(int64_t B, const KVCache* cache, const ForwardInput& in, const ForwardOptions& opt) const;
  ForwardOutput decode_step(const float* x, int64_t B, const ForwardInput& in, KVCache& cache, const ForwardOptions& opt) const;

  ModelConfig cfg_;
  FrozenEmbedding tok_emb_;
  at::Tensor pos_emb_;  // [max_seq_len, d] (GPT-2) or undefined
  std::vector<TransformerLayer> layers_;
  at::Tensor final_norm_w_, final_norm_b_;
  FrozenLinear head_;
  bool tied_;
  at::Tensor inv_freq_;  // [head_dim / 2] (RoPE)
  at::Device device_ = at::kCPU;
  WeightFormat fmt_ = WeightFormat::F32;
  at::ScalarType dtype_ = at::kFloat;
  std::string checkpoint_id_ = "random";
};

}  // namespace frozenlm
