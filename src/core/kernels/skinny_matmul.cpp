#include "core/kernels/skinny_matmul.h"
#include "core/kernels/lanes.h"
#include "core/kernels/widen.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <vector>

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
  float scalar(int64_t i) const { return bf16_to_float(w[i]); }
#if defined(__x86_64__)
  __attribute__((target("avx2,fma"))) __m256 load8(int64_t i) const { return bf16x8_to_float(w + i); }
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

// Batch 1, long rows: one chain of FMAs is bound by the FMA latency (4 cycles on Zen3, two issued per cycle), not by
// reading the weights — two chains reach 4 weights per cycle, a quarter of the core. Four chains of 8 lanes (32
// weights per step) keep the FMA units busy (measured: BENCHMARKS.md "Decode: per-row int8 on integer products", change 3).
template <typename Row>
__attribute__((target("avx2,fma"))) float dot_one_row(const float* x, int64_t in, const Row& w) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 32 <= in; i += 32) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), w.load8(i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), w.load8(i + 8), a1);
    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 16), w.load8(i + 16), a2);
    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 24), w.load8(i + 24), a3);
  }
  for (; i + 8 <= in; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), w.load8(i), a0);
  float s = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  for (; i < in; ++i) s += x[i] * w.scalar(i);
  return s;
}

template <typename Row>
__attribute__((target("avx2,fma"))) void dot_rows_avx2(const float* x, int64_t rows, int64_t in, const Row& w, float* acc) {
  if (rows == 1) {
    acc[0] = dot_one_row(x, in, w);
    return;
  }
  int64_t r = 0;
  for (; r + kGroup <= rows; r += kGroup) dot_group<kGroup>(x + r * in, in, w, acc + r);
  switch (rows - r) {
    case 3: dot_group<3>(x + r * in, in, w, acc + r); break;
    case 2: dot_group<2>(x + r * in, in, w, acc + r); break;
    case 1: dot_group<1>(x + r * in, in, w, acc + r); break;
    default: break;
  }
}

// Batch 1, short rows: four weight rows against the one x row at once — x is loaded once per four rows, and the four
// sums are reduced together at the end (for small matrices the per-row reduction and call overhead dominate).
template <typename Row>
__attribute__((target("avx2,fma"))) void dot4_one_row(const float* x, int64_t in, const Row& w0, const Row& w1, const Row& w2,
                                                      const Row& w3, float* out4) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 8 <= in; i += 8) {
    const __m256 xv = _mm256_loadu_ps(x + i);
    a0 = _mm256_fmadd_ps(xv, w0.load8(i), a0);
    a1 = _mm256_fmadd_ps(xv, w1.load8(i), a1);
    a2 = _mm256_fmadd_ps(xv, w2.load8(i), a2);
    a3 = _mm256_fmadd_ps(xv, w3.load8(i), a3);
  }
  hsum4(a0, a1, a2, a3, out4);
  for (; i < in; ++i) {
    out4[0] += x[i] * w0.scalar(i);
    out4[1] += x[i] * w1.scalar(i);
    out4[2] += x[i] * w2.scalar(i);
    out4[3] += x[i] * w3.scalar(i);
  }
}
#endif

const bool kVectorised = cpu_has_avx2_fma();

// The first 64-byte boundary at or after p (the buffer holds 64 bytes more than it needs).
// (the decode kernels' activation buffers: their 32-byte loads then never straddle a cache line)
template <typename T>
T* align64(T* p) {
  return reinterpret_cast<T*>((reinterpret_cast<uintptr_t>(p) + 63) & ~uintptr_t(63));
}

// Software prefetch distance ahead of the int8 / Q8_0 weights being read: one core streaming int8 rows (a quarter of
// the bytes per multiply-add of fp32) leaves memory idle without it. Measured on the 100M shape, 2 threads
// (BENCHMARKS.md "Decode: per-row int8 on integer products"): none 225–234, 1 KiB 240–266, 2 KiB 270–292 tokens/s (q8_0 and int8).
// fp32 rows are not prefetched: the hardware prefetcher keeps up, and 2 / 4 KiB ahead cost 10–20% (74–80 → 61–66).
// Measured again in one process (frozenlm_bench_decode --prefetch, every distance in every round; BENCHMARKS.md
// "Decode: prefetch distance in one process, Q8_0 four rows at once"): inside the model no distance from 768 B to
// 4 KiB beats 2 KiB by more than the rounds' spread. FROZENLM_PREFETCH_BYTES / set_prefetch_bytes change it (0: none).
std::atomic<int64_t> g_prefetch_bytes{[] {
  const char* v = std::getenv("FROZENLM_PREFETCH_BYTES");
  if (!v) return int64_t(2048);
  char* end = nullptr;
  const long long n = std::strtoll(v, &end, 10);
  if (end == v || *end != '\0' || n < 0) {  // not "0 = no prefetch" by accident
    std::fprintf(stderr, "frozenlm: FROZENLM_PREFETCH_BYTES=%s is not a byte count >= 0; using 2048\n", v);
    return int64_t(2048);
  }
  return int64_t(n);
}()};

