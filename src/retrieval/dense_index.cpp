#include "retrieval/dense_index.h"

#include <hnswlib/hnswlib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/torch_pch.h"
#include "core/transformer.h"
#include "retrieval/dense_projection.h"
#include "retrieval/passage_index.h"
#include "tokenizer/tokenizer.h"

namespace frozenlm {

namespace fs = std::filesystem;
using nlohmann::json;

std::string dense_text(const Passage& p) { return p.title.empty() ? p.text : p.title + "\n" + p.text; }

at::Tensor embed_texts(const FrozenLM& lm, const Tokenizer& tok, const std::vector<std::string>& texts, const DenseOptions& opt) {
  std::vector<std::vector<int64_t>> ids;
  for (size_t i = 0; i < texts.size(); ++i) {
    ids.push_back(tok.encode(texts[i], false));
    if (ids.back().empty()) throw Error("cannot embed an empty text (text " + std::to_string(i) + ")");
  }
  return embed_token_ids(lm, bos_for(lm.config(), tok), std::move(ids), opt);
}

at::Tensor embed_token_ids(const FrozenLM& lm, int64_t bos, std::vector<std::vector<int64_t>> ids, const DenseOptions& opt) {
  const int64_t n = int64_t(ids.size()), d = lm.dim(), L = lm.config().n_layers;
  if (opt.layer < -1 || opt.layer > L)
    throw Error("dense layer " + std::to_string(opt.layer) + " out of range (0.." + std::to_string(L) + ", -1: all)");
  if (opt.max_tokens < 2) throw Error("dense max_tokens must be at least 2");
  for (int64_t i = 0; i < n; ++i) {
    std::vector<int64_t>& t = ids[size_t(i)];
    if (t.empty()) throw Error("cannot embed an empty text (text " + std::to_string(i) + ")");
    for (int64_t id : t)
      if (id < 0 || id >= lm.vocab_size()) throw Error("text " + std::to_string(i) + ": token id " + std::to_string(id) + " is outside the vocabulary");
    if (bos >= 0) t.insert(t.begin(), bos);
    if (int64_t(t.size()) > opt.max_tokens) t.resize(size_t(opt.max_tokens));
  }
  // Similar lengths together: less padding.
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return ids[size_t(a)].size() < ids[size_t(b)].size(); });
  at::NoGradGuard ng;
  at::Tensor out = at::zeros({n, d}, at::kFloat);
  const int64_t skip = bos >= 0 ? 1 : 0;  // BOS is the same in every text: not pooled
  ForwardOptions fo;
  fo.logits = false;
  fo.stop_after_layer = opt.layer < 0 ? L : opt.layer;
  for (int64_t s = 0; s < n; s += opt.batch) {
    const int64_t e = std::min(n, s + opt.batch), B = e - s;
    int64_t T = 0;
    for (int64_t i = s; i < e; ++i) T = std::max<int64_t>(T, int64_t(ids[size_t(order[size_t(i)])].size()));
    at::Tensor batch = at::zeros({B, T}, at::kLong), mask = at::zeros({B, T}, at::kBool), pool = at::zeros({B, T}, at::kFloat);
    for (int64_t r = 0; r < B; ++r) {
      const auto& t = ids[size_t(order[size_t(s + r)])];
      const int64_t len = int64_t(t.size());
      batch[r].narrow(0, 0, len).copy_(at::tensor(t, at::kLong));
      mask[r].narrow(0, 0, len).fill_(true);
      const int64_t from = len > skip ? skip : 0;  // a text of BOS alone cannot happen (non-empty), kept safe anyway
      pool[r].narrow(0, from, len - from).fill_(1.0f / float(len - from));
    }
    ForwardInput fi;
    fi.ids = batch.to(lm.device());
    fi.mask = mask.to(lm.device());
    at::Tensor h = lm.forward(fi, nullptr, fo).hidden.to(at::kCPU, at::kFloat);         // [B, T, d]
    at::Tensor v = (h * pool.unsqueeze(-1)).sum(1);                                     // [B, d]
    v = v / v.norm(2, 1, true).clamp_min(1e-12);
    for (int64_t r = 0; r < B; ++r) out[order[size_t(s + r)]].copy_(v[r]);
  }
  return out;
}

