#include "tasks/mixture.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "core/error.h"

namespace frozenlm {

using nlohmann::json;

Mixture load_mixture(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw Error(path + ": cannot open mixture file");
  json j = json::parse(f, nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw Error(path + ": not a valid JSON object");
  Mixture m;
  m.file = path;
  m.name = j.value("name", std::string("mixture"));
  m.cap = j.value("cap", size_t(0));
  m.seed = j.value("seed", uint64_t(0));
  if (!j.contains("tasks") || !j["tasks"].is_array() || j["tasks"].empty()) throw Error(path + ": 'tasks' must be a non-empty list of task files");
  const std::string dir = path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/'));
  for (const json& t : j["tasks"]) {
    if (!t.is_string()) throw Error(path + ": every entry of 'tasks' must be a task file path");
    const std::string p = t.get<std::string>();
    const std::string full = !p.empty() && p[0] == '/' ? p : dir + "/" + p;
    try {
      m.tasks.push_back(load_task(full));
    } catch (const Error& e) {
      throw Error(path + ": task '" + p + "': " + e.what());
    }
  }
  return m;
}

std::vector<MixedExample> mix_examples(const Mixture& m, const std::string& split, const ReadOptions& opt) {
  std::vector<MixedExample> out;
  for (size_t t = 0; t < m.tasks.size(); ++t) {
    if (!m.tasks[t].splits.count(split)) continue;
    std::vector<Example> ex = m.tasks[t].examples(split, opt);
    std::mt19937_64 rng(m.seed * 7919 + t);
    std::shuffle(ex.begin(), ex.end(), rng);
    if (m.cap && ex.size() > m.cap) ex.resize(m.cap);
    for (auto& e : ex) out.push_back({t, std::move(e)});
  }
  if (out.empty()) throw Error(m.file + ": no task of mixture '" + m.name + "' has a '" + split + "' split");
  std::mt19937_64 rng(m.seed);
  std::shuffle(out.begin(), out.end(), rng);
  return out;
}

}  // namespace frozenlm