// Weights one thread takes at least before a matmul is split across threads: below it, the fork/join of a parallel
// region costs more than the arithmetic it shares (FROZENLM_WEIGHTS_PER_TASK overrides it, for measuring). Measured
// (BENCHMARKS.md "Decode on both threads"): 32k split TinyStories-656K's small matmuls and made `generate` on 2
// threads half as fast as on 1 (4.7k vs 8.5k tokens/s); 256k keeps them on one thread and leaves the 100M shape's
// speed as it was (f32 89.0 vs 87.4, q8_0 264 vs 259 tokens/s: within noise).
std::atomic<int64_t> g_weights_per_task{[] {
  const char* v = std::getenv("FROZENLM_WEIGHTS_PER_TASK");
  return v && std::atoll(v) > 0 ? int64_t(std::atoll(v)) : int64_t(262144);
}()};

// fn(begin, end) over ranges of a matrix's output rows (of `in` weights each), split across threads in tasks of at
// least g_weights_per_task weights.
template <typename Fn>
void for_output_rows(int64_t out, int64_t in, const Fn& fn) {
  const int64_t grain = std::max<int64_t>(1, g_weights_per_task.load() / std::max<int64_t>(in, 1));
  at::parallel_for(0, out, grain, fn);
}

// y[r, o] = scale(o) · (x[r] · W[o]) + bias[o], output rows split across threads.
template <typename RowAt, typename ScaleAt>
void skinny(const float* x, int64_t rows, int64_t in, int64_t out, const float* bias, float* y, RowAt row_at, ScaleAt scale_at) {
  for_output_rows(out, in, [&](int64_t begin, int64_t end) {
    float acc[kSkinnyMaxRows];
    int64_t o = begin;
#if defined(__x86_64__)
    // Measured (BENCHMARKS.md "Decode"): four rows at once win on short rows (TinyStories-656K, in 128–384: 10.8k →
    // 14.4k tokens/s), lose on long streamed ones (100M shape, in 768–2048: f32 50 → 47, int8 124 → 92 tokens/s).
    if (kVectorised && rows == 1 && in <= 512)
      for (; o + 4 <= end; o += 4) {
        dot4_one_row(x, in, row_at(o), row_at(o + 1), row_at(o + 2), row_at(o + 3), acc);
        for (int k = 0; k < 4; ++k) y[o + k] = acc[k] * scale_at(o + k) + (bias ? bias[o + k] : 0.f);
      }
#endif
    for (; o < end; ++o) {
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

}  // namespace frozenlm::kernels

// ---------------------------------------------------------------------------------------------------------------
// Q8_0 (blocks of 32 int8 with one fp16 scale), activations quantised to Q8_0 as well: integer dot products per block.

namespace frozenlm::kernels {

float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal: renormalise
      int e = -1;
      uint32_t m = man;
      do { ++e; m <<= 1; } while ((m & 0x400) == 0);
      bits = sign | uint32_t(127 - 15 - e) << 23 | (m & 0x3ff) << 13;
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | man << 13;
  } else {
    bits = sign | (exp + 127 - 15) << 23 | man << 13;
  }
  float f;
  __builtin_memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_half(float f) {
  uint32_t x;
  __builtin_memcpy(&x, &f, 4);
  const uint16_t sign = (x >> 16) & 0x8000;
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0);  // inf / nan
  if (ax >= 0x477ff000u) return sign | 0x7c00;                                    // rounds past the largest half
  if (ax < 0x38800000u) {                                                          // half subnormal (or zero)
    if (ax < 0x33000000u) return sign;
    const uint32_t e = ax >> 23, m = (ax & 0x7fffff) | 0x800000;
    const uint32_t shift = 126 - e;  // m · 2^(e − 150) in units of 2^-24 (the smallest half subnormal)
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1))) ++r;
    return sign | uint16_t(r);
  }
  // normal: round the 13 dropped mantissa bits to nearest even
  uint32_t h = ((ax >> 13) - (112u << 10));
  const uint32_t rem = ax & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) ++h;
  return sign | uint16_t(h);
}

