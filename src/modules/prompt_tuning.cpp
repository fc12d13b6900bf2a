#include "modules/prompt_tuning.h"

#include <ATen/CPUGeneratorImpl.h>
#include <sys/stat.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/text_file.h"
#include "core/safetensors.h"
#include "core/torch_pch.h"
#include "modules/peft_config.h"

namespace frozenlm {

using nlohmann::json;

std::unique_ptr<PromptTuning> PromptTuning::create(const FrozenLM& lm, int64_t P, PromptInit init, const std::vector<int64_t>& text_ids,
                                                   uint64_t seed, const std::string& base_model, const std::string& init_text) {
  if (P <= 0) throw Error("prompt tuning: num_virtual_tokens must be positive");
  auto m = std::unique_ptr<PromptTuning>(new PromptTuning());
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  at::Tensor p;
  switch (init) {
    case PromptInit::RandomUniform:
      p = at::rand({P, lm.dim()}, gen, at::kFloat) - 0.5;
      m->init_name_ = "RANDOM";
      break;
    case PromptInit::SampledVocab:
      p = lm.embed(at::randint(0, lm.vocab_size(), {1, P}, gen, at::kLong))[0].to(at::kCPU, at::kFloat);
      m->init_name_ = "SAMPLE_VOCAB";
      break;
    case PromptInit::Text: {
      if (text_ids.empty() || init_text.empty())
        throw Error("prompt tuning: text initialisation needs a non-empty text (PEFT records it as prompt_tuning_init_text)");
      if (base_model.empty())
        throw Error("prompt tuning: text initialisation needs the base model's path (PEFT records it as tokenizer_name_or_path)");
      std::vector<int64_t> ids;
      while (int64_t(ids.size()) < P) ids.insert(ids.end(), text_ids.begin(), text_ids.end());
      ids.resize(P);
      p = lm.embed(at::tensor(ids, at::kLong).view({1, P}))[0].to(at::kCPU, at::kFloat);
      m->init_name_ = "TEXT";
      m->init_text_ = init_text;
      break;
    }
  }
  m->prompt_ = p.to(lm.device(), lm.compute_dtype()).contiguous().requires_grad_(true);
  m->base_model_ = base_model;
  m->checkpoint_id_ = lm.checkpoint_id();
  return m;
}

std::unique_ptr<PromptTuning> PromptTuning::create_from_text(const FrozenLM& lm, int64_t P, const Tokenizer& tok,
                                                             const std::string& text, const std::string& base_model) {
  if (text.empty()) throw Error("prompt tuning: --init text needs --init-text");
  return create(lm, P, PromptInit::Text, tok.encode(text, /*add_special=*/true), 0, base_model, text);
}

ModuleInput PromptTuning::apply(const FrozenLM& lm, const ModuleInput& in) const {
  const int64_t B = in.embeds.size(0), P = prompt_.size(0);
  ModuleInput out;
  out.embeds = at::cat({prompt_.unsqueeze(0).expand({B, P, prompt_.size(1)}), in.embeds.to(prompt_.scalar_type())}, 1);
  at::Tensor mask = in.mask.defined() ? in.mask.to(at::kBool) : at::ones({B, in.embeds.size(1)}, in.embeds.options().dtype(at::kBool));
  out.mask = at::cat({at::ones({B, P}, mask.options()), mask}, 1);
  return out;
}

void PromptTuning::save(const std::string& dir) const {
  ::mkdir(dir.c_str(), 0755);
  write_safetensors(dir + "/adapter_model.safetensors", {{"prompt_embeddings", prompt_.detach().to(at::kCPU, at::kFloat)}});
  json cfg = {{"peft_type", "PROMPT_TUNING"},
              {"task_type", "CAUSAL_LM"},
              {"num_virtual_tokens", prompt_.size(0)},
              {"token_dim", prompt_.size(1)},
              {"num_transformer_submodules", 1},
              {"base_model_name_or_path", base_model_},
              // PEFT refuses TEXT without its text or tokenizer: such a module (a foreign file) is written as RANDOM
              {"prompt_tuning_init", init_name_.empty() || (init_name_ == "TEXT" && (init_text_.empty() || base_model_.empty())) ? "RANDOM" : init_name_},
              {"prompt_tuning_init_text", init_text_.empty() || init_name_ != "TEXT" ? json(nullptr) : json(init_text_)},
              {"tokenizer_name_or_path", base_model_.empty() ? json(nullptr) : json(base_model_)},
              {"inference_mode", true},
              {"revision", nullptr}};
  write_file_atomically(dir + "/adapter_config.json", cfg.dump(2) + "\n");
  write_file_atomically(dir + "/frozenlm.json", json({{"module", "prompt_tuning"}, {"checkpoint_id", checkpoint_id_}, {"base_model", base_model_}}).dump(2) + "\n");
}

std::unique_ptr<PromptTuning> PromptTuning::load(const std::string& dir, const FrozenLM& lm) {
  const std::string cfg_path = dir + "/adapter_config.json";
  std::string cfg_text;
  if (!read_text_file(cfg_path, &cfg_text)) throw Error(cfg_path + ": cannot open (not a saved module directory?)");
  const PeftPromptConfig cfg = parse_peft_prompt_config(cfg_text, cfg_path);
  const std::string st = dir + "/adapter_model.safetensors";
  struct stat sb;
  if (::stat(st.c_str(), &sb) != 0)
    throw Error(st + ": missing (PEFT's older adapter_model.bin pickle format is not supported: re-save with safe_serialization=True)");
  SafetensorsFile file(st);
  if (!file.has("prompt_embeddings")) throw Error(st + ": no tensor 'prompt_embeddings'");
  at::Tensor p = file.get_f32("prompt_embeddings");
  if (p.dim() != 2) throw Error(st + ": prompt_embeddings must be [num_virtual_tokens, token_dim]");
  if (p.size(1) != lm.dim())
    throw Error(dir + ": module was trained for a model with token_dim " + std::to_string(p.size(1)) + ", this model has d=" +
                std::to_string(lm.dim()));
  if (cfg.token_dim > 0 && cfg.token_dim != p.size(1))
    throw Error(cfg_path + ": token_dim " + std::to_string(cfg.token_dim) + " disagrees with prompt_embeddings' " + std::to_string(p.size(1)) + " columns");
  if (cfg.num_virtual_tokens > 0 && cfg.num_virtual_tokens * cfg.num_transformer_submodules != p.size(0))
    throw Error(cfg_path + ": num_virtual_tokens disagrees with prompt_embeddings' " + std::to_string(p.size(0)) + " rows");
  auto m = std::unique_ptr<PromptTuning>(new PromptTuning());
  std::ifstream ours(dir + "/frozenlm.json");
  if (ours) {
    json o = json::parse(ours, nullptr, false);
    if (o.is_object()) {
      if (o.contains("checkpoint_id") && !o["checkpoint_id"].is_string()) throw Error(dir + "/frozenlm.json: checkpoint_id must be a string");
      if (o.contains("base_model") && !o["base_model"].is_string()) throw Error(dir + "/frozenlm.json: base_model must be a string");
      m->checkpoint_id_ = o.value("checkpoint_id", std::string());
      if (!m->checkpoint_id_.empty() && m->checkpoint_id_ != "random" && m->checkpoint_id_ != lm.checkpoint_id())
        throw Error(dir + ": module was trained on another base model (checkpoint " + m->checkpoint_id_ + ", this one is " +
                    lm.checkpoint_id() + "; base_model " + o.value("base_model", std::string("?")) + ")");
    }
  }
  m->base_model_ = cfg.base_model;
  m->init_name_ = cfg.init;
  m->init_text_ = cfg.init_text;
  m->prompt_ = p.to(lm.device(), lm.compute_dtype()).contiguous().requires_grad_(true);
  return m;
}

double embedding_rms(const FrozenLM& lm) {
  at::NoGradGuard ng;
  double sum = 0;
  const int64_t V = lm.vocab_size(), chunk = 4096;
  for (int64_t b = 0; b < V; b += chunk) {
    at::Tensor ids = at::arange(b, std::min(V, b + chunk), at::kLong).unsqueeze(0);
    sum += lm.embed(ids).to(at::kDouble).pow(2).sum().item<double>();
  }
  return std::sqrt(sum / (double(V) * double(lm.dim())));
}

double default_prompt_lr(const FrozenLM& lm) {
  const double lr = 0.6 * embedding_rms(lm);
  if (!(lr > 0) || !std::isfinite(lr)) throw Error("default_prompt_lr: the token embeddings have RMS 0 or not finite; give --lr");
  const double mag = std::pow(10.0, std::floor(std::log10(lr)) - 1);  // 2 significant digits
  return std::round(lr / mag) * mag;
}

}  // namespace frozenlm
