// Decode kernels (core/kernels/skinny_matmul.h; panel_matmul.h for batched decoding) against LibTorch: y = x · Wᵀ + b for f32, bf16 and int8 storage,
// odd sizes (vector tails), 1…64 rows, 1 and 2 threads, with and without bias; int8 (int16 activations) also against
// a scalar fp64 reference of the same integers and within the activations' proven rounding error; FrozenLinear sends decode-shaped inputs to the kernels and everything with a gradient (or
// more rows than the limit) to LibTorch. Q8_0: the weights quantised as ggml's reference quantiser does, the fp16
// scales converted as c10::Half does, activations quantised as stated, the product equal to a scalar fp64 reference of
// the same integers and within the activations' proven quantisation error of the fp32 product.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include "core/env_flag.h"
#include "core/frozen_weights.h"
#include "core/weight_memory.h"
#include "core/runtime.h"
#include "core/kernels/decode_ops.h"
#include "core/kernels/panel_matmul.h"
#include "core/kernels/skinny_matmul.h"
#include "core/torch_pch.h"
#include "test_util.h"

#include <cmath>
#include <fstream>
#include <random>

namespace frozenlm::test {

namespace {
// |a − b| ≤ tol · (1 + |b|), element-wise; returns the worst ratio.
double worst(const at::Tensor& a, const at::Tensor& b) {
  return ((a.to(at::kDouble) - b.to(at::kDouble)).abs() / (1 + b.to(at::kDouble).abs())).max().item<double>();
}

// The per-row int8 kernel rounds each activation to int16 in its chunk of kI16Chunk: off by at most half a step,
// step = the chunk's max|x| / 32767. Bound on |x·wᵀ − x̃·wᵀ| for x [rows, in], w [out, in]: Σ_i |w_i| · step(i) / 2.
at::Tensor int16_activation_error_bound(const at::Tensor& x, const at::Tensor& w) {
  const int64_t rows = x.size(0), in = x.size(1), c = kernels::kI16Chunk;
  at::Tensor half_step = at::empty({rows, in}, at::kDouble);
  for (int64_t c0 = 0; c0 < in; c0 += c) {
    const int64_t len = std::min(c, in - c0);
    const at::Tensor amax = std::get<0>(x.narrow(1, c0, len).abs().max(1, true)).to(at::kDouble);
    half_step.narrow(1, c0, len).copy_((amax / 32767 / 2).expand({rows, len}));
  }
  return at::matmul(half_step, w.to(at::kDouble).abs().t());
}
}  // namespace

TEST(SkinnyMatmul, EqualsLibTorchForEveryFormatShapeAndThreadCount) {
  const int threads_before = at::get_num_threads();
  const int64_t per_task_before = kernels::set_weights_per_task(1);  // split even the smallest shapes across the threads
  auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
  for (int threads : {1, 2}) {
    at::set_num_threads(threads);
    for (int64_t rows : {1, 2, 3, 4, 5, 8, 13, 64})
      for (int64_t in : {1, 7, 8, 15, 16, 17, 33, 200, 300})
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
            if (f != WeightFormat::Int8) {
              ASSERT_LE(worst(y, ref), tol) << weight_format_name(f) << " rows " << rows << " in " << in << " out " << out << " threads " << threads;
            } else {  // plus the int16 activations' rounding: ≤ Σ_i |w_i| · (chunk's max|x|) / 65534
              const at::Tensor bound = int16_activation_error_bound(x, lin.weight_f32());
              ASSERT_TRUE(((y.to(at::kDouble) - ref.to(at::kDouble)).abs() <= bound * (1 + 1e-5) + tol * (1 + ref.to(at::kDouble).abs())).all().item<bool>())
                  << "int8 rows " << rows << " in " << in << " out " << out << " threads " << threads;
            }
          }
        }
  }
  at::set_num_threads(threads_before);
  kernels::set_weights_per_task(per_task_before);
}