namespace {

// The Q8_0 dot product also converts the fp16 scales in hardware (F16C).
const bool kQ8Vectorised = cpu_has_avx2_fma_f16c();

void quantize_row_q8_0_scalar(const float* x, int64_t in, int8_t* qx, float* dx) {
  for (int64_t b = 0; b < in / kQ8Block; ++b) {
    const float* xb = x + b * kQ8Block;
    float amax = 0;
    for (int64_t i = 0; i < kQ8Block; ++i) amax = std::max(amax, std::fabs(xb[i]));
    const float id = amax != 0.f ? 127.f / amax : 0.f;
    dx[b] = amax / 127.f;
    for (int64_t i = 0; i < kQ8Block; ++i) qx[b * kQ8Block + i] = int8_t(std::nearbyint(xb[i] * id));
  }
}

float dot_q8_0_scalar(const int8_t* qx, const float* dx, const int8_t* qw, const uint16_t* dw, int64_t nblocks) {
  float acc = 0;
  for (int64_t b = 0; b < nblocks; ++b) {
    int32_t s = 0;
    for (int64_t i = 0; i < kQ8Block; ++i) s += int32_t(qx[b * kQ8Block + i]) * int32_t(qw[b * kQ8Block + i]);
    acc += float(s) * (dx[b] * half_to_float(dw[b]));
  }
  return acc;
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) void quantize_row_q8_0_avx2(const float* x, int64_t in, int8_t* qx, float* dx) {
  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  for (int64_t b = 0; b < in / kQ8Block; ++b) {
    const float* xb = x + b * kQ8Block;
    __m256 v[4];
    __m256 mx = _mm256_setzero_ps();
    for (int k = 0; k < 4; ++k) {
      v[k] = _mm256_loadu_ps(xb + 8 * k);
      mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign_bit, v[k]));
    }
    __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(mx, 1), _mm256_castps256_ps128(mx));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float amax = _mm_cvtss_f32(m4);
    dx[b] = amax / 127.f;
    const __m256 id = _mm256_set1_ps(amax != 0.f ? 127.f / amax : 0.f);
    __m256i i32[4];
    for (int k = 0; k < 4; ++k)
      i32[k] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[k], id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    // int32 -> int16 -> int8 (packs interleave 128-bit lanes: undo with a permute)
    const __m256i i16a = _mm256_packs_epi32(i32[0], i32[1]), i16b = _mm256_packs_epi32(i32[2], i32[3]);
    __m256i i8 = _mm256_packs_epi16(i16a, i16b);
    i8 = _mm256_permutevar8x32_epi32(i8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(qx + b * kQ8Block), i8);
  }
}

// One block: |w| (unsigned) × (a with w's sign): maddubs multiplies u8 × s8 and adds pairs into int16 (no overflow:
// 2 · 128 · 127 < 32768), madd with ones adds pairs again into int32: 8 exact partial sums, as fp32.
__attribute__((target("avx2,fma"))) inline __m256 q8_block_dot(const int8_t* qx, const int8_t* qw) {
  const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qw));
  const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qx));
  const __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}

__attribute__((target("avx2,fma,f16c"))) float dot_q8_0_avx2(const int8_t* qx, const float* dx, const int8_t* qw, const uint16_t* dw,
                                                         int64_t nblocks, int64_t pf) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t b = 0;
  for (; b + 2 <= nblocks; b += 2) {
    if (pf) _mm_prefetch(reinterpret_cast<const char*>(qw + b * kQ8Block + pf), _MM_HINT_T0);
    acc0 = _mm256_fmadd_ps(_mm256_set1_ps(dx[b] * _cvtsh_ss(dw[b])), q8_block_dot(qx + b * kQ8Block, qw + b * kQ8Block), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_set1_ps(dx[b + 1] * _cvtsh_ss(dw[b + 1])),
                           q8_block_dot(qx + (b + 1) * kQ8Block, qw + (b + 1) * kQ8Block), acc1);
  }
  if (b < nblocks)
    acc0 = _mm256_fmadd_ps(_mm256_set1_ps(dx[b] * _cvtsh_ss(dw[b])), q8_block_dot(qx + b * kQ8Block, qw + b * kQ8Block), acc0);
  return hsum(_mm256_add_ps(acc0, acc1));
}

