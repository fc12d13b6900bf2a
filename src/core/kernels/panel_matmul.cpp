#include "core/kernels/panel_matmul.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "core/env_flag.h"
#include "core/kernels/lanes.h"
#include "core/kernels/skinny_matmul.h"
#include "core/kernels/widen.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace frozenlm::kernels {

namespace {

std::atomic<bool> g_panel_on{env_on_off("FROZENLM_PANEL_KERNELS", true)};

const bool kPanelVectorised = cpu_has_avx2_fma_f16c();

// A stored matrix read as fp32 weights W(o, k), one at a time or (vector code) 8 consecutive inputs of one output
// row. The widened values are exactly FrozenLinear::weight_f32()'s: bf16 bits shifted, int8 q · scale[o], Q8_0
// q · d[o, k/32] (one fp32 product each).
struct F32Src {
  const float* w;
  int64_t in;
  const char* addr(int64_t o, int64_t k) const { return reinterpret_cast<const char*>(w + o * in + k); }
  static constexpr int64_t kBytes = 4;
  float at(int64_t o, int64_t k) const { return w[o * in + k]; }
#if defined(__x86_64__)
  __attribute__((target("avx2,fma"))) __m256 load8(int64_t o, int64_t k) const { return _mm256_loadu_ps(w + o * in + k); }
#endif
};
struct BF16Src {
  const uint16_t* w;
  int64_t in;
  const char* addr(int64_t o, int64_t k) const { return reinterpret_cast<const char*>(w + o * in + k); }
  static constexpr int64_t kBytes = 2;
  float at(int64_t o, int64_t k) const { return bf16_to_float(w[o * in + k]); }
#if defined(__x86_64__)
  __attribute__((target("avx2,fma"))) __m256 load8(int64_t o, int64_t k) const { return bf16x8_to_float(w + o * in + k); }
#endif
};
struct Int8Src {
  const int8_t* q;
  const float* scale;
  int64_t in;
  const char* addr(int64_t o, int64_t k) const { return reinterpret_cast<const char*>(q + o * in + k); }
  static constexpr int64_t kBytes = 1;
  float at(int64_t o, int64_t k) const { return float(q[o * in + k]) * scale[o]; }
#if defined(__x86_64__)
  __attribute__((target("avx2,fma"))) __m256 load8(int64_t o, int64_t k) const {
    const __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + o * in + k))));
    return _mm256_mul_ps(v, _mm256_set1_ps(scale[o]));
  }
#endif
};
struct Q8Src {
  const int8_t* q;
  const uint16_t* d;
  int64_t in, nb;  // nb = in / kQ8Block: scales per row
  const char* addr(int64_t o, int64_t k) const { return reinterpret_cast<const char*>(q + o * in + k); }  // (d: 1/16 of it, left to the hardware)
  static constexpr int64_t kBytes = 1;
  float at(int64_t o, int64_t k) const { return float(q[o * in + k]) * half_to_float(d[o * nb + k / kQ8Block]); }
#if defined(__x86_64__)
  // k % 8 == 0: the 8 inputs share one block's scale (converted by F16C, as half_to_float does in software).
  __attribute__((target("avx2,fma,f16c"))) __m256 load8(int64_t o, int64_t k) const {
    const __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + o * in + k))));
    return _mm256_mul_ps(v, _mm256_set1_ps(_cvtsh_ss(d[o * nb + k / kQ8Block])));
  }
#endif
};

// The panel: P[kk · kPanelOut + j] = W(o0 + j, k0 + kk) for kk < kc, j < n_o; zero for j ≥ n_o (the last block's
// missing outputs multiply to nothing and are not written out).
template <typename Src>
void pack_scalar(const Src& src, int64_t o0, int64_t n_o, int64_t k0, int64_t kc, float* P) {
  for (int64_t kk = 0; kk < kc; ++kk)
    for (int64_t j = 0; j < kPanelOut; ++j) P[kk * kPanelOut + j] = j < n_o ? src.at(o0 + j, k0 + kk) : 0.f;
}

template <int MR>
void tile_scalar(const float* x, int64_t ldx, const float* P, int64_t kc, float* C) {
  for (int64_t kk = 0; kk < kc; ++kk)
    for (int r = 0; r < MR; ++r) {
      const float a = x[r * ldx + kk];
      for (int64_t j = 0; j < kPanelOut; ++j) C[r * kPanelOut + j] += a * P[kk * kPanelOut + j];
    }
}

