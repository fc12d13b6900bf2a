// Process-wide runtime settings.
#pragma once

namespace frozenlm {

// LibTorch starts with one intra-op thread here: set it explicitly. n <= 0 means every core.
void set_threads(int n);
int num_threads();

}  // namespace frozenlm
