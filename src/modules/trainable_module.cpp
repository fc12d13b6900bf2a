#include "modules/trainable_module.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/text_file.h"
#include "core/torch_pch.h"
#include "modules/idpt.h"
#include "modules/neural_recursion.h"
#include "modules/peft_config.h"
#include "modules/prompt_tuning.h"

namespace frozenlm {

using nlohmann::json;

std::unique_ptr<TrainableModule> load_module(const std::string& dir, const FrozenLM& lm) {
  std::ifstream ours(dir + "/frozenlm.json");
  if (ours) {
    json meta = json::parse(ours, nullptr, false);
    if (meta.is_object() && meta.value("kind", std::string()) == "finetune")
      throw Error(dir + ": a fine-tuned model (a full Hugging Face directory), not a module: pass it as --model " + dir);
  }
  if (std::ifstream(dir + "/idpt_config.json")) return IdPromptTuning::load(dir, lm);
  if (std::ifstream(dir + "/recursion_config.json")) return NeuralRecursion::load(dir, lm);
  std::string cfg_text;
  if (!read_text_file(dir + "/adapter_config.json", &cfg_text))
    throw Error(dir + ": no adapter_config.json (prompt tuning), idpt_config.json (ID-PT) or recursion_config.json (neural recursion): not a saved module directory");
  const std::string type = peft_type_of(cfg_text);
  if (type == "PROMPT_TUNING") return PromptTuning::load(dir, lm);
  throw Error(dir + "/adapter_config.json: unsupported module type '" + type + "' (supported: PROMPT_TUNING)");
}

void TrainableModule::restore(const std::string& dir, const FrozenLM& lm) {
  auto saved = load_module(dir, lm);
  auto mine = parameters(), theirs = saved->parameters();
  if (mine.size() != theirs.size()) throw Error(dir + ": saved module has a different set of tensors");
  at::NoGradGuard ng;
  for (size_t i = 0; i < mine.size(); ++i) {
    if (!mine[i].sizes().equals(theirs[i].sizes())) throw Error(dir + ": saved module tensor " + std::to_string(i) + " has another shape");
    mine[i].copy_(theirs[i]);
  }
}

ModuleInput module_input(const FrozenLM& lm, const at::Tensor& ids, const at::Tensor& mask, const at::Tensor& input_mask) {
  ModuleInput in;
  in.ids = ids.to(lm.device(), at::kLong);
  in.embeds = lm.embed(in.ids);
  in.mask = mask.defined() ? mask.to(lm.device(), at::kBool) : at::ones(ids.sizes(), in.ids.options().dtype(at::kBool));
  in.input_mask = input_mask.defined() ? input_mask.to(lm.device(), at::kBool) : in.mask;
  return in;
}

at::Tensor module_forward_logits(const FrozenLM& lm, const TrainableModule& m, const ModuleInput& in) {
  ModuleInput x = m.apply(lm, in);
  ForwardInput fi;
  fi.embeds = x.embeds;
  fi.mask = x.mask;
  at::Tensor logits = lm.forward(fi).logits;
  return logits.narrow(1, m.prefix_length(), logits.size(1) - m.prefix_length());
}

}  // namespace frozenlm
