// The modules a server holds, by name: prompt tuning, ID-PT, neural recursion (one pass in the engine each), a
// textual recursion (pass 1 proposes candidates, pass 2 answers in the engine) and a trained frozen reader (a prompt
// module with its reader.json: retrieval, re-ranking and packing first, the reading pass in the engine). Paths are
// confined to the modules root (no "..", no symlink that leads out of it), and so are the index and re-ranker a
// reader.json names; a module made for another base model is refused with the reason. Requests hold a shared pointer to the module
// they use, so unloading one lets its in-flight requests finish.
#pragma once
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "serve/engine.h"

namespace frozenlm::serve {

class ModuleRegistry {
 public:
  // `root` may be empty: then only explicit --module NAME=DIR loads (at start-up) and no hot loading. The tokenizer is
  // for multi-pass modules (a textual recursion's pass 1, a frozen reader's retrieval and re-ranking).
  ModuleRegistry(const FrozenLM& lm, const Tokenizer& tok, std::string root);

  // Loads the module in `path` as `name`. confine: `path` is relative to the root (or absolute inside it) and must
  // resolve inside it (hot loading through the API). Throws Error with the reason (the API answers 400/404/409).
  std::shared_ptr<const ServedModule> load(const std::string& name, const std::string& path, bool confine);
  // Registers a module built in memory (a program embedding the server; tests). Throws Conflict when the name is taken.
  void add(std::shared_ptr<const ServedModule> module);
  // Loads every subdirectory of the root that holds a module, named after the directory; returns what it skipped.
  std::vector<std::string> load_root();
  bool unload(const std::string& name);
  std::shared_ptr<const ServedModule> find(const std::string& name) const;
  std::vector<std::shared_ptr<const ServedModule>> list() const;
  const std::string& root() const { return root_; }

  struct NotFound : Error { using Error::Error; };
  struct Conflict : Error { using Error::Error; };

 private:
  std::string resolve_confined(const std::string& path) const;
  // Throws unless `path` (opened relative to the working directory) resolves inside the root; `what` names the field.
  void check_inside_root(const std::string& path, const std::string& what) const;
  const FrozenLM& lm_;
  const Tokenizer& tok_;
  std::string root_;  // canonical, or empty
  mutable std::mutex m_;
  std::map<std::string, std::shared_ptr<const ServedModule>> modules_;
};

}  // namespace frozenlm::serve