namespace {

json dense_manifest(const FrozenLM& lm, const DenseOptions& opt, int64_t passages) {
  return {{"checkpoint_id", lm.checkpoint_id()}, {"layer", opt.layer}, {"dim", lm.dim()}, {"max_tokens", opt.max_tokens},
          {"pooling", "mean of the tokens after BOS, L2-normalised"}, {"text", "title\\ntext"}, {"passages", passages},
          {"hnsw", {{"M", opt.hnsw_m}, {"ef_construction", opt.ef_construction}, {"seed", opt.seed}}}};
}

}  // namespace

void build_dense_index(const std::string& dir, const FrozenLM& lm, const Tokenizer& tok, const DenseOptions& opt) {
  IndexManifest m = read_index_manifest(dir);
  Bm25Searcher s({dir + "/bm25"});
  const int64_t n = int64_t(s.size()), d = lm.dim();
  const fs::path tmp = fs::path(dir) / "dense.tmp", final_dir = fs::path(dir) / "dense";
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  hnswlib::InnerProductSpace space(static_cast<size_t>(d));
  hnswlib::HierarchicalNSW<float> graph(&space, size_t(std::max<int64_t>(n, 1)), size_t(opt.hnsw_m), size_t(opt.ef_construction), size_t(opt.seed));
  std::ofstream raw(tmp / "vectors.f32", std::ios::binary);
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t chunk = 1024;
  for (int64_t start = 0; start < n; start += chunk) {
    const int64_t end = std::min(n, start + chunk);
    std::vector<std::string> texts;
    for (int64_t i = start; i < end; ++i) {
      Passage p;
      try {
        p = s.passage(uint32_t(i + 1));
      } catch (const std::exception&) {
        throw Error(dir + ": passage docid " + std::to_string(i + 1) + " is missing (dense vectors need docids 1.." + std::to_string(n) + ")");
      }
      texts.push_back(dense_text(p));
    }
    at::Tensor v = embed_texts(lm, tok, texts, opt).contiguous();
    raw.write(reinterpret_cast<const char*>(v.data_ptr<float>()), std::streamsize(v.numel() * sizeof(float)));
    for (int64_t i = start; i < end; ++i) graph.addPoint(v[i - start].data_ptr<float>(), hnswlib::labeltype(i + 1));
    if (opt.progress) {
      const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const double rate = double(end) / std::max(sec, 1e-9);
      std::fprintf(stderr, "[dense] %lld/%lld passages embedded, %.0f passages/s, ETA %.0fs\n", (long long)end, (long long)n, rate,
                   double(n - end) / rate);
    }
  }
  raw.close();
  if (!raw) throw Error((tmp / "vectors.f32").string() + ": write failed");
  graph.saveIndex((tmp / "hnsw.bin").string());
  fsync_tree(tmp.string());
  fs::remove_all(final_dir);
  fs::rename(tmp, final_dir);
  m.dense = dense_manifest(lm, opt, n);
  write_index_manifest(dir, m);
}

DenseOptions index_dense_options(const std::string& dir, const FrozenLM& lm) {
  const IndexManifest m = read_index_manifest(dir);
  if (m.dense.is_null()) throw Error(dir + ": has no dense vectors (add them with `frozenlm index embed`)");
  DenseOptions o;
  try {
    const std::string id = m.dense.at("checkpoint_id").get<std::string>();
    if (id != lm.checkpoint_id())
      throw Error(dir + ": its dense vectors came from another model (checkpoint id " + id + "), not this one (" + lm.checkpoint_id() +
                  "): embed the index again with this model, or retrieve with that one");
    o.layer = m.dense.at("layer").get<int64_t>();
    o.max_tokens = m.dense.at("max_tokens").get<int64_t>();
  } catch (const json::exception& e) {
    throw Error(dir + "/manifest.json: corrupt \"dense\" entry (" + e.what() + ")");
  }
  return o;
}

