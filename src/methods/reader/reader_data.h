// Training and evaluation data of the frozen reader, made from a QA task and a passage index:
//  - re-ranker data: per question, the retrieved candidates; the best-ranked one that contains an answer is the
//    positive (none retrieved: the row's gold passage, when it names one), the best-ranked ones without an answer are
//    hard negatives; written as a classification task (kRerankerInput, choices " no" / " yes");
//  - reader data: per question, the packed context the pipeline builds; written as a generation task with the
//    pipeline's input template, so any module (prompt tuning, ID-PT) trains on exactly what it will read.
// Each writer also reports what it saw (questions, how many had an answer among the candidates / in the context).
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tasks/task.h"

namespace frozenlm {

class ReaderPipeline;

struct QaItem {
  std::string question;
  std::vector<std::string> answers;  // aliases (the task's answers_field, else its rendered target)
  std::string gold_passage_id;       // the row's "gold_passage_id", when it has one
  std::string where;                 // file:line
};

// The items of a task split (generation tasks only): the question from `question_field`, the answers from the task's
// answers_field (or its rendered target). Errors name the file:line and the missing field.
std::vector<QaItem> read_qa_items(const Task& task, const std::string& split, size_t limit = 0,
                                  const std::string& question_field = "question");

struct RerankerDataOptions {
  int64_t negatives = 3;        // hard negatives per question
  bool gold_if_missing = true;  // no retrieved passage has an answer: use the row's gold passage as the positive
  bool balanced = true;         // the positive written once per negative (classes 1 : 1, so the "no" prior is no answer)
};

// Writes the re-ranker's rows {passage, question, label (1 relevant, 0 not), question_index} for `items` to `path`
// (JSONL): the positive, then each negative (balanced: before each negative, its own copy of the positive); returns counts. The pipeline's retrieval gives the candidates (its re-ranking is not used).
nlohmann::json write_reranker_rows(const ReaderPipeline& pipe, const std::vector<QaItem>& items, const std::string& path,
                                   const RerankerDataOptions& opt, bool progress);
// The classification task over such rows (train / dev files relative to the task file's directory).
std::string reranker_task_json(const std::string& train_file, const std::string& dev_file, int64_t max_tokens);

// Question–positive-passage pairs for the dense projection (retrieval/dense_projection.h): per question, the
// best-ranked retrieved candidate that contains an answer (none: the row's gold passage, when it names one); questions
// with neither are skipped. docids index the pipeline's database.
struct ProjectionPairs {
  std::vector<std::string> questions;
  std::vector<uint32_t> docids;
  nlohmann::json counts;  // questions, positive_retrieved, positive_from_gold, skipped_no_positive
};
ProjectionPairs projection_pairs(const ReaderPipeline& pipe, const std::vector<QaItem>& items, bool progress);

// Writes the reader's rows {context, question, answer, aliases, answer_in_context, passages} for `items` (the
// pipeline's candidates, re-ranked, packed); returns counts.
nlohmann::json write_reader_rows(const ReaderPipeline& pipe, const std::vector<QaItem>& items, const std::string& path, bool progress);
std::string reader_task_json(const ReaderPipeline& pipe, const std::string& train_file, const std::string& dev_file);

}  // namespace frozenlm
