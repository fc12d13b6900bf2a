#include "core/frozen_weights.h"

#include "core/error.h"
#include "core/kernels/skinny_matmul.h"
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

// Decoding (a few rows, no gradient, CPU fp32): the kernels that read each stored weight once, in its own format.
static bool use_skinny(const at::Tensor& x, const at::Tensor& w) {
  if (!kernels::skinny_kernels_on() || !x.device().is_cpu() || !w.device().is_cpu() || x.scalar_type() != at::kFloat) return false;
  if (!w.is_contiguous()) return false;
  if (x.requires_grad() && at::GradMode::is_enabled()) return false;
  const auto wt = w.scalar_type();
  if (wt != at::kFloat && wt != at::kBFloat16 && wt != at::kChar) return false;
  const int64_t in = w.size(1);
  return x.dim() >= 1 && x.size(-1) == in && in > 0 && x.numel() / in <= kernels::skinny_rows_limit();
}

at::Tensor FrozenLinear::forward(const at::Tensor& x) const {
  if (use_skinny(x, w_)) {
    const int64_t in = w_.size(1), out = w_.size(0);
    const at::Tensor xc = x.contiguous();
    const int64_t rows = xc.numel() / in;
    auto shape = x.sizes().vec();
    shape.back() = out;
    at::Tensor y = at::empty(shape, x.options());
    TORCH_CHECK(!bias_.defined() || bias_.scalar_type() == at::kFloat, "FrozenLinear: fp32 input with a non-fp32 bias");
    const float* b = bias_.defined() ? bias_.data_ptr<float>() : nullptr;
    switch (fmt_) {
      case WeightFormat::F32:
        kernels::skinny_matmul_f32(xc.data_ptr<float>(), rows, in, w_.data_ptr<float>(), out, b, y.data_ptr<float>());
        break;
      case WeightFormat::BF16:
        kernels::skinny_matmul_bf16(xc.data_ptr<float>(), rows, in, reinterpret_cast<const uint16_t*>(w_.data_ptr<at::BFloat16>()), out, b,
                                    y.data_ptr<float>());
        break;
      case WeightFormat::Int8:
        kernels::skinny_matmul_int8(xc.data_ptr<float>(), rows, in, w_.data_ptr<int8_t>(), scale_.data_ptr<float>(), out, b, y.data_ptr<float>());
        break;
    }
    return y;
  }
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
