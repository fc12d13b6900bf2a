#include "core/runtime.h"

#include <thread>

#include "core/torch_pch.h"

namespace frozenlm {

void set_threads(int n) {
  if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(n);
}

int num_threads() { return at::get_num_threads(); }

}  // namespace frozenlm