// The panel kernels (batched decoding) against LibTorch's linear on the same widened weights: every format, row
// counts around the 4-row tile, inputs around the 8-wide vector loads and the 256-deep panels, outputs around the
// 24-wide blocks, 1 and 2 threads (the largest shape is split across both).
TEST(PanelMatmul, EqualsLibTorchForEveryFormatShapeAndThreadCount) {
  const int threads_before = at::get_num_threads();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(11);
  struct Shape { int64_t rows, in, out; };
  std::vector<Shape> shapes;
  for (int64_t rows : {1, 3, 4, 5, 9, 17, 64})
    for (int64_t in : {1, 7, 8, 9, 32, 255, 256, 257, 288, 544})
      for (int64_t out : {1, 5, 23, 24, 25, 49}) shapes.push_back({rows, in, out});
  shapes.push_back({64, 544, 1031});  // 43 blocks of 24: several tasks on two threads
  for (int threads : {1, 2}) {
    at::set_num_threads(threads);
    for (const Shape& sh : shapes) {
      const at::Tensor w = at::randn({sh.out, sh.in}, gen), x = at::randn({sh.rows, sh.in}, gen), b = at::randn({sh.out}, gen);
      for (WeightFormat f : {WeightFormat::F32, WeightFormat::BF16, WeightFormat::Int8, WeightFormat::Q8_0}) {
        const FrozenLinear lin(w, f == WeightFormat::F32 && sh.out % 2 ? at::Tensor() : b, f);  // also without bias
        const float* bias = lin.bias().defined() ? lin.bias().data_ptr<float>() : nullptr;
        const at::Tensor ref = at::linear(x, lin.weight_f32(), lin.bias().defined() ? c10::optional<at::Tensor>(lin.bias()) : c10::nullopt);
        at::Tensor y = at::full({sh.rows, sh.out}, std::nanf(""));
        const float* xp = x.data_ptr<float>();
        float* yp = y.data_ptr<float>();
        switch (lin.format()) {  // Q8_0 with in % 32 != 0 is stored as per-row int8
          case WeightFormat::F32: kernels::panel_matmul_f32(xp, sh.rows, sh.in, lin.raw_weight().data_ptr<float>(), sh.out, bias, yp); break;
          case WeightFormat::BF16:
            kernels::panel_matmul_bf16(xp, sh.rows, sh.in, reinterpret_cast<const uint16_t*>(lin.raw_weight().data_ptr<at::BFloat16>()), sh.out, bias, yp);
            break;
          case WeightFormat::Int8:
            kernels::panel_matmul_int8(xp, sh.rows, sh.in, lin.raw_weight().data_ptr<int8_t>(), lin.raw_scale().data_ptr<float>(), sh.out, bias, yp);
            break;
          case WeightFormat::Q8_0:
            kernels::panel_matmul_q8_0(xp, sh.rows, sh.in, lin.raw_weight().data_ptr<int8_t>(),
                                       reinterpret_cast<const uint16_t*>(lin.raw_scale().data_ptr<at::Half>()), sh.out, bias, yp);
            break;
        }
        // fp32 sums of `in` products in another order (the widened weights are the same fp32 values)
        ASSERT_LE(worst(y, ref), 2e-6 * std::sqrt(double(sh.in)) * 4)
            << weight_format_name(lin.format()) << " rows " << sh.rows << " in " << sh.in << " out " << sh.out << " threads " << threads;
      }
    }
  }
  at::set_num_threads(threads_before);
}

TEST(SkinnyMatmul, Int8IsTheIntegerChunkSumsOfInt16ActivationsAndWithinTheirRoundingError) {
  // Against a scalar fp64 reference of the same integers: Σ_chunks dx · Σ x16 · q, times the row's scale — the kernel
  // adds only fp32 rounding; and against fp32 activations within the int16 rounding's proven bound. in = 301: chunks
  // of 128, 128 and 45 (vector steps of 32 and 16, then a scalar tail); 1–5 rows (every row group), 1 and 2 threads.
  const int threads_before = at::get_num_threads();
  const int64_t per_task_before = kernels::set_weights_per_task(1);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  const int64_t in = 301, out = 37, nc = 3;
  const at::Tensor w = at::randn({out, in}, gen);
  const FrozenLinear lin(w, at::Tensor(), WeightFormat::Int8);
  for (int threads : {1, 2})
    for (int64_t rows : {1, 2, 3, 4, 5}) {
      at::set_num_threads(threads);
      const at::Tensor x = at::randn({rows, in}, gen) * 3;
      at::Tensor y = at::empty({rows, out});
      kernels::skinny_matmul_int8(x.data_ptr<float>(), rows, in, lin.raw_weight().data_ptr<int8_t>(), lin.raw_scale().data_ptr<float>(), out,
                                  nullptr, y.data_ptr<float>());
      at::Tensor x16 = at::empty({rows, in}, at::kShort), dx = at::empty({rows, nc});
      for (int64_t r = 0; r < rows; ++r) kernels::quantize_row_i16(x[r].data_ptr<float>(), in, x16[r].data_ptr<int16_t>(), dx[r].data_ptr<float>());
      at::Tensor ref = at::zeros({rows, out}, at::kDouble);
      for (int64_t c = 0; c < nc; ++c) {
        const int64_t c0 = c * 128, len = std::min<int64_t>(128, in - c0);
        const at::Tensor sums = at::matmul(x16.narrow(1, c0, len).to(at::kDouble), lin.raw_weight().narrow(1, c0, len).to(at::kDouble).t());
        ref += sums * dx.narrow(1, c, 1).to(at::kDouble);
      }
      ref *= lin.raw_scale().to(at::kDouble);
      ASSERT_LE(worst(y, ref), 1e-5) << "rows " << rows << " threads " << threads;
      const at::Tensor exact = at::matmul(x.to(at::kDouble), lin.weight_f32().to(at::kDouble).t());
      const at::Tensor bound = int16_activation_error_bound(x, lin.weight_f32());
      ASSERT_TRUE(((y.to(at::kDouble) - exact).abs() <= bound * (1 + 1e-5) + 1e-5 * (1 + exact.abs())).all().item<bool>()) << "rows " << rows;
      // the rounding is real (a kernel that skipped it would pass the bound trivially only if it were exact)
      EXPECT_GT((ref - exact).abs().max().item<double>(), 0.0);
    }
  // …and the int8 matrix was never widened into a full fp32 copy: the kernel reads the int8 bytes it was given.
  EXPECT_EQ(lin.raw_weight().scalar_type(), at::kChar);
  at::set_num_threads(threads_before);
  kernels::set_weights_per_task(per_task_before);
}

