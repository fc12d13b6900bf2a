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
// How many threads at::parallel_for ran chunks on in this library's code (a range of many chunks): num_threads()
// when it is compiled with OpenMP, 1 when it is not (the pragma is then ignored and every range runs serially).
int parallel_for_threads();

}  // namespace frozenlm
