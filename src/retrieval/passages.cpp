#include "retrieval/passages.h"

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace frozenlm {

std::vector<std::string> split_words(const std::string& text) {
  std::vector<std::string> words;
  size_t i = 0;
  const auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; };
  while (i < text.size()) {
    while (i < text.size() && space(text[i])) ++i;
    size_t j = i;
    while (j < text.size() && !space(text[j])) ++j;
    if (j > i) words.push_back(text.substr(i, j - i));
    i = j;
  }
  return words;
}

std::vector<Passage> chunk_document(const Passage& doc, int64_t chunk_words) {
  if (chunk_words <= 0) return {doc};
  const std::vector<std::string> words = split_words(doc.text);
  const int64_t n = int64_t(words.size());
  if (n <= chunk_words) return {doc};
  const int64_t m = std::max<int64_t>(1, std::llround(double(n) / double(chunk_words)));
  if (m == 1) return {doc};
  std::vector<Passage> out;
  int64_t start = 0;
  for (int64_t k = 0; k < m; ++k) {
    const int64_t end = n * (k + 1) / m;  // sizes differ by at most one word
    Passage p{doc.id + "#" + std::to_string(k + 1), doc.title, ""};
    for (int64_t w = start; w < end; ++w) p.text += (w > start ? " " : "") + words[size_t(w)];
    out.push_back(std::move(p));
    start = end;
  }
  return out;
}

int64_t read_corpus(const std::string& path, int64_t chunk_words,
                    const std::function<void(const Passage&, const std::string& where)>& on_passage) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open the corpus (a JSONL file of {\"id\", \"title\", \"text\"} lines)");
  std::string line;
  int64_t docs = 0;
  for (size_t n = 1; std::getline(f, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(n);
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded()) throw Error(where + ": not valid JSON");
    if (!j.is_object()) throw Error(where + ": not a JSON object");
    Passage doc;
    if (!j.contains("id")) throw Error(where + ": no \"id\" field");
    if (j["id"].is_string()) doc.id = j["id"].get<std::string>();
    else if (j["id"].is_number_integer()) doc.id = std::to_string(j["id"].get<int64_t>());
    else throw Error(where + ": \"id\" must be a string or an integer");
    if (doc.id.empty()) throw Error(where + ": \"id\" is empty");
    if (!j.contains("text") || !j["text"].is_string()) throw Error(where + ": no \"text\" string field");
    doc.text = j["text"].get<std::string>();
    if (split_words(doc.text).empty()) throw Error(where + ": \"text\" is empty");
    if (j.contains("title") && !j["title"].is_null()) {
      if (!j["title"].is_string()) throw Error(where + ": \"title\" must be a string");
      doc.title = j["title"].get<std::string>();
    }
    ++docs;
    for (const Passage& p : chunk_document(doc, chunk_words)) on_passage(p, where);
  }
  if (f.bad()) throw Error(path + ": read error");
  if (docs == 0) throw Error(path + ": the corpus is empty (no documents)");
  return docs;
}

}  // namespace frozenlm