// Batch 1, short rows: four weight rows against the one x row at once (each x block loaded once for the four, the
// four sums reduced together), as dot4_one_row does for fp32 — for small matrices the per-row reduction dominates.
__attribute__((target("avx2,fma,f16c"))) void dot4_q8_0_one_row(const int8_t* qx, const float* dx, const int8_t* qw, const uint16_t* dw,
                                                              int64_t in, int64_t nblocks, float* out4) {
  __m256 a[4];
  for (auto& v : a) v = _mm256_setzero_ps();
  for (int64_t b = 0; b < nblocks; ++b) {
    const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qx + b * kQ8Block));
    for (int j = 0; j < 4; ++j) {
      const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qw + j * in + b * kQ8Block));
      const __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(xv, w));
      a[j] = _mm256_fmadd_ps(_mm256_set1_ps(dx[b] * _cvtsh_ss(dw[j * nblocks + b])),
                             _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1))), a[j]);
    }
  }
  hsum4(a[0], a[1], a[2], a[3], out4);
}

#endif

}  // namespace

void quantize_row_q8_0(const float* x, int64_t in, int8_t* qx, float* dx) {
#if defined(__x86_64__)
  if (kVectorised) return quantize_row_q8_0_avx2(x, in, qx, dx);
#endif
  quantize_row_q8_0_scalar(x, in, qx, dx);
}

void skinny_matmul_q8_0(const float* x, int64_t rows, int64_t in, const int8_t* q, const uint16_t* d, int64_t out,
                        const float* bias, float* y) {
  const int64_t nb = in / kQ8Block;
  thread_local std::vector<int8_t> qx_buf;  // the calling thread's scratch, reused: no allocation per matmul
  thread_local std::vector<float> dx;
  qx_buf.resize(rows * in + 64);
  dx.resize(rows * nb);
  int8_t* qx = align64(qx_buf.data());  // 32-byte loads that never straddle a cache line
  for (int64_t r = 0; r < rows; ++r) quantize_row_q8_0(x + r * in, in, qx + r * in, dx.data() + r * nb);
  const int8_t* xq = qx;  // pointers: inside the parallel body `qx_buf` would name the worker thread's own buffer
  const float* xd = dx.data();
  const int64_t pf = g_prefetch_bytes.load();
  for_output_rows(out, in, [&](int64_t begin, int64_t end) {
    int64_t o = begin;
#if defined(__x86_64__)
    if (kQ8Vectorised && rows == 1 && in <= 512)  // as int8 and fp32: four rows at once win on short rows only
      for (float acc[4]; o + 4 <= end; o += 4) {
        dot4_q8_0_one_row(xq, xd, q + o * in, d + o * nb, in, nb, acc);
        for (int k = 0; k < 4; ++k) y[o + k] = acc[k] + (bias ? bias[o + k] : 0.f);
      }
#endif
    for (; o < end; ++o) {
      const int8_t* qw = q + o * in;
      const uint16_t* dw = d + o * nb;
      const float b = bias ? bias[o] : 0.f;
      for (int64_t r = 0; r < rows; ++r) {
#if defined(__x86_64__)
        const float s = kQ8Vectorised ? dot_q8_0_avx2(xq + r * in, xd + r * nb, qw, dw, nb, pf) : dot_q8_0_scalar(xq + r * in, xd + r * nb, qw, dw, nb);
#else
        const float s = dot_q8_0_scalar(xq + r * in, xd + r * nb, qw, dw, nb);
#endif
        y[r * out + o] = s + b;
      }
    }
  });
}

int64_t set_weights_per_task(int64_t n) { return g_weights_per_task.exchange(std::max<int64_t>(1, n)); }
int64_t set_prefetch_bytes(int64_t n) { return g_prefetch_bytes.exchange(std::max<int64_t>(0, n)); }
int64_t prefetch_bytes() { return g_prefetch_bytes.load(); }

}  // namespace frozenlm::kernels

