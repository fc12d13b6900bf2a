// Batched-decode matrix products: y = x · Wᵀ (+ b) for a batch of rows (decoding many sequences at once: one new
// token per sequence), W [out, in] in its storage format. Past a few rows the product is bound by arithmetic, not by
// reading W: each weight is used once per row. LibTorch's GEMM gets there by repacking W on every call (OpenBLAS's
// incopy) and, for compact weights, only after widening the whole matrix to a new fp32 tensor
// (FrozenLinear::forward). Here W is widened block by block straight into a small fp32 panel that stays in cache
// (kPanelOut outputs × kPanelDepth inputs, transposed so that one vector load gives 8 outputs' weights for one
// input), and a register-tiled FMA kernel (kPanelRows rows × kPanelOut outputs: 12 AVX2 accumulators) runs every row
// of x against it before the next block is widened. The per-row int8 scale is applied to the output, Q8_0's per-block
// scale while widening; the arithmetic is fp32 (activations are not quantised), equal to at::linear on the widened
// matrix up to the order of fp32 additions (tests/test_kernels.cpp). Without AVX2/FMA the same blocks run in scalar
// code. Measured: BENCHMARKS.md "Batched decode on widened panels".
#pragma once
#include <cstdint>

namespace frozenlm::kernels {

// Register tile: rows of x × outputs; the panel's depth (inputs per widened block).
constexpr int64_t kPanelRows = 4;
constexpr int64_t kPanelOut = 24;
constexpr int64_t kPanelDepth = 256;
// The most rows FrozenLinear sends to these kernels (beyond it, LibTorch's GEMM; below them, from 8 rows down, the
// skinny kernels).
constexpr int64_t kPanelMaxRows = 64;

// x [rows, in] fp32 row-major; y [rows, out]; bias [out] or null. Formats as in skinny_matmul.h: bf16 bit patterns;
// per-row int8 q [out, in] with scale [out]; Q8_0 q [out, in] with fp16 scale bits d [out, in/32] (in % 32 == 0).
void panel_matmul_f32(const float* x, int64_t rows, int64_t in, const float* w, int64_t out, const float* bias, float* y);
void panel_matmul_bf16(const float* x, int64_t rows, int64_t in, const uint16_t* w, int64_t out, const float* bias, float* y);
void panel_matmul_int8(const float* x, int64_t rows, int64_t in, const int8_t* q, const float* scale, int64_t out,
                       const float* bias, float* y);
void panel_matmul_q8_0(const float* x, int64_t rows, int64_t in, const int8_t* q, const uint16_t* d, int64_t out,
                       const float* bias, float* y);

// FrozenLinear sends CPU fp32 inputs without gradient of more rows than the skinny kernels take (8) and at most
// kPanelMaxRows rows here (default on; FROZENLM_PANEL_KERNELS=0 turns them off); off: LibTorch's GEMM, as before
// (benchmarks compare both in one process).
void set_panel_kernels(bool on);
bool panel_kernels_on();

}  // namespace frozenlm::kernels
