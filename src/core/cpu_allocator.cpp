#include "core/cpu_allocator.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <torch/version.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <unordered_map>

namespace frozenlm {

namespace {

constexpr size_t kMinCached = size_t(1) << 20;  // smaller blocks: straight to the system allocator

// Size classes: 8 per power of two (≤ 12.5% waste), and a request takes the smallest idle block that fits. Training
// on variable-length batches asks for a different size every step; with 64 KiB granules and near-exact matching the
// cache filled with sizes never asked for again and every miss page-faulted fresh memory (a quarter of pretraining's
// time, BENCHMARKS.md "Pretraining throughput").
size_t size_class(size_t n) {
  size_t p = size_t(1) << (63 - __builtin_clzll(n));  // largest power of two ≤ n
  if (p == n) return n;
  const size_t step = p / 8;
  return (n + step - 1) / step * step;
}

// Data pointer == context for every block (LibTorch's raw_allocate/raw_deallocate, used by some kernels for scratch
// buffers, require it); the sizes of cached-size blocks in use are looked up by pointer when they come back.
class CachingCpuAllocator final : public c10::Allocator {
 public:
  explicit CachingCpuAllocator(size_t cap) : cap_(cap) {}

  c10::DataPtr allocate(size_t n) const override {
    if (n < kMinCached) {
      void* p = c10::alloc_cpu(n);
      return {p, p, &c10::free_cpu, c10::Device(c10::DeviceType::CPU)};
    }
    const size_t size = size_class(n);
    void* p = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      // The smallest idle block that fits, if at most 25% larger (two size classes): a larger one would pin memory
      // the request does not use while it lives — a 36 MB activation must not take a 1 GB block (training through
      // a 1B model: 2× allowed, 6.4 GiB peak; 1.25×, see BENCHMARKS.md "Training memory"). The cap bounds what idles.
      auto it = free_.lower_bound(size);
      if (it != free_.end() && it->first <= size + size / 4) {
        p = it->second;
        live_[p] = it->first;
        cached_ -= it->first;
        free_.erase(it);
        ++hits_;
        return {p, p, &CachingCpuAllocator::release, c10::Device(c10::DeviceType::CPU)};
      }
      ++misses_;
    }
    p = c10::alloc_cpu(size);
    std::lock_guard<std::mutex> lock(mu_);
    live_[p] = size;
    return {p, p, &CachingCpuAllocator::release, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &CachingCpuAllocator::release; }

#if TORCH_VERSION_MAJOR >= 2
  void copy_data(void* dest, const void* src, std::size_t count) const override { std::memcpy(dest, src, count); }
#endif

  static void release(void* p) {
    CachingCpuAllocator* self = instance_;
    std::lock_guard<std::mutex> lock(self->mu_);
    auto it = self->live_.find(p);
    if (it == self->live_.end()) {  // a small block (raw_deallocate routes every free here)
      c10::free_cpu(p);
      return;
    }
    const size_t size = it->second;
    self->live_.erase(it);
    self->free_.emplace(size, p);
    self->cached_ += size;
    while (self->cached_ > self->cap_ && !self->free_.empty()) {  // over budget: drop the largest idle blocks
      auto last = std::prev(self->free_.end());
      self->cached_ -= last->first;
      c10::free_cpu(last->second);
      self->free_.erase(last);
    }
  }

  void release_idle() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [size, p] : free_) c10::free_cpu(p);
    free_.clear();
    cached_ = 0;
  }

  CpuCacheStats stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    return {cached_, hits_, misses_};
  }

  static CachingCpuAllocator* instance_;

 private:
  mutable std::mutex mu_;
  mutable std::multimap<size_t, void*> free_;          // idle blocks by size
  mutable std::unordered_map<void*, size_t> live_;     // cached-size blocks in use
  mutable size_t cached_ = 0, hits_ = 0, misses_ = 0;
  size_t cap_;
};

CachingCpuAllocator* CachingCpuAllocator::instance_ = nullptr;

}  // namespace

void install_caching_cpu_allocator(size_t max_cached_bytes) {
  static std::once_flag once;
  std::call_once(once, [&] {
    // Never destroyed: tensors freed during static destruction still find it.
    CachingCpuAllocator::instance_ = new CachingCpuAllocator(max_cached_bytes);
    c10::SetCPUAllocator(CachingCpuAllocator::instance_, /*priority=*/1);
    if (std::getenv("FROZENLM_CPU_CACHE_STATS"))  // diagnostics: how well the cache serves a run
      std::atexit([] {
        const CpuCacheStats s = cpu_cache_stats();
        std::fprintf(stderr, "[cpu cache] %zu MiB idle, %zu hits, %zu misses\n", s.cached_bytes >> 20, s.hits, s.misses);
      });
  });
}

void release_cpu_cache() {
  if (CachingCpuAllocator::instance_) CachingCpuAllocator::instance_->release_idle();
}

CpuCacheStats cpu_cache_stats() {
  return CachingCpuAllocator::instance_ ? CachingCpuAllocator::instance_->stats() : CpuCacheStats{0, 0, 0};
}

}  // namespace frozenlm
