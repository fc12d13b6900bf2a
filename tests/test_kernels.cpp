// Decode kernels (core/kernels/skinny_matmul.h) against LibTorch: y = x · Wᵀ + b for f32, bf16 and int8 storage,
// odd sizes (vector tails), 1…64 rows, 1 and 2 threads, with and without bias; int8 also against a scalar fp64
// reference of q · scale; FrozenLinear sends decode-shaped inputs to the kernels and everything with a gradient (or
// more rows than the limit) to LibTorch.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include "core/frozen_weights.h"
#include "core/kernels/skinny_matmul.h"
#include "core/torch_pch.h"
#include "test_util.h"

namespace frozenlm::test {

namespace {
// |a − b| ≤ tol · (1 + |b|), element-wise; returns the worst ratio.
double worst(const at::Tensor& a, const at::Tensor& b) {
  return ((a.to(at::kDouble) - b.to(at::kDouble)).abs() / (1 + b.to(at::kDouble).abs())).max().item<double>();
}
}  // namespace

TEST(SkinnyMatmul, EqualsLibTorchForEveryFormatShapeAndThreadCount) {
  const int threads_before = at::get_num_threads();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
  for (int threads : {1, 2}) {
    at::set_num_threads(threads);
    for (int64_t rows : {1, 2, 3, 4, 5, 8, 13, 64})
      for (int64_t in : {1, 7, 8, 15, 16, 17, 33, 200})
        for (int64_t out : {1, 5, 64, 129}) {
          const at::Tensor w = at::randn({out, in}, gen);
          const at::Tensor x = at::randn({rows, in}, gen);
          const at::Tensor b = at::randn({out}, gen);
          for (WeightFormat f : {WeightFormat::F32, WeightFormat::BF16, WeightFormat::Int8}) {
            const FrozenLinear lin(w, b, f);
            const at::Tensor ref = at::linear(x, lin.weight_f32(), b);  // the stored weights, widened by LibTorch
            at::Tensor y = at::empty({rows, out});
            const float* xp = x.data_ptr<float>();
            if (f == WeightFormat::F32)
              kernels::skinny_matmul_f32(xp, rows, in, lin.raw_weight().data_ptr<float>(), out, b.data_ptr<float>(), y.data_ptr<float>());
            else if (f == WeightFormat::BF16)
              kernels::skinny_matmul_bf16(xp, rows, in, reinterpret_cast<const uint16_t*>(lin.raw_weight().data_ptr<at::BFloat16>()), out,
                                          b.data_ptr<float>(), y.data_ptr<float>());
            else
              kernels::skinny_matmul_int8(xp, rows, in, lin.raw_weight().data_ptr<int8_t>(), lin.raw_scale().data_ptr<float>(), out,
                                          b.data_ptr<float>(), y.data_ptr<float>());
            // fp32 sums of `in` products in another order: a few ulps of the magnitudes summed
            const double tol = 2e-6 * std::sqrt(double(in)) * 4;
            ASSERT_LE(worst(y, ref), tol) << weight_format_name(f) << " rows " << rows << " in " << in << " out " << out << " threads " << threads;
          }
        }
  }
  at::set_num_threads(threads_before);
}

TEST(SkinnyMatmul, Int8IsTheQuantisedProductExactly) {
  // Against a scalar fp64 reference of Σ x·q, times the row's scale: the kernel adds only fp32 rounding.
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  const int64_t rows = 3, in = 301, out = 37;
  const at::Tensor w = at::randn({out, in}, gen), x = at::randn({rows, in}, gen);
  const FrozenLinear lin(w, at::Tensor(), WeightFormat::Int8);
  at::Tensor y = at::empty({rows, out});
  kernels::skinny_matmul_int8(x.data_ptr<float>(), rows, in, lin.raw_weight().data_ptr<int8_t>(), lin.raw_scale().data_ptr<float>(), out,
                              nullptr, y.data_ptr<float>());
  const at::Tensor ref = at::matmul(x.to(at::kDouble), lin.raw_weight().to(at::kDouble).t()) * lin.raw_scale().to(at::kDouble);
  EXPECT_LE(worst(y, ref), 1e-5);
  // …and the int8 matrix was never widened into a full fp32 copy: the kernel reads the int8 bytes it was given.
  EXPECT_EQ(lin.raw_weight().scalar_type(), at::kChar);
}

TEST(SkinnyMatmul, FrozenLinearUsesTheKernelsOnlyForDecodeShapesWithoutGradient) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  const at::Tensor w = at::randn({48, 40}, gen), b = at::randn({48}, gen);
  for (WeightFormat f : {WeightFormat::F32, WeightFormat::BF16, WeightFormat::Int8}) {
    const FrozenLinear lin(w, b, f);
    const at::Tensor x = at::randn({1, 3, 40}, gen);  // [B, T, in]: 3 rows
    at::Tensor with, without;
    {
      at::NoGradGuard ng;
      kernels::set_skinny_kernels(true);
      with = lin.forward(x);
      kernels::set_skinny_kernels(false);
      without = lin.forward(x);
      kernels::set_skinny_kernels(true);
    }
    ASSERT_EQ(with.sizes(), (std::vector<int64_t>{1, 3, 48}));
    EXPECT_LE(worst(with, without), 1e-5) << weight_format_name(f);
    EXPECT_FALSE(at::equal(with, without)) << "identical bits: the kernel path did not run (" << weight_format_name(f) << ")";
    // A gradient to the input: LibTorch's path, which autograd can differentiate.
    const at::Tensor xg = x.clone().requires_grad_(true);
    const at::Tensor yg = lin.forward(xg);
    ASSERT_TRUE(yg.requires_grad());
    yg.sum().backward();
    EXPECT_LE(worst(xg.grad(), lin.weight_f32().sum(0).expand({1, 3, 40})), 1e-5);
    // More rows than the limit: LibTorch's GEMM (bit-identical to the kernels-off path).
    at::NoGradGuard ng;
    const at::Tensor big = at::randn({kernels::skinny_rows_limit() + 1, 40}, gen);
    kernels::set_skinny_kernels(false);
    const at::Tensor ref = lin.forward(big);
    kernels::set_skinny_kernels(true);
    EXPECT_TRUE(at::equal(lin.forward(big), ref));
  }
}

}  // namespace frozenlm::test
