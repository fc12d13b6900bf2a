#include "modules/attention_block.h"

#include <cmath>

#include "core/torch_pch.h"

namespace frozenlm {

at::Tensor layer_norm(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  return at::layer_norm(x, {x.size(-1)}, w, b, 1e-5);
}

void add_attention_block(NamedTensors& ts, const std::string& p, int64_t D, int64_t F,
                         const std::function<at::Tensor(std::vector<int64_t>, double)>& randn) {
  ts.push_back({p + "ln1.weight", at::ones({D})});
  ts.push_back({p + "ln1.bias", at::zeros({D})});
  for (const char* w : {"wq", "wk", "wv", "wo"}) ts.push_back({p + w, randn({D, D}, 1.0 / std::sqrt(double(D)))});
  ts.push_back({p + "ln2.weight", at::ones({D})});
  ts.push_back({p + "ln2.bias", at::zeros({D})});
  ts.push_back({p + "ffn.w1", randn({F, D}, 1.0 / std::sqrt(double(D)))});
  ts.push_back({p + "ffn.b1", at::zeros({F})});
  ts.push_back({p + "ffn.w2", randn({D, F}, 1.0 / std::sqrt(double(F)))});
  ts.push_back({p + "ffn.b2", at::zeros({D})});
}

at::Tensor attention_block(const std::function<const at::Tensor&(const std::string&)>& t, const std::string& p,
                           const at::Tensor& x, const at::Tensor& kv_in, const at::Tensor& blocked, int64_t H,
                           const at::Tensor& weight_scale) {
  const int64_t B = x.size(0), Q = x.size(1), D = x.size(2), hd = D / H;
  at::Tensor h = layer_norm(x, t(p + "ln1.weight"), t(p + "ln1.bias"));
  const at::Tensor& kv = kv_in.defined() ? kv_in : h;
  const int64_t S = kv.size(1);
  at::Tensor q = at::matmul(h, t(p + "wq").t()).view({B, Q, H, hd}).transpose(1, 2);   // [B, H, Q, hd]
  at::Tensor k = at::matmul(kv, t(p + "wk").t()).view({B, S, H, hd}).transpose(1, 2);  // [B, H, S, hd]
  at::Tensor v = at::matmul(kv, t(p + "wv").t()).view({B, S, H, hd}).transpose(1, 2);
  at::Tensor scores = at::matmul(q, k.transpose(-1, -2)).div(std::sqrt(double(hd))).masked_fill(blocked, -1e30);  // [B, H, Q, S]
  at::Tensor w = at::softmax(scores, -1);
  if (weight_scale.defined()) w = w * weight_scale;
  at::Tensor att = at::matmul(w, v).transpose(1, 2).reshape({B, Q, D});
  at::Tensor y = x + at::matmul(att, t(p + "wo").t());
  h = layer_norm(y, t(p + "ln2.weight"), t(p + "ln2.bias"));
  return y + at::linear(at::gelu(at::linear(h, t(p + "ffn.w1"), t(p + "ffn.b1"))), t(p + "ffn.w2"), t(p + "ffn.b2"));
}

}  // namespace frozenlm
