#include "core/kernels/skinny_matmul.h"

#include <ATen/Parallel.h>

#include <algorithm>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace frozenlm::kernels {

namespace {

// One weight row, widened to 8 fp32 lanes at a time (or one lane in the scalar tail).
struct F32Row {
  const float* w;
  float scalar(int64_t i) const { return w[i]; }
#if defined(__x86_64__)
  __attribute__((target("avx2,fma"))) __m256 load8(int64_t i) const { return _mm256_loadu_ps(w + i); }
#endif
};
struct BF16Row {
  const uint16_t* w;
  float scalar(int64_t i) const {
    const uint32_t bits = uint32_t(w[i]) << 16;
    float f;
    __builtin_memcpy(&f, &bits, 4);
    return f;
  }
#if defined(__x86_64__)
  __attribute__((target("avx2,fma"))) __m256 load8(int64_t i) const {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
#endif
};
struct Int8Row {
  const int8_t* q;
  float scalar(int64_t i) const { return float(q[i]); }
#if defined(__x86_64__)
  __attribute__((target("avx2,fma"))) __m256 load8(int64_t i) const {
    const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + i));
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
  }
#endif
};

// Rows of x handled together against one weight row: the row is read from memory once per group (and from L1 for
// the other rows of the group).
constexpr int64_t kGroup = 4;

template <typename Row>
void dot_rows_scalar(const float* x, int64_t rows, int64_t in, const Row& w, float* acc) {
  for (int64_t r = 0; r < rows; ++r) {
    float s = 0;
    for (int64_t i = 0; i < in; ++i) s += x[r * in + i] * w.scalar(i);
    acc[r] = s;
  }
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) inline float hsum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}

// acc[r] = x[r] · w for G rows at once (G known at compile time: the accumulators stay in registers); two
// accumulators per row hide the FMA latency.
template <int G, typename Row>
__attribute__((target("avx2,fma"))) void dot_group(const float* x, int64_t in, const Row& w, float* acc) {
  __m256 a[G][2];
  for (int r = 0; r < G; ++r) a[r][0] = a[r][1] = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= in; i += 16) {
    const __m256 w0 = w.load8(i), w1 = w.load8(i + 8);
    for (int r = 0; r < G; ++r) {
      a[r][0] = _mm256_fmadd_ps(_mm256_loadu_ps(x + r * in + i), w0, a[r][0]);
      a[r][1] = _mm256_fmadd_ps(_mm256_loadu_ps(x + r * in + i + 8), w1, a[r][1]);
    }
  }
  for (; i + 8 <= in; i += 8) {
    const __m256 w0 = w.load8(i);
    for (int r = 0; r < G; ++r) a[r][0] = _mm256_fmadd_ps(_mm256_loadu_ps(x + r * in + i), w0, a[r][0]);
  }
  for (int r = 0; r < G; ++r) {
    float s = hsum(_mm256_add_ps(a[r][0], a[r][1]));
    for (int64_t j = i; j < in; ++j) s += x[r * in + j] * w.scalar(j);
    acc[r] = s;
  }
}

template <typename Row>
__attribute__((target("avx2,fma"))) void dot_rows_avx2(const float* x, int64_t rows, int64_t in, const Row& w, float* acc) {
  int64_t r = 0;
  for (; r + kGroup <= rows; r += kGroup) dot_group<kGroup>(x + r * in, in, w, acc + r);
  switch (rows - r) {
    case 3: dot_group<3>(x + r * in, in, w, acc + r); break;
    case 2: dot_group<2>(x + r * in, in, w, acc + r); break;
    case 1: dot_group<1>(x + r * in, in, w, acc + r); break;
    default: break;
  }
}
#endif

const bool kVectorised =
#if defined(__x86_64__)
    __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    false;
#endif

// y[r, o] = scale(o) · (x[r] · W[o]) + bias[o], output rows split across threads.
template <typename RowAt, typename ScaleAt>
void skinny(const float* x, int64_t rows, int64_t in, int64_t out, const float* bias, float* y, RowAt row_at, ScaleAt scale_at) {
  // About 32k weights per task: enough work to be worth a thread, small enough to balance.
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(in, 1));
  at::parallel_for(0, out, grain, [&](int64_t begin, int64_t end) {
    float acc[kSkinnyMaxRows];
    for (int64_t o = begin; o < end; ++o) {
      const auto w = row_at(o);
      for (int64_t r0 = 0; r0 < rows; r0 += kSkinnyMaxRows) {
        const int64_t n = std::min<int64_t>(kSkinnyMaxRows, rows - r0);
#if defined(__x86_64__)
        if (kVectorised) dot_rows_avx2(x + r0 * in, n, in, w, acc);
        else
#endif
          dot_rows_scalar(x + r0 * in, n, in, w, acc);
        const float s = scale_at(o), b = bias ? bias[o] : 0.f;
        for (int64_t r = 0; r < n; ++r) y[(r0 + r) * out + o] = acc[r] * s + b;
      }
    }
  });
}

}  // namespace

bool skinny_matmul_vectorised() { return kVectorised; }

namespace {
bool g_on = true;
int64_t g_rows_limit = 8;
}  // namespace

void set_skinny_kernels(bool on, int64_t rows_limit) {
  g_on = on;
  g_rows_limit = std::clamp<int64_t>(rows_limit, 1, kSkinnyMaxRows);
}
bool skinny_kernels_on() { return g_on; }
int64_t skinny_rows_limit() { return g_rows_limit; }

void skinny_matmul_f32(const float* x, int64_t rows, int64_t in, const float* w, int64_t out, const float* bias, float* y) {
  skinny(x, rows, in, out, bias, y, [&](int64_t o) { return F32Row{w + o * in}; }, [](int64_t) { return 1.f; });
}

void skinny_matmul_bf16(const float* x, int64_t rows, int64_t in, const uint16_t* w, int64_t out, const float* bias, float* y) {
  skinny(x, rows, in, out, bias, y, [&](int64_t o) { return BF16Row{w + o * in}; }, [](int64_t) { return 1.f; });
}

void skinny_matmul_int8(const float* x, int64_t rows, int64_t in, const int8_t* q, const float* scale, int64_t out,
                        const float* bias, float* y) {
  skinny(x, rows, in, out, bias, y, [&](int64_t o) { return Int8Row{q + o * in}; }, [&](int64_t o) { return scale[o]; });
}

}  // namespace frozenlm::kernels