TEST(SkinnyMatmul, Int16ActivationQuantisationRoundsToNearestEvenPerChunk) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(12);
  const int64_t in = 300;  // chunks of 128, 128 and 44
  at::Tensor x = at::randn({in}, gen);
  x.narrow(0, 128, 128).zero_();                          // a zero chunk
  x[256] = 32767.f; x[257] = 0.5f; x[258] = 1.5f; x[259] = -2.5f;  // amax 32767: the step is 1, ties round to even
  std::vector<int16_t> q(in);
  std::vector<float> dx(3);
  kernels::quantize_row_i16(x.data_ptr<float>(), in, q.data(), dx.data());
  for (int64_t c = 0; c < 3; ++c) {
    const int64_t c0 = c * 128, len = std::min<int64_t>(128, in - c0);
    float amax = 0;
    for (int64_t i = 0; i < len; ++i) amax = std::max(amax, std::fabs(x[c0 + i].item<float>()));
    ASSERT_EQ(dx[c], amax / 32767.f) << "chunk " << c;
    const float id = amax != 0.f ? 32767.f / amax : 0.f;
    for (int64_t i = 0; i < len; ++i) ASSERT_EQ(q[c0 + i], int16_t(std::nearbyint(x[c0 + i].item<float>() * id))) << c0 + i;
  }
  EXPECT_EQ(dx[1], 0.f);
  EXPECT_EQ(q[256], 32767);
  EXPECT_EQ(q[257], 0);   // 0.5 -> 0
  EXPECT_EQ(q[258], 2);   // 1.5 -> 2
  EXPECT_EQ(q[259], -2);  // -2.5 -> -2
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
    if (f != WeightFormat::Int8)
      EXPECT_LE(worst(with, without), 1e-5) << weight_format_name(f);
    else  // the int16 activations' rounding, bounded as in the tests above
      EXPECT_TRUE(((with - without).abs().view({3, 48}).to(at::kDouble) <=
                   int16_activation_error_bound(x.view({3, 40}), lin.weight_f32()) * (1 + 1e-5) + 1e-5 * (1 + without.abs().view({3, 48}).to(at::kDouble)))
                      .all()
                      .item<bool>());
    EXPECT_FALSE(at::equal(with, without)) << "identical bits: the kernel path did not run (" << weight_format_name(f) << ")";
    // A gradient to the input: LibTorch's path, which autograd can differentiate.
    const at::Tensor xg = x.clone().requires_grad_(true);
    const at::Tensor yg = lin.forward(xg);
    ASSERT_TRUE(yg.requires_grad());
    yg.sum().backward();
    EXPECT_LE(worst(xg.grad(), lin.weight_f32().sum(0).expand({1, 3, 40})), 1e-5);
    // More rows than the limit: the panel kernels (fp32 arithmetic on the widened weights) up to kPanelMaxRows,
    // then LibTorch's GEMM (bit-identical to the kernels-off path).
    at::NoGradGuard ng;
    const int64_t limit = kernels::skinny_rows_limit();
    EXPECT_EQ(limit, 8);
    const at::Tensor at_limit = at::randn({limit, 40}, gen);
    EXPECT_FALSE(at::equal(lin.forward(at_limit), at::linear(at_limit, lin.weight_f32(), b))) << "the kernels take " << limit << " rows";
    for (int64_t rows : {limit + 1, kernels::kPanelMaxRows}) {
      const at::Tensor xs = at::randn({rows, 40}, gen);
      float* xp = xs.data_ptr<float>();
      at::Tensor panel = at::empty({rows, 48});
      lin.forward_rows(xp, rows, panel.data_ptr<float>());
      kernels::set_panel_kernels(false);
      const at::Tensor gemm = lin.forward(xs);
      kernels::set_panel_kernels(true);
      EXPECT_TRUE(at::equal(lin.forward(xs), panel)) << "forward and forward_rows take the same path";
      EXPECT_FALSE(at::equal(panel, gemm)) << "identical bits: the panel kernel did not run (" << rows << " rows)";
      EXPECT_LE(worst(panel, gemm), 1e-5) << weight_format_name(f) << " " << rows << " rows";
    }
    const at::Tensor big = at::randn({kernels::kPanelMaxRows + 1, 40}, gen);
    kernels::set_skinny_kernels(false);
    const at::Tensor ref = lin.forward(big);
    kernels::set_skinny_kernels(true);
    EXPECT_TRUE(at::equal(lin.forward(big), ref));
  }
}

