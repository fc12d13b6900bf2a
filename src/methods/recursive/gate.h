// The gate (Levine et al. 2022, §4: recursion "only for the inputs that need it"): answer every question in one pass,
// and run the recursive system only where that answer is unsure — its confidence below a threshold. One evaluation
// runs both systems on every question once; each threshold then picks per question, so a whole accuracy–compute curve
// costs one run. Confidence: the one-pass answer's mean token log-prob ("mean_logprob") or its first token's top-1 −
// top-2 log-prob margin ("first_margin"). Threshold −∞: never recurse (= the one-pass system); +∞: always (= the
// recursive system).
#pragma once
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "eval/evaluate.h"
#include "tasks/task.h"

namespace frozenlm {

struct GateOptions {
  std::vector<double> thresholds;          // ±infinity allowed
  std::string measure = "mean_logprob";    // mean_logprob | first_margin
  double recursive_passes = 1;             // passes the recursive system adds when a question escalates (textual
                                           // recursion reusing the one-pass answer as pass 1: 1; neural recursion
                                           // after a separate one-pass module: 2)
  bool per_example = false;
};

// The one-pass answer to a question (with its token scores) and the recursive answer given it.
using OnePassFn = std::function<Answer(const Task&, const std::string& input)>;
using RecursiveFn = std::function<std::string(const Task&, const std::string& input, const Answer& one_pass)>;

double gate_confidence(const Answer& a, const std::string& measure);

// Every task's examples through both systems; for each threshold: exact match (mean over tasks, bootstrap 95%
// interval), the share of questions escalated, mean passes per question (1 + share × recursive_passes), and measured
// seconds per question (one-pass time + share × recursive time, both measured here per question).
// Returns {"measure", "recursive_passes", "n", "one_pass_seconds", "recursive_seconds", "points": [...], ["examples"]}.
nlohmann::json evaluate_gate(const std::vector<std::pair<const Task*, std::vector<Example>>>& tasks, const OnePassFn& one_pass,
                             const RecursiveFn& recursive, const GateOptions& opt);

// The accuracy–compute curve of one or more gate reports (name, report): exact match (%) against mean passes per
// question, one marker per threshold.
void write_gate_svg(const std::string& path, const std::string& title, const std::vector<std::pair<std::string, nlohmann::json>>& reports);

// "-inf,-1,-0.5,inf" -> thresholds (names the option and the bad item on error).
std::vector<double> parse_thresholds(const std::string& list, const std::string& option);

}  // namespace frozenlm
