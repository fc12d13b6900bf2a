// The frozen reader's parts that use the LM (methods/reader): which passages "have the answer", the zero-shot
// likelihood re-ranker on the testbed base (the passage about the asked entity first), a trained re-ranker's score
// equal to the LM head's yes/no margin computed directly, and a re-ranker prompt that learns a relevance task.
#include <filesystem>

#include "core/loader.h"
#include "eval/evaluate.h"
#include "core/error.h"
#include "methods/reader/reader_data.h"
#include "methods/reader/reader_pipeline.h"
#include "methods/reader/reranker.h"
#include "modules/prompt_tuning.h"
#include "tasks/task.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"
#include "train/trainer.h"

namespace frozenlm::test {

static std::string testbed_model() { return std::string(FROZENLM_SOURCE) + "/testbed/model"; }

TEST(Reader, AnAnswerCountsOnlyAsWholeNormalisedTokens) {
  EXPECT_TRUE(passage_has_answer({"", "", "It lies in Paris, France."}, {"paris"}));
  EXPECT_FALSE(passage_has_answer({"", "", "A Parisian cafe."}, {"Paris"}));
  EXPECT_TRUE(passage_has_answer({"", "", "A song by Beatles."}, {"The Beatles"}));  // articles are not words that count
  EXPECT_TRUE(passage_has_answer({"", "", "from New York City"}, {"York", "Boston"}));
  EXPECT_FALSE(passage_has_answer({"", "", "New York"}, {"New Jersey"}));
  EXPECT_FALSE(passage_has_answer({"", "", "The number 1120."}, {"112"}));  // a number inside a longer one
  EXPECT_TRUE(passage_has_answer({"x", "Au", "symbol"}, {"Au"}));            // the title counts
}

TEST(Reader, LikelihoodRerankingPutsThePassageAboutTheEntityFirst) {
  auto lm = load_model(testbed_model());
  auto tok = load_tokenizer_for_model(testbed_model(), "");
  const std::vector<Passage> ps{{"cat", "", "A cat is a small animal that likes milk and sleeps in the sun."},
                                {"gold", "", "Gold is a chemical element with the symbol Au and a yellow colour."},
                                {"z", "", "The capital of Zorvatha is Quimbrel. The government of Zorvatha is a federal republic."},
                                {"d", "", "Most people in Draskelmor speak Voushen. About 2,310,000 people live in Draskelmor."}};
  for (const auto& [q, want] : std::vector<std::pair<std::string, size_t>>{{"Name the capital of Zorvatha.", 2}, {"Name the main language of Draskelmor.", 3}}) {
    const auto s = likelihood_scores(*lm, *tok, q, ps, 256);
    ASSERT_EQ(s.size(), ps.size());
    const size_t best = size_t(std::max_element(s.begin(), s.end()) - s.begin());
    EXPECT_EQ(best, want) << q;
  }
}

// The trained re-ranker's score is log p(" yes") − log p(" no") after the module's prompt and kRerankerInput: here
// computed directly from the logits at the last input position (both answers are one token for this tokenizer).
TEST(Reader, RerankerScoreIsTheYesNoMarginOfTheLmHead) {
  auto lm = load_model(testbed_model());
  auto tok = load_tokenizer_for_model(testbed_model(), "");
  auto pt = PromptTuning::create(*lm, 4, PromptInit::SampledVocab, {}, 3);
  const std::vector<Passage> ps{{"a", "", "The capital of Zorvatha is Quimbrel."}, {"b", "", "Gold is a chemical element."}};
  const std::string q = "Name the capital of Zorvatha.";
  const auto s = reranker_scores(*lm, *pt, *tok, q, ps, 256);
  const auto yes = tok->encode_continuation(" yes"), no = tok->encode_continuation(" no");
  ASSERT_EQ(yes.size(), 1u);
  ASSERT_EQ(no.size(), 1u);
  for (size_t i = 0; i < ps.size(); ++i) {
    const std::string input = "Context: " + ps[i].text + "\nQuestion: " + q + " Does the context answer it?\nAnswer:";
    std::vector<int64_t> ids = tok->encode(input, false);
    ids.insert(ids.begin(), lm->config().bos_id);
    at::NoGradGuard ng;
    const at::Tensor logits = module_forward_logits(*lm, *pt, module_input(*lm, at::tensor(ids, at::kLong).view({1, -1})));
    const at::Tensor lp = at::log_softmax(logits[0][int64_t(ids.size()) - 1], -1);
    EXPECT_NEAR(s[i], (lp[yes[0]] - lp[no[0]]).item<double>(), 1e-4) << "passage " << i;
  }
}

// A re-ranker prompt trained on relevance rows (the reader_data writer's task format) separates relevant from
// irrelevant passages it was trained on: the training loss falls and the relevant passage outscores the others.
TEST(Reader, ARerankerPromptLearnsARelevanceTask) {
  auto lm = load_model(testbed_model());
  auto tok = load_tokenizer_for_model(testbed_model(), "");
  const std::string dir = temp_dir("reranker-task");
  const std::vector<std::pair<std::string, std::string>> facts{
      {"Zorvatha", "The capital of Zorvatha is Quimbrel."}, {"Draskelmor", "Most people in Draskelmor speak Voushen."},
      {"Pelmora", "The currency of Pelmora is the vannet."}, {"Ostrikan", "Ostrikan is a country in Europe."}};
  {
    std::ofstream f(dir + "/train.jsonl");
    for (size_t i = 0; i < facts.size(); ++i)
      for (size_t j = 0; j < facts.size(); ++j)
        f << nlohmann::json{{"passage", facts[j].second}, {"question", "Tell me about " + facts[i].first + "."}, {"label", i == j ? 1 : 0}}.dump() << "\n";
  }
  std::ofstream(dir + "/task.json") << reranker_task_json("train.jsonl", "train.jsonl", 256);
  Task task = load_task(dir + "/task.json");
  auto train = task.examples("train");
  auto pt = PromptTuning::create(*lm, 8, PromptInit::SampledVocab, {}, 1);
  TrainOptions o;
  o.steps = 40;
  o.batch_size = 16;
  o.lr = default_prompt_lr(*lm);
  o.eval_every = 0;
  o.progress = false;
  TrainResult r = train_module(*lm, *pt, *tok, task, train, {}, dir + "/out", o);
  std::printf("[ learning ] re-ranker prompt, 40 steps: loss %.3f -> %.3f\n", r.first_loss, r.last_loss);
  EXPECT_LT(r.last_loss, 0.5 * r.first_loss);
  std::vector<Passage> ps;
  for (auto& [name, text] : facts) ps.push_back({name, "", text});
  for (size_t i = 0; i < facts.size(); ++i) {
    const auto s = reranker_scores(*lm, *pt, *tok, "Tell me about " + facts[i].first + ".", ps, 256);
    EXPECT_EQ(size_t(std::max_element(s.begin(), s.end()) - s.begin()), i) << facts[i].first;
  }
}

}  // namespace frozenlm::test