namespace {
// ggml's quantize_row_q8_0_ref, written out independently: d = amax / 127 (fp32, stored as fp16), q = roundf(x / d).
void ggml_q8_0_reference(const at::Tensor& w, at::Tensor& q, at::Tensor& d) {
  const int64_t out = w.size(0), in = w.size(1), nb = in / 32;
  q = at::empty({out, in}, at::kChar);
  d = at::empty({out, nb}, at::kHalf);
  auto wa = w.accessor<float, 2>();
  for (int64_t o = 0; o < out; ++o)
    for (int64_t b = 0; b < nb; ++b) {
      float amax = 0;
      for (int64_t i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(wa[o][b * 32 + i]));
      const float dv = amax / 127.f, id = dv != 0.f ? 1.f / dv : 0.f;
      d[o][b] = c10::Half(dv);
      for (int64_t i = 0; i < 32; ++i) q.data_ptr<int8_t>()[o * in + b * 32 + i] = int8_t(roundf(wa[o][b * 32 + i] * id));
    }
}
}  // namespace

TEST(Q8_0, HalfConversionEqualsC10Half) {
  for (uint32_t h = 0; h < 65536; ++h) {
    c10::Half ref;
    ref.x = uint16_t(h);
    const float want = float(ref), got = kernels::half_to_float(uint16_t(h));
    if (std::isnan(want)) ASSERT_TRUE(std::isnan(got)) << h;
    else ASSERT_EQ(got, want) << "half bits " << h;
  }
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  // Normal, subnormal, overflowing, tie and zero values of every sign.
  std::vector<float> xs{0.f, -0.f, 1.f, -2.5f, 65504.f, 65519.f, 65520.f, 1e6f, -1e6f, 6.1e-5f, 5.96e-8f, 2.98e-8f, 2.99e-8f, 1e-10f, 1.00048828125f};
  const at::Tensor r = at::randn({20000}, gen) * at::pow(10.0, at::randint(-9, 6, {20000}, gen).to(at::kFloat));
  for (int64_t i = 0; i < r.numel(); ++i) xs.push_back(r[i].item<float>());
  for (float x : xs) ASSERT_EQ(kernels::float_to_half(x), c10::Half(x).x) << x;
}

TEST(Q8_0, StorageIsGgmlQuantisationAndRowsThatAreNotBlocksStayPerRowInt8) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(2);
  const at::Tensor w = at::randn({37, 96}, gen) * at::rand({37, 1}, gen);
  w[3].zero_();  // an all-zero row: scale 0, q 0
  const FrozenLinear lin(w, at::Tensor(), WeightFormat::Q8_0);
  ASSERT_EQ(lin.format(), WeightFormat::Q8_0);
  at::Tensor q, d;
  ggml_q8_0_reference(w, q, d);
  EXPECT_TRUE(at::equal(lin.raw_weight(), q));
  ASSERT_EQ(lin.raw_scale().scalar_type(), at::kHalf);
  EXPECT_TRUE(at::equal(lin.raw_scale(), d));
  EXPECT_EQ(lin.bytes(), 37 * 96 + 37 * 3 * 2);
  // Dequantised: q · d per block, within half a step of the original (plus q · the fp16 rounding of d: ≤ 127 · d / 2048).
  const at::Tensor deq = lin.weight_f32();
  EXPECT_TRUE(at::allclose(deq, (q.to(at::kFloat).view({37, 3, 32}) * d.to(at::kFloat).unsqueeze(-1)).view({37, 96})));
  EXPECT_TRUE(((deq - w).abs() <= d.to(at::kFloat).repeat_interleave(32, 1) * (0.5 + 127.0 / 2048) + 1e-7).all().item<bool>());
  // 100 inputs are not whole blocks of 32: per-row int8, as llama.cpp leaves such tensors in another type.
  const FrozenLinear odd(at::randn({5, 100}, gen), at::Tensor(), WeightFormat::Q8_0);
  EXPECT_EQ(odd.format(), WeightFormat::Int8);
  EXPECT_EQ(odd.raw_scale().scalar_type(), at::kFloat);
  // The embedding lookup of a Q8_0 table returns the dequantised rows.
  const FrozenEmbedding emb(w, WeightFormat::Q8_0);
  const at::Tensor ids = at::tensor(std::vector<int64_t>{3, 0, 36, 0}, at::kLong).view({2, 2});
  EXPECT_TRUE(at::equal(emb.lookup(ids), deq.index_select(0, ids.view(-1)).view({2, 2, 96})));
  EXPECT_EQ(parse_weight_format("q8_0"), WeightFormat::Q8_0);
  EXPECT_STREQ(weight_format_name(WeightFormat::Q8_0), "q8_0");
}

