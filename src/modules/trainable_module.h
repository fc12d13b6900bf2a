// The one small interface every trainable module around the frozen LM implements: it turns the token embeddings of
// a batch into what the frozen LM reads (prepending a soft prompt, a generated prompt, a connector's output, ...).
// Only the module's own tensors are trainable; gradients reach them through the frozen LM's embeddings input.
#pragma once
#include <ATen/Tensor.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/transformer.h"

namespace frozenlm {

struct ModuleInput {
  at::Tensor embeds;      // [B, T, d]
  at::Tensor mask;        // [B, T] bool: 1 = real token
  at::Tensor ids;         // [B, T] int64: the tokens behind `embeds` (input-dependent modules read them)
  at::Tensor input_mask;  // [B, T] bool: the example's input, i.e. what a module may read (never the target)
};

// The module input for token ids: frozen embeddings, mask (default: all real), input_mask (default: = mask).
ModuleInput module_input(const FrozenLM& lm, const at::Tensor& ids, const at::Tensor& mask = {}, const at::Tensor& input_mask = {});

class TrainableModule {
 public:
  virtual ~TrainableModule() = default;
  virtual std::string kind() const = 0;  // e.g. "prompt_tuning"
  // The frozen LM's input for this batch (may be longer than `in`: see prefix_length()).
  virtual ModuleInput apply(const FrozenLM& lm, const ModuleInput& in) const = 0;
  // Positions the module adds in front of the input (logits for them are not the input's).
  virtual int64_t prefix_length() const = 0;
  // The trainable tensors (requires_grad = true).
  virtual std::vector<at::Tensor> parameters() const = 0;
  int64_t num_parameters() const {
    int64_t n = 0;
    for (auto& p : parameters()) n += p.numel();
    return n;
  }
  // Writes the module into `dir` (created if needed); every file is written atomically (temporary + rename).
  virtual void save(const std::string& dir) const = 0;
  // Sets the trainable tensors to those saved in `dir` (resuming). Default: load_module(dir) and copy.
  virtual void restore(const std::string& dir, const FrozenLM& lm);
  // Learning-rate multiplier of parameters()[i] (modules mixing prompts, which like large rates, with weights).
  virtual double lr_scale(size_t i) const { return 1.0; }
  // True only for fine-tuning, which trains the LM's own weights (the trainer then expects their hash to change).
  virtual bool modifies_base_model() const { return false; }
};

// Loads a saved module directory, refusing one made for another base model (dimension or checkpoint identity).
std::unique_ptr<TrainableModule> load_module(const std::string& dir, const FrozenLM& lm);

// For modules saved as a configuration + named tensors (ID-PT, neural recursion):
// refuses a module whose recorded "token_dim" or "base_checkpoint_id" (in `meta`) is not `lm`'s, naming `dir`;
void check_module_base(const nlohmann::json& meta, const FrozenLM& lm, const std::string& dir);
// copies every tensor of `tensors` from the safetensors file at `path` (each must be there, with its shape).
void load_named_tensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors);

// Runs the frozen LM on a module's output. Returns logits for the input's own positions only: [B, T, V].
at::Tensor module_forward_logits(const FrozenLM& lm, const TrainableModule& m, const ModuleInput& in);
// The training loss: mean token cross-entropy over the target positions (targets [B, T], −100 elsewhere). The LM head
// runs on those rows only — [N_targets, V] logits instead of [B, T, V] (for a 128k vocabulary at batch 4 × 256 that
// is 0.5 GB of logits, and as much again for their gradient, to learn from a few answer tokens).
at::Tensor module_target_loss(const FrozenLM& lm, const TrainableModule& m, const ModuleInput& in, const at::Tensor& targets);

}  // namespace frozenlm
