// Frozen weight storage: fp32, bf16 or int8 (weight-only, per-output-channel scales). Compute is always fp32:
// compact storage is dequantised right before each matmul. No tensor here ever requires grad.
#pragma once
#include <ATen/Tensor.h>

#include <string>

namespace frozenlm {

enum class WeightFormat { F32, BF16, Int8 };
WeightFormat parse_weight_format(const std::string& s);  // "f32" | "bf16" | "int8"
const char* weight_format_name(WeightFormat f);

// y = x · Wᵀ + b with W [out, in].
class FrozenLinear {
 public:
  FrozenLinear() = default;
  FrozenLinear(const at::Tensor& w_f32, const at::Tensor& bias_f32, WeightFormat fmt);
  at::Tensor forward(const at::Tensor& x) const;  // [..., in] -> [..., out]
  at::Tensor weight_f32() const;                    // dequantised copy [out, in]
  int64_t out_features() const { return w_.size(0); }
  int64_t in_features() const { return w_.size(1); }
  int64_t bytes() const;
  int64_t numel() const { return w_.numel() + (bias_.defined() ? bias_.numel() : 0); }
  // Moves to a device; float_dtype (e.g. kDouble for gradient checks) converts fp32-stored weights.
  void to(const at::Device& d, c10::optional<at::ScalarType> float_dtype = c10::nullopt);
  const at::Tensor& raw_weight() const { return w_; }
  const at::Tensor& raw_scale() const { return scale_; }
  const at::Tensor& bias() const { return bias_; }

 private:
  at::Tensor w_, scale_, bias_;
  WeightFormat fmt_ = WeightFormat::F32;
};

// Token embedding table [vocab, d], in the same storage formats; also usable as the (tied) output head.
class FrozenEmbedding {
 public:
  FrozenEmbedding() = default;
  FrozenEmbedding(const at::Tensor& w_f32, WeightFormat fmt) : table_(w_f32, at::Tensor(), fmt) {}
  at::Tensor lookup(const at::Tensor& ids) const;  // [B, T] int64 -> [B, T, d] fp32
  const FrozenLinear& as_linear() const { return table_; }
  FrozenLinear& as_linear() { return table_; }

 private:
  FrozenLinear table_;
};

}  // namespace frozenlm
