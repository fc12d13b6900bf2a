// Data-parallel training on PyTorch's own collectives (c10d): Gloo on CPU, NCCL on CUDA. Launched like torchrun —
// every rank is a process with RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT (and LOCAL_RANK, LOCAL_WORLD_SIZE) in
// its environment — or with `frozenlm train ... --nproc N`, which starts N local ranks (launch_local_ranks).
//
// What the trainer does with it (train/trainer.cpp): every rank builds the same batches and takes its disjoint share
// of each (examples k with k mod world = rank); its loss is its token sum over the global batch's target-token count,
// so the all-reduced (summed) gradients are the 1-rank gradients of the same global batch up to fp32 summation order;
// every rank takes the same optimiser step and evaluates identically; rank 0 alone writes checkpoints, metrics, the
// module and the progress bar; a resumed run checks that every rank loaded the same checkpoint. A rank that dies or
// stops answering makes the others' next collective fail (timeout FROZENLM_DIST_TIMEOUT_S, default 300 s) with an
// error that says so.
#pragma once
#include <ATen/Tensor.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace frozenlm {

class DataParallel {
 public:
  // The process group of this process's rank; nullptr when WORLD_SIZE is unset or 1 (plain single-process training).
  // Throws frozenlm::Error naming the variable that is missing or wrong, or the rendezvous that failed.
  static std::unique_ptr<DataParallel> from_environment(const std::string& device);
  // The CPU threads a rank should use when --threads is 0: OMP_NUM_THREADS if set, else the cores shared by the local
  // ranks.
  static int threads_per_local_rank();
  ~DataParallel();

  int rank() const { return rank_; }
  int world() const { return world_; }
  bool is_main() const { return rank_ == 0; }

  // In place: every tensor becomes its sum over the ranks (one call, coalesced per device).
  void all_reduce_sum(std::vector<at::Tensor>& tensors) const;
  double sum(double x) const;
  // Rank 0's values of `tensors` on every rank.
  void broadcast_from_main(std::vector<at::Tensor>& tensors) const;
  // This rank's contiguous share [begin, end) of n items of work (rank r: n·r/world to n·(r+1)/world): done by every
  // rank and put back together in rank order with the gathers below, the 1-rank order.
  std::pair<size_t, size_t> share(size_t n) const { return {n * size_t(rank_) / size_t(world_), n * size_t(rank_ + 1) / size_t(world_)}; }
  // Every rank's rows in rank order: rank r's `mine` ([n_r, ...]: any n_r, the same trailing shape and dtype on every
  // rank) concatenated along dim 0 — what ranks that each did a contiguous share of some work hand each other.
  at::Tensor all_gather_rows(const at::Tensor& mine) const;
  // Every rank's `mine`, in rank order.
  std::vector<std::string> all_gather_text(const std::string& mine) const;
  // Rank 0's `text` on every rank.
  void broadcast_text(std::string& text) const;
  // Throws unless every rank holds the same numbers (step and a checksum of the module: after a resume).
  void check_same(double step, double checksum, const std::string& what) const;
  // Wall time this rank spent in collectives so far (transfers and waiting for the other ranks).
  double collective_seconds() const { return collective_s_; }

 private:
  DataParallel() = default;
  [[noreturn]] void fail(const std::string& op, const std::exception& e) const;
  void all_reduce_raw(std::vector<at::Tensor>& t, const char* op) const;  // in place, the tensors' own dtype
  void broadcast_raw(std::vector<at::Tensor>& t) const;
  at::Tensor gather_rows(const at::Tensor& mine, std::vector<int64_t>* counts) const;
  int rank_ = 0, world_ = 1;
  double timeout_s_ = 300;
  mutable double collective_s_ = 0;
  struct Group;
  std::unique_ptr<Group> g_;
};

// `frozenlm ... --nproc N`: runs this same command line (argv without --nproc) as N local ranks on 127.0.0.1 with a
// free MASTER_PORT (LOCAL_WORLD_SIZE = N: a rank without --threads takes cores / N threads), and waits. A rank that fails makes the others stop (SIGTERM,
// then SIGKILL) and the launcher return 1, naming it; otherwise 0.
int launch_local_ranks(int argc, char** argv, int nproc);

}  // namespace frozenlm