// ---------------------------------------------------------------------------------------------------------------
// Per-row int8: activations as int16 per chunk of 128, integer products (vpmaddwd), one fp32 scale per chunk.
//
// Widening every int8 weight to fp32 (load, extend, convert, FMA for each 8 weights) tops out near 18 G weights/s per
// core with the weights in cache — below what one core can stream from memory, so the kernel was compute-bound at
// 52–62% of the bandwidth. Widening int8 weights only to int16 and multiplying them with int16 activations in
// vpmaddwd does 16 weights in three instructions (31 G weights/s per core in cache). The activations' int16
// rounding is at most 1/65534 of their chunk's largest value — about 250× smaller than Q8_0's int8 activations, and
// far below the weights' own int8 error (BENCHMARKS.md "Decode: per-row int8 on integer products").

namespace frozenlm::kernels {

namespace {

void quantize_row_i16_scalar(const float* x, int64_t in, int16_t* qx, float* dx) {
  for (int64_t c = 0; c * kI16Chunk < in; ++c) {
    const int64_t c0 = c * kI16Chunk, len = std::min(kI16Chunk, in - c0);
    float amax = 0;
    for (int64_t i = 0; i < len; ++i) amax = std::max(amax, std::fabs(x[c0 + i]));
    const float id = amax != 0.f ? 32767.f / amax : 0.f;
    dx[c] = amax / 32767.f;
    for (int64_t i = 0; i < len; ++i) qx[c0 + i] = int16_t(std::nearbyint(x[c0 + i] * id));
  }
}

// One chunk's Σ x16 · q in int32 (scalar tail of the vector loops; every product and sum is exact).
inline int32_t dot_i16_scalar(const int16_t* x16, const int8_t* q, int64_t n) {
  int32_t s = 0;
  for (int64_t i = 0; i < n; ++i) s += int32_t(x16[i]) * int32_t(q[i]);
  return s;
}

void dot_i16_rows_scalar(const int16_t* x16, const float* dx, int64_t rows, int64_t in, int64_t nchunks, const int8_t* q, float* acc) {
  for (int64_t r = 0; r < rows; ++r) {
    float a = 0;
    for (int64_t c = 0; c < nchunks; ++c) {
      const int64_t c0 = c * kI16Chunk;
      a += dx[r * nchunks + c] * float(dot_i16_scalar(x16 + r * in + c0, q + c0, std::min(kI16Chunk, in - c0)));
    }
    acc[r] = a;
  }
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) void quantize_row_i16_avx2(const float* x, int64_t in, int16_t* qx, float* dx) {
  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  for (int64_t c = 0; c * kI16Chunk < in; ++c) {
    const int64_t c0 = c * kI16Chunk, len = std::min(kI16Chunk, in - c0);
    __m256 mx = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= len; i += 8) mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign_bit, _mm256_loadu_ps(x + c0 + i)));
    __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(mx, 1), _mm256_castps256_ps128(mx));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    float amax = _mm_cvtss_f32(m4);
    for (; i < len; ++i) amax = std::max(amax, std::fabs(x[c0 + i]));
    const float id = amax != 0.f ? 32767.f / amax : 0.f;
    dx[c] = amax / 32767.f;
    const __m256 idv = _mm256_set1_ps(id);
    i = 0;
    for (; i + 16 <= len; i += 16) {
      // cvtps rounds to nearest even (the default MXCSR mode), as nearbyint; packs saturates, and the permute undoes
      // its interleaving of 128-bit lanes.
      const __m256i lo = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + c0 + i), idv));
      const __m256i hi = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + c0 + i + 8), idv));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(qx + c0 + i), _mm256_permute4x64_epi64(_mm256_packs_epi32(lo, hi), 0xD8));
    }
    for (; i < len; ++i) qx[c0 + i] = int16_t(std::nearbyint(x[c0 + i] * id));
  }
}

