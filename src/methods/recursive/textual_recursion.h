// Textual recursion (Levine et al. 2022, §4.1): the same frozen LM applied twice, through text.
//
//   pass 1   a prompt-tuned QA module (any module) samples `samples` answers at `temperature` (and, by default, also
//            its greedy answer: the one-pass answer a gate keeps when pass 1 is sure);
//            answers that normalise alike (SQuAD's normalize_answer) merge; empty ones are dropped; candidates are
//            ordered by how many draws produced them (ties: the first drawn first)
//   pass 2   a second prompt (prompt tuning) reads   "Candidates: a | b | c\n" + the question   and generates the
//            final answer (the question last, so its answer cue stays where the task put it)
// Pass 2 is trained on pass-1 samples of the training questions (train_textual_recursion): no gold answer is
// injected that pass 1 did not produce — when pass 1 never drew the right answer, pass 2 must still learn to answer
// from the question (its prompt sees the same question a one-pass model does).
// Sampling is seeded per question (config seed ^ FNV-1a of the input), so the candidates of a question are the same
// in training, evaluation and generation, whatever the batch or order.
//
// Saved as a directory: textual_recursion.json (configuration, base identity), pass1/ and pass2/ (module dirs).
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "eval/evaluate.h"
#include "modules/trainable_module.h"
#include "tasks/task.h"
#include "train/trainer.h"

namespace frozenlm {

struct TextualRecursionConfig {
  int64_t samples = 4;           // n answers drawn by pass 1
  double temperature = 1.0;
  int64_t top_k = 0;             // 0: off
  bool include_greedy = true;    // pass 1's greedy answer is a candidate too (and the gate's one-pass answer)
  int64_t max_answer_tokens = 12;
  uint64_t seed = 0;
};
nlohmann::json to_json(const TextualRecursionConfig& c);
TextualRecursionConfig textual_recursion_config_from_json(const nlohmann::json& j, const std::string& where);

// Answers merged by their normalised form: (the first-drawn spelling, how many draws), most frequent first, ties in
// the order first drawn; empty answers dropped.
std::vector<std::pair<std::string, int>> merge_candidates(const std::vector<std::string>& answers);
// What pass 2 reads: "Candidates: a | b | c\n" + input ("Candidates: (none)\n" + input when there are none).
std::string candidates_input(const std::vector<std::string>& candidates, const std::string& input);

// What pass 1 proposed for one question.
struct Proposal {
  Answer greedy;                        // pass 1's greedy answer (include_greedy; else empty)
  std::vector<std::string> candidates;  // merged, most frequent first
  std::vector<int> counts;              // draws behind each candidate
};

class TextualRecursion {
 public:
  static bool is_saved_in(const std::string& dir);  // dir holds textual_recursion.json
  // Loads DIR (pass1/, pass2/), refusing another base model.
  static std::unique_ptr<TextualRecursion> load(const std::string& dir, const FrozenLM& lm);
  TextualRecursion(TextualRecursionConfig cfg, std::unique_ptr<TrainableModule> pass1, std::unique_ptr<TrainableModule> pass2);

  // Pass 1 on one question. `greedy` (optional): pass 1's greedy answer, when the caller already has it.
  Proposal propose(const FrozenLM& lm, const Tokenizer& tok, const Task& task, const std::string& input,
                   const Answer* greedy = nullptr) const;
  // Both passes: pass 2's answer to the question (with `proposal` when the caller has already run pass 1).
  Answer answer(const FrozenLM& lm, const Tokenizer& tok, const Task& task, const std::string& input, int64_t max_new_tokens,
                const Proposal* proposal = nullptr) const;
  // What pass 2 reads for this question (pass 1 runs).
  std::string pass2_input(const FrozenLM& lm, const Tokenizer& tok, const Task& task, const std::string& input) const;

  const TextualRecursionConfig& config() const { return cfg_; }
  const TrainableModule& pass1() const { return *pass1_; }
  const TrainableModule& pass2() const { return *pass2_; }
  TrainableModule& pass2() { return *pass2_; }

 private:
  TextualRecursionConfig cfg_;
  std::unique_ptr<TrainableModule> pass1_, pass2_;
};

// Training (`frozenlm train recursive-text`; data parallel when to.data_parallel is set: the ranks split pass 1's
// questions and train the prompts together, rank 0 writes OUT): copies `pass1_dir` into OUT/pass1; runs pass 1 over every training
// example and the first `to.eval_limit` dev examples of each task (progress on stderr), saved as OUT/pass2_data.json
// (reused on a rerun with the same configuration and pass 1: a resumed run does not sample again); trains a
// `pass2_tokens`-vector prompt (initialised from vocabulary embeddings, as `train prompt-tuning`) on the rewritten
// examples into OUT/pass2 (checkpoints, --resume as any training); writes OUT/textual_recursion.json and OUT/run.json.
// Every task must be a generation task.
// folds ≥ 2 (cross-fitting): a pass 1 trained on every training question is right on nearly all of them (it has
// seen their answers), so pass 2 would learn to copy its first candidate; instead the training questions are split
// into `folds` parts (question i in part i mod folds), and a fresh prompt of pass 1's length is trained (the same
// options as this run) on all parts but one (OUT/folds/fold-k, resumable) and samples the candidates of the part it
// did not see. Dev questions and every later use (eval, generate) still go through pass 1 itself.
TrainResult train_textual_recursion(const FrozenLM& lm, const Tokenizer& tok, const std::string& pass1_dir, const TrainingSet& set,
                                    const std::string& out_dir, const TextualRecursionConfig& cfg, int64_t pass2_tokens,
                                    const TrainOptions& to, const std::string& base_model, int64_t folds = 0);

}  // namespace frozenlm
