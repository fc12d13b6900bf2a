#include "serve/module_registry.h"

#include <filesystem>
#include <fstream>

#include "core/torch_pch.h"
#include "methods/reader/reader_pipeline.h"
#include "methods/recursive/textual_recursion.h"
#include "serve/openai_api.h"
#include "tasks/task.h"

namespace frozenlm::serve {

namespace fs = std::filesystem;

ModuleRegistry::ModuleRegistry(const FrozenLM& lm, const Tokenizer& tok, std::string root) : lm_(lm), tok_(tok) {
  if (!root.empty()) {
    std::error_code ec;
    fs::path c = fs::canonical(root, ec);
    if (ec || !fs::is_directory(c)) throw Error("--modules-dir " + root + ": not a directory");
    root_ = c.string();
  }
}

std::string ModuleRegistry::resolve_confined(const std::string& path) const {
  if (root_.empty()) throw Error("this server has no --modules-dir: modules cannot be loaded through the API");
  fs::path p(path);
  for (const auto& part : p)
    if (part == "..") throw Error("'path' must not contain '..': give a directory inside the modules root");
  fs::path full = p.is_absolute() ? p : fs::path(root_) / p;
  std::error_code ec;
  fs::path c = fs::canonical(full, ec);  // resolves every symlink
  if (ec) throw NotFound("no module directory '" + path + "' under the modules root");
  const std::string s = c.string();
  if (s != root_ && s.compare(0, root_.size() + 1, root_ + "/") != 0)
    throw Error("'" + path + "' resolves outside the modules root (symlinks may not lead out of it)");
  if (!fs::is_directory(c)) throw NotFound("'" + path + "' is not a directory");
  return s;
}

void ModuleRegistry::check_inside_root(const std::string& path, const std::string& what) const {
  std::error_code ec;
  const fs::path c = fs::canonical(path, ec);  // as the reader opens it (relative to the working directory)
  if (ec) throw Error(what + " '" + path + "' does not exist");
  const std::string s = c.string();
  if (s != root_ && s.compare(0, root_.size() + 1, root_ + "/") != 0)
    throw Error(what + " '" + path + "' lies outside the modules root (a module loaded by the server may only read files inside it)");
}

std::shared_ptr<const ServedModule> ModuleRegistry::load(const std::string& name, const std::string& path, bool confine) {
  if (!valid_module_name(name)) throw Error("module name '" + name + "': use 1-64 characters of A-Z a-z 0-9 . _ - (not starting with '.')");
  const std::string dir = confine ? resolve_confined(path) : path;
  {
    std::lock_guard<std::mutex> lk(m_);
    if (modules_.count(name)) throw Conflict("a module named '" + name + "' is already loaded (DELETE /v1/modules/" + name + " first)");
  }
  auto sm = std::make_shared<ServedModule>();
  sm->name = name;
  sm->path = dir;
  at::NoGradGuard ng;
  if (TextualRecursion::is_saved_in(dir)) {
    // Pass 1 samples candidate answers for the prompt (as `frozenlm generate --module` does), pass 2 reads
    // "Candidates: ... \n" + the prompt in the engine.
    std::shared_ptr<TextualRecursion> tr = TextualRecursion::load(dir, lm_);
    sm->owner = tr;
    sm->last_pass = &tr->pass2();
    sm->kind = "textual_recursion";
    sm->rewrite = [tr, &lm = lm_, &tok = tok_](const std::string& prompt) {
      Task t;
      t.max_tokens = 1 << 30;
      const Proposal p = tr->propose(lm, tok, t, prompt);
      return candidates_input(p.candidates, prompt);
    };
  } else if (fs::exists(fs::path(dir) / "reader.json")) {
    // A trained frozen reader: the prompt is the question; retrieve, re-rank and pack here, read in the engine.
    std::ifstream f(dir + "/reader.json");
    const nlohmann::json j = nlohmann::json::parse(f, nullptr, false);
    if (j.is_discarded()) throw Error(dir + "/reader.json: not valid JSON");
    ReaderOptions o = ReaderOptions::from_json(j, dir + "/reader.json");
    if (confine) {  // what reader.json points at is opened by the server too: it must lie inside the root as well
      check_inside_root(o.index, dir + "/reader.json: \"index\"");
      if (!o.reranker.empty()) check_inside_root(o.reranker, dir + "/reader.json: \"reranker\"");
    }
    sm->module = load_module(dir, lm_);
    auto pipe = std::make_shared<ReaderPipeline>(lm_, tok_, o, sm->module.get());
    sm->owner = pipe;
    sm->kind = "reader";
    sm->rewrite = [pipe](const std::string& question) {
      const std::vector<ReaderCandidate> ranked = pipe->candidates(question);
      return pipe->reader_input(question, pipe->pack(question, ranked));
    };
  } else {
    sm->module = load_module(dir, lm_);  // refuses another base model and fine-tuned models, with the reason
    if (sm->module->modifies_base_model()) throw Error(dir + ": this module changes the frozen weights; a server shares one copy of them");
    sm->kind = sm->module->kind();
  }
  if (sm->module)
    for (auto& p : sm->module->parameters()) p.requires_grad_(false);
  std::lock_guard<std::mutex> lk(m_);
  if (modules_.count(name)) throw Conflict("a module named '" + name + "' is already loaded (DELETE /v1/modules/" + name + " first)");
  modules_[name] = sm;
  return sm;
}

void ModuleRegistry::add(std::shared_ptr<const ServedModule> module) {
  if (!module || !valid_module_name(module->name) || !module->lm_module()) throw Error("ModuleRegistry::add: a module with a valid name and an LM module");
  std::lock_guard<std::mutex> lk(m_);
  if (modules_.count(module->name)) throw Conflict("a module named '" + module->name + "' is already loaded");
  modules_[module->name] = std::move(module);
}

std::vector<std::string> ModuleRegistry::load_root() {
  std::vector<std::string> skipped;
  if (root_.empty()) return skipped;
  std::vector<fs::path> dirs;
  for (const auto& e : fs::directory_iterator(root_))
    if (e.is_directory()) dirs.push_back(e.path());
  std::sort(dirs.begin(), dirs.end());
  for (const fs::path& d : dirs) {
    const std::string name = d.filename().string();
    try {
      load(name, name, /*confine=*/true);
    } catch (const std::exception& e) {
      skipped.push_back(name + ": " + e.what());
    }
  }
  return skipped;
}

bool ModuleRegistry::unload(const std::string& name) {
  std::lock_guard<std::mutex> lk(m_);
  return modules_.erase(name) > 0;
}

std::shared_ptr<const ServedModule> ModuleRegistry::find(const std::string& name) const {
  std::lock_guard<std::mutex> lk(m_);
  auto it = modules_.find(name);
  return it == modules_.end() ? nullptr : it->second;
}

std::vector<std::shared_ptr<const ServedModule>> ModuleRegistry::list() const {
  std::lock_guard<std::mutex> lk(m_);
  std::vector<std::shared_ptr<const ServedModule>> out;
  for (auto& [n, m] : modules_) out.push_back(m);
  return out;
}

}  // namespace frozenlm::serve
