// Textual recursion and the gate (methods/recursive/): candidates merge by normalised answer, most frequent first;
// pass 1's samples are seeded per question (the same candidates in training, evaluation and generation, whatever the
// order); the gate picks per question by threshold and counts passes, and at −∞ / +∞ it is exactly the one-pass
// system / the recursive system as `eval` runs them.
#include <cmath>
#include <limits>

#include "core/error.h"
#include "core/loader.h"
#include "eval/evaluate.h"
#include "eval/metrics.h"
#include "methods/recursive/gate.h"
#include "methods/recursive/textual_recursion.h"
#include "modules/prompt_tuning.h"
#include "tasks/task.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace frozenlm::test {

namespace {
const double kInf = std::numeric_limits<double>::infinity();

Task tiny_qa() { return load_task(std::string(FROZENLM_SOURCE) + "/tests/data/retrieval/tiny_qa_task.json"); }
}  // namespace

TEST(TextualRecursion, CandidatesMergeByNormalisedAnswerMostFrequentFirst) {
  const auto m = merge_candidates({" Paris", "Lyon", "", "the paris.", "Lyon", " PARIS", "lyon!", "Nice", "  "});
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(m[0], (std::pair<std::string, int>{"Paris", 3}));  // tie with Lyon (3): Paris was drawn first
  EXPECT_EQ(m[1], (std::pair<std::string, int>{"Lyon", 3}));
  EXPECT_EQ(m[2], (std::pair<std::string, int>{"Nice", 1}));
  EXPECT_EQ(candidates_input({"Paris", "Lyon"}, "Question: q\nAnswer:"), "Candidates: Paris | Lyon\nQuestion: q\nAnswer:");
  EXPECT_EQ(candidates_input({}, "Q"), "Candidates: (none)\nQ");
}

TEST(TextualRecursion, PassOneIsSeededPerQuestionAndKeepsItsGreedyAnswer) {
  auto lm = load_model(tinystories());
  auto tok = load_tokenizer_for_model(tinystories(), "");
  const Task task = tiny_qa();
  const auto ex = task.examples("test");
  ASSERT_GE(ex.size(), 2u);
  TextualRecursionConfig c;
  c.samples = 5;
  c.temperature = 1.5;
  c.max_answer_tokens = 6;
  TextualRecursion tr(c, PromptTuning::create(*lm, 4, PromptInit::SampledVocab, {}, 1), PromptTuning::create(*lm, 4, PromptInit::SampledVocab, {}, 2));
  const Proposal a = tr.propose(*lm, *tok, task, ex[0].input);
  tr.propose(*lm, *tok, task, ex[1].input);  // another question in between changes nothing
  const Proposal b = tr.propose(*lm, *tok, task, ex[0].input);
  EXPECT_EQ(a.candidates, b.candidates);
  EXPECT_EQ(a.counts, b.counts);
  EXPECT_EQ(a.greedy.text, generate_answer(*lm, &tr.pass1(), *tok, task, ex[0].input, 6).text);
  int draws = 0;
  for (int n : a.counts) draws += n;
  EXPECT_LE(draws, 6);  // 5 samples + the greedy answer, less the empty ones
  EXPECT_GE(a.candidates.size(), 2u) << "temperature 1.5 drew a single answer 6 times";
  const bool greedy_is_candidate = normalize_answer(a.greedy.text).empty() ||
      std::any_of(a.candidates.begin(), a.candidates.end(), [&](auto& s) { return normalize_answer(s) == normalize_answer(a.greedy.text); });
  EXPECT_TRUE(greedy_is_candidate);
  ASSERT_FALSE(a.greedy.tokens.empty());
  for (const TokenScore& s : a.greedy.tokens) {
    EXPECT_LE(s.logprob, 0.0f);
    EXPECT_GE(s.margin, 0.0f);  // greedy: the chosen token is the top-1
  }
}