namespace frozenlm::test {

// reader.json keeps every pipeline option (the packing ones and the dense projection too); a reader.json from before
// max_passages / order / dense_projection existed reads with the old behaviour; a bad order is an error naming the file.
TEST(Reader, PipelineOptionsRoundTripThroughReaderJson) {
  ReaderOptions o;
  o.index = "idx";
  o.candidates = 7;
  o.pack.max_passages = 3;
  o.pack.best_last = true;
  o.retrieval = "hybrid";
  o.dense_projection = true;
  const ReaderOptions back = ReaderOptions::from_json(o.to_json(), "reader.json");
  EXPECT_EQ(back.to_json(), o.to_json());
  EXPECT_EQ(back.pack.max_passages, 3);
  EXPECT_TRUE(back.pack.best_last);
  EXPECT_TRUE(back.dense_projection);
  nlohmann::json old = o.to_json();
  old["pack"].erase("max_passages");
  old["pack"].erase("order");
  old.erase("dense_projection");
  const ReaderOptions legacy = ReaderOptions::from_json(old, "old/reader.json");
  EXPECT_EQ(legacy.pack.max_passages, 0);
  EXPECT_FALSE(legacy.pack.best_last);
  EXPECT_FALSE(legacy.dense_projection);
  nlohmann::json bad = o.to_json();
  bad["pack"]["order"] = "middle";
  try {
    ReaderOptions::from_json(bad, "bad/reader.json");
    FAIL() << "a bad pack order was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad/reader.json: pack.order must be best_first or best_last (not 'middle')"), std::string::npos) << e.what();
  }
}

}  // namespace frozenlm::test
