// Stored weights widened to fp32, shared by the decode kernels (skinny_matmul.cpp, panel_matmul.cpp): bf16 bits are
// the upper 16 bits of an fp32, one at a time or 8 at once (AVX2).
#pragma once
#include <cstdint>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace frozenlm::kernels {

inline float bf16_to_float(uint16_t h) {
  const uint32_t bits = uint32_t(h) << 16;
  float f;
  __builtin_memcpy(&f, &bits, 4);
  return f;
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) inline __m256 bf16x8_to_float(const uint16_t* w) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
#endif

}  // namespace frozenlm::kernels
