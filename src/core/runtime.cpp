#include "core/runtime.h"

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <vector>
#include <thread>

#include <ATen/Parallel.h>

#include "core/cpu_allocator.h"

#include "core/torch_pch.h"

namespace frozenlm {

int threads_from_environment() {
  const char* v = std::getenv("OMP_NUM_THREADS");
  if (!v || !*v) return 0;
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  if (*end != '\0' && *end != ',') return 0;  // OpenMP's nested form "4,2": the first level
  return n > 0 && n <= 4096 ? int(n) : 0;
}

void set_threads(int n) {
  // n <= 0: OMP_NUM_THREADS when it is set (as PyTorch and torchrun read it), else "all cores" = the cores this
  // process may run on (taskset, cpusets of containers), not every core of the machine: more OpenMP threads than
  // cores spin-wait against each other.
  if (n <= 0) n = threads_from_environment();
  if (n <= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 0;
    if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  }
  at::set_num_threads(n);
}

void init_runtime(int threads) {
  // Activations are large, short-lived tensors: by default each one is mmap'd fresh and page-faulted in again
  // (measured on the 100M bench: memory-bound ops ran at ~0.3 GB/s). A caching allocator reuses the pages.
  // FROZENLM_CPU_CACHE_MB sets the idle-memory bound (default 4096; 0 turns the cache off).
  const char* env = std::getenv("FROZENLM_CPU_CACHE_MB");
  const long mb = env ? std::atol(env) : 4096;
  if (mb > 0) install_caching_cpu_allocator(size_t(mb) << 20);
  set_threads(threads);
}

int num_threads() { return at::get_num_threads(); }

int parallel_for_threads() {
  std::vector<std::atomic<int>> ran(size_t(std::max(1, at::get_num_threads())));
  at::parallel_for(0, 1 << 16, 1, [&](int64_t, int64_t) { ran[size_t(at::get_thread_num()) % ran.size()] = 1; });
  int n = 0;
  for (auto& r : ran) n += r.load();
  return n;
}

}  // namespace frozenlm
