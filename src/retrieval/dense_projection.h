// A small trained projection for dense retrieval on the frozen LM's pooled states, so dense retrieval can learn what
// matters for questions while the LM stays frozen:
//   v ↦ normalise(W v),  W [k, d]  (one map for questions and passages alike)
// initialised to the first k rows of the identity (k = d: training starts from the unprojected search). Trained
// contrastively on question–positive-passage pairs with in-batch negatives (DPR, Karpukhin et al. 2020): for a batch of
// B pairs, s_ij = <W q_i, W p_j> / τ on normalised vectors, loss = mean_i −log softmax_j(s_i·)[i], where a passage that
// is also row i's own positive (two questions about one passage) is masked out of row i's negatives. Passage vectors
// come from the index's cache (dense/vectors.f32), so a training step never runs the LM.
// Files: DIR/projection.safetensors ("weight" [k, d], fp32) and DIR/projection.json (the model's checkpoint id, the
// layer it was trained on, options, the curve and the before/after dev numbers).
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include <ATen/Tensor.h>

namespace frozenlm {

struct ProjectionOptions {
  int64_t dim = 0;             // k (0: the LM's width d)
  int64_t steps = 2000;
  int64_t batch = 64;          // pairs per step: each question's negatives are the batch's other passages
  double lr = 1e-3;            // Adam
  double temperature = 0.05;
  int64_t eval_every = 200;    // dev loss (the whole dev set as one batch); the best W on it is kept
  uint64_t seed = 0;
  bool progress = true;
  // Data parallel (`train dense-projection --nproc`): every rank draws the same batches and computes the loss of its
  // contiguous share of each batch's rows (against all the batch's passages); `all_reduce` (set when world > 1) sums
  // the gradient and the loss over the ranks before each identical Adam step.
  int rank = 0, world = 1;
  std::function<void(std::vector<at::Tensor>&)> all_reduce;
};

struct DenseProjection {
  at::Tensor weight;    // [k, d] fp32
  nlohmann::json info;  // what projection.json holds

  // [N, d] → [N, k], each row L2-normalised.
  at::Tensor apply(const at::Tensor& v) const;
  void save(const std::string& dir) const;
  // Errors name the directory and what is missing or inconsistent.
  static DenseProjection load(const std::string& dir);
};

// The mean in-batch contrastive loss of questions q [B, d] against their positives p [B, d] (row i's positive is p_i)
// through weight [k, d]; passage_ids [B] mark rows that share a positive (masked as negatives). Differentiable in
// weight; any floating dtype. rows [row_begin, row_end) (row_end -1: B) gives those rows' part of the mean: their
// losses summed over B, so the parts of disjoint row ranges add up to the whole.
at::Tensor in_batch_contrastive_loss(const at::Tensor& weight, const at::Tensor& q, const at::Tensor& p,
                                     const std::vector<int64_t>& passage_ids, double temperature, int64_t row_begin = 0,
                                     int64_t row_end = -1);

// The fraction of questions (rows of q) whose positive (row positive_rows[i] of corpus) is among the k nearest rows of
// corpus by inner product after the projection (weight undefined: none; vectors renormalised), for each k in ks;
// exact search. {"1": r1, "5": r5, ...}.
nlohmann::json positive_recall(const at::Tensor& weight, const at::Tensor& q, const at::Tensor& corpus,
                               const std::vector<int64_t>& positive_rows, const std::vector<int64_t>& ks);

// Trains W on (train_q[i], corpus[train_rows[i]]) pairs; dev pairs (may be empty) choose the best W by dev loss.
// Returns the projection with info {"options", "curve": [{step, loss, dev_loss}], "best_step", "dev_loss_before",
// "dev_loss_after", "train_pairs", "dev_pairs"}. Progress on stderr.
DenseProjection train_dense_projection(const at::Tensor& train_q, const std::vector<int64_t>& train_rows, const at::Tensor& dev_q,
                                       const std::vector<int64_t>& dev_rows, const at::Tensor& corpus, const ProjectionOptions& opt);

}  // namespace frozenlm
