// A task = data + template + metric, declared in a small JSON file (docs: README "Task files"):
// {
//   "name": "sst2", "type": "classification" | "generation" | "lm",
//   "data": {"train": "path", "dev": "path", "test": "path"},   (relative to the task file; or {"path": p,
//                                                                "rows": [begin, end|null]} for a row range)
//   "columns": ["text", "label"],                                (TSV without header, optional)
//   "input": "Review: {sentence}\nSentiment:",                   (generation / classification)
//   classification: "label_field": "label" + "verbalizers": {"0": " negative", "1": " positive"}
//                   or "choices": [" {choice1}", " {choice2}"] with an integer "label_field" (or its decimal
//                   string; other strings only through "choice_labels": {"yes": 0, "no": 1})
//   generation:     "target": " {answer}", optional "answers_field": "answer" (aliases for EM / F1)
//   lm:             "text": "{text}", optional "pack": true (training packs whole documents, each BOS-first, into
//                   windows of max_tokens: fixed shapes, almost no padding; pretraining on short documents)
//   "max_tokens": 256                                            (input is cut from the left, never the target)
//   "stop": ["\n"]                                               (generation: where a prediction ends)
// }
#pragma once
#include <map>
#include <string>
#include <vector>

#include "data/records.h"
#include "tokenizer/tokenizer.h"

namespace frozenlm {

enum class TaskType { Generation, Classification, LanguageModel };

struct Example {
  std::string input;                 // rendered input ("" for lm)
  std::vector<std::string> targets;  // generation: aliases (first = training target); lm: the text
  std::vector<std::string> choices;  // classification: candidate continuations
  int64_t label = -1;                // classification: index of the right choice
  std::string training_target() const { return choices.empty() ? targets.at(0) : choices.at(label); }
};

// Token ids of one example: [prompt ids (BOS first) | target ids]; loss on the target part only.
struct EncodedExample {
  std::vector<int64_t> ids;
  int64_t target_start = 0;  // ids[target_start:] are the target
  bool truncated = false;
};

struct Task {
  std::string name, file;
  TaskType type = TaskType::Generation;
  std::map<std::string, std::string> splits;  // split name -> data path (resolved)
  std::map<std::string, std::pair<size_t, size_t>> row_ranges;  // split name -> [begin, end) rows of its file
  std::vector<std::string> columns;
  std::string input, target, text, label_field, answers_field;
  std::map<std::string, std::string> verbalizers;  // label value -> choice text
  std::vector<std::string> choice_templates;
  std::map<std::string, int64_t> choice_labels;  // choices mode: string label -> choice index (optional)
  int64_t max_tokens = 256;
  bool pack = false;  // lm: pack documents into max_tokens windows for training (pack_documents)
  std::vector<std::string> stop{"\n"};  // generation: the prediction ends at the first of these (cloze probes: ".")

  // Reads and renders a split. Errors name the task file, data file:line and unknown fields.
  std::vector<Example> examples(const std::string& split, const ReadOptions& opt = {}, size_t* skipped = nullptr) const;
  int64_t choice_label(const nlohmann::json& label, int64_t n_choices, const std::string& at) const;
};

Task load_task(const std::string& path);
// The same from the file's text (`path`: for relative data paths and messages).
Task parse_task(const std::string& text, const std::string& path);
const char* task_type_name(TaskType t);

// Tokenises the prompt alone (exactly as generation encodes it) and the target as its continuation
// (Tokenizer::encode_continuation: no start-of-text prefix space), so the input ids never depend on the target and
// training sees the token boundary generation will see. The prompt is cut from the left (after BOS) when the whole
// exceeds max_tokens (at least 1 + BOS). bos < 0: none added. eos >= 0: appended to the target (a generation task's
// training target ends with EOS, so a trained model learns where its answer ends and generation stops there).
EncodedExample encode_example(const Tokenizer& tok, int64_t bos, const std::string& prompt, const std::string& target,
                              int64_t max_tokens, int64_t eos = -1);

// Packs documents (each a whole EncodedExample, BOS first) into windows of at most `window` tokens: documents in a
// seeded shuffled order, each into the fullest open window it fits (best fit), never split (one longer than the
// window is cut at its end). A window's loss covers every token after its first, so a model also learns to predict
// the BOS that opens the next document (where a document ends). Deterministic for a seed.
std::vector<EncodedExample> pack_documents(const std::vector<EncodedExample>& docs, int64_t window, uint64_t seed);

}  // namespace frozenlm
