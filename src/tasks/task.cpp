#include "tasks/task.h"

#include <algorithm>

#include <fstream>
#include <map>
#include <random>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/text_file.h"

namespace frozenlm {

using nlohmann::json;

const char* task_type_name(TaskType t) {
  return t == TaskType::Generation ? "generation" : t == TaskType::Classification ? "classification" : "lm";
}

static Task parse_task_checked(const std::string& text, const std::string& path);

Task load_task(const std::string& path) {
  std::string text;
  if (!read_text_file(path, &text)) throw Error(path + ": cannot open task file");
  return parse_task(text, path);
}

Task parse_task(const std::string& text, const std::string& path) {
  try {
    return parse_task_checked(text, path);
  } catch (const nlohmann::json::exception& e) {  // a type the checks do not foresee: still name the file
    throw Error(path + ": invalid task file: " + e.what());
  }
}

static Task parse_task_checked(const std::string& text, const std::string& path) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw Error(path + ": not a valid JSON object");
  Task t;
  t.file = path;
  auto str = [&](const char* k, bool required) -> std::string {
    if (!j.contains(k)) {
      if (required) throw Error(path + ": missing field '" + std::string(k) + "'");
      return "";
    }
    if (!j[k].is_string()) throw Error(path + ": field '" + std::string(k) + "' must be a string");
    return j[k].get<std::string>();
  };
  t.name = str("name", true);
  const std::string type = str("type", true);
  if (type == "generation") t.type = TaskType::Generation;
  else if (type == "classification") t.type = TaskType::Classification;
  else if (type == "lm") t.type = TaskType::LanguageModel;
  else throw Error(path + ": unknown task type '" + type + "' (generation, classification, lm)");
  if (!j.contains("data") || !j["data"].is_object() || j["data"].empty())
    throw Error(path + ": 'data' must map split names to data files, e.g. {\"train\": \"train.jsonl\"}");
  // A split is a path, or {"path": P, "rows": [begin, end]} (a row range of the file, end exclusive, null: to the end)
  // so that one file can give disjoint train and test splits.
  const std::string dir = path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/'));
  for (auto it = j["data"].begin(); it != j["data"].end(); ++it) {
    const json& v = it.value();
    std::string p;
    if (v.is_string()) {
      p = v.get<std::string>();
    } else if (v.is_object() && v.contains("path") && v["path"].is_string() && v.contains("rows") && v["rows"].is_array() &&
               v["rows"].size() == 2 && v["rows"][0].is_number_unsigned() && (v["rows"][1].is_number_unsigned() || v["rows"][1].is_null())) {
      p = v["path"].get<std::string>();
      const size_t b = v["rows"][0], e = v["rows"][1].is_null() ? SIZE_MAX : v["rows"][1].get<size_t>();
      if (e <= b) throw Error(path + ": data." + it.key() + ".rows: empty range [" + std::to_string(b) + ", " + std::to_string(e) + ")");
      t.row_ranges[it.key()] = {b, e};
    } else {
      throw Error(path + ": data." + it.key() + " must be a path or {\"path\": ..., \"rows\": [begin, end]}");
    }
    t.splits[it.key()] = !p.empty() && p[0] == '/' ? p : dir + "/" + p;
  }
  auto strings = [&](const char* k) {  // a list of strings, or an error naming the field
    const json& v = j[k];
    if (!v.is_array() || !std::all_of(v.begin(), v.end(), [](const json& x) { return x.is_string(); }))
      throw Error(path + ": field '" + std::string(k) + "' must be a list of strings, got " + v.dump().substr(0, 80));
    return v.get<std::vector<std::string>>();
  };
  if (j.contains("columns")) t.columns = strings("columns");
  if (j.contains("max_tokens")) {
    if (!j["max_tokens"].is_number_integer()) throw Error(path + ": field 'max_tokens' must be an integer, got " + j["max_tokens"].dump().substr(0, 80));
    t.max_tokens = j["max_tokens"].get<int64_t>();
  }
  if (j.contains("stop")) {
    if (!j["stop"].is_array() || j["stop"].empty() || !std::all_of(j["stop"].begin(), j["stop"].end(), [](const json& x) { return x.is_string() && !x.get<std::string>().empty(); }))
      throw Error(path + ": 'stop' must be a non-empty list of non-empty strings");
    t.stop = j["stop"].get<std::vector<std::string>>();
  }
  if (t.max_tokens < 2) throw Error(path + ": max_tokens must be at least 2");
  if (j.contains("pack")) {
    if (!j["pack"].is_boolean()) throw Error(path + ": field 'pack' must be true or false, got " + j["pack"].dump().substr(0, 80));
    t.pack = j["pack"].get<bool>();
    if (t.pack && t.type != TaskType::LanguageModel) throw Error(path + ": 'pack' is for lm tasks only (documents packed into max_tokens windows)");
  }
  if (t.type == TaskType::LanguageModel) {
    t.text = str("text", true);
    template_fields(t.text, path);
  } else {
    t.input = str("input", true);
    template_fields(t.input, path);
  }
  if (t.type == TaskType::Generation) {
    t.target = str("target", true);
    t.answers_field = str("answers_field", false);
  }
  if (t.type == TaskType::Classification) {
    t.label_field = str("label_field", true);
    if (j.contains("verbalizers")) {
      if (!j["verbalizers"].is_object() || j["verbalizers"].size() < 2) throw Error(path + ": 'verbalizers' must map ≥ 2 labels to texts");
      for (auto it = j["verbalizers"].begin(); it != j["verbalizers"].end(); ++it) {
        if (!it.value().is_string()) throw Error(path + ": verbalizers." + it.key() + " must be a string, got " + it.value().dump().substr(0, 80));
        t.verbalizers[it.key()] = it.value().get<std::string>();
      }
    } else if (j.contains("choices")) {
      t.choice_templates = strings("choices");
      if (t.choice_templates.size() < 2) throw Error(path + ": 'choices' needs at least 2 templates");
      for (auto& ct : t.choice_templates) template_fields(ct, path);
      if (j.contains("choice_labels")) {
        if (!j["choice_labels"].is_object()) throw Error(path + ": 'choice_labels' must map label strings to choice indices");
        for (auto it = j["choice_labels"].begin(); it != j["choice_labels"].end(); ++it) {
          if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 || it.value().get<int64_t>() >= int64_t(t.choice_templates.size()))
            throw Error(path + ": choice_labels." + it.key() + " must be a choice index 0.." + std::to_string(t.choice_templates.size() - 1));
          t.choice_labels[it.key()] = it.value().get<int64_t>();
        }
      }
    } else {
      throw Error(path + ": a classification task needs 'verbalizers' or 'choices'");
    }
  }
  return t;
}

