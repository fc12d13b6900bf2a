// The lean decode step: one new token per sequence through every layer, on CPU fp32 buffers, with no autograd and
// no per-operation dispatch. Decoding a small model through the LibTorch graph costs ~30 tensor ops per layer and
// token, each with allocation and dispatch overhead that dwarfs the arithmetic (TinyStories-656K: 0.48 ms per token
// for 2 layers); a large model is bound by reading the weights, which the matmuls here leave to the skinny kernels
// (FrozenLinear::forward_rows). Same arithmetic as FrozenLM::forward (transformer.cpp) up to the order of fp32
// additions: tests compare the two on every model (test_model_properties.cpp, LeanDecode*).
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/kernels/decode_ops.h"
#include "core/torch_pch.h"
#include "core/transformer.h"

namespace frozenlm {

namespace {
std::atomic<bool> g_lean_decode{true};

// RMSNorm (x / sqrt(mean(x²) + eps) · w) or LayerNorm ((x − mean) / sqrt(var + eps) · w + b) of one row.
void norm_row(const float* x, int64_t d, const float* w, const float* b, bool layer_norm, double eps, float* y) {
  if (layer_norm) {
    double mean = 0, var = 0;
    for (int64_t i = 0; i < d; ++i) mean += x[i];
    mean /= d;
    for (int64_t i = 0; i < d; ++i) var += (x[i] - mean) * (x[i] - mean);
    const float r = float(1.0 / std::sqrt(var / d + eps)), m = float(mean);
    for (int64_t i = 0; i < d; ++i) y[i] = (x[i] - m) * r * w[i] + (b ? b[i] : 0.f);
    return;
  }
  float ss = 0;
  for (int64_t i = 0; i < d; ++i) ss += x[i] * x[i];
  const float r = 1.f / std::sqrt(ss / float(d) + float(eps));
  for (int64_t i = 0; i < d; ++i) y[i] = x[i] * r * w[i];
}

// Rotate-half RoPE of one head in place: (x1, x2) -> (x1·cos − x2·sin, x2·cos + x1·sin).
void rope_head(float* x, int64_t hd, const float* cos, const float* sin) {
  const int64_t h = hd / 2;
  for (int64_t i = 0; i < h; ++i) {
    const float a = x[i], b = x[i + h];
    x[i] = a * cos[i] - b * sin[i];
    x[i + h] = b * cos[i] + a * sin[i];
  }
}

float activation(float v, Activation act) {
  switch (act) {
    case Activation::SiLU: return v / (1.f + std::exp(-v));  // (the gated MLP: kernels::silu_mul)
    case Activation::GeluTanh: {
      const float k = 0.7978845608028654f;  // sqrt(2/π)
      return 0.5f * v * (1.f + std::tanh(k * (v + 0.044715f * v * v * v)));
    }
    case Activation::Gelu: return 0.5f * v * (1.f + std::erf(v * 0.7071067811865476f));
  }
  return v;
}

const float* ptr_or_null(const at::Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; }

// fn(b) for every row b of the batch, split across threads once the batch has enough work (`per_row` elements each):
// at batch 64 the norms and SwiGLU on one thread left the other waiting at the next matmul's fork.
template <typename Fn>
void for_rows(int64_t B, int64_t per_row, const Fn& fn) {
  at::parallel_for(0, B, std::max<int64_t>(1, 32768 / std::max<int64_t>(per_row, 1)), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) fn(b);
  });
}
}  // namespace

void FrozenLM::set_lean_decode(bool on) { g_lean_decode = on; }
bool FrozenLM::lean_decode_on() { return g_lean_decode; }

bool FrozenLM::can_decode_lean(int64_t B, const KVCache* cache, const ForwardInput& in, const ForwardOptions& opt) const {
  if (!g_lean_decode || !cache || !device_.is_cpu() || dtype_ != at::kFloat) return false;
  if (B == 0 || cache->batch() != B) return false;
  if (opt.all_hidden || opt.stop_after_layer >= 0) return false;
  if (in.mask.defined() && (in.mask.dim() != 2 || in.mask.size(0) != B || in.mask.size(1) != 1)) return false;
  if (in.position_ids.defined() && (in.position_ids.dim() != 2 || in.position_ids.size(0) != B || in.position_ids.size(1) != 1))
    return false;
  return true;
}

