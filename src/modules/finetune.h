// Fine-tuning: the baseline that every frozen method is compared with, in the same harness. Not a module *around*
// the LM: the LM's own weights become trainable in place — all of them, or only the last k blocks plus the final
// norm (and an untied head). Its saved form is a complete Hugging Face model directory (config.json,
// model.safetensors, tokenizer files) plus frozenlm.json {"kind": "finetune", "base_checkpoint_id", "last_k", ...}.
// Load it as a model (--model DIR), not as a module.
#pragma once
#include <string>
#include <vector>

#include "modules/trainable_module.h"

namespace frozenlm {

class FineTune : public TrainableModule {
 public:
  // last_k < 0: every weight (embeddings included). The LM must be stored in f32 (its tensors are what we train).
  // tokenizer_files are copied into every saved directory (tokenizer.json & co, or a llama2.c tokenizer .bin that
  // is saved as tokenizer.bin).
  FineTune(FrozenLM& lm, int64_t last_k, std::vector<std::string> tokenizer_files);

  std::string kind() const override { return "finetune"; }
  ModuleInput apply(const FrozenLM& lm, const ModuleInput& in) const override { return in; }
  int64_t prefix_length() const override { return 0; }
  std::vector<at::Tensor> parameters() const override;
  void save(const std::string& dir) const override;
  void restore(const std::string& dir, const FrozenLM& lm) override;
  bool modifies_base_model() const override { return true; }
  const std::vector<std::string>& trainable_names() const { return names_; }

 private:
  FrozenLM& lm_;
  int64_t last_k_;
  std::vector<std::string> tokenizer_files_, names_;
  std::vector<at::Tensor> params_;
  std::string base_checkpoint_id_;
};

}  // namespace frozenlm