at::Tensor read_dense_vectors(const std::string& dir) {
  const IndexManifest m = read_index_manifest(dir);
  if (m.dense.is_null()) throw Error(dir + ": has no dense vectors (add them with `frozenlm index embed`)");
  const int64_t n = m.dense.value("passages", int64_t(0)), d = m.dense.value("dim", int64_t(0));
  const std::string path = dir + "/dense/vectors.f32";
  std::error_code ec;
  const uintmax_t bytes = fs::file_size(path, ec);
  if (ec) throw Error(path + ": missing (the dense part of the index is incomplete)");
  if (bytes != uintmax_t(n) * uintmax_t(d) * sizeof(float))
    throw Error(path + ": " + std::to_string(bytes) + " bytes, the manifest's " + std::to_string(n) + " x " + std::to_string(d) + " vectors need " +
                std::to_string(uintmax_t(n) * uintmax_t(d) * sizeof(float)));
  at::Tensor v = at::empty({n, d}, at::kFloat);
  std::ifstream f(path, std::ios::binary);
  f.read(reinterpret_cast<char*>(v.data_ptr<float>()), std::streamsize(bytes));
  if (!f) throw Error(path + ": read failed");
  return v;
}

void build_projected_graph(const std::string& dir, const DenseProjection& projection, const DenseOptions& opt) {
  IndexManifest m = read_index_manifest(dir);
  if (m.dense.is_null()) throw Error(dir + ": has no dense vectors to project (add them with `frozenlm index embed` first)");
  const std::string id = m.dense.value("checkpoint_id", ""), pid = projection.info.value("checkpoint_id", "");
  if (id != pid)
    throw Error(dir + ": the projection was trained on another model's vectors (checkpoint id " + pid + "), the index's are " + id);
  if (projection.info.value("layer", int64_t(-2)) != m.dense.value("layer", int64_t(-3)))
    throw Error(dir + ": the projection was trained on layer " + projection.info.value("layer", json()).dump() + ", the index's vectors are layer " +
                m.dense.value("layer", json()).dump());
  const at::Tensor raw = read_dense_vectors(dir);
  const int64_t n = raw.size(0), k = projection.weight.size(0);
  if (projection.weight.size(1) != raw.size(1))
    throw Error(dir + ": the projection reads " + std::to_string(projection.weight.size(1)) + "-wide vectors, the index's are " + std::to_string(raw.size(1)));
  const fs::path tmp = fs::path(dir) / "dense" / "projected.tmp", final_dir = fs::path(dir) / "dense" / "projected";
  fs::remove_all(tmp);
  projection.save(tmp.string());
  hnswlib::InnerProductSpace space(static_cast<size_t>(k));
  hnswlib::HierarchicalNSW<float> graph(&space, size_t(std::max<int64_t>(n, 1)), size_t(opt.hnsw_m), size_t(opt.ef_construction), size_t(opt.seed));
  at::NoGradGuard ng;
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t chunk = 16384;
  for (int64_t s = 0; s < n; s += chunk) {
    const int64_t e = std::min(n, s + chunk);
    const at::Tensor v = projection.apply(raw.narrow(0, s, e - s)).contiguous();
    for (int64_t i = s; i < e; ++i) graph.addPoint(v[i - s].data_ptr<float>(), hnswlib::labeltype(i + 1));
    if (opt.progress) {
      const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::fprintf(stderr, "[project] %lld/%lld passages in the graph, ETA %.0fs\n", (long long)e, (long long)n,
                   double(n - e) * sec / std::max<double>(double(e), 1));
    }
  }
  graph.saveIndex((tmp / "hnsw.bin").string());
  fsync_tree(tmp.string());
  fs::remove_all(final_dir);
  fs::rename(tmp, final_dir);
  m.dense["projection"] = {{"dim", k}, {"hnsw", {{"M", opt.hnsw_m}, {"ef_construction", opt.ef_construction}, {"seed", opt.seed}}},
                           {"trained", {{"train_pairs", projection.info.value("train_pairs", json())},
                                        {"dev_loss_before", projection.info.value("dev_loss_before", json())},
                                        {"dev_loss_after", projection.info.value("dev_loss_after", json())},
                                        {"source", projection.info.value("source", json())}}}};
  write_index_manifest(dir, m);
}

