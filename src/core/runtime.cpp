#include "core/runtime.h"

#include <sched.h>

#include <cstdlib>
#include <thread>

#include "core/cpu_allocator.h"

#include "core/torch_pch.h"

namespace frozenlm {

void set_threads(int n) {
  // "All cores" = the cores this process may run on (taskset, cpusets of containers), not every core of the machine:
  // more OpenMP threads than cores spin-wait against each other.
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

}  // namespace frozenlm
