#include "core/kernels/decode_ops.h"

#include <algorithm>
#include <cmath>

#include "core/kernels/lanes.h"

namespace frozenlm::kernels {

namespace {

const bool kVectorised = cpu_has_avx2_fma();

#if defined(__x86_64__)
// exp of 8 lanes (Cephes' single-precision exp, as in avx_mathfun: n = round(x / ln 2), a degree-7 polynomial on the
// remainder, 2^n from the exponent bits; ≤ 2 ulp over the range). Inputs below ln(FLT_MIN) give exactly 0 (the
// masked keys' −1e30 must weigh nothing), inputs above 88 give exp(88): the callers only meet x ≤ 0 (softmax) or
// use exp(−g) in g / (1 + exp(−g)), where 1 + exp(88) already makes silu(g) ≈ −1e-36.
__attribute__((target("avx2,fma"))) inline __m256 exp8(__m256 x) {
  const __m256 zero = _mm256_cmp_ps(x, _mm256_set1_ps(-87.33654475f), _CMP_LT_OQ);
  x = _mm256_min_ps(x, _mm256_set1_ps(88.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  // r = x − n·ln 2, ln 2 split in two so that n·C1 is exact
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.f)));
  const __m256i pow2n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(zero, _mm256_mul_ps(y, _mm256_castsi256_ps(pow2n)));
}

__attribute__((target("avx2,fma"))) void attend_avx2(const float* q, const float* K, const float* V, const bool* key_real, int64_t S,
                                                     int64_t hd, float scale, float* p, float* out) {
  // scores, four keys at once (q read once for the four, the four sums reduced together)
  int64_t s = 0;
  for (; s + 4 <= S; s += 4) {
    const float* k0 = K + s * hd;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t i = 0; i < hd; i += 8) {
      const __m256 qv = _mm256_loadu_ps(q + i);
      a0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + i), a0);
      a1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + hd + i), a1);
      a2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + 2 * hd + i), a2);
      a3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + 3 * hd + i), a3);
    }
    hsum4(a0, a1, a2, a3, p + s);
  }
  for (; s < S; ++s) {
    __m256 a = _mm256_setzero_ps();
    for (int64_t i = 0; i < hd; i += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(K + s * hd + i), a);
    p[s] = hsum(a);
  }
  float mx = -INFINITY;
  for (s = 0; s < S; ++s) {
    p[s] = key_real[s] ? p[s] * scale : -1e30f;
    mx = std::max(mx, p[s]);
  }
  // weights exp(p − max), their sum
  const __m256 m = _mm256_set1_ps(mx);
  __m256 sum8 = _mm256_setzero_ps();
  for (s = 0; s + 8 <= S; s += 8) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(p + s), m));
    _mm256_storeu_ps(p + s, e);
    sum8 = _mm256_add_ps(sum8, e);
  }
  float sum = hsum(sum8);
  for (; s < S; ++s) sum += (p[s] = std::exp(p[s] - mx));
  // out = Σ p[s] · V[s] / sum
  std::fill_n(out, hd, 0.f);
  for (s = 0; s < S; ++s) {
    if (p[s] == 0.f) continue;  // masked keys (and underflowed weights) add nothing
    const __m256 w = _mm256_set1_ps(p[s]);
    const float* v = V + s * hd;
    for (int64_t i = 0; i < hd; i += 8) _mm256_storeu_ps(out + i, _mm256_fmadd_ps(w, _mm256_loadu_ps(v + i), _mm256_loadu_ps(out + i)));
  }
  const __m256 inv = _mm256_set1_ps(1.f / sum);
  for (int64_t i = 0; i < hd; i += 8) _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_loadu_ps(out + i), inv));
}

__attribute__((target("avx2,fma"))) void silu_mul_avx2(const float* gate, const float* up, float* out, int64_t n) {
  const __m256 one = _mm256_set1_ps(1.f), sign = _mm256_set1_ps(-0.f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 g = _mm256_loadu_ps(gate + i);
    const __m256 e = exp8(_mm256_xor_ps(g, sign));  // exp(−g)
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), _mm256_loadu_ps(up + i)));
  }
  for (; i < n; ++i) out[i] = gate[i] / (1.f + std::exp(-gate[i])) * up[i];
}

__attribute__((target("avx2,fma"))) int64_t argmax_avx2(const float* x, int64_t n) {
  __m256 mx = _mm256_set1_ps(x[0]), nan = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    mx = _mm256_max_ps(mx, v);
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  }
  float m;
  {
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    m = _mm_cvtss_f32(_mm_max_ss(h, _mm_shuffle_ps(h, h, 1)));
  }
  bool any_nan = _mm256_movemask_ps(nan) != 0 || std::isnan(x[0]);
  for (int64_t j = i; j < n; ++j) {
    any_nan |= std::isnan(x[j]);
    m = std::max(m, x[j]);
  }
  if (any_nan) return -1;  // the caller's scalar loop decides
  // the first index holding the largest value (−0 and +0 compare equal, as in the loop)
  const __m256 mv = _mm256_set1_ps(m);
  for (i = 0; i + 8 <= n; i += 8)
    if (const int bits = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), mv, _CMP_EQ_OQ)))
      return i + __builtin_ctz(unsigned(bits));
  for (; i < n; ++i)
    if (x[i] == m) return i;
  return 0;
}
#endif

}  // namespace

void attend_one_query(const float* q, const float* K, const float* V, const bool* key_real, int64_t S, int64_t hd, float scale,
                      float* p, float* out) {
#if defined(__x86_64__)
  if (kVectorised && hd % 8 == 0) return attend_avx2(q, K, V, key_real, S, hd, scale, p, out);
#endif
  float mx = -INFINITY;
  for (int64_t s = 0; s < S; ++s) {
    float dot = 0;
    for (int64_t i = 0; i < hd; ++i) dot += q[i] * K[s * hd + i];
    p[s] = key_real[s] ? dot * scale : -1e30f;
    mx = std::max(mx, p[s]);
  }
  float sum = 0;
  for (int64_t s = 0; s < S; ++s) sum += (p[s] = std::exp(p[s] - mx));
  std::fill_n(out, hd, 0.f);
  for (int64_t s = 0; s < S; ++s)
    for (int64_t i = 0; i < hd; ++i) out[i] += p[s] * V[s * hd + i];
  for (int64_t i = 0; i < hd; ++i) out[i] /= sum;
}

void silu_mul(const float* gate, const float* up, float* out, int64_t n) {
#if defined(__x86_64__)
  if (kVectorised) return silu_mul_avx2(gate, up, out, n);
#endif
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] / (1.f + std::exp(-gate[i])) * up[i];
}

int64_t argmax(const float* x, int64_t n) {
#if defined(__x86_64__)
  if (kVectorised)
    if (const int64_t i = argmax_avx2(x, n); i >= 0) return i;
#endif
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return best;
}

}  // namespace frozenlm::kernels