TEST(Q8_0, ActivationQuantisationRoundsToNearestEvenPerBlock) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(4);
  const int64_t in = 160;
  at::Tensor x = at::randn({in}, gen);
  x.narrow(0, 64, 32).zero_();                 // a zero block
  x[100] = 127.f; x[101] = 0.5f; x[102] = 1.5f;  // amax 127 in its block: exact ties at .5 round to even
  std::vector<int8_t> qx(in);
  std::vector<float> dx(in / 32);
  kernels::quantize_row_q8_0(x.data_ptr<float>(), in, qx.data(), dx.data());
  for (int64_t b = 0; b < in / 32; ++b) {
    float amax = 0;
    for (int64_t i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[b * 32 + i].item<float>()));
    ASSERT_EQ(dx[b], amax / 127.f) << "block " << b;
    const float id = amax != 0.f ? 127.f / amax : 0.f;
    for (int64_t i = 0; i < 32; ++i) ASSERT_EQ(qx[b * 32 + i], int8_t(std::nearbyint(x[b * 32 + i].item<float>() * id))) << b * 32 + i;
  }
  EXPECT_EQ(qx[101], 0);  // 0.5 -> 0
  EXPECT_EQ(qx[102], 2);  // 1.5 -> 2
  EXPECT_EQ(dx[2], 0.f);
}

TEST(Q8_0, ProductIsTheIntegerBlockSumsAndWithinTheActivationError) {
  const int threads_before = at::get_num_threads();
  const int64_t per_task_before = kernels::set_weights_per_task(1);  // split even the smallest shapes across the threads
  auto gen = at::make_generator<at::CPUGeneratorImpl>(6);
  for (int threads : {1, 2})
    for (int64_t rows : {1, 3, 8, 64})
      for (int64_t in : {32, 96, 512, 2048})  // ≤ 512 at batch 1: four weight rows at once (7 and 130: 4-row steps, then a tail)
        for (int64_t out : {1, 7, 130}) {
          at::set_num_threads(threads);
          const at::Tensor w = at::randn({out, in}, gen), x = at::randn({rows, in}, gen), b = at::randn({out}, gen);
          const FrozenLinear lin(w, b, WeightFormat::Q8_0);
          at::Tensor y = at::empty({rows, out});
          kernels::skinny_matmul_q8_0(x.data_ptr<float>(), rows, in, lin.raw_weight().data_ptr<int8_t>(),
                                      reinterpret_cast<const uint16_t*>(lin.raw_scale().data_ptr<at::Half>()), out, b.data_ptr<float>(),
                                      y.data_ptr<float>());
          // The same integers in fp64: x quantised per row, Σ_blocks dx · dw · Σ qx · qw.
          at::Tensor qx = at::empty({rows, in}, at::kChar), dx = at::empty({rows, in / 32});
          for (int64_t r = 0; r < rows; ++r)
            kernels::quantize_row_q8_0(x[r].data_ptr<float>(), in, qx[r].data_ptr<int8_t>(), dx[r].data_ptr<float>());
          const at::Tensor prod = (qx.to(at::kDouble).view({rows, 1, in / 32, 32}) * lin.raw_weight().to(at::kDouble).view({1, out, in / 32, 32})).sum(-1);
          const at::Tensor ref = (prod * dx.to(at::kDouble).unsqueeze(1) * lin.raw_scale().to(at::kDouble).unsqueeze(0)).sum(-1) + b.to(at::kDouble);
          ASSERT_LE(worst(y, ref), 1e-6 * std::sqrt(double(in))) << "rows " << rows << " in " << in << " out " << out << " threads " << threads;
          // Against fp32 activations: |Δ| ≤ Σ_i |w_i| · dx(block of i) / 2 (each activation is off by ≤ half a step).
          const at::Tensor exact = at::linear(x.to(at::kDouble), lin.weight_f32().to(at::kDouble), b.to(at::kDouble));
          const at::Tensor bound = at::matmul(dx.to(at::kDouble).repeat_interleave(32, 1) * 0.5, lin.weight_f32().to(at::kDouble).abs().t());
          ASSERT_TRUE(((y.to(at::kDouble) - exact).abs() <= bound * (1 + 1e-5) + 1e-4).all().item<bool>()) << "rows " << rows << " in " << in;
        }
  at::set_num_threads(threads_before);
  kernels::set_weights_per_task(per_task_before);
}

