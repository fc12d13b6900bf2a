// Training a module around the frozen LM: AdamW, warm-up + constant/linear/cosine schedule, gradient clipping and
// accumulation, length-bucketed batches, evaluation every N steps keeping the best module, early stopping, NaN-step
// skipping, atomic checkpoints and exact --resume (optimiser state, RNG, data position), progress on stderr,
// metrics as JSONL and a training-curve SVG. Deterministic given the seed.
#pragma once
#include <string>
#include <vector>

#include "core/transformer.h"
#include "modules/trainable_module.h"
#include "tasks/task.h"

namespace frozenlm {

class DataParallel;

struct TrainOptions {
  int64_t steps = 200;          // optimiser steps
  int64_t batch_size = 8;       // examples per micro-batch
  int64_t grad_accum = 1;       // micro-batches per optimiser step
  double lr = 0.3;              // prompt tuning likes large rates (Lester et al. use 0.3)
  double weight_decay = 1e-5;
  int64_t warmup = 10;
  std::string schedule = "constant";  // constant | linear | cosine (after warm-up)
  double clip = 1.0;            // global gradient-norm clip (0: off)
  int64_t eval_every = 50;      // 0: only at the end
  size_t eval_limit = 200;      // dev examples per evaluation
  int64_t patience = 0;         // early stopping after this many evaluations without improvement (0: off)
  int64_t checkpoint_every = 50;
  int64_t snapshot_every = 0;   // keep the module as it is every N steps in OUT/snapshots/step-<N> (0: off), for
                                // probes during training (e.g. choosing a pretraining budget); never deleted
  uint64_t seed = 0;
  bool resume = false;          // continue from OUT/checkpoint; an error when there is none
  bool resume_or_start = false; // resume when OUT has a checkpoint, otherwise start fresh (for supervisors)
  bool allow_steps_change = false;  // resume with another --steps (the schedule is recomputed for the new total)
  int64_t max_nan_steps = 10;   // consecutive NaN/inf losses before training stops
  bool progress = true;
  // Data-parallel training (train/data_parallel.h): this rank's share of every batch, gradients summed over the
  // ranks, files and progress from rank 0 only. nullptr: one process.
  const DataParallel* data_parallel = nullptr;
};

struct TrainResult {
  int64_t steps_done = 0;
  double first_loss = 0, last_loss = 0, best_score = 0;
  int64_t nan_steps = 0;
  bool stopped_early = false;
};

// What to train on: one task or a mixture's tasks. Every training example carries its task (its max_tokens applies);
// dev examples are kept per task, and the score that selects the best module is the mean of the per-task scores.
struct TrainingSet {
  std::string name;
  std::vector<Task> tasks;
  std::vector<std::pair<size_t, Example>> train;  // (task index, example)
  std::vector<std::vector<Example>> dev;          // per task; empty: that task is not evaluated
  static TrainingSet single(const Task& task, const std::vector<Example>& train, const std::vector<Example>& dev);
};

// Trains `module` on the set's training examples (dev: for evaluation / best module). Writes into out_dir: the best
// module (module files), checkpoint/ (for --resume), metrics.jsonl, curve.svg and run.json (options, frozen-weights
// hash before and after, result).
TrainResult train_module(const FrozenLM& lm, TrainableModule& module, const Tokenizer& tok, const TrainingSet& set,
                         const std::string& out_dir, const TrainOptions& opt);

// One task: the same as train_module(TrainingSet::single(task, train, dev), ...).
TrainResult train_module(const FrozenLM& lm, TrainableModule& module, const Tokenizer& tok, const Task& task,
                         const std::vector<Example>& train, const std::vector<Example>& dev, const std::string& out_dir,
                         const TrainOptions& opt);

// The checkpoint a run in `out_dir` resumes from: "" to start fresh (no resume asked, or --resume-or-start with no
// checkpoint yet). With --resume and no checkpoint: an error that says so plainly. Checkpoints: OUT/checkpoint is a
// symbolic link to a complete OUT/checkpoint-<step> directory (see save in trainer.cpp); without a usable link, the
// newest complete checkpoint-<step> directory, or an older frozenlm's checkpoint.old, is used.
std::string resume_checkpoint(const std::string& out_dir, const TrainOptions& opt);
// The current complete checkpoint in out_dir, or "" when there is none.
std::string find_checkpoint(const std::string& out_dir);

// lr multiplier at `step` (0-based) for the options' warm-up and schedule.
double lr_factor(const TrainOptions& opt, int64_t step);

// Writes an SVG line chart of (x, y) series (used for the training curve).
void write_curve_svg(const std::string& path, const std::string& title,
                     const std::vector<std::pair<std::string, std::vector<std::pair<double, double>>>>& series);

}  // namespace frozenlm
