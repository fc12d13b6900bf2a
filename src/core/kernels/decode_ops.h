// The decode step's small operations between its matrix products (core/decode_step.cpp): attention of one query
// over the KV cache, the gated MLP's silu(gate) · up, and greedy decoding's argmax. Each is a few microseconds per
// layer, but a batch-1 token of the 100M shape at the bandwidth wall takes only ~4 ms, and in scalar code with a
// library exp per element these took ~0.25 ms of it (BENCHMARKS.md "Decode: the step around the matrices").
// AVX2 + FMA where the CPU has them, the same arithmetic in scalar code otherwise; tests/test_kernels.cpp compares
// both with fp64 references.
#pragma once
#include <cstdint>

namespace frozenlm::kernels {

// out[hd] = Σ_s softmax_s(scale · q·K[s]) · V[s] over the S cached positions (K, V: [S, hd] rows), keys with
// key_real[s] false left out (their weight is exactly 0; with none real every key weighs the same, as in
// FrozenLM::forward). p: scratch of S floats.
void attend_one_query(const float* q, const float* K, const float* V, const bool* key_real, int64_t S, int64_t hd,
                      float scale, float* p, float* out);

// out[i] = silu(gate[i]) · up[i] = gate[i] / (1 + exp(−gate[i])) · up[i]. out may alias gate or up.
void silu_mul(const float* gate, const float* up, float* out, int64_t n);

// The first index of the largest of x[0..n) (n ≥ 1), as the loop `if (x[i] > x[best]) best = i` picks it (a NaN
// never wins, unless x[0] is one).
int64_t argmax(const float* x, int64_t n);

}  // namespace frozenlm::kernels
