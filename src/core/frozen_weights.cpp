#include "core/frozen_weights.h"

#include "core/error.h"
#include "core/torch_pch.h"

namespace frozenlm {

WeightFormat parse_weight_format(const std::string& s) {
  if (s == "f32" || s == "fp32") return WeightFormat::F32;
  if (s == "bf16") return WeightFormat::BF16;
  if (s == "int8") return WeightFormat::Int8;
  throw Error("--weights: unknown storage format '" + s + "' (f32, bf16, int8)");
}

const char* weight_format_name(WeightFormat f) {
  return f == WeightFormat::F32 ? "f32" : f == WeightFormat::BF16 ? "bf16" : "int8";
}

FrozenLinear::FrozenLinear(const at::Tensor& w, const at::Tensor& bias, WeightFormat fmt) : fmt_(fmt) {
  at::NoGradGuard no_grad;
  TORCH_CHECK(w.dim() == 2, "FrozenLinear: weight must be 2-D");
  at::Tensor wf = w.detach().to(at::kFloat).contiguous();
  switch (fmt) {
    case WeightFormat::F32: w_ = wf; break;
    case WeightFormat::BF16: w_ = wf.to(at::kBFloat16); break;
    case WeightFormat::Int8: {
      // Symmetric per-output-row quantisation: w ≈ q · s, q ∈ [-127, 127].
      at::Tensor s = wf.abs().amax(1).clamp_min(1e-12) / 127.0;
      w_ = (wf / s.unsqueeze(1)).round().clamp(-127, 127).to(at::kChar);
      scale_ = s;
      break;
    }
  }
  if (bias.defined()) bias_ = bias.detach().to(at::kFloat).contiguous();
}

at::Tensor FrozenLinear::weight_f32() const {
  if (fmt_ == WeightFormat::F32) return w_;
  if (fmt_ == WeightFormat::BF16) return w_.to(at::kFloat);
  return w_.to(at::kFloat) * scale_.unsqueeze(1);
}

at::Tensor FrozenLinear::forward(const at::Tensor& x) const {
  // Compute in the input's dtype (fp32; fp64 in gradient checks): compact weights are widened just in time.
  const auto dt = x.scalar_type();
  const at::Tensor w = w_.scalar_type() == dt ? w_ : w_.to(dt);
  if (fmt_ == WeightFormat::Int8) {
    // (x · qᵀ) · diag(s): the scale is applied to the (smaller) output instead of the weight.
    at::Tensor y = at::matmul(x, w.t()) * scale_.to(dt);
    return bias_.defined() ? y + bias_.to(dt) : y;
  }
  return at::linear(x, w, bias_.defined() ? c10::optional<at::Tensor>(bias_.to(dt)) : c10::nullopt);
}

int64_t FrozenLinear::bytes() const {
  int64_t b = w_.numel() * w_.element_size();
  if (scale_.defined()) b += scale_.numel() * 4;
  if (bias_.defined()) b += bias_.numel() * 4;
  return b;
}

void FrozenLinear::to(const at::Device& d, c10::optional<at::ScalarType> float_dtype) {
  if (!w_.defined()) return;  // an unused (tied) head
  if (float_dtype && fmt_ == WeightFormat::F32) w_ = w_.to(*float_dtype);
  if (float_dtype && bias_.defined()) bias_ = bias_.to(*float_dtype);
  w_ = w_.to(d);
  if (scale_.defined()) scale_ = scale_.to(d);
  if (bias_.defined()) bias_ = bias_.to(d);
}

at::Tensor FrozenEmbedding::lookup(const at::Tensor& ids) const {
  const at::Tensor& w = table_.raw_weight();
  at::Tensor flat = ids.reshape({-1});
  at::Tensor rows = w.index_select(0, flat);
  if (!rows.is_floating_point() || rows.scalar_type() == at::kBFloat16) rows = rows.to(at::kFloat);
  if (table_.raw_scale().defined()) rows = rows * table_.raw_scale().index_select(0, flat).unsqueeze(1);
  auto shape = ids.sizes().vec();
  shape.push_back(w.size(1));
  return rows.view(shape);
}

}  // namespace frozenlm
