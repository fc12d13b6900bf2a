// Data records, templates and metrics: EM / F1 against a port of SQuAD v1.1's official evaluation (Python),
// readers on the real data in ../shared/data, and errors that name file:line / the template field.
#include "core/error.h"
#include "data/records.h"
#include "eval/metrics.h"
#include "test_util.h"

#include <cmath>

namespace frozenlm::test {

// The fixture comes from a port of the official evaluate-v1.1.py run by Python (tests/reference/reference.py), with
// non-ASCII punctuation, Unicode spaces, articles glued to punctuation and Unicode case among the cases.
TEST(Metrics, ExactMatchAndF1EqualTheSquadScript) {
  auto cases = read_json(fixtures() + "/squad_metric_cases.json");
  ASSERT_GE(cases.size(), 50u);
  for (auto& c : cases) {
    auto golds = c["golds"].get<std::vector<std::string>>();
    const std::string pred = c["prediction"];
    EXPECT_EQ(normalize_answer(pred), c["normalized"].get<std::string>()) << pred;
    EXPECT_EQ(exact_match(pred, golds), c["em"].get<double>()) << pred;
    EXPECT_NEAR(token_f1(pred, golds), c["f1"].get<double>(), 1e-12) << pred;
    EXPECT_NEAR(token_f1(pred, golds, /*v2_empty_rule=*/true), c["f1_v2"].get<double>(), 1e-12) << pred;
  }
  // v1.1: two empty answers overlap in nothing: F1 0 (v2.0: 1); exact match is 1 either way.
  EXPECT_EQ(token_f1("", {""}), 0.0);
  EXPECT_EQ(token_f1("the", {"a"}), 0.0);
  EXPECT_EQ(token_f1("", {""}, true), 1.0);
}

TEST(Metrics, MixtureIntervalLeavesOutTasksWithoutScores) {
  // A task with no per-example scores must not dilute the average: {1, 1} and an empty task average to 1.
  auto [lo, hi] = bootstrap_ci_of_task_average({{1.0, 1.0, 1.0}, {}});
  EXPECT_DOUBLE_EQ(lo, 1.0);
  EXPECT_DOUBLE_EQ(hi, 1.0);
  // A one-element task is a constant: the average of {0, 1, ...} resampled and the constant 0.5.
  auto [lo2, hi2] = bootstrap_ci_of_task_average({{0.0, 1.0, 0.0, 1.0}, {0.5}});
  EXPECT_GE(lo2, 0.25);
  EXPECT_LE(hi2, 0.75);
  EXPECT_LT(lo2, hi2);
}

TEST(Records, ReadsTheRealDataFormats) {
  auto sst = read_records(shared() + "/data/sst2/dev.tsv");
  ASSERT_GT(sst.rows.size(), 100u);
  EXPECT_TRUE(sst.rows[0].contains("sentence") && sst.rows[0].contains("label"));
  auto nq = read_records(shared() + "/data/nq-open/NQ-open.dev.jsonl", {false, 10});
  ASSERT_EQ(nq.rows.size(), 10u);
  EXPECT_EQ(render_template("Q: {question}? A:", nq.rows[0], "nq"), "Q: when was the last time anyone was on the moon? A:");
  EXPECT_EQ(render_template("{answer}", nq.rows[0], "nq"), "14 December 1972 UTC");  // a list renders its first element
  EXPECT_EQ(render_template("{{literal}} {question}", nq.rows[0], "nq").rfind("{literal} when", 0), 0u);
  EXPECT_EQ(template_fields("{a} and {b}", "t"), (std::vector<std::string>{"a", "b"}));
}

TEST(Records, BadInputNamesFileLineAndField) {
  const std::string d = temp_dir("bad-data");
  write_file(d + "/x.jsonl", "{\"a\": 1}\n{\"a\": 2\n{\"a\": 3}\n");
  try {
    read_records(d + "/x.jsonl");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(d + "/x.jsonl:2: not valid JSON"), std::string::npos) << e.what();
  }
  ReadOptions skip;
  skip.skip_bad = true;
  auto r = read_records(d + "/x.jsonl", skip);
  EXPECT_EQ(r.rows.size(), 2u);
  EXPECT_EQ(r.skipped, 1u);
  write_file(d + "/y.tsv", "text\tlabel\nok\t1\nbroken\n");
  try {
    read_records(d + "/y.tsv");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("y.tsv:3: 1 columns, header has 2"), std::string::npos) << e.what();
  }
  try {
    render_template("Review: {review}", nlohmann::json{{"sentence", "x"}, {"label", "1"}}, "tasks/sst2.json");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tasks/sst2.json: template field '{review}' is not in the data (fields: label, sentence)"),
              std::string::npos) << e.what();
  }
  EXPECT_THROW(read_records(d + "/missing.jsonl"), Error);
  EXPECT_THROW(render_template("{open", nlohmann::json::object(), "t"), Error);
}

}  // namespace frozenlm::test

namespace frozenlm::test {

TEST(Metrics, BootstrapIntervalsMatchTheNormalApproximation) {
  // 400 Bernoulli(0.7) outcomes: the 95% interval is ≈ mean ± 1.96·sqrt(p(1−p)/n) = ± 0.0449.
  std::vector<double> s(400);
  for (size_t i = 0; i < s.size(); ++i) s[i] = (i * 7) % 10 < 7 ? 1.0 : 0.0;
  const double mean = 0.7, half = 1.96 * std::sqrt(0.7 * 0.3 / 400);
  auto [lo, hi] = bootstrap_ci(s);
  EXPECT_NEAR(lo, mean - half, 0.01);
  EXPECT_NEAR(hi, mean + half, 0.01);
  EXPECT_EQ(bootstrap_ci(s), bootstrap_ci(s));  // deterministic
  // Average of two independent tasks: the half-width shrinks by √2 relative to one task of the same size.
  auto [lo2, hi2] = bootstrap_ci_of_task_average({s, s});
  EXPECT_NEAR((hi2 - lo2) / 2, half / std::sqrt(2.0), 0.008);
  EXPECT_NEAR((lo2 + hi2) / 2, mean, 0.01);
  EXPECT_EQ(bootstrap_ci({1.0}), std::make_pair(1.0, 1.0));
}

}  // namespace frozenlm::test
