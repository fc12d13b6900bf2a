// AVX2 pieces shared by the decode kernels (skinny_matmul.cpp, panel_matmul.cpp, decode_ops.cpp): whether this CPU
// runs them, and horizontal sums of fp32 lanes.
#pragma once

namespace frozenlm::kernels {

// AVX2 + FMA at run time (the kernels' scalar code runs otherwise); the kernels that convert fp16 scales also need F16C.
inline bool cpu_has_avx2_fma() {
#if defined(__x86_64__)
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}
inline bool cpu_has_avx2_fma_f16c() {
#if defined(__x86_64__)
  return cpu_has_avx2_fma() && __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

}  // namespace frozenlm::kernels

#if defined(__x86_64__)
#include <immintrin.h>

namespace frozenlm::kernels {

__attribute__((target("avx2,fma"))) inline float hsum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}

// The four lane sums of a0..a3 into out4[0..3] at once (a transposed reduction: the four-rows-at-once kernels).
__attribute__((target("avx2,fma"))) inline void hsum4(__m256 a0, __m256 a1, __m256 a2, __m256 a3, float* out4) {
  const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
  _mm_storeu_ps(out4, _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
}

}  // namespace frozenlm::kernels
#endif
