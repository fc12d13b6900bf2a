// Dense retrieval on the frozen LM's hidden states (retrieval/dense_index.h): a text's vector does not depend on the
// batch it is embedded in (padding), equals the mean of the layer's states computed directly, the HNSW graph returns
// the exact nearest neighbours on a small index, a passage's own text finds it first, and an index embedded with
// another model is refused. The trained projection (retrieval/dense_projection.h): its gradient equals finite
// differences, it learns to ignore dimensions that only carry noise (recall rises from chance), and its graph in an
// index returns the exact nearest neighbours of the projected vectors.
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/loader.h"
#include "retrieval/dense_index.h"
#include "retrieval/dense_projection.h"
#include "retrieval/passage_index.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace frozenlm::test {

namespace fs = std::filesystem;

static std::string retrieval_data(const std::string& name) { return std::string(FROZENLM_SOURCE) + "/tests/data/retrieval/" + name; }

TEST(DenseRetrieval, VectorsAreLayerMeansIndependentOfTheBatch) {
  auto lm = load_model(tinystories());
  auto tok = load_tokenizer_for_model(tinystories(), "");
  const std::vector<std::string> texts{"Once upon a time there was a cat.", "A dog.", "The little girl named Lily went to the park with her mom."};
  DenseOptions o;
  o.layer = 1;
  o.progress = false;
  const at::Tensor together = embed_texts(*lm, *tok, texts, o);
  ASSERT_EQ(together.sizes(), (std::vector<int64_t>{3, lm->dim()}));
  for (size_t i = 0; i < texts.size(); ++i) {
    const at::Tensor alone = embed_texts(*lm, *tok, {texts[i]}, o);
    EXPECT_LT((alone[0] - together[int64_t(i)]).abs().max().item<double>(), 1e-5) << "text " << i << " depends on its batch";
    // Directly: states after layer 1 of the whole sequence, mean over the tokens after BOS, normalised.
    std::vector<int64_t> ids = tok->encode(texts[i], false);
    ids.insert(ids.begin(), lm->config().bos_id);
    ForwardInput fi;
    fi.ids = at::tensor(ids, at::kLong).view({1, -1});
    ForwardOptions fo;
    fo.logits = false;
    fo.all_hidden = true;
    at::NoGradGuard ng;
    const at::Tensor h = lm->forward(fi, nullptr, fo).layer_hidden[1][0];  // the first layer's output [T, d]
    at::Tensor v = h.narrow(0, 1, h.size(0) - 1).mean(0);
    v = v / v.norm();
    EXPECT_LT((v - together[int64_t(i)]).abs().max().item<double>(), 1e-5) << "text " << i;
  }
  EXPECT_NEAR(together.norm(2, 1).min().item<double>(), 1.0, 1e-5);
}