static std::string label_key(const json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

// The choice index a record's label names: an integer, its exact decimal string form (TSV cells are strings), or a
// string the task's "choice_labels" maps to an index. Anything else is an error naming the record's file:line.
int64_t Task::choice_label(const json& l, int64_t n_choices, const std::string& at) const {
  int64_t idx = -1;
  if (l.is_number_integer()) {
    idx = l.get<int64_t>();
  } else if (l.is_string()) {
    const std::string s = l.get<std::string>();
    if (auto m = choice_labels.find(s); m != choice_labels.end()) idx = m->second;
    else if (!s.empty() && s.size() <= 9 && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; })) idx = std::stoll(s);
    else
      throw Error(at + ": label " + l.dump() + " is not a choice index" +
                  (choice_labels.empty() ? std::string(" (string labels need a \"choice_labels\" map in ") + file + ")"
                                         : " and not in the \"choice_labels\" of " + file));
  }
  if (idx < 0 || idx >= n_choices)
    throw Error(at + ": label " + l.dump() + " is not a choice index (0.." + std::to_string(n_choices - 1) + ")");
  return idx;
}

std::vector<Example> Task::examples(const std::string& split, const ReadOptions& opt_in, size_t* skipped) const {
  auto it = splits.find(split);
  if (it == splits.end()) throw Error(file + ": task '" + name + "' has no '" + split + "' split");
  ReadOptions opt = opt_in;
  if (opt.columns.empty()) opt.columns = columns;
  auto range = row_ranges.find(split);
  if (range != row_ranges.end() && opt.limit) opt.limit = std::min(range->second.second, range->second.first + opt.limit);
  else if (range != row_ranges.end() && range->second.second != SIZE_MAX) opt.limit = range->second.second;
  Records r = read_records(it->second, opt);
  if (range != row_ranges.end()) {
    const size_t drop = std::min(r.rows.size(), range->second.first);
    r.rows.erase(r.rows.begin(), r.rows.begin() + drop);
    r.where.erase(r.where.begin(), r.where.begin() + drop);
  }
  if (skipped) *skipped = r.skipped;
  if (r.rows.empty()) throw Error(it->second + ": no examples in the '" + split + "' split of task '" + name + "'");
  std::vector<Example> out;
  out.reserve(r.rows.size());
  // Verbalizers in a fixed order: the choice index of each label.
  std::vector<std::string> labels;
  for (auto& [k, v] : verbalizers) labels.push_back(k);
  const std::string where = file + " (" + it->second + ")";
  for (size_t i = 0; i < r.rows.size(); ++i) {
    const json& row = r.rows[i];
    Example e;
    if (type == TaskType::LanguageModel) {
      e.targets = {render_template(text, row, where)};
    } else {
      e.input = render_template(input, row, where);
    }
    if (type == TaskType::Generation) {
      e.targets = {render_template(target, row, where)};
      if (!answers_field.empty()) {
        if (!row.contains(answers_field)) throw Error(r.where[i] + ": no field '" + answers_field + "' (answers_field of " + file + ")");
        const json& a = row[answers_field];
        if (a.is_array()) { for (auto& x : a) e.targets.push_back(x.is_string() ? x.get<std::string>() : x.dump()); }
        else e.targets.push_back(a.is_string() ? a.get<std::string>() : a.dump());
      }
    }
    if (type == TaskType::Classification) {
      if (!row.contains(label_field)) throw Error(r.where[i] + ": no label field '" + label_field + "' (label_field of " + file + ")");
      if (!verbalizers.empty()) {
        const std::string key = label_key(row[label_field]);
        for (size_t c = 0; c < labels.size(); ++c) {
          e.choices.push_back(verbalizers.at(labels[c]));
          if (labels[c] == key) e.label = int64_t(c);
        }
        if (e.label < 0) throw Error(r.where[i] + ": label '" + key + "' has no verbalizer in " + file);
      } else {
        for (auto& ct : choice_templates) e.choices.push_back(render_template(ct, row, where));
        e.label = choice_label(row[label_field], int64_t(e.choices.size()), r.where[i]);
      }
    }
    out.push_back(std::move(e));
  }
  return out;
}

