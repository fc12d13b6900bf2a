// Dense retrieval on the frozen LM's hidden states (retrieval/dense_index.h): a text's vector does not depend on the
// batch it is embedded in (padding), equals the mean of the layer's states computed directly, the HNSW graph returns
// the exact nearest neighbours on a small index, a passage's own text finds it first, and an index embedded with
// another model is refused.
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/loader.h"
#include "retrieval/dense_index.h"
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

}  // namespace frozenlm::test