TEST(DenseRetrieval, GraphSearchFindsTheExactNeighboursAndRefusesAnotherModel) {
  auto lm = load_model(tinystories());
  auto tok = load_tokenizer_for_model(tinystories(), "");
  const std::string dir = temp_dir("dense-index");
  fs::remove_all(dir);
  IndexBuildOptions bo;
  bo.progress = false;
  build_index(retrieval_data("bm25_corpus.jsonl"), dir, bo);
  DenseOptions o;
  o.progress = false;
  build_dense_index(dir, *lm, *tok, o);
  EXPECT_EQ(read_index_manifest(dir).dense["checkpoint_id"], lm->checkpoint_id());
  DenseSearcher dense(dir, *lm);
  Bm25Searcher bm25({dir + "/bm25"});
  ASSERT_EQ(dense.size(), 12);
  std::vector<std::string> texts;
  for (uint32_t id = 1; id <= 12; ++id) texts.push_back(dense_text(bm25.passage(id)));
  const at::Tensor all = embed_texts(*lm, *tok, texts, o);
  for (const char* q : {"the cat and the dog", "gold", "a ship on the lake in the rain"}) {
    const at::Tensor qv = embed_texts(*lm, *tok, {q}, o)[0];
    const at::Tensor sims = at::matmul(all, qv);
    const auto exact = sims.topk(5);
    const auto hits = dense.search(*lm, *tok, q, 5, 50);
    ASSERT_EQ(hits.size(), 5u);
    for (int64_t r = 0; r < 5; ++r) {
      EXPECT_EQ(int64_t(hits[size_t(r)].docid), std::get<1>(exact)[r].item<int64_t>() + 1) << q << " rank " << r + 1;
      EXPECT_NEAR(hits[size_t(r)].score, std::get<0>(exact)[r].item<double>(), 1e-5) << q << " rank " << r + 1;
    }
  }
  // A passage's own text is its own nearest neighbour.
  const auto self = dense.search(*lm, *tok, texts[6], 1);
  EXPECT_EQ(self[0].docid, 7u);
  EXPECT_NEAR(self[0].score, 1.0, 1e-5);
  // Passages added later would have no vectors: refused, and the index keeps its 12.
  const std::string more = dir + "-more.jsonl";
  std::ofstream(more) << "{\"id\": \"new\", \"text\": \"a zebra\"}\n";
  try {
    add_to_index(dir, more, false);
    ADD_FAILURE() << "adding to an index with dense vectors was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("has dense vectors"), std::string::npos) << e.what();
  }
  EXPECT_EQ(read_index_manifest(dir).passages, 12);
  // Another model is refused, naming both checkpoints.
  auto other = load_model(stories260k());
  try {
    DenseSearcher s(dir, *other);
    ADD_FAILURE() << "an index embedded with another model was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("came from another model"), std::string::npos) << e.what();
  }
}

TEST(DenseProjection, GradientMatchesFiniteDifferences) {
  at::manual_seed(3);
  const at::Tensor q = at::randn({5, 6}, at::kDouble), p = at::randn({5, 6}, at::kDouble);
  const std::vector<int64_t> ids{0, 1, 2, 1, 4};  // rows 1 and 3 share a positive: masked as each other's negatives
  at::Tensor w = at::randn({4, 6}, at::kDouble).requires_grad_(true);
  in_batch_contrastive_loss(w, q, p, ids, 0.5).backward();
  const at::Tensor g = w.grad().clone();
  at::NoGradGuard ng;
  const double h = 1e-6;
  for (int64_t i = 0; i < w.size(0); ++i)
    for (int64_t j = 0; j < w.size(1); ++j) {
      at::Tensor wp = w.detach().clone(), wm = w.detach().clone();
      wp[i][j] += h;
      wm[i][j] -= h;
      const double fd = (in_batch_contrastive_loss(wp, q, p, ids, 0.5).item<double>() - in_batch_contrastive_loss(wm, q, p, ids, 0.5).item<double>()) / (2 * h);
      EXPECT_NEAR(g[i][j].item<double>(), fd, 1e-6) << "w[" << i << "][" << j << "]";
    }
  // The mask matters: without it (all ids distinct) the loss differs.
  EXPECT_GT(std::abs(in_batch_contrastive_loss(w, q, p, {0, 1, 2, 3, 4}, 0.5).item<double>() - in_batch_contrastive_loss(w, q, p, ids, 0.5).item<double>()), 1e-6);
}

