// A mixture of tasks for multi-task training (as T0/P3): examples-proportional mixing with a per-task cap, i.e. each
// task contributes min(its examples, cap), and the union is shuffled — deterministic given the seed.
// File: {"name": "mix", "tasks": ["sst2.json", "rte.json", ...], "cap": 5000, "seed": 0}  (paths relative to it)
#pragma once
#include <string>
#include <vector>

#include "tasks/task.h"

namespace frozenlm {

struct Mixture {
  std::string name, file;
  std::vector<Task> tasks;
  size_t cap = 0;  // 0: no cap
  uint64_t seed = 0;
};

struct MixedExample {
  size_t task = 0;  // index into Mixture::tasks
  Example example;
};

// Errors name the mixture file and, for a task that cannot be loaded, the task.
Mixture load_mixture(const std::string& path);

// The split of every task that has it (tasks without it are skipped; none having it is an error), capped and mixed.
std::vector<MixedExample> mix_examples(const Mixture& m, const std::string& split, const ReadOptions& opt = {});

}  // namespace frozenlm