#if defined(__x86_64__)
// 8 rows of 8 floats -> 8 columns (r[i] becomes element i of every input row).
__attribute__((target("avx2,fma"))) inline void transpose8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// Eight output rows at a time: 8 inputs of each widened and scaled in registers, transposed, stored as 8 panel rows.
template <typename Src>
__attribute__((target("avx2,fma,f16c"))) void pack_avx2(const Src& src, int64_t o0, int64_t n_o, int64_t k0, int64_t kc, float* P) {
  for (int64_t g = 0; g < kPanelOut; g += 8) {
    const int64_t here = std::clamp<int64_t>(n_o - g, 0, 8);
    int64_t kk = 0;
    if (here == 8)
      for (; kk + 8 <= kc; kk += 8) {
        __m256 r[8];
        for (int i = 0; i < 8; ++i) r[i] = src.load8(o0 + g + i, k0 + kk);
        transpose8(r);
        for (int i = 0; i < 8; ++i) _mm256_store_ps(P + (kk + i) * kPanelOut + g, r[i]);
      }
    for (; kk < kc; ++kk)
      for (int64_t j = 0; j < 8; ++j) P[kk * kPanelOut + g + j] = j < here ? src.at(o0 + g + j, k0 + kk) : 0.f;
  }
}

// C[r, 0..24) += Σ_kk x[r, kk] · P[kk, 0..24) for MR rows: 3·MR accumulators in registers, three panel loads and MR
// broadcasts per input. Named accumulators, not arrays: with `__m256 c[MR][3]` GCC 12 kept registers but also
// stored every accumulator to the stack after each FMA (12 stores per input: half the FMA rate).
template <int MR>
__attribute__((target("avx2,fma"))) void tile_avx2(const float* x, int64_t ldx, const float* P, int64_t kc, float* C) {
  const float* x0 = x;
  const float* x1 = x + (MR > 1 ? ldx : 0);
  const float* x2 = x + (MR > 2 ? 2 * ldx : 0);
  const float* x3 = x + (MR > 3 ? 3 * ldx : 0);
  __m256 c00 = _mm256_loadu_ps(C), c01 = _mm256_loadu_ps(C + 8), c02 = _mm256_loadu_ps(C + 16);
  __m256 c10 = c00, c11 = c00, c12 = c00, c20 = c00, c21 = c00, c22 = c00, c30 = c00, c31 = c00, c32 = c00;
  if constexpr (MR > 1) c10 = _mm256_loadu_ps(C + 24), c11 = _mm256_loadu_ps(C + 32), c12 = _mm256_loadu_ps(C + 40);
  if constexpr (MR > 2) c20 = _mm256_loadu_ps(C + 48), c21 = _mm256_loadu_ps(C + 56), c22 = _mm256_loadu_ps(C + 64);
  if constexpr (MR > 3) c30 = _mm256_loadu_ps(C + 72), c31 = _mm256_loadu_ps(C + 80), c32 = _mm256_loadu_ps(C + 88);
  for (int64_t kk = 0; kk < kc; ++kk) {
    const float* p = P + kk * kPanelOut;
    const __m256 b0 = _mm256_load_ps(p), b1 = _mm256_load_ps(p + 8), b2 = _mm256_load_ps(p + 16);
    __m256 a = _mm256_broadcast_ss(x0 + kk);
    c00 = _mm256_fmadd_ps(a, b0, c00), c01 = _mm256_fmadd_ps(a, b1, c01), c02 = _mm256_fmadd_ps(a, b2, c02);
    if constexpr (MR > 1) {
      a = _mm256_broadcast_ss(x1 + kk);
      c10 = _mm256_fmadd_ps(a, b0, c10), c11 = _mm256_fmadd_ps(a, b1, c11), c12 = _mm256_fmadd_ps(a, b2, c12);
    }
    if constexpr (MR > 2) {
      a = _mm256_broadcast_ss(x2 + kk);
      c20 = _mm256_fmadd_ps(a, b0, c20), c21 = _mm256_fmadd_ps(a, b1, c21), c22 = _mm256_fmadd_ps(a, b2, c22);
    }
    if constexpr (MR > 3) {
      a = _mm256_broadcast_ss(x3 + kk);
      c30 = _mm256_fmadd_ps(a, b0, c30), c31 = _mm256_fmadd_ps(a, b1, c31), c32 = _mm256_fmadd_ps(a, b2, c32);
    }
  }
  _mm256_storeu_ps(C, c00), _mm256_storeu_ps(C + 8, c01), _mm256_storeu_ps(C + 16, c02);
  if constexpr (MR > 1) _mm256_storeu_ps(C + 24, c10), _mm256_storeu_ps(C + 32, c11), _mm256_storeu_ps(C + 40, c12);
  if constexpr (MR > 2) _mm256_storeu_ps(C + 48, c20), _mm256_storeu_ps(C + 56, c21), _mm256_storeu_ps(C + 64, c22);
  if constexpr (MR > 3) _mm256_storeu_ps(C + 72, c30), _mm256_storeu_ps(C + 80, c31), _mm256_storeu_ps(C + 88, c32);
}
#endif

// The weights of the panel widened next (n_o rows of `bytes` from `first`, `stride` apart), prefetched into L2 a
// share at a time while the current panel's tiles run: widening reads kPanelOut rows at once, more streams than the
// hardware prefetcher follows, and without this the widening waited on memory (f32 batch 64: 22% of the kernel's
// time in widening, BENCHMARKS.md "Batched decode on widened panels").
struct NextPanel {
  const char* first = nullptr;
  int64_t stride = 0, bytes = 0, n_o = 0;
  int64_t row = 0, offset = 0;  // where prefetching goes on: the row, the byte within it
  int64_t lines() const { return n_o * ((bytes + 63) / 64); }
  void prefetch(int64_t count) {
#if defined(__x86_64__)
    for (; count > 0 && row < n_o; --count) {
      _mm_prefetch(first + row * stride + offset, _MM_HINT_T1);
      if ((offset += 64) >= bytes) offset = 0, ++row;
    }
#else
    (void)count;
#endif
  }
};

