#include "modules/finetune.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/hf_export.h"
#include "core/loader.h"
#include "core/torch_pch.h"

namespace frozenlm {

using nlohmann::json;

FineTune::FineTune(FrozenLM& lm, int64_t last_k, std::vector<std::string> tokenizer_files)
    : lm_(lm), last_k_(last_k), tokenizer_files_(std::move(tokenizer_files)), base_checkpoint_id_(lm.checkpoint_id()) {
  if (lm.weight_format() != WeightFormat::F32)
    throw Error(std::string("fine-tuning trains the model's own tensors: load it with --weights f32 (not ") +
                weight_format_name(lm.weight_format()) + ")");
  const int64_t L = lm.config().n_layers;
  if (last_k == 0 || last_k > L)
    throw Error("fine-tuning: --last-k " + std::to_string(last_k) + " is out of range (1.." + std::to_string(L) + ", or all)");
  const int64_t first = last_k < 0 ? 0 : L - last_k;
  for (auto& [name, t] : lm.named_tensors()) {
    bool on = last_k < 0;  // all: every tensor, embeddings and positions included
    if (name.rfind("layers.", 0) == 0) on = std::stoll(name.substr(7, name.find('.', 7) - 7)) >= first;
    else if (name.rfind("final_norm", 0) == 0 || name.rfind("head.", 0) == 0) on = true;
    if (!on) continue;
    t.requires_grad_(true);  // the handle shares the LM's tensor: the LM itself now trains
    names_.push_back(name);
    params_.push_back(t);
  }
}

std::vector<at::Tensor> FineTune::parameters() const { return params_; }

void FineTune::save(const std::string& dir) const {
  save_hf_model(lm_, dir, ExportDtype::F32);
  for (const std::string& f : tokenizer_files_) {
    std::ifstream in(f, std::ios::binary);
    if (!in) throw Error(f + ": cannot read tokenizer file to copy into " + dir);
    std::ostringstream bytes;
    bytes << in.rdbuf();
    std::string name = f.substr(f.rfind('/') + 1);
    if (name.size() > 4 && name.compare(name.size() - 4, 4, ".bin") == 0) name = "tokenizer.bin";
    write_file_atomically(dir + "/" + name, bytes.str());
  }
  json meta = {{"kind", "finetune"}, {"base_checkpoint_id", base_checkpoint_id_}, {"last_k", last_k_},
               {"trainable_parameters", num_parameters()}, {"trainable_tensors", names_}};
  write_file_atomically(dir + "/frozenlm.json", meta.dump(2) + "\n");
}

void FineTune::restore(const std::string& dir, const FrozenLM& lm) {
  auto saved = load_model(dir);
  std::map<std::string, at::Tensor> by_name;
  for (auto& [n, t] : saved->named_tensors()) by_name[n] = t;
  at::NoGradGuard ng;
  for (size_t i = 0; i < params_.size(); ++i) {
    auto it = by_name.find(names_[i]);
    if (it == by_name.end() || !it->second.sizes().equals(params_[i].sizes()))
      throw Error(dir + ": saved model has no tensor matching '" + names_[i] + "' (another architecture?)");
    params_[i].copy_(it->second);
  }
}

}  // namespace frozenlm