TEST(Gate, EachThresholdPicksPerQuestionAndCountsPasses) {
  // Four questions: confidences 0.9, 0.5, 0.2, 0.1; the one-pass system is right on the first two, the recursive one
  // on the last three.
  Task task;
  task.name = "synthetic";
  std::vector<Example> ex(4);
  const std::vector<std::string> conf = {"0.9", "0.5", "0.2", "0.1"};
  for (int i = 0; i < 4; ++i) ex[i] = Example{conf[i], {"gold"}, {}, -1};
  OnePassFn one = [](const Task&, const std::string& in) {
    Answer a;
    a.text = std::stod(in) >= 0.5 ? "gold" : "wrong";
    a.tokens = {{float(std::log(std::stod(in))), 0.f}};  // mean log-prob = log(confidence)
    return a;
  };
  int recursive_calls = 0;
  RecursiveFn rec = [&](const Task&, const std::string& in, const Answer&) {
    ++recursive_calls;
    return std::stod(in) == 0.9 ? std::string("wrong") : std::string("gold");
  };
  GateOptions g;
  g.thresholds = {-kInf, std::log(0.3), std::log(0.6), kInf};
  g.recursive_passes = 2;
  const auto r = evaluate_gate({{&task, ex}}, one, rec, g);
  ASSERT_EQ(r["points"].size(), 4u);
  const std::vector<double> score = {0.5, 1.0, 1.0, 0.75}, escalated = {0, 0.5, 0.75, 1};
  for (int i = 0; i < 4; ++i) {
    EXPECT_DOUBLE_EQ(r["points"][i]["score"].get<double>(), score[i]) << i;
    EXPECT_DOUBLE_EQ(r["points"][i]["escalated"].get<double>(), escalated[i]) << i;
    EXPECT_DOUBLE_EQ(r["points"][i]["mean_passes"].get<double>(), 1 + 2 * escalated[i]) << i;
  }
  EXPECT_EQ(r["points"][0]["threshold"], "-inf");
  EXPECT_EQ(r["points"][3]["threshold"], "inf");
  EXPECT_EQ(recursive_calls, 4);  // both systems answer every question once; thresholds only choose
  g.measure = "no_such_measure";
  EXPECT_THROW(evaluate_gate({{&task, ex}}, one, rec, g), Error);
  EXPECT_EQ(parse_thresholds("-inf,-0.5,inf", "--t"), (std::vector<double>{-kInf, -0.5, kInf}));
  EXPECT_THROW(parse_thresholds("-0.5,x", "--t"), Error);
  EXPECT_THROW(parse_thresholds("", "--t"), Error);
}

TEST(Gate, AtMinusAndPlusInfinityItIsTheOnePassAndTheRecursiveSystem) {
  auto lm = load_model(tinystories());
  auto tok = load_tokenizer_for_model(tinystories(), "");
  const Task task = tiny_qa();
  auto ex = task.examples("test");
  ex.resize(std::min<size_t>(ex.size(), 6));
  TextualRecursionConfig c;
  c.samples = 3;
  c.max_answer_tokens = 8;
  TextualRecursion tr(c, PromptTuning::create(*lm, 4, PromptInit::SampledVocab, {}, 1), PromptTuning::create(*lm, 4, PromptInit::SampledVocab, {}, 2));
  EvalOptions eo;
  eo.max_new_tokens = 8;
  eo.per_example = true;
  const auto one = evaluate(*lm, &tr.pass1(), *tok, task, ex, eo);
  eo.rewrite_input = [&](const Task& t, const std::string& in) { return tr.pass2_input(*lm, *tok, t, in); };
  const auto two = evaluate(*lm, &tr.pass2(), *tok, task, ex, eo);
  GateOptions g;
  g.thresholds = {-kInf, kInf};
  g.per_example = true;
  OnePassFn f1 = [&](const Task& t, const std::string& in) { return generate_answer(*lm, &tr.pass1(), *tok, t, in, 8); };
  RecursiveFn f2 = [&](const Task& t, const std::string& in, const Answer& first) {
    const Proposal p = tr.propose(*lm, *tok, t, in, &first);
    return tr.answer(*lm, *tok, t, in, 8, &p).text;
  };
  const auto r = evaluate_gate({{&task, ex}}, f1, f2, g);
  for (size_t i = 0; i < ex.size(); ++i) {
    EXPECT_EQ(r["examples"][i]["one_pass"], one["examples"][i]["prediction"]) << i;
    EXPECT_EQ(r["examples"][i]["recursive"], two["examples"][i]["prediction"]) << i;
  }
  EXPECT_DOUBLE_EQ(r["points"][0]["score"].get<double>(), one["score"].get<double>());
  EXPECT_DOUBLE_EQ(r["points"][1]["score"].get<double>(), two["score"].get<double>());
  EXPECT_DOUBLE_EQ(r["points"][0]["mean_passes"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(r["points"][1]["mean_passes"].get<double>(), 2.0);
}

}  // namespace frozenlm::test