// acc[r] = Σ_chunks dx[r, c] · Σ_{i in c} x16[r, i] · q[i] for G rows of x against one int8 weight row: the weights
// are widened once per group, each madd multiplies 16 pairs and adds neighbours into 8 int32 lanes (no overflow: a
// chunk's lane adds 16 products of |x16| ≤ 32767 and |q| ≤ 128).
template <int G>
__attribute__((target("avx2,fma"))) void dot_i16_group(const int16_t* x16, const float* dx, int64_t in, int64_t nchunks, const int8_t* q,
                                                       int64_t pf, float* acc) {
  __m256 a[G];
  for (int r = 0; r < G; ++r) a[r] = _mm256_setzero_ps();
  for (int64_t c = 0; c < nchunks; ++c) {
    const int64_t c0 = c * kI16Chunk, len = std::min(kI16Chunk, in - c0);
    __m256i s[G];
    for (int r = 0; r < G; ++r) s[r] = _mm256_setzero_si256();
    int64_t k = 0;
    for (; k + 32 <= len; k += 32) {
      if (pf && (k & 32) == 0)  // one prefetch per 64-byte line (two per line cost 5–15%: 1B shape 79/71 -> 85/82% of bandwidth)
        _mm_prefetch(reinterpret_cast<const char*>(q + c0 + k + pf), _MM_HINT_T0);
      const __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + c0 + k)));
      const __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + c0 + k + 16)));
      for (int r = 0; r < G; ++r) {
        const int16_t* xr = x16 + r * in + c0 + k;
        const __m256i p0 = _mm256_madd_epi16(w0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xr)));
        const __m256i p1 = _mm256_madd_epi16(w1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xr + 16)));
        s[r] = _mm256_add_epi32(s[r], _mm256_add_epi32(p0, p1));
      }
    }
    for (; k + 16 <= len; k += 16) {
      const __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + c0 + k)));
      for (int r = 0; r < G; ++r)
        s[r] = _mm256_add_epi32(s[r], _mm256_madd_epi16(w0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x16 + r * in + c0 + k))));
    }
    for (int r = 0; r < G; ++r) {
      if (k < len) s[r] = _mm256_add_epi32(s[r], _mm256_setr_epi32(dot_i16_scalar(x16 + r * in + c0 + k, q + c0 + k, len - k), 0, 0, 0, 0, 0, 0, 0));
      a[r] = _mm256_fmadd_ps(_mm256_set1_ps(dx[r * nchunks + c]), _mm256_cvtepi32_ps(s[r]), a[r]);
    }
  }
  for (int r = 0; r < G; ++r) acc[r] = hsum(a[r]);
}

// Batch 1, short rows: four weight rows against the one x row at once (x loaded once for the four; the four sums
// reduced together), as dot4_one_row does for fp32 — for small matrices the per-row reduction dominates.
__attribute__((target("avx2,fma"))) void dot4_i16_one_row(const int16_t* x16, const float* dx, int64_t in, int64_t nchunks, const int8_t* q,
                                                          float* out4) {
  const int8_t* w[4] = {q, q + in, q + 2 * in, q + 3 * in};
  __m256 a[4];
  for (auto& v : a) v = _mm256_setzero_ps();
  for (int64_t c = 0; c < nchunks; ++c) {
    const int64_t c0 = c * kI16Chunk, len = std::min(kI16Chunk, in - c0);
    __m256i s[4];
    for (auto& v : s) v = _mm256_setzero_si256();
    int64_t k = 0;
    for (; k + 16 <= len; k += 16) {
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x16 + c0 + k));
      for (int j = 0; j < 4; ++j)
        s[j] = _mm256_add_epi32(s[j], _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w[j] + c0 + k))), xv));
    }
    const __m256 d = _mm256_set1_ps(dx[c]);
    for (int j = 0; j < 4; ++j) {
      if (k < len) s[j] = _mm256_add_epi32(s[j], _mm256_setr_epi32(dot_i16_scalar(x16 + c0 + k, w[j] + c0 + k, len - k), 0, 0, 0, 0, 0, 0, 0));
      a[j] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s[j]), a[j]);
    }
  }
  hsum4(a[0], a[1], a[2], a[3], out4);
}

// One row of x (batch 1, or the last of a batch of 4k + 1): dot_i16_group<1> with one named accumulator and the tails
// out of the hot loop. The group template ran the same arithmetic ~13% slower per byte from memory (paired passes
// over the 100M shape's matrices; BENCHMARKS.md "Decode: the step around the matrices").
__attribute__((target("avx2,fma"))) float dot_i16_one_row(const int16_t* x16, const float* dx, int64_t in, int64_t nchunks, const int8_t* q,
                                                         int64_t pf) {
  __m256 a = _mm256_setzero_ps();
  for (int64_t c = 0; c < nchunks; ++c) {
    const int64_t c0 = c * kI16Chunk, len = std::min(kI16Chunk, in - c0);
    __m256i s = _mm256_setzero_si256();
    int64_t k = 0;
    for (; k + 32 <= len; k += 32) {
      if (pf && (k & 32) == 0) _mm_prefetch(reinterpret_cast<const char*>(q + c0 + k + pf), _MM_HINT_T0);
      const __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + c0 + k)));
      const __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + c0 + k + 16)));
      const int16_t* xr = x16 + c0 + k;
      const __m256i p0 = _mm256_madd_epi16(w0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xr)));
      const __m256i p1 = _mm256_madd_epi16(w1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xr + 16)));
      s = _mm256_add_epi32(s, _mm256_add_epi32(p0, p1));
    }
    if (k < len) {  // a chunk shorter than 32 or not a multiple of it: only at the end of a row
      for (; k + 16 <= len; k += 16)
        s = _mm256_add_epi32(s, _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + c0 + k))),
                                                  _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x16 + c0 + k))));
      if (k < len) s = _mm256_add_epi32(s, _mm256_setr_epi32(dot_i16_scalar(x16 + c0 + k, q + c0 + k, len - k), 0, 0, 0, 0, 0, 0, 0));
    }
    a = _mm256_fmadd_ps(_mm256_set1_ps(dx[c]), _mm256_cvtepi32_ps(s), a);
  }
  return hsum(a);
}

