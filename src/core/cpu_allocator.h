// A caching CPU allocator for LibTorch: freed blocks of ≥ 1 MiB are kept and handed out again instead of going back
// to the OS. Without it every step's activations are mmap'd fresh and page-faulted in again (see BENCHMARKS.md).
#pragma once
#include <cstddef>

namespace frozenlm {

// Installs the allocator as LibTorch's CPU allocator (idempotent). `max_cached_bytes` bounds the memory kept idle.
void install_caching_cpu_allocator(size_t max_cached_bytes);

struct CpuCacheStats {
  size_t cached_bytes, hits, misses;
};
CpuCacheStats cpu_cache_stats();
// Returns every idle block to the system (after loading a model: its fp32 conversion buffers are not needed again).
void release_cpu_cache();

}  // namespace frozenlm
