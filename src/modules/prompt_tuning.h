// Prompt tuning (Lester et al. 2021): P learned vectors prepended to the input embeddings of the frozen LM.
// Saved in PEFT's format, so adapters move between frozenlm and Hugging Face PEFT:
//   adapter_model.safetensors  {"prompt_embeddings": F32 [P, d]}
//   adapter_config.json        {"peft_type": "PROMPT_TUNING", "task_type": "CAUSAL_LM", "num_virtual_tokens": P,
//                               "token_dim": d, "base_model_name_or_path": ..., ...}   (fields: README, "PEFT format")
//   frozenlm.json              {"checkpoint_id": ..., "base_model": ...}   (ours; PEFT ignores it)
#pragma once
#include <string>
#include <vector>

#include "modules/trainable_module.h"
#include "tokenizer/tokenizer.h"

namespace frozenlm {

// The default peak learning rate for soft prompts (prompt tuning, ID-PT's prompts): 0.6 × the RMS of the frozen
// token-embedding table, to 2 significant digits. A prompt is a set of vectors in the embedding space and Adam moves
// each element by about lr per step whatever the gradient's scale, so the rate must follow the embeddings' scale.
// Anchor: Lester et al.'s 0.3 is what worked on tinystories-656k (RMS 0.497 -> 0.30, docs/RESULTS.md); on the
// testbed v1 base (RMS 0.067) a fixed 0.3 was 4.5× the embeddings' scale and prompt tuning reached 1.5% (-> 0.040).
double default_prompt_lr(const FrozenLM& lm);
// RMS of the frozen token-embedding table (any storage format), computed in chunks of rows.
double embedding_rms(const FrozenLM& lm);

enum class PromptInit { RandomUniform, SampledVocab, Text };  // PEFT: RANDOM, SAMPLE_VOCAB, TEXT

class PromptTuning : public TrainableModule {
 public:
  // init: RandomUniform draws U(−0.5, 0.5) (Lester et al.); SampledVocab copies the frozen embeddings of random
  // vocabulary ids; Text copies the embeddings of `text_ids`, repeated to fill P (as PEFT does).
  static std::unique_ptr<PromptTuning> create(const FrozenLM& lm, int64_t num_virtual_tokens, PromptInit init,
                                              const std::vector<int64_t>& text_ids = {}, uint64_t seed = 0,
                                              const std::string& base_model = "", const std::string& init_text = "");
  // Text initialisation as PEFT does it: the ids of tokenizer(text)["input_ids"] (with the BOS a Llama tokenizer
  // adds), repeated to fill P. `text` and `base_model` (PEFT's tokenizer_name_or_path) must not be empty.
  static std::unique_ptr<PromptTuning> create_from_text(const FrozenLM& lm, int64_t num_virtual_tokens, const Tokenizer& tok,
                                                        const std::string& text, const std::string& base_model);
  static std::unique_ptr<PromptTuning> load(const std::string& dir, const FrozenLM& lm);

  std::string kind() const override { return "prompt_tuning"; }
  ModuleInput apply(const FrozenLM& lm, const ModuleInput& in) const override;
  int64_t prefix_length() const override { return prompt_.size(0); }
  std::vector<at::Tensor> parameters() const override { return {prompt_}; }
  void save(const std::string& dir) const override;
  const at::Tensor& prompt() const { return prompt_; }

 private:
  at::Tensor prompt_;  // [P, d], requires_grad
  std::string base_model_, checkpoint_id_, init_name_, init_text_;
};

}  // namespace frozenlm
