// Frozen weight storage: fp32, bf16, int8 (weight-only, one scale per output row) or Q8_0 (GGUF's: int8 in blocks
// of 32 along the input, one fp16 scale per block). Compute is fp32: compact storage is dequantised right before each
// matmul, or read in its own format by the decode kernels (core/kernels/skinny_matmul.h). No tensor here requires grad.
#pragma once
#include <ATen/Tensor.h>

#include <string>

namespace frozenlm {

enum class WeightFormat { F32, BF16, Int8, Q8_0 };
WeightFormat parse_weight_format(const std::string& s);  // "f32" | "bf16" | "int8" | "q8_0"
const char* weight_format_name(WeightFormat f);

// y = x · Wᵀ + b with W [out, in].
class FrozenLinear {
 public:
  FrozenLinear() = default;
  // Q8_0 needs `in` to be a multiple of 32; a matrix whose rows are not (llama.cpp keeps those unquantised too)
  // is stored as per-row int8 instead: format() says which.
  FrozenLinear(const at::Tensor& w_f32, const at::Tensor& bias_f32, WeightFormat fmt);
  // Q8_0 blocks as a GGUF file holds them, kept exactly: q [out, in] int8, d [out, in/32] fp16.
  static FrozenLinear from_q8_0(const at::Tensor& q, const at::Tensor& d, const at::Tensor& bias_f32);
  at::Tensor forward(const at::Tensor& x) const;  // [..., in] -> [..., out]
  // The decode path: y [rows, out] = x [rows, in] · Wᵀ + b on CPU fp32 buffers (no autograd: the skinny kernels for
  // up to skinny_rows_limit() rows, the panel kernels up to kPanelMaxRows, LibTorch's GEMM beyond).
  void forward_rows(const float* x, int64_t rows, float* y) const;
  WeightFormat format() const { return fmt_; }
  at::Tensor weight_f32() const;                    // dequantised copy [out, in]
  int64_t out_features() const { return w_.size(0); }
  int64_t in_features() const { return w_.size(1); }
  int64_t bytes() const;
  int64_t numel() const { return w_.numel() + (bias_.defined() ? bias_.numel() : 0); }
  // Moves to a device; float_dtype (e.g. kDouble for gradient checks) converts fp32-stored weights.
  void to(const at::Device& d, c10::optional<at::ScalarType> float_dtype = c10::nullopt);
  const at::Tensor& raw_weight() const { return w_; }
  const at::Tensor& raw_scale() const { return scale_; }  // int8: [out] fp32; Q8_0: [out, in/32] fp16
  const at::Tensor& bias() const { return bias_; }

 private:
  // The decode kernels in this storage format: skinny (bandwidth-bound, few rows) or panel (batched).
  void kernel_into(const float* x, int64_t rows, float* y, bool panel) const;
  at::Tensor w_, scale_, bias_;
  WeightFormat fmt_ = WeightFormat::F32;
};

// A stored matrix [out, in] in fp32, whatever its format (int8: q · s per row; Q8_0: q · d per block of 32).
at::Tensor dequantize_weight(const at::Tensor& w, const at::Tensor& scale, WeightFormat fmt);

// Token embedding table [vocab, d], in the same storage formats; also usable as the (tied) output head.
class FrozenEmbedding {
 public:
  FrozenEmbedding() = default;
  FrozenEmbedding(const at::Tensor& w_f32, WeightFormat fmt) : table_(w_f32, at::Tensor(), fmt) {}
  explicit FrozenEmbedding(FrozenLinear table) : table_(std::move(table)) {}
  at::Tensor lookup(const at::Tensor& ids) const;  // [B, T] int64 -> [B, T, d] fp32
  // The decode step's lookup without tensors: out [n, d] = the rows ids[0..n) (in range), the same fp32 values as
  // lookup(). CPU tables only.
  void lookup_into(const int64_t* ids, int64_t n, float* out) const;
  const FrozenLinear& as_linear() const { return table_; }
  FrozenLinear& as_linear() { return table_; }

 private:
  FrozenLinear table_;
};

}  // namespace frozenlm
