#include "methods/reader/reader_data.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>

#include "core/error.h"
#include "core/transformer.h"
#include "data/records.h"
#include "methods/reader/reader_pipeline.h"
#include "methods/reader/reranker.h"

namespace frozenlm {

using nlohmann::json;

std::vector<QaItem> read_qa_items(const Task& task, const std::string& split, size_t limit, const std::string& question_field) {
  if (task.type != TaskType::Generation) throw Error(task.file + ": task '" + task.name + "' is not a generation (QA) task");
  auto it = task.splits.find(split);
  if (it == task.splits.end()) throw Error(task.file + ": task '" + task.name + "' has no split '" + split + "'");
  ReadOptions ro;
  Records r = read_records(it->second, ro);
  size_t begin = 0, end = r.rows.size();
  if (auto rr = task.row_ranges.find(split); rr != task.row_ranges.end()) {
    begin = std::min(rr->second.first, r.rows.size());
    end = std::min(rr->second.second, r.rows.size());
  }
  std::vector<QaItem> out;
  for (size_t i = begin; i < end && (!limit || out.size() < limit); ++i) {
    const json& row = r.rows[i];
    QaItem q;
    q.where = r.where[i];
    if (!row.contains(question_field) || !row[question_field].is_string())
      throw Error(q.where + ": no \"" + question_field + "\" string field (the question; --question-field names another)");
    q.question = row[question_field].get<std::string>();
    std::string target = render_template(task.target, row, task.file);
    const size_t b = target.find_first_not_of(' ');
    q.answers.push_back(b == std::string::npos ? "" : target.substr(b));
    if (!task.answers_field.empty() && row.contains(task.answers_field)) {
      const json& a = row[task.answers_field];
      auto add = [&](const std::string& x) {
        if (std::find(q.answers.begin(), q.answers.end(), x) == q.answers.end()) q.answers.push_back(x);
      };
      if (a.is_string()) add(a.get<std::string>());
      else if (a.is_array())
        for (const json& x : a)
          if (x.is_string()) add(x.get<std::string>());
    }
    if (row.contains("gold_passage_id") && row["gold_passage_id"].is_string()) q.gold_passage_id = row["gold_passage_id"].get<std::string>();
    out.push_back(std::move(q));
  }
  return out;
}

namespace {

struct Progress {
  bool on;
  const char* what;
  size_t total;
  std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
  void tick(size_t done) const {
    if (!on || (done % 100 != 0 && done != total)) return;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "[%s] %zu/%zu questions, %.1f/s\n", what, done, total, s > 0 ? done / s : 0.0);
  }
};

}  // namespace

json write_reranker_rows(const ReaderPipeline& pipe, const std::vector<QaItem>& items, const std::string& path,
                         const RerankerDataOptions& opt, bool progress) {
  std::ofstream f(path);
  if (!f) throw Error(path + ": cannot write");
  int64_t used = 0, retrieved_positive = 0, gold_added = 0, skipped = 0, rows = 0;
  Progress prog{progress, "reranker data", items.size()};
  for (size_t qi = 0; qi < items.size(); ++qi) {
    const QaItem& q = items[qi];
    const auto cands = pipe.candidates(q.question);
    const Passage* positive = nullptr;
    Passage gold;
    std::vector<const Passage*> negatives;
    for (const auto& c : cands) {
      if (passage_has_answer(c.passage, q.answers)) {
        if (!positive) positive = &c.passage;
      } else if (int64_t(negatives.size()) < opt.negatives) {
        negatives.push_back(&c.passage);
      }
    }
    if (positive) ++retrieved_positive;
    else if (opt.gold_if_missing && !q.gold_passage_id.empty() && pipe.bm25().find(q.gold_passage_id, &gold)) {
      positive = &gold;
      ++gold_added;
    }
    if (!positive) { ++skipped; prog.tick(qi + 1); continue; }
    ++used;
    const std::string pos = json{{"passage", positive->text}, {"question", q.question}, {"label", 1}, {"question_index", qi}}.dump();
    if (!opt.balanced || negatives.empty()) f << pos << "\n", ++rows;
    for (const Passage* n : negatives) {
      if (opt.balanced) f << pos << "\n", ++rows;
      f << json{{"passage", n->text}, {"question", q.question}, {"label", 0}, {"question_index", qi}}.dump() << "\n";
      ++rows;
    }
    prog.tick(qi + 1);
  }
  f.close();
  if (!f) throw Error(path + ": write failed");
  return {{"questions", items.size()}, {"used", used}, {"positive_retrieved", retrieved_positive}, {"positive_from_gold", gold_added},
          {"skipped_no_positive", skipped}, {"rows", rows}};
}

