// Process-wide runtime settings.
#pragma once

namespace frozenlm {

// Call once at start-up: sets LibTorch's intra-op threads (it starts with one here; n <= 0 means every core this
// process may run on) and installs the caching CPU allocator (core/cpu_allocator.h).
void init_runtime(int threads = 0);
void set_threads(int n);
int num_threads();

}  // namespace frozenlm