// Every row of x against one panel, kPanelRows rows at a time (then the 1–3 left over), prefetching the next panel.
template <bool Vec>
void tiles(const float* x, int64_t rows, int64_t in, const float* P, int64_t kc, float* C, NextPanel& next) {
  int64_t r = 0;
  const int64_t share = (next.lines() + (rows + 3) / 4 - 1) / ((rows + 3) / 4);
#if defined(__x86_64__)
  if (Vec) {
    for (; r + 4 <= rows; r += 4) {
      next.prefetch(share);
      tile_avx2<4>(x + r * in, in, P, kc, C + r * kPanelOut);
    }
    next.prefetch(share);
    switch (rows - r) {
      case 3: tile_avx2<3>(x + r * in, in, P, kc, C + r * kPanelOut); break;
      case 2: tile_avx2<2>(x + r * in, in, P, kc, C + r * kPanelOut); break;
      case 1: tile_avx2<1>(x + r * in, in, P, kc, C + r * kPanelOut); break;
      default: break;
    }
    return;
  }
#endif
  for (; r < rows; ++r) tile_scalar<1>(x + r * in, in, P, kc, C + r * kPanelOut);
}

// Output blocks of kPanelOut rows of W split across threads; within a block, the inputs in panels of kPanelDepth:
// widen one panel, run every row of x against it, widen the next. A task takes at least ~2M multiply-adds (below
// that the fork/join costs more than it shares).
template <typename Src>
void panel(const float* x, int64_t rows, int64_t in, int64_t out, const float* bias, float* y, const Src& src) {
  if (rows <= 0 || out <= 0) return;
  const int64_t blocks = (out + kPanelOut - 1) / kPanelOut;
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 21) / std::max<int64_t>(kPanelOut * in * rows, 1));
  at::parallel_for(0, blocks, grain, [&](int64_t b0, int64_t b1) {
    alignas(32) float P[kPanelDepth * kPanelOut];
    thread_local std::vector<float> acc;  // [rows, kPanelOut]: this thread's block of y, summed over the panels
    acc.resize(rows * kPanelOut);
    float* C = acc.data();
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t o0 = b * kPanelOut, n_o = std::min(kPanelOut, out - o0);
      std::fill(C, C + rows * kPanelOut, 0.f);
      for (int64_t k0 = 0; k0 < in; k0 += kPanelDepth) {
        const int64_t kc = std::min(kPanelDepth, in - k0);
        // the panel after this one: this block's next inputs, or the next block's first
        NextPanel next;
        const int64_t nk0 = k0 + kc < in ? k0 + kc : 0, no0 = k0 + kc < in ? o0 : o0 + kPanelOut;
        if (no0 < b1 * kPanelOut && no0 < out) {
          next.first = src.addr(no0, nk0);
          next.stride = in * Src::kBytes;
          next.bytes = std::min(kPanelDepth, in - nk0) * Src::kBytes;
          next.n_o = std::min(kPanelOut, out - no0);
        }
#if defined(__x86_64__)
        if (kPanelVectorised) {
          pack_avx2(src, o0, n_o, k0, kc, P);
          tiles<true>(x + k0, rows, in, P, kc, C, next);
          continue;
        }
#endif
        pack_scalar(src, o0, n_o, k0, kc, P);
        tiles<false>(x + k0, rows, in, P, kc, C, next);
      }
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < n_o; ++j) y[r * out + o0 + j] = C[r * kPanelOut + j] + (bias ? bias[o0 + j] : 0.f);
    }
  });
}

}  // namespace

void panel_matmul_f32(const float* x, int64_t rows, int64_t in, const float* w, int64_t out, const float* bias, float* y) {
  panel(x, rows, in, out, bias, y, F32Src{w, in});
}
void panel_matmul_bf16(const float* x, int64_t rows, int64_t in, const uint16_t* w, int64_t out, const float* bias, float* y) {
  panel(x, rows, in, out, bias, y, BF16Src{w, in});
}
void panel_matmul_int8(const float* x, int64_t rows, int64_t in, const int8_t* q, const float* scale, int64_t out,
                       const float* bias, float* y) {
  panel(x, rows, in, out, bias, y, Int8Src{q, scale, in});
}
void panel_matmul_q8_0(const float* x, int64_t rows, int64_t in, const int8_t* q, const uint16_t* d, int64_t out,
                       const float* bias, float* y) {
  panel(x, rows, in, out, bias, y, Q8Src{q, d, in, in / kQ8Block});
}

void set_panel_kernels(bool on) { g_panel_on = on; }
bool panel_kernels_on() { return g_panel_on; }

}  // namespace frozenlm::kernels
