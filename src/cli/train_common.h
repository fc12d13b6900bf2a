// What the `train` subcommands share (cmd_train.cpp), for the commands that train modules of a method on data they
// build first (cmd_reader.cpp: the re-ranker and the reader).
#pragma once
#include <functional>
#include <memory>
#include <string>

#include "cli/cli_common.h"
#include "train/trainer.h"

namespace frozenlm {
class DataParallel;
}

namespace frozenlm::cli {

// Options every `train` subcommand shares.
struct TrainArgs {
  ModelArgs model;
  TrainOptions to;
  std::string train_split = "train", dev_split = "dev";
  size_t train_limit = 0;
  std::string task_path, mixture_path, out_dir;
  bool skip_bad = false;
  CLI::Option* lr_option = nullptr;  // prompt tuning / ID-PT: without --lr, default_prompt_lr (the embeddings' scale)
  int nproc = 1;                     // --nproc: local data-parallel ranks
};

// --nproc N, for the subcommands that train data-parallel (train/data_parallel.h): all of them.
void add_data_parallel_args(CLI::App* c, int& nproc);
// Runs a subcommand data-parallel when asked: with --nproc N (and no RANK in the environment) it starts N local ranks
// of this command line and waits for them; as a rank (torchrun's variables set) it joins the process group and calls
// `run` with it, with OMP_NUM_THREADS or cores / local ranks threads unless --threads says, and stdout silenced on all
// ranks but rank 0; otherwise `run(nullptr)`.
int run_data_parallel(int nproc, ModelArgs& model, const std::string& out_dir, const std::function<int(const DataParallel*)>& run);
// run_data_parallel for a train subcommand: the group goes to the trainer as a.to.data_parallel.
std::function<int()> data_parallel(std::shared_ptr<TrainArgs> a, std::function<int()> run);

// Prompt tuning and ID-PT without --lr: the rate follows the frozen embeddings' scale (default_prompt_lr).
TrainOptions prompt_train_options(const TrainArgs& a, const FrozenLM& lm);
// --model..., --task/--mixture, --out, the splits and every TrainOptions flag.
void add_train_args(CLI::App* c, TrainArgs& a);
// The training set of `--task` or `--mixture` (examples-proportional with the mixture's cap; dev per task).
TrainingSet load_training_set(const TrainArgs& a);
size_t dev_size(const TrainingSet& s);
void print_train_result(const std::string& out_dir, const TrainResult& r);

// `train reranker` and `train reader` (cmd_reader.cpp), under the `train` command.
void add_reader_train_commands(CLI::App* train, Commands& cmds);

}  // namespace frozenlm::cli