EncodedExample encode_example(const Tokenizer& tok, int64_t bos, const std::string& prompt, const std::string& target,
                              int64_t max_tokens, int64_t eos) {
  const int64_t head = bos >= 0 ? 1 : 0;
  if (max_tokens <= head)
    throw Error("encode_example: max_tokens " + std::to_string(max_tokens) + " leaves no room for any token after BOS");
  // The prompt is encoded alone, exactly as generation will encode it; the target continues it (no start-of-text
  // prefix space), so the ids the module reads never depend on the target.
  std::vector<int64_t> p = tok.encode(prompt, false);
  std::vector<int64_t> t = prompt.empty() ? tok.encode(target, false) : tok.encode_continuation(target);
  EncodedExample e;
  if (eos >= 0) t.push_back(eos);
  if (int64_t(t.size()) + head > max_tokens) {  // never cut the target, unless it alone is too long (then its end)
    t.resize(max_tokens - head);
    e.truncated = true;
  }
  const int64_t room = max_tokens - head - int64_t(t.size());
  if (int64_t(p.size()) > room) {
    p.erase(p.begin(), p.end() - room);  // keep the end of the input
    e.truncated = true;
  }
  if (bos >= 0) e.ids.push_back(bos);
  e.ids.insert(e.ids.end(), p.begin(), p.end());
  e.target_start = int64_t(e.ids.size());
  e.ids.insert(e.ids.end(), t.begin(), t.end());
  return e;
}

std::vector<EncodedExample> pack_documents(const std::vector<EncodedExample>& docs, int64_t window, uint64_t seed) {
  if (window < 2) throw Error("pack_documents: window must be at least 2 tokens");
  std::vector<size_t> order(docs.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::mt19937_64 rng(seed * 7919 + 17);
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<EncodedExample> out;
  std::multimap<int64_t, size_t> open;  // free tokens -> window index
  for (size_t i : order) {
    const auto& d = docs[i].ids;
    if (d.empty()) continue;
    const int64_t n = std::min<int64_t>(d.size(), window);
    auto it = open.lower_bound(n);  // the fullest window with room
    size_t w;
    if (it == open.end()) {
      w = out.size();
      out.push_back(EncodedExample{{}, 1, false});
    } else {
      w = it->second;
      open.erase(it);
    }
    auto& ids = out[w].ids;
    ids.insert(ids.end(), d.begin(), d.begin() + n);
    out[w].truncated = out[w].truncated || docs[i].truncated || n < int64_t(d.size());
    const int64_t left = window - int64_t(ids.size());
    if (left >= 2) open.emplace(left, w);  // a window with one free token cannot take a document
  }
  return out;
}

}  // namespace frozenlm
