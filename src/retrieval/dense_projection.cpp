#include "retrieval/dense_projection.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <numeric>
#include <random>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/safetensors.h"
#include "core/torch_pch.h"

namespace frozenlm {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

at::Tensor normalise_rows(const at::Tensor& v) { return v / v.norm(2, 1, true).clamp_min(1e-12); }

// Rows [B] gathered from corpus.
at::Tensor rows_of(const at::Tensor& corpus, const std::vector<int64_t>& rows) {
  return corpus.index_select(0, at::tensor(rows, at::kLong));
}

}  // namespace

at::Tensor DenseProjection::apply(const at::Tensor& v) const {
  return normalise_rows(at::matmul(v.to(weight.scalar_type()), weight.t()));
}

void DenseProjection::save(const std::string& dir) const {
  fs::create_directories(dir);
  write_safetensors(dir + "/projection.safetensors", {{"weight", weight.contiguous()}});
  write_file_atomically(dir + "/projection.json", info.dump(2) + "\n");
}

DenseProjection DenseProjection::load(const std::string& dir) {
  const std::string js = dir + "/projection.json", st = dir + "/projection.safetensors";
  std::ifstream f(js);
  if (!f) throw Error(dir + ": no projection.json (not a dense projection: `frozenlm train dense-projection` writes one)");
  DenseProjection p;
  p.info = json::parse(f, nullptr, false);
  if (p.info.is_discarded() || !p.info.is_object()) throw Error(js + ": not a JSON object");
  for (const char* k : {"checkpoint_id", "layer", "dim_in", "dim_out"})
    if (!p.info.contains(k)) throw Error(js + ": no \"" + std::string(k) + "\"");
  if (!fs::is_regular_file(st)) throw Error(st + ": missing");
  SafetensorsFile file(st);
  if (!file.has("weight")) throw Error(st + ": no tensor \"weight\"");
  p.weight = file.get_f32("weight");
  const int64_t k = p.info["dim_out"].get<int64_t>(), d = p.info["dim_in"].get<int64_t>();
  if (p.weight.dim() != 2 || p.weight.size(0) != k || p.weight.size(1) != d)
    throw Error(st + ": weight has shape " + std::to_string(p.weight.size(0)) + "x" + std::to_string(p.weight.dim() == 2 ? p.weight.size(1) : 0) +
                ", projection.json says " + std::to_string(k) + "x" + std::to_string(d));
  return p;
}

at::Tensor in_batch_contrastive_loss(const at::Tensor& weight, const at::Tensor& q, const at::Tensor& p,
                                     const std::vector<int64_t>& passage_ids, double temperature, int64_t row_begin, int64_t row_end) {
  const int64_t B = q.size(0);
  if (row_end < 0) row_end = B;
  if (row_begin < 0 || row_begin > row_end || row_end > B) throw Error("in_batch_contrastive_loss: bad row range");
  const int64_t n = row_end - row_begin;
  const at::Tensor qp = normalise_rows(at::matmul(q.narrow(0, row_begin, n), weight.t()));  // [n, k]
  const at::Tensor pp = normalise_rows(at::matmul(p, weight.t()));                          // [B, k]
  at::Tensor logits = at::matmul(qp, pp.t()) / temperature;                                 // [n, B]
  // Row i's negatives exclude other copies of its own positive passage.
  at::Tensor same = at::zeros({n, B}, at::kBool);
  auto acc = same.accessor<bool, 2>();
  for (int64_t i = row_begin; i < row_end; ++i)
    for (int64_t j = 0; j < B; ++j) acc[i - row_begin][j] = i != j && passage_ids[size_t(i)] == passage_ids[size_t(j)];
  logits = logits.masked_fill(same, -std::numeric_limits<double>::infinity());
  const at::Tensor targets = at::arange(row_begin, row_end, at::kLong);
  if (n == B) return at::cross_entropy_loss(logits, targets);
  return at::cross_entropy_loss(logits, targets, {}, at::Reduction::Sum) / double(B);
}

json positive_recall(const at::Tensor& weight, const at::Tensor& q, const at::Tensor& corpus, const std::vector<int64_t>& positive_rows,
                     const std::vector<int64_t>& ks) {
  at::NoGradGuard ng;
  const int64_t n = q.size(0);
  json out = json::object();
  if (n == 0) return out;
  auto project = [&](const at::Tensor& v) { return weight.defined() ? normalise_rows(at::matmul(v, weight.t())) : normalise_rows(v); };
  const at::Tensor qv = project(q);
  // The positive's score, then how many corpus rows score higher (in chunks: the corpus may be large).
  const at::Tensor pos = (qv * project(rows_of(corpus, positive_rows))).sum(1);  // [n]
  at::Tensor higher = at::zeros({n}, at::kLong);
  const int64_t chunk = 16384;
  for (int64_t s = 0; s < corpus.size(0); s += chunk) {
    const at::Tensor c = project(corpus.narrow(0, s, std::min(chunk, corpus.size(0) - s)));
    higher += (at::matmul(qv, c.t()) > pos.unsqueeze(1)).sum(1);
  }
  for (int64_t k : ks) out[std::to_string(k)] = (higher < k).to(at::kDouble).mean().item<double>();
  return out;
}