TEST(WeightMemory, LargeWeightsAreOnHugePagesAndDecodeTheSameBits) {
  // Every storage format of a 6 MiB-or-more matrix: with huge-page weights on, the stored matrix is 2 MiB-aligned and
  // (where the kernel's THP mode lets madvise work, as Debian's default "madvise") backed by huge pages; the decode
  // and LibTorch paths give the same bits as with it off. Small matrices stay in ordinary memory.
  const bool before = set_huge_page_weights(true);
  std::ifstream thp("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string mode;
  std::getline(thp, mode);
  const bool thp_can = mode.find("[madvise]") != std::string::npos || mode.find("[always]") != std::string::npos;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(13);
  const at::Tensor w = at::randn({1536, 1024}, gen), b = at::randn({1536}, gen), x = at::randn({3, 1024}, gen);
  for (WeightFormat fmt : {WeightFormat::F32, WeightFormat::BF16, WeightFormat::Int8, WeightFormat::Q8_0}) {
    const at::Tensor wide = fmt == WeightFormat::F32 ? w : at::cat({w, w, w, w}).contiguous();  // ≥ 4 MiB in 1-byte formats too
    const at::Tensor bias = fmt == WeightFormat::F32 ? b : at::cat({b, b, b, b});
    const FrozenLinear on(wide, bias, fmt);
    set_huge_page_weights(false);
    const FrozenLinear off(wide, bias, fmt);
    set_huge_page_weights(true);
    ASSERT_GE(int64_t(on.raw_weight().nbytes()), kHugePageMinBytes) << weight_format_name(fmt);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(on.raw_weight().data_ptr()) % (2 << 20), 0u) << weight_format_name(fmt);
    EXPECT_TRUE(at::equal(on.raw_weight(), off.raw_weight())) << weight_format_name(fmt);
    if (thp_can) EXPECT_GT(huge_page_bytes(on.raw_weight()), 0) << weight_format_name(fmt) << " (THP: " << mode << ")";
    // already in weight memory: not copied again (GGUF's Q8_0 matrices are joined straight into it)
    EXPECT_EQ(to_weight_memory(on.raw_weight()).data_ptr(), on.raw_weight().data_ptr()) << weight_format_name(fmt);
    at::NoGradGuard ng;
    EXPECT_TRUE(at::equal(on.forward(x), off.forward(x))) << weight_format_name(fmt);
    kernels::set_skinny_kernels(false);
    EXPECT_TRUE(at::equal(on.forward(x), off.forward(x))) << weight_format_name(fmt);
    kernels::set_skinny_kernels(true);
  }
  const FrozenLinear small(at::randn({64, 64}, gen), at::Tensor(), WeightFormat::F32);
  EXPECT_LT(int64_t(small.raw_weight().nbytes()), kHugePageMinBytes);
  EXPECT_GE(huge_page_bytes(small.raw_weight()), 0);  // /proc/self/smaps read and the mapping found
  set_huge_page_weights(before);
}

TEST(SkinnyMatmul, PrefetchDistanceChangesNoProduct) {
  // The int8 and Q8_0 kernels prefetch the weights ahead of what they read (kernels::set_prefetch_bytes, which
  // frozenlm_bench_decode --prefetch sweeps): every distance, none included, gives the same bits, at batch 1 (short
  // and long rows) and batch 3, on 1 and 2 threads.
  const int threads_before = at::get_num_threads();
  const int64_t per_task_before = kernels::set_weights_per_task(1);
  const int64_t prefetch_before = kernels::prefetch_bytes();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(12);
  for (int64_t in : {256, 1024})
    for (WeightFormat fmt : {WeightFormat::Int8, WeightFormat::Q8_0}) {
      const int64_t out = 70;
      const FrozenLinear lin(at::randn({out, in}, gen), at::randn({out}, gen), fmt);
      for (int64_t rows : {1, 3})
        for (int threads : {1, 2}) {
          at::set_num_threads(threads);
          const at::Tensor x = at::randn({rows, in}, gen);
          at::Tensor first;
          for (int64_t pf : {0, 64, 2048, 1 << 20}) {
            kernels::set_prefetch_bytes(pf);
            ASSERT_EQ(kernels::prefetch_bytes(), pf);
            at::Tensor y = at::empty({rows, out});
            lin.forward_rows(x.data_ptr<float>(), rows, y.data_ptr<float>());
            if (!first.defined()) first = y;
            ASSERT_TRUE(at::equal(y, first)) << "prefetch " << pf << " in " << in << " rows " << rows << " threads " << threads;
          }
        }
    }
  kernels::set_prefetch_bytes(prefetch_before);
  at::set_num_threads(threads_before);
  kernels::set_weights_per_task(per_task_before);
}

TEST(Q8_0, FrozenLinearDecodesWithTheKernelAndTrainsThroughTheDequantisedMatrix) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(8);
  const at::Tensor w = at::randn({48, 64}, gen), b = at::randn({48}, gen);
  const FrozenLinear lin(w, b, WeightFormat::Q8_0);
  const at::Tensor x = at::randn({2, 64}, gen);
  at::Tensor with, without;
  {
    at::NoGradGuard ng;
    with = lin.forward(x);
    kernels::set_skinny_kernels(false);
    without = lin.forward(x);
    kernels::set_skinny_kernels(true);
  }
  EXPECT_TRUE(at::allclose(without, at::linear(x, lin.weight_f32(), b), 1e-5, 1e-5));
  // activation quantisation (bounded exactly in the test above): a few % of the outputs' scale
  EXPECT_LE((with - without).abs().max().item<double>(), 0.03 * without.abs().max().item<double>());
  EXPECT_FALSE(at::equal(with, without));
  std::vector<float> rows_out(2 * 48);
  lin.forward_rows(x.data_ptr<float>(), 2, rows_out.data());
  EXPECT_TRUE(at::equal(at::from_blob(rows_out.data(), {2, 48}), with));
  const at::Tensor xg = x.clone().requires_grad_(true);
  lin.forward(xg).sum().backward();
  EXPECT_TRUE(at::allclose(xg.grad(), lin.weight_f32().sum(0).expand({2, 64}), 1e-5, 1e-5));
}

