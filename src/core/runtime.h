// Process-wide runtime settings.
#pragma once

namespace frozenlm {

// Call once at start-up: sets LibTorch's intra-op threads (it starts with one here; n <= 0 means OMP_NUM_THREADS if
// set, else every core this process may run on) and installs the caching CPU allocator (core/cpu_allocator.h).
void init_runtime(int threads = 0);
void set_threads(int n);
// OMP_NUM_THREADS as a positive count, or 0 when it is unset or not a count.
int threads_from_environment();
int num_threads();

}  // namespace frozenlm
