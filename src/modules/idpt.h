// Input-dependent prompt tuning (ID-PT; Levine et al. 2022, "Standing on the Shoulders of Giant Frozen Language
// Models", §2): a small trainable prompt generator reads the input and writes the soft prompt for that input, so one
// module serves a whole mixture of tasks while the LM stays frozen.
//
//   encoder    a frozen LM reading the example's input (never its target): the frozen LM itself, or a second
//              checkpoint with the same vocabulary; hidden states after `encoder_layer` layers (-1: all), with its
//              own trainable soft prompt of `encoder_prompt` vectors in front
//   generator  P learned queries [P, D] -> `blocks` × { x += MHA(LN(x), K/V = Linear(encoder states));
//              x += FFN(LN(x)) } -> LN -> Linear(D -> d) (initialised to zero) + a learned base prompt [P, d]
//              (initialised from sampled vocabulary embeddings): at step 0 ID-PT *is* prompt tuning
//   output     [fixed learned prompt (F vectors, optional) | generated prompt (P) | input embeddings]
//
// Saved as a directory: idpt_model.safetensors (every tensor by name) + idpt_config.json (the configuration, the base
// checkpoint's identity, and the encoder: "self" or its path and checkpoint identity, refused if it differs).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "modules/trainable_module.h"

namespace frozenlm {

struct IdptConfig {
  int64_t prompt_tokens = 20;      // P: generated per example
  int64_t fixed_tokens = 0;        // F: one learned prompt shared by every example, in front of the generated one
  std::string encoder = "self";    // "self" or a model path
  int64_t encoder_layer = -1;      // read the encoder's hidden states after this many layers (-1: all of them)
  int64_t encoder_prompt = 0;      // trainable soft prompt on the encoder's input
  int64_t dim = 128;               // generator width D
  int64_t blocks = 1;              // cross-attention blocks
  int64_t heads = 4;
  int64_t ffn_mult = 2;
  double generator_lr_scale = 0.01;  // generator weights train at lr × this (prompts at lr: they like 0.3, weights 3e-3)
  uint64_t seed = 0;
};

class IdPromptTuning : public TrainableModule {
 public:
  static std::unique_ptr<IdPromptTuning> create(const FrozenLM& lm, const IdptConfig& cfg, const std::string& base_model = "");
  static std::unique_ptr<IdPromptTuning> load(const std::string& dir, const FrozenLM& lm);

  std::string kind() const override { return "id_prompt_tuning"; }
  ModuleInput apply(const FrozenLM& lm, const ModuleInput& in) const override;
  int64_t prefix_length() const override { return cfg_.fixed_tokens + cfg_.prompt_tokens; }
  std::vector<at::Tensor> parameters() const override;
  double lr_scale(size_t i) const override;
  void save(const std::string& dir) const override;
  const IdptConfig& config() const { return cfg_; }
  // Only the generated prompt for a batch: [B, P, d].
  at::Tensor generate_prompt(const FrozenLM& lm, const ModuleInput& in) const;
  // Named tensors in a fixed order (prompts first, then the generator).
  const std::vector<std::pair<std::string, at::Tensor>>& named() const { return tensors_; }

 private:
  IdPromptTuning() = default;
  const at::Tensor& t(const std::string& name) const;
  void build(const FrozenLM& lm);  // allocates and initialises every tensor
  IdptConfig cfg_;
  std::shared_ptr<const FrozenLM> encoder_;  // null: the frozen LM itself
  std::string encoder_checkpoint_id_, base_checkpoint_id_, base_model_;
  int64_t encoder_dim_ = 0;
  std::vector<std::pair<std::string, at::Tensor>> tensors_;
};

}  // namespace frozenlm