ForwardOutput FrozenLM::decode_step(const float* x_in, int64_t B, const ForwardInput& in, KVCache& cache, const ForwardOptions& opt) const {
  at::NoGradGuard no_grad;
  const int64_t d = cfg_.dim;
  const int64_t H = cfg_.n_heads, Hkv = cfg_.n_kv_heads, hd = cfg_.head_dim, G = H / Hkv;
  const int64_t q_dim = H * hd, kv_dim = Hkv * hd, ffn = cfg_.ffn_dim;
  const bool layer_norm = cfg_.norm == NormKind::LayerNorm;

  // ---- positions and the cache's bookkeeping ----
  // (a CPU bool mask is read in place: converting costs more than this bookkeeping)
  const bool mask_as_is = in.mask.defined() && in.mask.device().is_cpu() && in.mask.scalar_type() == at::kBool && in.mask.is_contiguous();
  const at::Tensor mask = !in.mask.defined() ? at::Tensor() : mask_as_is ? in.mask : in.mask.to(at::kCPU).to(at::kBool).contiguous();
  const std::vector<uint8_t> all_real(mask.defined() ? 0 : B, 1);
  const bool* real = mask.defined() ? mask.data_ptr<bool>() : reinterpret_cast<const bool*>(all_real.data());
  const int64_t past = cache.length(), S = past + 1;
  cache.reserve(S);
  int64_t* next_pos = cache.next_pos.data_ptr<int64_t>();
  std::vector<int64_t> pos(B);
  const at::Tensor given_pos = in.position_ids.defined() ? in.position_ids.to(at::kCPU, at::kLong).reshape({B}).contiguous() : at::Tensor();
  for (int64_t b = 0; b < B; ++b) {
    pos[b] = given_pos.defined() ? given_pos.data_ptr<int64_t>()[b] : std::max<int64_t>(next_pos[b] + (real[b] ? 0 : -1), 0);
    if (!cfg_.rope && pos[b] >= cfg_.max_seq_len)
      throw Error("forward: position " + std::to_string(pos[b]) + " beyond the model's " + std::to_string(cfg_.max_seq_len) +
                  " learned positions");
  }
  bool* key_real = cache.mask_buf.data_ptr<bool>();
  const int64_t cap = cache.capacity();
  for (int64_t b = 0; b < B; ++b) {
    key_real[b * cap + past] = real[b];
    next_pos[b] += real[b] ? 1 : 0;
  }
  cache.len = S;

  // ---- the residual stream x [B, d] and scratch rows ----
  std::vector<float> x_buf(x_in, x_in + B * d);
  float* x = x_buf.data();
  if (!cfg_.rope)
    for (int64_t b = 0; b < B; ++b) {
      const float* p = pos_emb_.data_ptr<float>() + pos[b] * d;
      for (int64_t i = 0; i < d; ++i) x[b * d + i] += p[i];
    }
  std::vector<float> cos, sin;  // [B, hd]: the halves repeated, the rotate-half sign applied in rope_head
  if (cfg_.rope) {
    cos.resize(B * hd);
    sin.resize(B * hd);
    const float* inv = inv_freq_.data_ptr<float>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < hd / 2; ++i) {
        const float f = float(pos[b]) * inv[i];
        cos[b * hd + i] = cos[b * hd + i + hd / 2] = std::cos(f);
        sin[b * hd + i] = sin[b * hd + i + hd / 2] = std::sin(f);
      }
  }
  const int64_t up_out = cfg_.gated_mlp ? 2 * ffn : ffn;
  std::vector<float> h(B * d), qkv(B * (q_dim + 2 * kv_dim)), att(B * q_dim), tmp(B * d), up(B * up_out), m(B * ffn);
  const float scale = float(1.0 / std::sqrt(double(hd)));

  for (size_t l = 0; l < layers_.size(); ++l) {
    const TransformerLayer& L = layers_[l];
    // ---- attention ----
    for_rows(B, d, [&](int64_t b) {
      norm_row(x + b * d, d, L.attn_norm_w.data_ptr<float>(), ptr_or_null(L.attn_norm_b), layer_norm, cfg_.norm_eps, h.data() + b * d);
    });
    L.qkv.forward_rows(h.data(), B, qkv.data());
    float* kc = cache.k_buf[l].data_ptr<float>();  // [B, Hkv, cap, hd]
    float* vc = cache.v_buf[l].data_ptr<float>();
    for_rows(B, q_dim + 2 * kv_dim, [&](int64_t b) {
      float* row = qkv.data() + b * (q_dim + 2 * kv_dim);
      if (cfg_.rope)
        for (int64_t j = 0; j < H + Hkv; ++j) rope_head(row + j * hd, hd, cos.data() + b * hd, sin.data() + b * hd);
      for (int64_t j = 0; j < Hkv; ++j) {
        std::copy_n(row + q_dim + j * hd, hd, kc + ((b * Hkv + j) * cap + past) * hd);
        std::copy_n(row + q_dim + kv_dim + j * hd, hd, vc + ((b * Hkv + j) * cap + past) * hd);
      }
    });
    // softmax(q·Kᵀ · scale, masked) · V for every (row, head); padding keys weigh 0 (−1e30 in forward()).
    const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(S * hd, 1));
    at::parallel_for(0, B * H, grain, [&](int64_t begin, int64_t end) {
      std::vector<float> p(S);
      for (int64_t bh = begin; bh < end; ++bh) {
        const int64_t b = bh / H, head = bh % H, j = head / G;
        kernels::attend_one_query(qkv.data() + b * (q_dim + 2 * kv_dim) + head * hd, kc + (b * Hkv + j) * cap * hd,
                                  vc + (b * Hkv + j) * cap * hd, key_real + b * cap, S, hd, scale, p.data(),
                                  att.data() + b * q_dim + head * hd);
      }
    });
    L.o.forward_rows(att.data(), B, tmp.data());
    // ---- MLP ----
    for_rows(B, d, [&](int64_t b) {
      for (int64_t i = b * d; i < (b + 1) * d; ++i) x[i] += tmp[i];
      norm_row(x + b * d, d, L.mlp_norm_w.data_ptr<float>(), ptr_or_null(L.mlp_norm_b), layer_norm, cfg_.norm_eps, h.data() + b * d);
    });
    L.up.forward_rows(h.data(), B, up.data());
    for_rows(B, ffn, [&](int64_t b) {
      const float* u = up.data() + b * up_out;
      float* mr = m.data() + b * ffn;
      if (cfg_.gated_mlp)
        kernels::silu_mul(u, u + ffn, mr, ffn);  // silu(gate) · up
      else
        for (int64_t i = 0; i < ffn; ++i) mr[i] = activation(u[i], cfg_.act);
    });
    L.down.forward_rows(m.data(), B, tmp.data());
    for (int64_t i = 0; i < B * d; ++i) x[i] += tmp[i];
  }

  ForwardOutput out;
  at::Tensor final_h = at::empty({B, 1, d}, at::kFloat);
  for (int64_t b = 0; b < B; ++b)
    norm_row(x + b * d, d, final_norm_w_.data_ptr<float>(), ptr_or_null(final_norm_b_), layer_norm, cfg_.norm_eps, final_h.data_ptr<float>() + b * d);
  if (opt.hidden) out.hidden = final_h;
  if (opt.logits) {
    const FrozenLinear& head = tied_ ? tok_emb_.as_linear() : head_;
    out.logits = at::empty({B, 1, head.out_features()}, at::kFloat);
    head.forward_rows(final_h.data_ptr<float>(), B, out.logits.data_ptr<float>());
  }
  return out;
}

}  // namespace frozenlm
