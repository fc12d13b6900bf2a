#include "core/frozen_weights.h"

#include "core/error.h"
#include "core/kernels/panel_matmul.h"
#include "core/kernels/skinny_matmul.h"
#include "core/kernels/widen.h"
#include "core/weight_memory.h"
#include "core/torch_pch.h"

namespace frozenlm {

WeightFormat parse_weight_format(const std::string& s) {
  if (s == "f32" || s == "fp32") return WeightFormat::F32;
  if (s == "bf16") return WeightFormat::BF16;
  if (s == "int8") return WeightFormat::Int8;
  if (s == "q8_0" || s == "Q8_0") return WeightFormat::Q8_0;
  throw Error("--weights: unknown storage format '" + s + "' (f32, bf16, int8, q8_0)");
}

const char* weight_format_name(WeightFormat f) {
  switch (f) {
    case WeightFormat::F32: return "f32";
    case WeightFormat::BF16: return "bf16";
    case WeightFormat::Int8: return "int8";
    case WeightFormat::Q8_0: return "q8_0";
  }
  return "?";
}

// GGUF's Q8_0 quantiser (ggml's quantize_row_q8_0_ref): per block of 32, d = max|w| / 127 (stored as fp16),
// q = roundf(w / d) (ties away from zero), computed with the fp32 d.
static void quantize_q8_0(const at::Tensor& wf, at::Tensor& q, at::Tensor& d) {
  const int64_t out = wf.size(0), in = wf.size(1), nb = in / kernels::kQ8Block;
  q = empty_weight({out, in}, at::kChar);
  d = at::empty({out, nb}, at::kHalf);
  const float* w = wf.data_ptr<float>();
  int8_t* qp = q.data_ptr<int8_t>();
  uint16_t* dp = reinterpret_cast<uint16_t*>(d.data_ptr<at::Half>());
  at::parallel_for(0, out * nb, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t blk = begin; blk < end; ++blk) {
      const float* x = w + blk * kernels::kQ8Block;
      float amax = 0;
      for (int64_t i = 0; i < kernels::kQ8Block; ++i) amax = std::max(amax, std::fabs(x[i]));
      const float dv = amax / 127.f, id = dv != 0.f ? 1.f / dv : 0.f;
      dp[blk] = kernels::float_to_half(dv);
      for (int64_t i = 0; i < kernels::kQ8Block; ++i) qp[blk * kernels::kQ8Block + i] = int8_t(std::round(x[i] * id));
    }
  });
}

FrozenLinear::FrozenLinear(const at::Tensor& w, const at::Tensor& bias, WeightFormat fmt) : fmt_(fmt) {
  at::NoGradGuard no_grad;
  TORCH_CHECK(w.dim() == 2, "FrozenLinear: weight must be 2-D");
  at::Tensor wf = w.detach().to(at::kFloat).contiguous();
  if (fmt_ == WeightFormat::Q8_0 && wf.size(1) % kernels::kQ8Block != 0) fmt_ = WeightFormat::Int8;
  // The stored matrix goes straight into weight memory (huge pages for large ones: core/weight_memory.h).
  switch (fmt_) {
    case WeightFormat::F32: w_ = to_weight_memory(wf); break;
    case WeightFormat::BF16: w_ = empty_weight(wf.sizes().vec(), at::kBFloat16).copy_(wf); break;
    case WeightFormat::Int8: {
      // Symmetric per-output-row quantisation: w ≈ q · s, q ∈ [-127, 127].
      at::Tensor s = wf.abs().amax(1).clamp_min(1e-12) / 127.0;
      w_ = empty_weight(wf.sizes().vec(), at::kChar).copy_((wf / s.unsqueeze(1)).round().clamp(-127, 127));
      scale_ = s;
      break;
    }
    case WeightFormat::Q8_0: quantize_q8_0(wf, w_, scale_); break;
  }
  if (bias.defined()) bias_ = bias.detach().to(at::kFloat).contiguous();
}

FrozenLinear FrozenLinear::from_q8_0(const at::Tensor& q, const at::Tensor& d, const at::Tensor& bias) {
  TORCH_CHECK(q.dim() == 2 && q.scalar_type() == at::kChar && q.size(1) % kernels::kQ8Block == 0, "from_q8_0: q must be int8 [out, 32k]");
  TORCH_CHECK(d.dim() == 2 && d.scalar_type() == at::kHalf && d.size(0) == q.size(0) && d.size(1) == q.size(1) / kernels::kQ8Block,
              "from_q8_0: d must be fp16 [out, in/32]");
  FrozenLinear l;
  l.fmt_ = WeightFormat::Q8_0;
  l.w_ = to_weight_memory(q.contiguous());
  l.scale_ = d.contiguous();
  if (bias.defined()) l.bias_ = bias.detach().to(at::kFloat).contiguous();
  return l;
}