// The decode step embeds its new tokens without tensor ops (FrozenEmbedding::lookup_into): the same fp32 values as
// lookup() in every storage format, rows in any order and repeated.
TEST(FrozenEmbedding, LookupIntoEqualsLookupInEveryFormat) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(12);
  const at::Tensor w = at::randn({41, 64}, gen);
  const std::vector<int64_t> ids = {40, 0, 7, 7, 23};
  for (WeightFormat f : {WeightFormat::F32, WeightFormat::BF16, WeightFormat::Int8, WeightFormat::Q8_0}) {
    const FrozenEmbedding emb(w, f);
    std::vector<float> out(ids.size() * 64);
    emb.lookup_into(ids.data(), int64_t(ids.size()), out.data());
    const at::Tensor ref = emb.lookup(at::tensor(ids, at::kLong).view({1, -1})).view({-1, 64});
    EXPECT_TRUE(at::equal(at::from_blob(out.data(), {int64_t(ids.size()), 64}), ref)) << weight_format_name(f);
  }
}

// The decode step's attention of one query (core/kernels/decode_ops.h) against softmax(q·Kᵀ·scale)·V in fp64, keys
// masked out by weight 0: masked values of 1e30 would swamp the output if they weighed anything at all.
TEST(DecodeOps, AttentionOfOneQueryEqualsAnFp64Softmax) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(9);
  for (int64_t hd : {8, 12, 16, 64}) {  // 12: not a multiple of 8 (the scalar code)
    for (int64_t S : {1, 3, 4, 5, 9, 17, 64, 203}) {
      const at::Tensor q = at::randn({hd}, gen), K = at::randn({S, hd}, gen) * 2;
      at::Tensor V = at::randn({S, hd}, gen);
      at::Tensor real = at::rand({S}, gen) > 0.3;
      real[S - 1] = true;
      V.index_put_({real.logical_not()}, 1e30);
      const float scale = float(1.0 / std::sqrt(double(hd)));
      at::Tensor scores = (K.to(at::kDouble).matmul(q.to(at::kDouble)) * scale).masked_fill(real.logical_not(), -INFINITY);
      const at::Tensor ref = scores.softmax(0).matmul(V.to(at::kDouble).masked_fill(real.logical_not().unsqueeze(1), 0));
      std::vector<float> p(S), out(hd);
      kernels::attend_one_query(q.data_ptr<float>(), K.data_ptr<float>(), V.data_ptr<float>(), real.data_ptr<bool>(), S, hd, scale,
                                p.data(), out.data());
      const at::Tensor got = at::from_blob(out.data(), {hd}).to(at::kDouble);
      EXPECT_LE((got - ref).abs().max().item<double>(), 2e-6 * (1 + ref.abs().max().item<double>())) << "hd " << hd << " S " << S;
    }
  }
  // Every key masked: every key weighs the same, as forward()'s −1e30 fill does.
  const at::Tensor K = at::randn({6, 8}, gen), V = at::randn({6, 8}, gen), q = at::randn({8}, gen);
  const at::Tensor none = at::zeros({6}, at::kBool);
  std::vector<float> p(6), out(8);
  kernels::attend_one_query(q.data_ptr<float>(), K.data_ptr<float>(), V.data_ptr<float>(), none.data_ptr<bool>(), 6, 8, 0.5f, p.data(), out.data());
  EXPECT_TRUE(at::allclose(at::from_blob(out.data(), {8}), V.mean(0), 1e-6, 1e-6));
}

