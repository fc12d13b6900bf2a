#include "modules/trainable_module.h"

#include "core/losses.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/safetensors.h"
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
  if (std::ifstream(dir + "/textual_recursion.json"))
    throw Error(dir + ": a textual recursion (two modules, pass1/ and pass2/, with text between them), not one module: `eval`, "
                "`generate` and `score --prompt` take it as --module " + dir + "; anything else takes one of its passes (" + dir + "/pass1 or " + dir + "/pass2)");
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

void check_module_base(const json& meta, const FrozenLM& lm, const std::string& dir) {
  if (meta.value("token_dim", int64_t(-1)) != lm.dim())
    throw Error(dir + ": module was trained for a model with token_dim " + std::to_string(meta.value("token_dim", int64_t(-1))) +
                ", this model has d=" + std::to_string(lm.dim()));
  const std::string base_id = meta.value("base_checkpoint_id", std::string());
  if (!base_id.empty() && base_id != lm.checkpoint_id())
    throw Error(dir + ": module was trained on another base model (checkpoint " + base_id + ", this one is " + lm.checkpoint_id() +
                "; base_model " + meta.value("base_model", std::string("?")) + ")");
}

void load_named_tensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
  SafetensorsFile file(path);
  at::NoGradGuard ng;
  for (auto& [n, v] : tensors) {
    if (!file.has(n)) throw Error(path + ": tensor '" + n + "' is missing");
    at::Tensor saved = file.get_f32(n);
    if (!saved.sizes().equals(v.sizes())) throw Error(path + ": tensor '" + n + "' has the wrong shape");
    at::Tensor(v).copy_(saved);
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

at::Tensor module_target_loss(const FrozenLM& lm, const TrainableModule& m, const ModuleInput& in, const at::Tensor& targets) {
  const ModuleInput x = m.apply(lm, in);
  ForwardInput fi;
  fi.embeds = x.embeds;
  fi.mask = x.mask;
  ForwardOptions fo;
  fo.logits = false;
  fo.hidden = true;
  at::Tensor h = lm.forward(fi, nullptr, fo).hidden;  // [B, P + T, d]
  const int64_t P = m.prefix_length();
  h = h.narrow(1, P, h.size(1) - P).reshape({-1, lm.dim()});
  const at::Tensor t = targets.reshape({-1}).to(h.device());
  const at::Tensor rows = (t != -100).nonzero().squeeze(1);
  return token_cross_entropy(lm.head(h.index_select(0, rows)), t.index_select(0, rows));
}

}  // namespace frozenlm