// Q8_0 blocks -> [out, in] in `dt`: q · d per block.
static at::Tensor dequantize_q8_0(const at::Tensor& q, const at::Tensor& d, at::ScalarType dt) {
  const int64_t out = q.size(0), in = q.size(1);
  at::Tensor w = q.to(dt);  // one full-size temporary, scaled in place
  w.view({out, in / kernels::kQ8Block, kernels::kQ8Block}).mul_(d.to(dt).unsqueeze(-1));
  return w;
}

// The stored matrix widened to `dt` ([out, in]): what LibTorch multiplies by.
static at::Tensor widen(const at::Tensor& w, const at::Tensor& scale, WeightFormat fmt, at::ScalarType dt) {
  switch (fmt) {
    case WeightFormat::F32:
    case WeightFormat::BF16: return w.to(dt);
    case WeightFormat::Int8: return w.to(dt).mul_(scale.to(dt).unsqueeze(1));
    case WeightFormat::Q8_0: return dequantize_q8_0(w, scale, dt);
  }
  return w;
}

at::Tensor dequantize_weight(const at::Tensor& w, const at::Tensor& scale, WeightFormat fmt) { return widen(w, scale, fmt, at::kFloat); }

at::Tensor FrozenLinear::weight_f32() const { return fmt_ == WeightFormat::F32 ? w_ : widen(w_, scale_, fmt_, at::kFloat); }

// Decoding (no gradient, CPU fp32): which kernel takes `rows` rows of x against the stored weight w. A few rows
// (skinny_rows_limit) are bound by reading W: the skinny kernels read each weight once for all rows. Up to
// kPanelMaxRows rows are bound by arithmetic: the panel kernels widen W block by block into cache and run every
// row against each block. Beyond that (prefill, training without gradient), or with set_skinny_kernels(false),
// LibTorch's GEMM.
enum class RowKernel { LibTorch, Skinny, Panel };
static RowKernel row_kernel(const at::Tensor& w, int64_t rows) {
  if (!kernels::skinny_kernels_on() || !w.device().is_cpu() || !w.is_contiguous() || w.size(1) == 0) return RowKernel::LibTorch;
  const auto wt = w.scalar_type();
  if (wt != at::kFloat && wt != at::kBFloat16 && wt != at::kChar) return RowKernel::LibTorch;
  if (rows <= kernels::skinny_rows_limit()) return RowKernel::Skinny;
  if (kernels::panel_kernels_on() && rows <= kernels::kPanelMaxRows) return RowKernel::Panel;
  return RowKernel::LibTorch;
}

static RowKernel input_kernel(const at::Tensor& x, const at::Tensor& w) {
  if (!x.device().is_cpu() || x.scalar_type() != at::kFloat || (x.requires_grad() && at::GradMode::is_enabled())) return RowKernel::LibTorch;
  const int64_t in = w.size(1);
  if (x.dim() < 1 || x.size(-1) != in) return RowKernel::LibTorch;
  return row_kernel(w, in > 0 ? x.numel() / in : 0);
}

void FrozenLinear::kernel_into(const float* x, int64_t rows, float* y, bool panel) const {
  const int64_t in = w_.size(1), out = w_.size(0);
  TORCH_CHECK(!bias_.defined() || bias_.scalar_type() == at::kFloat, "FrozenLinear: fp32 input with a non-fp32 bias");
  const float* b = bias_.defined() ? bias_.data_ptr<float>() : nullptr;
  switch (fmt_) {
    case WeightFormat::F32:
      (panel ? kernels::panel_matmul_f32 : kernels::skinny_matmul_f32)(x, rows, in, w_.data_ptr<float>(), out, b, y);
      break;
    case WeightFormat::BF16:
      (panel ? kernels::panel_matmul_bf16 : kernels::skinny_matmul_bf16)(
          x, rows, in, reinterpret_cast<const uint16_t*>(w_.data_ptr<at::BFloat16>()), out, b, y);
      break;
    case WeightFormat::Int8:
      (panel ? kernels::panel_matmul_int8 : kernels::skinny_matmul_int8)(x, rows, in, w_.data_ptr<int8_t>(), scale_.data_ptr<float>(), out, b, y);
      break;
    case WeightFormat::Q8_0:
      (panel ? kernels::panel_matmul_q8_0 : kernels::skinny_matmul_q8_0)(
          x, rows, in, w_.data_ptr<int8_t>(), reinterpret_cast<const uint16_t*>(scale_.data_ptr<at::Half>()), out, b, y);
      break;
  }
}

// y = x · Wᵀ for compact weights (bf16 / int8 / Q8_0) when a gradient must reach x (prompt tuning, ID-PT, every
// module): autograd's own linear would keep each layer's widened fp32 matrix alive until backward — a full fp32
// copy of the model (issue 13: 9.5 GB peak for 2.5 GB of bf16 weights). This saves only handles to the stored
// tensors and widens them again in backward, one layer at a time: dL/dx = dL/dy · W.
struct CompactLinearFn : public torch::autograd::Function<CompactLinearFn> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const FrozenLinear* lin) {
    ctx->saved_data["w"] = lin->raw_weight();
    ctx->saved_data["scale"] = lin->raw_scale().defined() ? lin->raw_scale() : at::empty({0});
    ctx->saved_data["fmt"] = int64_t(lin->format());
    return at::matmul(x, widen(lin->raw_weight(), lin->raw_scale(), lin->format(), x.scalar_type()).t());
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list g) {
    const at::Tensor w = ctx->saved_data["w"].toTensor(), scale = ctx->saved_data["scale"].toTensor();
    const auto fmt = WeightFormat(ctx->saved_data["fmt"].toInt());
    return {at::matmul(g[0], widen(w, scale, fmt, g[0].scalar_type())), at::Tensor()};
  }
};

