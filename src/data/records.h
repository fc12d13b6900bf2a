// Data records for tasks: JSONL (one object a line), JSON (an array of objects) or TSV (a header row of field
// names), each record a JSON object; and templates that substitute {field} into inputs and targets.
#pragma once
#include <istream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace frozenlm {

struct ReadOptions {
  bool skip_bad = false;   // skip (and count) malformed lines instead of failing
  size_t limit = 0;        // 0: all records
  std::vector<std::string> columns;  // TSV without a header row: the field names of its columns
};

struct Records {
  std::vector<nlohmann::json> rows;
  std::vector<std::string> where;  // per row: "file:line" (JSONL, TSV) or "file: element i" (JSON), for error messages
  size_t skipped = 0;      // malformed lines skipped under skip_bad
};

// Format from the extension (.jsonl, .json, .tsv). Errors name file:line and what is wrong.
Records read_records(const std::string& path, const ReadOptions& opt = {});
// The same from a stream (`path`: its format by extension, and messages).
Records read_records(std::istream& in, const std::string& path, const ReadOptions& opt = {});

// Substitutes {name} with the record's field (strings as is, numbers/bools as JSON, lists: their first element);
// "{{" and "}}" are literal braces. An unknown field is an error naming it (and `where`, e.g. the task file).
std::string render_template(const std::string& tmpl, const nlohmann::json& record, const std::string& where);
// The field names a template uses.
std::vector<std::string> template_fields(const std::string& tmpl, const std::string& where);

}  // namespace frozenlm