struct DenseSearcher::Impl {
  DenseOptions opt;
  int64_t dim = 0, n = 0;
  std::unique_ptr<DenseProjection> projection;
  std::unique_ptr<hnswlib::InnerProductSpace> space;
  std::unique_ptr<hnswlib::HierarchicalNSW<float>> graph;
};

DenseSearcher::DenseSearcher(const std::string& dir, const FrozenLM& lm, bool projected) : impl_(std::make_unique<Impl>()) {
  const IndexManifest m = read_index_manifest(dir);
  impl_->opt = index_dense_options(dir, lm);
  try {
    impl_->dim = m.dense.at("dim").get<int64_t>();
    impl_->n = m.dense.at("passages").get<int64_t>();
  } catch (const json::exception& e) {
    throw Error(dir + "/manifest.json: corrupt \"dense\" entry (" + e.what() + ")");
  }
  std::string path = dir + "/dense/hnsw.bin";
  if (projected) {
    if (!m.dense.contains("projection"))
      throw Error(dir + ": has no trained dense projection (train one with `frozenlm train dense-projection`, add it with `frozenlm index project`)");
    impl_->projection = std::make_unique<DenseProjection>(DenseProjection::load(dir + "/dense/projected"));
    impl_->dim = impl_->projection->weight.size(0);
    path = dir + "/dense/projected/hnsw.bin";
  }
  if (!fs::is_regular_file(path)) throw Error(path + ": missing (the dense part of the index is incomplete)");
  impl_->space = std::make_unique<hnswlib::InnerProductSpace>(size_t(impl_->dim));
  try {
    impl_->graph = std::make_unique<hnswlib::HierarchicalNSW<float>>(impl_->space.get(), path);
  } catch (const std::exception& e) {
    throw Error(path + ": cannot read the HNSW graph (" + e.what() + ")");
  }
  if (int64_t(impl_->graph->cur_element_count) != impl_->n)
    throw Error(path + ": holds " + std::to_string(impl_->graph->cur_element_count) + " vectors, the manifest says " + std::to_string(impl_->n));
}

DenseSearcher::~DenseSearcher() = default;

int64_t DenseSearcher::size() const { return impl_->n; }

std::vector<RetrievalHit> DenseSearcher::search(const FrozenLM& lm, const Tokenizer& tok, const std::string& query, int64_t k, int64_t ef) const {
  if (k <= 0 || impl_->n == 0) return {};
  DenseOptions o = impl_->opt;
  o.progress = false;
  at::Tensor q = embed_texts(lm, tok, {query}, o);
  if (impl_->projection) q = impl_->projection->apply(q);
  q = q.contiguous();
  impl_->graph->setEf(size_t(std::max(k, ef)));
  auto pq = impl_->graph->searchKnn(q.data_ptr<float>(), size_t(std::min(k, impl_->n)));
  std::vector<RetrievalHit> hits;
  while (!pq.empty()) {  // farthest first
    hits.push_back({uint32_t(pq.top().second), 1.0 - double(pq.top().first)});
    pq.pop();
  }
  std::reverse(hits.begin(), hits.end());
  return hits;
}

}  // namespace frozenlm