// Data parallel: ranks take contiguous row ranges of a batch; their losses (and so gradients) must add up to the
// whole batch's mean, with the shared-positive mask applied by global row.
TEST(DenseProjection, RowRangesOfTheLossAddUpToTheWholeBatch) {
  at::manual_seed(4);
  const at::Tensor q = at::randn({5, 6}, at::kDouble), p = at::randn({5, 6}, at::kDouble);
  const std::vector<int64_t> ids{0, 1, 2, 1, 4};
  const at::Tensor w0 = at::randn({4, 6}, at::kDouble);
  at::Tensor w = w0.clone().requires_grad_(true);
  at::Tensor whole = in_batch_contrastive_loss(w, q, p, ids, 0.5);
  whole.backward();
  const at::Tensor g = w.grad().clone();
  for (const std::vector<int64_t>& cuts : std::vector<std::vector<int64_t>>{{0, 2, 5}, {0, 1, 3, 5}, {0, 0, 5}}) {
    double sum = 0;
    at::Tensor gsum = at::zeros_like(w0);
    for (size_t k = 0; k + 1 < cuts.size(); ++k) {
      at::Tensor wk = w0.clone().requires_grad_(true);
      at::Tensor part = in_batch_contrastive_loss(wk, q, p, ids, 0.5, cuts[k], cuts[k + 1]);
      part.backward();
      sum += part.item<double>();
      gsum += wk.grad();
    }
    EXPECT_NEAR(sum, whole.item<double>(), 1e-12) << cuts.size() - 1 << " ranges";
    EXPECT_LT((gsum - g).abs().max().item<double>(), 1e-12) << cuts.size() - 1 << " ranges";
  }
  // A range alone is not the whole (the check can fail).
  EXPECT_GT(std::abs(in_batch_contrastive_loss(w0, q, p, ids, 0.5, 0, 2).item<double>() - whole.item<double>()), 1e-3);
  EXPECT_THROW(in_batch_contrastive_loss(w0, q, p, ids, 0.5, 3, 2), Error);
}

TEST(DenseProjection, LearnsToIgnoreDimensionsThatCarryOnlyNoise) {
  // Passages and their questions share 8 "topic" dimensions; 24 further dimensions are independent, larger noise in
  // each. Unprojected, the noise dominates the cosine; a trained projection should weigh it down.
  at::manual_seed(0);
  const int64_t n = 2000, d = 32, s = 8, n_train = 1600;
  const at::Tensor topic = at::randn({n, s});
  const at::Tensor corpus = at::cat({topic, 2.0 * at::randn({n, d - s})}, 1);
  const at::Tensor questions = at::cat({topic + 0.3 * at::randn({n, s}), 2.0 * at::randn({n, d - s})}, 1);
  std::vector<int64_t> train_rows, dev_rows;
  for (int64_t i = 0; i < n_train; ++i) train_rows.push_back(i);
  for (int64_t i = n_train; i < n; ++i) dev_rows.push_back(i);
  const at::Tensor train_q = questions.narrow(0, 0, n_train), dev_q = questions.narrow(0, n_train, n - n_train);
  ProjectionOptions o;
  o.steps = 1000;
  o.batch = 64;
  o.lr = 1e-2;
  o.temperature = 0.1;
  o.eval_every = 50;
  o.progress = false;
  const DenseProjection p = train_dense_projection(train_q, train_rows, dev_q, dev_rows, corpus, o);
  const auto before = positive_recall(at::Tensor(), dev_q, corpus, dev_rows, {1, 5});
  const auto after = positive_recall(p.weight, dev_q, corpus, dev_rows, {1, 5});
  // A linear map can at best keep the topic dimensions alone (the oracle); 1,000 steps get most of the way.
  const auto oracle = positive_recall(at::eye(d).narrow(0, 0, s), dev_q, corpus, dev_rows, {1, 5});
  EXPECT_LT(before["1"].get<double>(), 0.1) << before.dump();
  EXPECT_GT(after["1"].get<double>(), 0.75 * oracle["1"].get<double>()) << "before " << before.dump() << " after " << after.dump() << " oracle " << oracle.dump();
  EXPECT_GT(after["5"].get<double>(), 0.9) << after.dump();
  EXPECT_LT(p.info["dev_loss_after"].get<double>(), 0.5 * p.info["dev_loss_before"].get<double>()) << p.info.dump();
  // The curve goes down, and the kept weight is the best step's.
  const auto& curve = p.info["curve"];
  ASSERT_GE(curve.size(), 2u);
  EXPECT_LT(curve.back()["loss"].get<double>(), curve.front()["loss"].get<double>());
  // Identity at the start: with 0 steps the projection changes nothing.
  ProjectionOptions none = o;
  none.steps = 1;
  none.lr = 1e-12;
  const DenseProjection id = train_dense_projection(train_q, train_rows, dev_q, dev_rows, corpus, none);
  EXPECT_LT((id.weight - at::eye(d)).abs().max().item<double>(), 1e-6);
}