ProjectionPairs projection_pairs(const ReaderPipeline& pipe, const std::vector<QaItem>& items, bool progress) {
  ProjectionPairs out;
  int64_t retrieved = 0, gold = 0, skipped = 0;
  Progress prog{progress, "projection pairs", items.size()};
  for (size_t qi = 0; qi < items.size(); ++qi) {
    const QaItem& q = items[qi];
    uint32_t docid = 0;
    for (const auto& c : pipe.candidates(q.question))
      if (passage_has_answer(c.passage, q.answers)) { docid = c.docid; break; }
    if (docid) ++retrieved;
    else if (!q.gold_passage_id.empty() && (docid = pipe.bm25().docid_of(q.gold_passage_id))) ++gold;
    if (docid) {
      out.questions.push_back(q.question);
      out.docids.push_back(docid);
    } else {
      ++skipped;
    }
    prog.tick(qi + 1);
  }
  out.counts = {{"questions", items.size()}, {"positive_retrieved", retrieved}, {"positive_from_gold", gold}, {"skipped_no_positive", skipped}};
  return out;
}

std::string reranker_task_json(const std::string& train_file, const std::string& dev_file, int64_t max_tokens) {
  return json{{"name", "reranker"}, {"type", "classification"}, {"data", {{"train", train_file}, {"dev", dev_file}}},
              {"input", kRerankerInput}, {"choices", {" no", " yes"}}, {"label_field", "label"}, {"max_tokens", max_tokens}}
             .dump(1) + "\n";
}

json write_reader_rows(const ReaderPipeline& pipe, const std::vector<QaItem>& items, const std::string& path, bool progress) {
  std::ofstream f(path);
  if (!f) throw Error(path + ": cannot write");
  int64_t in_context = 0, passages = 0, cut = 0;
  Progress prog{progress, "reader data", items.size()};
  for (size_t qi = 0; qi < items.size(); ++qi) {
    const QaItem& q = items[qi];
    const auto ranked = pipe.candidates(q.question);
    const PackedContext packed = pipe.pack(q.question, ranked);
    json ids = json::array();
    std::vector<Passage> read;
    for (size_t i : packed.included) { ids.push_back(ranked[i].passage.id); read.push_back(ranked[i].passage); }
    const bool has = passage_has_answer({"", "", packed.context}, q.answers);
    in_context += has;
    passages += int64_t(packed.included.size());
    cut += packed.first_cut;
    f << json{{"context", packed.context}, {"question", q.question}, {"answer", q.answers.at(0)}, {"aliases", q.answers},
              {"answer_in_context", has}, {"passages", ids}}.dump() << "\n";
    prog.tick(qi + 1);
  }
  f.close();
  if (!f) throw Error(path + ": write failed");
  const double n = std::max<double>(1, double(items.size()));
  return {{"questions", items.size()}, {"answer_in_context", in_context}, {"answer_in_context_rate", in_context / n},
          {"mean_passages_read", passages / n}, {"first_passage_cut", cut}};
}

std::string reader_task_json(const ReaderPipeline& pipe, const std::string& train_file, const std::string& dev_file) {
  return json{{"name", "reader"}, {"type", "generation"}, {"data", {{"train", train_file}, {"dev", dev_file}}},
              {"input", pipe.options().input}, {"target", " {answer}"}, {"answers_field", "aliases"},
              {"max_tokens", pipe.max_tokens()}}
             .dump(1) + "\n";
}

}  // namespace frozenlm
