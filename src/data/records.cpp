#include "data/records.h"

#include <fstream>
#include <sstream>

#include "core/error.h"

namespace frozenlm {

using nlohmann::json;

static bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

static std::vector<std::string> split_tabs(const std::string& line) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : line) {
    if (c == '\t') { out.push_back(cur); cur.clear(); }
    else if (c != '\r') cur += c;
  }
  out.push_back(cur);
  return out;
}

Records read_records(const std::string& path, const ReadOptions& opt) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open data file");
  return read_records(f, path, opt);
}

Records read_records(std::istream& f, const std::string& path, const ReadOptions& opt) {
  Records r;
  auto full = [&] { return opt.limit && r.rows.size() >= opt.limit; };
  if (ends_with(path, ".jsonl")) {
    std::string line;
    for (size_t n = 1; std::getline(f, line) && !full(); ++n) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      json j = json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.is_object()) {
        if (opt.skip_bad) { ++r.skipped; continue; }
        throw Error(path + ":" + std::to_string(n) + ": " + (j.is_discarded() ? "not valid JSON" : "not a JSON object") +
                    " (use --skip-bad to skip such lines)");
      }
      r.rows.push_back(std::move(j));
      r.where.push_back(path + ":" + std::to_string(n));
    }
  } else if (ends_with(path, ".json")) {
    json j = json::parse(f, nullptr, false);
    if (j.is_discarded()) throw Error(path + ": not valid JSON");
    if (!j.is_array()) throw Error(path + ": expected a JSON array of objects");
    for (size_t i = 0; i < j.size() && !full(); ++i) {
      if (!j[i].is_object()) {
        if (opt.skip_bad) { ++r.skipped; continue; }
        throw Error(path + ": element " + std::to_string(i) + " is not an object");
      }
      r.rows.push_back(j[i]);
      r.where.push_back(path + ": element " + std::to_string(i));
    }
  } else if (ends_with(path, ".tsv")) {
    std::string line;
    std::vector<std::string> header = opt.columns;
    size_t n = 1;
    if (header.empty()) {
      if (!std::getline(f, line)) throw Error(path + ": empty TSV (expected a header row of field names)");
      header = split_tabs(line);
      n = 2;
    }
    for (; std::getline(f, line) && !full(); ++n) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      std::vector<std::string> cells = split_tabs(line);
      if (cells.size() != header.size()) {
        if (opt.skip_bad) { ++r.skipped; continue; }
        throw Error(path + ":" + std::to_string(n) + ": " + std::to_string(cells.size()) + " columns, header has " +
                    std::to_string(header.size()) + " (use --skip-bad to skip such lines)");
      }
      json row = json::object();
      for (size_t i = 0; i < header.size(); ++i) row[header[i]] = cells[i];
      r.rows.push_back(std::move(row));
      r.where.push_back(path + ":" + std::to_string(n));
    }
  } else {
    throw Error(path + ": unknown data format (expected .jsonl, .json or .tsv)");
  }
  return r;
}

template <typename F>
static void scan_template(const std::string& t, const std::string& where, F&& on_piece) {
  for (size_t i = 0; i < t.size();) {
    if (t.compare(i, 2, "{{") == 0) { on_piece(false, "{"); i += 2; continue; }
    if (t.compare(i, 2, "}}") == 0) { on_piece(false, "}"); i += 2; continue; }
    if (t[i] == '{') {
      const size_t close = t.find('}', i);
      if (close == std::string::npos) throw Error(where + ": template has an unclosed '{' at offset " + std::to_string(i) + ": " + t);
      on_piece(true, t.substr(i + 1, close - i - 1));
      i = close + 1;
      continue;
    }
    if (t[i] == '}') throw Error(where + ": template has an unmatched '}' at offset " + std::to_string(i) + ": " + t);
    on_piece(false, std::string(1, t[i]));
    ++i;
  }
}

std::vector<std::string> template_fields(const std::string& tmpl, const std::string& where) {
  std::vector<std::string> out;
  scan_template(tmpl, where, [&](bool field, const std::string& s) { if (field) out.push_back(s); });
  return out;
}

std::string render_template(const std::string& tmpl, const json& record, const std::string& where) {
  std::string out;
  scan_template(tmpl, where, [&](bool field, const std::string& s) {
    if (!field) { out += s; return; }
    if (!record.is_object() || !record.contains(s)) {
      std::string have;
      if (record.is_object())
        for (auto it = record.begin(); it != record.end(); ++it) have += (have.empty() ? "" : ", ") + it.key();
      throw Error(where + ": template field '{" + s + "}' is not in the data (fields: " + have + ")");
    }
    const json& v = record[s].is_array() && !record[s].empty() ? record[s][0] : record[s];
    out += v.is_string() ? v.get<std::string>() : v.dump();
  });
  return out;
}

}  // namespace frozenlm
