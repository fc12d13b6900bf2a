// Decode-time matrix products: y = x · Wᵀ (+ b) for a few rows of x (batch-1 … 64 decoding: one new token per
// sequence), W [out, in] in its storage format. Batch-1 decoding reads every weight once per token, so the limit is
// memory bandwidth: these kernels read each weight row once for all rows of x (AVX2 + FMA, output rows split across
// LibTorch's intra-op threads); compact rows are widened in registers — never into a full fp32 copy, which is what
// the LibTorch path does (more memory traffic than the fp32 weights themselves): bf16 to fp32, int8 to int16 against
// int16-rounded activations, Q8_0 against Q8_0-rounded activations (integer products: see each function).
// f32 / bf16 results equal at::linear up to the order of fp32 additions, int8 / Q8_0 within their activations' proven
// rounding error (tests/test_kernels.cpp). Without AVX2/FMA at run time the same arithmetic runs in scalar code.
#pragma once
#include <cstdint>

namespace frozenlm::kernels {

// The largest number of x rows these kernels are meant for (beyond it, LibTorch's GEMM is faster).
constexpr int64_t kSkinnyMaxRows = 64;
// Q8_0's block length (elements of one weight row sharing an fp16 scale), as in GGUF.
constexpr int64_t kQ8Block = 32;

// x [rows, in] fp32 (row-major, contiguous); y [rows, out] fp32; bias [out] or null.
void skinny_matmul_f32(const float* x, int64_t rows, int64_t in, const float* w, int64_t out, const float* bias, float* y);
// W as bf16 bit patterns (the upper 16 bits of an fp32).
void skinny_matmul_bf16(const float* x, int64_t rows, int64_t in, const uint16_t* w, int64_t out, const float* bias, float* y);
// W ≈ q · scale[o] (per output row), q int8. Each row of x is first rounded to int16 per chunk of kI16Chunk
// (`quantize_row_i16`), then every chunk's dot product is exact in int32 and scaled by its fp32 chunk scale: the
// activations' rounding (≤ 1/65534 of the chunk's largest |x|) is far below the weights' own int8 error, and integer
// products let one core keep up with memory (tests bound the error exactly; BENCHMARKS.md).
void skinny_matmul_int8(const float* x, int64_t rows, int64_t in, const int8_t* q, const float* scale, int64_t out,
                        const float* bias, float* y);
// Activation chunk of the per-row int8 kernel (elements sharing one int16 scale).
constexpr int64_t kI16Chunk = 128;
// x [in] -> int16 qx [in] and fp32 scales dx [ceil(in / kI16Chunk)] (the last chunk may be shorter):
// q = nearbyint(x · 32767 / max|x|) (ties to even); a zero chunk gets scale 0.
void quantize_row_i16(const float* x, int64_t in, int16_t* qx, float* dx);

// Q8_0 weights (int8 q [out, in], fp16 scale bits d [out, in/32]; in a multiple of 32), as llama.cpp computes them:
// each row of x is first quantised to Q8_0 too (per block of 32: scale = max|x| / 127, fp32), then every block's dot
// product is exact in int32 and scaled by d_x · d_w. The error is the activations' quantisation on top of the weights'
// (tests compare with a scalar reference of the same arithmetic, and with fp32).
void skinny_matmul_q8_0(const float* x, int64_t rows, int64_t in, const int8_t* q, const uint16_t* d, int64_t out,
                        const float* bias, float* y);
// x [in] -> int8 qx [in] and fp32 scales dx [in/32]: q = nearbyint(x · 127 / max|x|) (ties to even, as llama.cpp's
// AVX2 quantiser); a zero block gets scale 0.
void quantize_row_q8_0(const float* x, int64_t in, int8_t* qx, float* dx);
// IEEE half bits <-> float (scalar; Q8_0 scales).
float half_to_float(uint16_t h);
uint16_t float_to_half(float f);

// The fewest weights a thread takes before a matmul is split across threads (default 262144, or
// FROZENLM_WEIGHTS_PER_TASK); returns the previous value. Tests set 1 to split even tiny shapes.
int64_t set_weights_per_task(int64_t n);

// How far ahead (bytes) the int8 and Q8_0 kernels prefetch the weight row they read (default 2048, or
// FROZENLM_PREFETCH_BYTES; 0: no software prefetch); set_ returns the previous value.
int64_t set_prefetch_bytes(int64_t n);
int64_t prefetch_bytes();

// Whether the vector (AVX2 + FMA) code runs on this CPU.
bool skinny_matmul_vectorised();

// FrozenLinear uses these kernels for CPU fp32 inputs of at most `skinny_rows_limit()` rows that need no gradient
// (decoding, scoring without grad), the panel kernels (panel_matmul.h) beyond; set_skinny_kernels(false) sends
// everything to LibTorch (benchmarks: before/after in one process). Default: on, limit 8 rows for every format
// (measured: BENCHMARKS.md "Decode"; int8 / Q8_0 took 16 while LibTorch's widened matrix was the alternative, but
// at 16 rows the panel kernels are ahead: "Batched decode on widened panels").
void set_skinny_kernels(bool on, int64_t rows_limit = 8);
bool skinny_kernels_on();
int64_t skinny_rows_limit();

}  // namespace frozenlm::kernels