TEST(DenseProjection, IndexGraphReturnsTheExactProjectedNeighbours) {
  auto lm = load_model(tinystories());
  auto tok = load_tokenizer_for_model(tinystories(), "");
  const std::string dir = temp_dir("dense-projected");
  fs::remove_all(dir);
  IndexBuildOptions bo;
  bo.progress = false;
  build_index(retrieval_data("bm25_corpus.jsonl"), dir, bo);
  DenseOptions o;
  o.layer = 2;
  o.progress = false;
  build_dense_index(dir, *lm, *tok, o);
  try {
    DenseSearcher s(dir, *lm, true);
    ADD_FAILURE() << "a projected search without a projection was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("has no trained dense projection"), std::string::npos) << e.what();
  }
  // The cached vectors are the passages' embeddings, in docid order.
  Bm25Searcher bm25({dir + "/bm25"});
  std::vector<std::string> texts;
  for (uint32_t id = 1; id <= 12; ++id) texts.push_back(dense_text(bm25.passage(id)));
  const at::Tensor raw = read_dense_vectors(dir);
  EXPECT_LT((raw - embed_texts(*lm, *tok, texts, o)).abs().max().item<double>(), 1e-5);
  EXPECT_EQ(index_dense_options(dir, *lm).layer, 2);
  at::manual_seed(1);
  DenseProjection p;
  p.weight = at::randn({8, lm->dim()});
  p.info = {{"checkpoint_id", "someone-else"}, {"layer", 2}, {"dim_in", lm->dim()}, {"dim_out", 8}};
  try {
    build_projected_graph(dir, p, o);
    ADD_FAILURE() << "a projection trained on another model's vectors was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("another model's vectors"), std::string::npos) << e.what();
  }
  p.info["checkpoint_id"] = lm->checkpoint_id();
  p.info["layer"] = 3;
  EXPECT_THROW(build_projected_graph(dir, p, o), Error);  // another layer
  p.info["layer"] = 2;
  build_projected_graph(dir, p, o);
  EXPECT_EQ(read_index_manifest(dir).dense["projection"]["dim"], 8);
  DenseSearcher projected(dir, *lm, true), plain(dir, *lm);
  const at::Tensor all = p.apply(raw);
  for (const char* q : {"the cat and the dog", "gold", "a ship on the lake in the rain"}) {
    const at::Tensor qv = p.apply(embed_texts(*lm, *tok, {q}, o))[0];
    const auto exact = at::matmul(all, qv).topk(5);
    const auto hits = projected.search(*lm, *tok, q, 5, 50);
    ASSERT_EQ(hits.size(), 5u);
    for (int64_t r = 0; r < 5; ++r) {
      EXPECT_EQ(int64_t(hits[size_t(r)].docid), std::get<1>(exact)[r].item<int64_t>() + 1) << q << " rank " << r + 1;
      EXPECT_NEAR(hits[size_t(r)].score, std::get<0>(exact)[r].item<double>(), 1e-5) << q << " rank " << r + 1;
    }
  }
  // The raw graph is still there and still unprojected.
  EXPECT_NEAR(plain.search(*lm, *tok, texts[3], 1)[0].score, 1.0, 1e-5);
  // Saved and loaded exactly.
  const DenseProjection back = DenseProjection::load(dir + "/dense/projected");
  EXPECT_TRUE(at::equal(back.weight, p.weight));
}

}  // namespace frozenlm::test