__attribute__((target("avx2,fma"))) void dot_i16_rows_avx2(const int16_t* x16, const float* dx, int64_t rows, int64_t in, int64_t nchunks,
                                                           const int8_t* q, int64_t pf, float* acc) {
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4) dot_i16_group<4>(x16 + r * in, dx + r * nchunks, in, nchunks, q, pf, acc + r);
  switch (rows - r) {
    case 3: dot_i16_group<3>(x16 + r * in, dx + r * nchunks, in, nchunks, q, pf, acc + r); break;
    case 2: dot_i16_group<2>(x16 + r * in, dx + r * nchunks, in, nchunks, q, pf, acc + r); break;
    case 1: acc[r] = dot_i16_one_row(x16 + r * in, dx + r * nchunks, in, nchunks, q, pf); break;
    default: break;
  }
}
#endif

}  // namespace

void quantize_row_i16(const float* x, int64_t in, int16_t* qx, float* dx) {
#if defined(__x86_64__)
  if (kVectorised) return quantize_row_i16_avx2(x, in, qx, dx);
#endif
  quantize_row_i16_scalar(x, in, qx, dx);
}

void skinny_matmul_int8(const float* x, int64_t rows, int64_t in, const int8_t* q, const float* scale, int64_t out,
                        const float* bias, float* y) {
  const int64_t nchunks = (in + kI16Chunk - 1) / kI16Chunk;
  thread_local std::vector<int16_t> x16_buf;  // the calling thread's scratch, reused: no allocation per matmul
  thread_local std::vector<float> dx;
  x16_buf.resize(rows * in + 32);
  dx.resize(rows * nchunks);
  int16_t* x16 = align64(x16_buf.data());
  for (int64_t r = 0; r < rows; ++r) quantize_row_i16(x + r * in, in, x16 + r * in, dx.data() + r * nchunks);
  const int16_t* xq = x16;  // pointers: inside the parallel body `x16_buf` would name the worker's own buffer
  const float* xd = dx.data();
  const int64_t pf = g_prefetch_bytes.load();
  for_output_rows(out, in, [&](int64_t begin, int64_t end) {
    float acc[kSkinnyMaxRows];
    int64_t o = begin;
#if defined(__x86_64__)
    if (kVectorised && rows == 1 && in <= 512)  // as the fp32 kernels: four rows at once win on short rows only
      for (; o + 4 <= end; o += 4) {
        dot4_i16_one_row(xq, xd, in, nchunks, q + o * in, acc);
        for (int k = 0; k < 4; ++k) y[o + k] = acc[k] * scale[o + k] + (bias ? bias[o + k] : 0.f);
      }
#endif
    for (; o < end; ++o)
      for (int64_t r0 = 0; r0 < rows; r0 += kSkinnyMaxRows) {
        const int64_t n = std::min<int64_t>(kSkinnyMaxRows, rows - r0);
#if defined(__x86_64__)
        if (kVectorised) dot_i16_rows_avx2(xq + r0 * in, xd + r0 * nchunks, n, in, nchunks, q + o * in, pf, acc);
        else
#endif
          dot_i16_rows_scalar(xq + r0 * in, xd + r0 * nchunks, n, in, nchunks, q + o * in, acc);
        const float b = bias ? bias[o] : 0.f;
        for (int64_t r = 0; r < n; ++r) y[(r0 + r) * out + o] = acc[r] * scale[o] + b;
      }
  });
}

}  // namespace frozenlm::kernels
