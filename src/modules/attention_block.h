// The small pre-LayerNorm transformer block that trainable modules build from their own named tensors: the ID-PT
// prompt generator (queries cross-attend to the encoder's states) and the neural-recursion connector (causal
// self-attention). One definition of its tensors and its forward, so both modules stay the same block.
//   x ← x + Wo · attention(q = Wq · LN1(x), k = Wk · kv, v = Wv · kv)     kv = LN1(x) (self) or the given source
//   x ← x + W2 · GELU(W1 · LN2(x) + b1) + b2
// Tensors under `prefix`: ln1.{weight,bias}, wq, wk, wv, wo [D, D], ln2.{weight,bias}, ffn.w1 [F, D], ffn.b1,
// ffn.w2 [D, F], ffn.b2.
#pragma once
#include <ATen/Tensor.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace frozenlm {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// LayerNorm over the last dimension (eps 1e-5), as every module here uses it.
at::Tensor layer_norm(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b);

// Appends one block's tensors (width D, FFN width F): norms at 1/0, matrices from `randn(shape, std)` with std =
// 1/√fan-in, biases 0 — in a fixed order (a module's initialisation depends on it).
void add_attention_block(NamedTensors& ts, const std::string& prefix, int64_t D, int64_t F,
                         const std::function<at::Tensor(std::vector<int64_t>, double)>& randn);

// One block on x [B, Q, D]. kv [B, S, D] (undefined: self-attention over LN1(x)); blocked [B or 1, 1, Q, S] bool:
// keys a query may not see; weight_scale (optional, broadcast to [B, H, Q, S]) multiplies the attention weights
// (0 for a row with nothing to attend to). `t` looks a tensor up by its full name.
at::Tensor attention_block(const std::function<const at::Tensor&(const std::string&)>& t, const std::string& prefix,
                           const at::Tensor& x, const at::Tensor& kv, const at::Tensor& blocked, int64_t heads,
                           const at::Tensor& weight_scale = {});

}  // namespace frozenlm