// silu(g) · u against fp64 over the whole range of gate values the MLP can meet, including both ends where exp
// saturates (the vector exp clamps its argument at 88 and flushes results below FLT_MIN to 0).
TEST(DecodeOps, SiluMulEqualsFp64AcrossTheRange) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(10);
  for (double range : {1.0, 10.0, 100.0}) {
    const int64_t n = 1003;  // a scalar tail
    const at::Tensor g = (at::rand({n}, gen) * 2 - 1) * range, u = at::randn({n}, gen);
    g[0] = 0.f;
    g[1] = -0.f;
    g[2] = 1e-30f;
    std::vector<float> out(n);
    kernels::silu_mul(g.data_ptr<float>(), u.data_ptr<float>(), out.data(), n);
    const at::Tensor gd = g.to(at::kDouble), ref = gd / (1 + (-gd).exp()) * u.to(at::kDouble);
    const at::Tensor err = (at::from_blob(out.data(), {n}).to(at::kDouble) - ref).abs();
    // a few float roundings of the result (exp ≤ 2 ulp, divide, multiply), or below fp32's normal range
    EXPECT_TRUE((err <= 4e-7 * ref.abs() + 1e-36).all().item<bool>()) << "range " << range << ": worst " << (err / (ref.abs() + 1e-30)).max().item<double>();
  }
  // out may alias gate
  std::vector<float> g = {-3.f, 0.5f, 2.f}, u = {1.f, 2.f, 3.f};
  kernels::silu_mul(g.data(), u.data(), g.data(), 3);
  EXPECT_NEAR(g[1], 0.5 / (1 + std::exp(-0.5)) * 2, 1e-7);
}

// Greedy decoding's argmax: the first of equal largest values (ties anywhere in the vector and its tail), −0 and +0
// equal, NaN as the plain loop treats it — against that loop.
TEST(DecodeOps, ArgmaxPicksTheFirstLargestAsThePlainLoop) {
  auto loop = [](const std::vector<float>& x) {
    int64_t best = 0;
    for (size_t i = 1; i < x.size(); ++i)
      if (x[i] > x[best]) best = int64_t(i);
    return best;
  };
  std::mt19937 rng(11);
  for (int trial = 0; trial < 2000; ++trial) {
    const int64_t n = 1 + int64_t(rng() % 70);
    std::vector<float> x(n);
    for (auto& v : x) v = float(int(rng() % 7) - 3);  // few distinct values: many ties
    if (trial % 5 == 1) x[rng() % n] = -0.f;
    if (trial % 7 == 2) x[rng() % n] = NAN;
    if (trial % 11 == 3) x[0] = NAN;
    ASSERT_EQ(kernels::argmax(x.data(), n), loop(x)) << "trial " << trial << " n " << n;
  }
  std::vector<float> big(32000, -1.f);
  big[31999] = 2.f;
  big[17] = 2.f;
  EXPECT_EQ(kernels::argmax(big.data(), 32000), 17);
}

// The kernels split their output rows with at::parallel_for, a header template whose OpenMP pragma is compiled into
// our files: without -fopenmp it runs every range on one thread, silently (it did, until this test).
TEST(Runtime, ParallelForUsesEveryThreadInOurCode) {
  const int before = at::get_num_threads();
  for (int t : {1, 2, 3}) {
    at::set_num_threads(t);
    EXPECT_EQ(parallel_for_threads(), t) << t << " threads";
  }
  at::set_num_threads(before);
}

// --threads 0 (and a rank without --threads) reads OMP_NUM_THREADS when it is a positive count, as PyTorch does.
TEST(Runtime, ZeroThreadsMeansOmpNumThreadsWhenSet) {
  const int before = at::get_num_threads();
  const char* old = std::getenv("OMP_NUM_THREADS");
  const std::string saved = old ? old : "";
  ::setenv("OMP_NUM_THREADS", "3", 1);
  EXPECT_EQ(threads_from_environment(), 3);
  set_threads(0);
  EXPECT_EQ(at::get_num_threads(), 3);
  ::setenv("OMP_NUM_THREADS", "2,1", 1);  // OpenMP's nested form: the first level
  EXPECT_EQ(threads_from_environment(), 2);
  for (const char* bad : {"", "zero", "0", "-4", "3x"}) {
    ::setenv("OMP_NUM_THREADS", bad, 1);
    EXPECT_EQ(threads_from_environment(), 0) << "'" << bad << "'";
  }
  ::unsetenv("OMP_NUM_THREADS");
  EXPECT_EQ(threads_from_environment(), 0);
  set_threads(0);
  EXPECT_GE(at::get_num_threads(), 1);
  if (old) ::setenv("OMP_NUM_THREADS", saved.c_str(), 1);
  at::set_num_threads(before);
}

TEST(EnvSwitch, ReadsOnAndOffAndKeepsTheDefaultForAnythingElse) {
  const char* name = "FROZENLM_TEST_SWITCH";
  ::unsetenv(name);
  EXPECT_TRUE(env_on_off(name, true));
  EXPECT_FALSE(env_on_off(name, false));
  for (const char* off : {"0", "off", "false", "no"}) {
    ::setenv(name, off, 1);
    EXPECT_FALSE(env_on_off(name, true)) << off;
  }
  for (const char* on : {"1", "on", "true", "yes"}) {
    ::setenv(name, on, 1);
    EXPECT_TRUE(env_on_off(name, false)) << on;
  }
  ::setenv(name, "of", 1);  // a typo keeps the default, in both directions
  EXPECT_TRUE(env_on_off(name, true));
  EXPECT_FALSE(env_on_off(name, false));
  ::unsetenv(name);
}

}  // namespace frozenlm::test
