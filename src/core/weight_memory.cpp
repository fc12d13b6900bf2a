#include "core/weight_memory.h"

#include <sys/mman.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "core/env_flag.h"
#include "core/error.h"
#include "core/torch_pch.h"

namespace frozenlm {

namespace {

constexpr size_t kHugePage = size_t(2) << 20;

std::atomic<bool> g_huge_pages{env_on_off("FROZENLM_HUGE_PAGES", true)};

// The deleter of every tensor empty_weight placed on huge pages: it also tells them apart (to_weight_memory).
void free_weight(void* p) { std::free(p); }

}  // namespace

bool set_huge_page_weights(bool on) { return g_huge_pages.exchange(on); }
bool huge_page_weights() { return g_huge_pages.load(); }

at::Tensor empty_weight(const std::vector<int64_t>& sizes, at::ScalarType dtype) {
  const auto opts = at::TensorOptions().dtype(dtype);
  int64_t n = 1;
  for (int64_t s : sizes) n *= s;
  const int64_t bytes = n * int64_t(c10::elementSize(dtype));
  if (!huge_page_weights() || bytes < kHugePageMinBytes) return at::empty(sizes, opts);
  // Whole huge pages: the last one is not shared with another allocation (which could keep it from being huge).
  const size_t rounded = (size_t(bytes) + kHugePage - 1) / kHugePage * kHugePage;
  void* p = nullptr;
  if (posix_memalign(&p, kHugePage, rounded) != 0)
    throw Error("weights: cannot allocate " + std::to_string(rounded >> 20) + " MiB for a weight tensor");
  madvise(p, rounded, MADV_HUGEPAGE);  // advice only: where THP is off, plain pages (no error)
  // The pointer is its own context, so the storage's deleter is free_weight itself (to_weight_memory checks it).
  return at::for_blob(p, sizes).options(opts).context(p, free_weight).make_tensor();
}

at::Tensor to_weight_memory(const at::Tensor& t) {
  if (!t.defined() || !t.device().is_cpu() || !huge_page_weights() || int64_t(t.nbytes()) < kHugePageMinBytes) return t;
  if (t.is_contiguous() && t.storage().data_ptr().get_deleter() == &free_weight) return t;  // already there: no copy
  at::Tensor out = empty_weight(t.sizes().vec(), t.scalar_type());
  out.copy_(t);
  return out;
}

int64_t huge_page_bytes(const at::Tensor& t) {
  std::ifstream smaps("/proc/self/smaps");
  if (!smaps || !t.defined() || t.nbytes() == 0) return -1;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(t.data_ptr()), end = begin + t.nbytes();
  int64_t total = 0;
  bool inside = false;
  for (std::string line; std::getline(smaps, line);) {
    uintptr_t lo = 0, hi = 0;
    char dash = 0;
    std::istringstream head(line);
    if (head >> std::hex >> lo >> dash >> hi && dash == '-') {  // a mapping's first line: "lo-hi perms ..."
      inside = lo < end && begin < hi;
      continue;
    }
    if (inside && line.rfind("AnonHugePages:", 0) == 0) total += std::stoll(line.substr(14)) * 1024;
  }
  return total;
}

}  // namespace frozenlm