at::Tensor FrozenLinear::forward(const at::Tensor& x) const {
  if (const RowKernel k = input_kernel(x, w_); k != RowKernel::LibTorch) {
    const at::Tensor xc = x.contiguous();
    auto shape = x.sizes().vec();
    shape.back() = w_.size(0);
    at::Tensor y = at::empty(shape, x.options());
    kernel_into(xc.data_ptr<float>(), xc.numel() / w_.size(1), y.data_ptr<float>(), k == RowKernel::Panel);
    return y;
  }
  // Compute in the input's dtype (fp32; fp64 in gradient checks): compact weights are widened just in time.
  const auto dt = x.scalar_type();
  if (fmt_ != WeightFormat::F32 && at::GradMode::is_enabled() && x.requires_grad()) {
    const at::Tensor y = CompactLinearFn::apply(x, this);
    return bias_.defined() ? y + bias_.to(dt) : y;
  }
  if (fmt_ == WeightFormat::Int8) {
    // (x · qᵀ) · diag(s): the scale is applied to the (smaller) output instead of the weight.
    at::Tensor y = at::matmul(x, w_.to(dt).t()) * scale_.to(dt);
    return bias_.defined() ? y + bias_.to(dt) : y;
  }
  return at::linear(x, widen(w_, scale_, fmt_, dt), bias_.defined() ? c10::optional<at::Tensor>(bias_.to(dt)) : c10::nullopt);
}

void FrozenLinear::forward_rows(const float* x, int64_t rows, float* y) const {
  if (const RowKernel k = row_kernel(w_, rows); k != RowKernel::LibTorch) return kernel_into(x, rows, y, k == RowKernel::Panel);
  at::from_blob(y, {rows, w_.size(0)}, at::kFloat).copy_(forward(at::from_blob(const_cast<float*>(x), {rows, w_.size(1)}, at::kFloat)));
}

int64_t FrozenLinear::bytes() const {
  int64_t b = w_.numel() * w_.element_size();
  if (scale_.defined()) b += scale_.numel() * scale_.element_size();
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
  if (table_.format() == WeightFormat::Q8_0) {
    const int64_t d = w.size(1);
    rows = (rows.view({-1, d / kernels::kQ8Block, kernels::kQ8Block}) *
            table_.raw_scale().index_select(0, flat).to(at::kFloat).unsqueeze(-1)).view({-1, d});
  } else if (table_.raw_scale().defined()) {
    rows = rows * table_.raw_scale().index_select(0, flat).unsqueeze(1);
  }
  auto shape = ids.sizes().vec();
  shape.push_back(w.size(1));
  return rows.view(shape);
}

void FrozenEmbedding::lookup_into(const int64_t* ids, int64_t n, float* out) const {
  const at::Tensor& w = table_.raw_weight();
  if (!w.device().is_cpu() || !w.is_contiguous() || (table_.format() == WeightFormat::F32 && w.scalar_type() != at::kFloat))
    throw Error("lookup_into: the embedding table must be a contiguous fp32-computing CPU tensor");
  const int64_t d = w.size(1);
  for (int64_t r = 0; r < n; ++r) {
    const int64_t id = ids[r];
    float* o = out + r * d;
    switch (table_.format()) {
      case WeightFormat::F32: {
        const float* src = w.data_ptr<float>() + id * d;
        std::copy(src, src + d, o);
        break;
      }
      case WeightFormat::BF16: {
        const uint16_t* src = reinterpret_cast<const uint16_t*>(w.data_ptr<at::BFloat16>()) + id * d;
        for (int64_t i = 0; i < d; ++i) o[i] = kernels::bf16_to_float(src[i]);
        break;
      }
      case WeightFormat::Int8: {
        const int8_t* src = w.data_ptr<int8_t>() + id * d;
        const float s = table_.raw_scale().data_ptr<float>()[id];
        for (int64_t i = 0; i < d; ++i) o[i] = float(src[i]) * s;
        break;
      }
      case WeightFormat::Q8_0: {
        const int8_t* src = w.data_ptr<int8_t>() + id * d;
        const uint16_t* dq = reinterpret_cast<const uint16_t*>(table_.raw_scale().data_ptr<at::Half>()) + id * (d / kernels::kQ8Block);
        for (int64_t i = 0; i < d; ++i) o[i] = float(src[i]) * kernels::half_to_float(dq[i / kernels::kQ8Block]);
        break;
      }
    }
  }
}

}  // namespace frozenlm