DenseProjection train_dense_projection(const at::Tensor& train_q, const std::vector<int64_t>& train_rows, const at::Tensor& dev_q,
                                       const std::vector<int64_t>& dev_rows, const at::Tensor& corpus, const ProjectionOptions& opt) {
  const int64_t n = train_q.size(0), d = corpus.size(1), k = opt.dim > 0 ? opt.dim : d;
  if (n < 2) throw Error("dense projection: needs at least 2 training pairs (in-batch negatives), got " + std::to_string(n));
  if (int64_t(train_rows.size()) != n || int64_t(dev_rows.size()) != dev_q.size(0)) throw Error("dense projection: pairs and rows differ in number");
  if (k > d) throw Error("dense projection: dim " + std::to_string(k) + " exceeds the vectors' width " + std::to_string(d));
  if (opt.batch < 2) throw Error("dense projection: batch must be at least 2");
  if (opt.temperature <= 0) throw Error("dense projection: temperature must be positive");
  if (opt.world > 1 && !opt.all_reduce) throw Error("dense projection: data parallel without an all-reduce");
  if (opt.world > std::min(opt.batch, n))
    throw Error("dense projection: " + std::to_string(opt.world) + " ranks need a batch of at least as many pairs (--batch-size " +
                std::to_string(opt.batch) + ", " + std::to_string(n) + " training pairs)");
  at::Tensor w = at::eye(k, d, at::kFloat).requires_grad_(true);
  torch::optim::Adam adam({w}, torch::optim::AdamOptions(opt.lr));
  std::mt19937_64 rng(opt.seed);
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  size_t cursor = order.size();
  const at::Tensor dev_p = dev_rows.empty() ? at::Tensor() : rows_of(corpus, dev_rows);
  auto dev_loss = [&]() {
    if (dev_rows.size() < 2) return std::numeric_limits<double>::quiet_NaN();
    at::NoGradGuard ng;
    return in_batch_contrastive_loss(w, dev_q, dev_p, dev_rows, opt.temperature).item<double>();
  };
  json curve = json::array();
  const double before = dev_loss();
  double best = before;
  int64_t best_step = 0;
  at::Tensor best_w = w.detach().clone();
  const int64_t B = std::min(opt.batch, n);
  double running = 0;
  int64_t since = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t step = 1; step <= opt.steps; ++step) {
    std::vector<int64_t> idx, rows;
    for (int64_t b = 0; b < B; ++b) {
      if (cursor == order.size()) { std::shuffle(order.begin(), order.end(), rng); cursor = 0; }
      idx.push_back(order[cursor]);
      rows.push_back(train_rows[size_t(order[cursor])]);
      ++cursor;
    }
    const at::Tensor q = train_q.index_select(0, at::tensor(idx, at::kLong));
    const at::Tensor p = rows_of(corpus, rows);
    // This rank's rows of the batch (all of them on one rank); their losses are parts of the batch's mean.
    const int64_t rb = B * opt.rank / opt.world, re = B * (opt.rank + 1) / opt.world;
    at::Tensor loss = in_batch_contrastive_loss(w, q, p, rows, opt.temperature, rb, re);
    adam.zero_grad();
    loss.backward();
    double step_loss = loss.item<double>();
    if (opt.world > 1) {
      std::vector<at::Tensor> parts{w.mutable_grad(), at::full({1}, step_loss, at::kFloat)};
      opt.all_reduce(parts);
      step_loss = parts[1].item<double>();
    }
    adam.step();
    running += step_loss;
    ++since;
    if (step % std::max<int64_t>(opt.eval_every, 1) == 0 || step == opt.steps) {
      const double dl = dev_loss();
      curve.push_back({{"step", step}, {"loss", running / double(since)}, {"dev_loss", std::isnan(dl) ? json() : json(dl)}});
      if (opt.progress) {
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::fprintf(stderr, "[projection] step %lld/%lld  loss %.4f  dev loss %.4f  %.0f steps/s\n", (long long)step,
                     (long long)opt.steps, running / double(since), dl, double(step) / std::max(s, 1e-9));
      }
      running = 0;
      since = 0;
      if (std::isnan(dl) || dl < best || std::isnan(best)) {
        best = dl;
        best_step = step;
        best_w = w.detach().clone();
      }
    }
  }
  DenseProjection out;
  out.weight = best_w;
  out.info = {{"dim_in", d},
              {"dim_out", k},
              {"options", {{"steps", opt.steps}, {"batch", B}, {"lr", opt.lr}, {"temperature", opt.temperature}, {"seed", opt.seed}}},
              {"train_pairs", n},
              {"dev_pairs", dev_rows.size()},
              {"curve", curve},
              {"best_step", best_step},
              {"dev_loss_before", std::isnan(before) ? json() : json(before)},
              {"dev_loss_after", std::isnan(best) ? json() : json(best)}};
  return out;
}

}  // namespace frozenlm
