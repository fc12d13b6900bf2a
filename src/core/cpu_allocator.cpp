#include "core/cpu_allocator.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <torch/version.h>

#include <cstring>
#include <map>
#include <mutex>

namespace frozenlm {

namespace {

constexpr size_t kMinCached = size_t(1) << 20;  // smaller blocks: straight to the system allocator
constexpr size_t kGranule = size_t(1) << 16;     // round sizes up so near-equal requests share blocks

struct Block {
  void* ptr;
  size_t size;
};

class CachingCpuAllocator final : public c10::Allocator {
 public:
  explicit CachingCpuAllocator(size_t cap) : cap_(cap) {}

  c10::DataPtr allocate(size_t n) const override {
    if (n < kMinCached) {
      void* p = c10::alloc_cpu(n);
      return {p, p, &c10::free_cpu, c10::Device(c10::DeviceType::CPU)};
    }
    const size_t size = (n + kGranule - 1) / kGranule * kGranule;
    {
      std::lock_guard<std::mutex> lock(mu_);
      // Best fit, but never a block more than 1.25× the request (big blocks stay for big tensors).
      auto it = free_.lower_bound(size);
      if (it != free_.end() && it->first <= size + size / 4) {
        Block* b = it->second;
        free_.erase(it);
        cached_ -= b->size;
        ++hits_;
        return {b->ptr, b, &CachingCpuAllocator::release, c10::Device(c10::DeviceType::CPU)};
      }
      ++misses_;
    }
    Block* b = new Block{c10::alloc_cpu(size), size};
    return {b->ptr, b, &CachingCpuAllocator::release, c10::Device(c10::DeviceType::CPU)};
  }

#if TORCH_VERSION_MAJOR >= 2
  void copy_data(void* dest, const void* src, std::size_t count) const override { std::memcpy(dest, src, count); }
#endif

  static void release(void* ctx) {
    Block* b = static_cast<Block*>(ctx);
    CachingCpuAllocator* self = instance_;
    std::lock_guard<std::mutex> lock(self->mu_);
    self->free_.emplace(b->size, b);
    self->cached_ += b->size;
    while (self->cached_ > self->cap_ && !self->free_.empty()) {  // over budget: drop the largest idle blocks
      auto last = std::prev(self->free_.end());
      self->cached_ -= last->second->size;
      c10::free_cpu(last->second->ptr);
      delete last->second;
      self->free_.erase(last);
    }
  }

  CpuCacheStats stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    return {cached_, hits_, misses_};
  }

  static CachingCpuAllocator* instance_;

 private:
  mutable std::mutex mu_;
  mutable std::multimap<size_t, Block*> free_;
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
  });
}

CpuCacheStats cpu_cache_stats() {
  return CachingCpuAllocator::instance_ ? CachingCpuAllocator::instance_->stats() : CpuCacheStats{0, 0, 0};
}

}  // namespace frozenlm
