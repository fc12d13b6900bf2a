// Neural recursion (Levine et al. 2022, §4.2): LM – Connector – LM, the same frozen LM applied twice, a small trained
// connector in between — a deeper, mostly frozen network for the inputs that need it.
//
//   pass 1     [pass-1 prompt (P1) | the input's embeddings]  → frozen LM → final hidden states h1 (post-norm)
//              (pass 1 reads only the positions the connector passes on: never the target)
//   connector  per position t, h1_t ↦ C(h1_t):
//                mlp          LN → Linear(d → D) → SiLU → Linear(D → d)
//                transformer  LN → Linear(d → D) → `blocks` × pre-LN causal self-attention + FFN (width D) → LN
//                             → Linear(D → d)
//              the last Linear is initialised to zero
//   pass 2     [pass-2 prompt (P2) | e_t + C(h1_t) at the passed-on positions, e_t elsewhere]  → frozen LM → logits
//              (residual = false: C(h1_t) replaces e_t)
// With C's last layer at zero, step 0 *is* prompt tuning with the pass-2 prompt: recursion can only add to it.
// Positions passed on: "input" (the example's input, ModuleInput::input_mask — what generation also has, so training
// and decoding see the same thing) or "all" (every real position: pretraining the connector on plain text, where the
// whole row is target; pass 1 is causal, so h1_t depends on tokens ≤ t only and nothing leaks from the future).
// The paper leaves the connector's shape, the positions and the prompts open; these are our choices (docs/RESULTS.md).
//
// Saved as a directory: recursion_model.safetensors (every tensor by name) + recursion_config.json (configuration,
// the base checkpoint's identity, the stages it was trained in).
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "modules/trainable_module.h"

namespace frozenlm {

struct RecursionConfig {
  int64_t pass1_prompt = 20;          // P1
  int64_t pass2_prompt = 20;          // P2
  std::string connector = "mlp";      // mlp | transformer
  int64_t dim = 256;                  // connector width D
  int64_t blocks = 1;                 // transformer connector: blocks
  int64_t heads = 4;                  // transformer connector: attention heads (D divisible by it)
  bool residual = true;               // pass-2 input e_t + C(h1_t) (false: C(h1_t))
  std::string positions = "input";    // input | all: which positions pass 1 reads and the connector passes on
  double connector_lr_scale = 0.01;   // connector weights train at lr × this (prompts at lr)
  uint64_t seed = 0;
};

nlohmann::json to_json(const RecursionConfig& c);
RecursionConfig recursion_config_from_json(const nlohmann::json& j, const std::string& where);

class NeuralRecursion : public TrainableModule {
 public:
  static std::unique_ptr<NeuralRecursion> create(const FrozenLM& lm, const RecursionConfig& cfg, const std::string& base_model = "");
  static std::unique_ptr<NeuralRecursion> load(const std::string& dir, const FrozenLM& lm);

  std::string kind() const override { return "neural_recursion"; }
  ModuleInput apply(const FrozenLM& lm, const ModuleInput& in) const override;
  int64_t prefix_length() const override { return cfg_.pass2_prompt; }
  std::vector<at::Tensor> parameters() const override;
  double lr_scale(size_t i) const override;
  void save(const std::string& dir) const override;

  const RecursionConfig& config() const { return cfg_; }
  // Stage A (connector pretraining on plain text) passes every position on; stage B the input's.
  void set_positions(const std::string& positions);
  // What each training stage did, saved with the module ({"stage": "A", "steps": ..., ...}).
  void add_stage(const nlohmann::json& stage) { stages_.push_back(stage); }
  // The connector's output for pass-1 states h1 [B, T, d] with `pass_on` [B, T] bool: [B, T, d] (zero elsewhere).
  at::Tensor connect(const at::Tensor& h1, const at::Tensor& pass_on) const;
  const std::vector<std::pair<std::string, at::Tensor>>& named() const { return tensors_; }

 private:
  NeuralRecursion() = default;
  const at::Tensor& t(const std::string& name) const;
  void build(const FrozenLM& lm);
  RecursionConfig cfg_;
  std::string base_checkpoint_id_, base_model_;
  nlohmann::json stages_ = nlohmann::json::array();
  std::vector<std::pair<std::string, at::Tensor>> tensors_;
};

}  // namespace frozenlm
