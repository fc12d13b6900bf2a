// Where the frozen weights live in CPU memory. Batch-1 decoding streams every weight once per token; on 4 KiB pages
// that is a TLB miss (and a page walk, costlier still in a VM) every 4 KiB of weights. Large weight tensors are
// therefore allocated 2 MiB-aligned and marked madvise(MADV_HUGEPAGE), so that Linux's transparent huge pages (Debian:
// "madvise" mode) back them with 2 MiB pages. Measured in one process, both models built side by side, each
// allocated first in turn (BENCHMARKS.md "Decode: weights on huge pages"): batch-1 fp32 decoding +8–21% on the 100M
// shape and +5% on the 1B shape (87–91% → 93–95% of the read bandwidth), int8 +7% on the 1B shape; Q8_0 within ±3%.
// Cost: at most one partly used 2 MiB page per large tensor.
#pragma once
#include <ATen/Tensor.h>

#include <cstdint>
#include <vector>

namespace frozenlm {

// Tensors of at least this many bytes go on huge pages (smaller ones would waste most of a 2 MiB page).
constexpr int64_t kHugePageMinBytes = int64_t(4) << 20;

// An uninitialised contiguous CPU tensor for frozen weights: 2 MiB-aligned with MADV_HUGEPAGE when
// huge_page_weights() is on and it holds ≥ kHugePageMinBytes, else at::empty. Write it before anything reads it
// (the huge pages are given at the first write).
at::Tensor empty_weight(const std::vector<int64_t>& sizes, at::ScalarType dtype);
// `t` as a contiguous CPU weight tensor on huge pages (a copy where empty_weight would place it there, unless `t`
// already came from empty_weight; else `t`).
at::Tensor to_weight_memory(const at::Tensor& t);

// On by default; FROZENLM_HUGE_PAGES=0 or set_huge_page_weights(false) (benchmarks: before/after in one process)
// turns it off for weights created afterwards. Returns the previous value.
bool set_huge_page_weights(bool on);
bool huge_page_weights();

// Bytes of `t`'s memory that the kernel backs with huge pages now (/proc/self/smaps's AnonHugePages of the mappings
// it spans); -1 where that cannot be read. For tests and benchmarks.
int64_t huge_page_bytes(const at::Tensor& t);

}  // namespace frozenlm
