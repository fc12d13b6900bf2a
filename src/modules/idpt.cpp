#include "modules/idpt.h"

#include <ATen/CPUGeneratorImpl.h>
#include <sys/stat.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/loader.h"
#include "core/safetensors.h"
#include "core/torch_pch.h"
#include "modules/attention_block.h"

namespace frozenlm {

using nlohmann::json;

namespace {

json config_json(const IdptConfig& c) {
  return {{"prompt_tokens", c.prompt_tokens}, {"fixed_tokens", c.fixed_tokens}, {"encoder", c.encoder},
          {"encoder_layer", c.encoder_layer}, {"encoder_prompt", c.encoder_prompt}, {"dim", c.dim}, {"blocks", c.blocks},
          {"heads", c.heads}, {"ffn_mult", c.ffn_mult}, {"generator_lr_scale", c.generator_lr_scale}, {"seed", c.seed}};
}

IdptConfig config_from_json(const json& j, const std::string& where) {
  IdptConfig c;
  try {
    c.prompt_tokens = j.at("prompt_tokens");
    c.fixed_tokens = j.at("fixed_tokens");
    c.encoder = j.at("encoder");
    c.encoder_layer = j.at("encoder_layer");
    c.encoder_prompt = j.at("encoder_prompt");
    c.dim = j.at("dim");
    c.blocks = j.at("blocks");
    c.heads = j.at("heads");
    c.ffn_mult = j.at("ffn_mult");
    c.generator_lr_scale = j.at("generator_lr_scale");
    c.seed = j.at("seed");
  } catch (const json::exception& e) {
    throw Error(where + ": bad ID-PT configuration: " + e.what());
  }
  return c;
}


}  // namespace

const at::Tensor& IdPromptTuning::t(const std::string& name) const {
  for (auto& [n, v] : tensors_)
    if (n == name) return v;
  throw Error("ID-PT: no tensor '" + name + "'");
}

void IdPromptTuning::build(const FrozenLM& lm) {
  const IdptConfig& c = cfg_;
  if (c.prompt_tokens <= 0) throw Error("ID-PT: prompt_tokens must be positive");
  if (c.fixed_tokens < 0 || c.encoder_prompt < 0 || c.blocks < 0 || c.ffn_mult <= 0) throw Error("ID-PT: negative size in the configuration");
  if (c.dim <= 0 || c.heads <= 0 || c.dim % c.heads != 0)
    throw Error("ID-PT: generator width " + std::to_string(c.dim) + " must be a positive multiple of heads " + std::to_string(c.heads));
  const FrozenLM& enc = encoder_ ? *encoder_ : lm;
  if (c.encoder_layer < -1 || c.encoder_layer > enc.config().n_layers)
    throw Error("ID-PT: encoder_layer " + std::to_string(c.encoder_layer) + " out of range (0.." + std::to_string(enc.config().n_layers) + ", -1: all)");
  if (encoder_ && encoder_->vocab_size() != lm.vocab_size())
    throw Error("ID-PT: the encoder's vocabulary (" + std::to_string(encoder_->vocab_size()) + ") differs from the frozen LM's (" +
                std::to_string(lm.vocab_size()) + "): the encoder must share the LM's tokenizer");
  encoder_dim_ = enc.dim();
  const int64_t d = lm.dim(), de = encoder_dim_, D = c.dim, F = c.ffn_mult * c.dim;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(c.seed);
  auto randn = [&](std::vector<int64_t> shape, double std) { return at::randn(shape, gen, at::kFloat) * std; };
  auto vocab = [&](const FrozenLM& m, int64_t n) {  // sampled vocabulary embeddings (PEFT's SAMPLE_VOCAB)
    return m.embed(at::randint(0, m.vocab_size(), {1, n}, gen, at::kLong))[0].to(at::kCPU, at::kFloat);
  };
  std::vector<std::pair<std::string, at::Tensor>> ts;
  if (c.fixed_tokens) ts.push_back({"fixed_prompt", vocab(lm, c.fixed_tokens)});
  ts.push_back({"base_prompt", vocab(lm, c.prompt_tokens)});
  if (c.encoder_prompt) ts.push_back({"encoder_prompt", vocab(enc, c.encoder_prompt)});
  ts.push_back({"queries", randn({c.prompt_tokens, D}, 1.0)});
  ts.push_back({"enc_norm.weight", at::ones({de})});
  ts.push_back({"enc_norm.bias", at::zeros({de})});
  ts.push_back({"in_proj.weight", randn({D, de}, 1.0 / std::sqrt(double(de)))});
  ts.push_back({"in_proj.bias", at::zeros({D})});
  for (int64_t b = 0; b < c.blocks; ++b) add_attention_block(ts, "blocks." + std::to_string(b) + ".", D, F, randn);
  ts.push_back({"out_norm.weight", at::ones({D})});
  ts.push_back({"out_norm.bias", at::zeros({D})});
  ts.push_back({"out.weight", at::zeros({d, D})});  // zero: the generated prompt starts as the base prompt
  ts.push_back({"out.bias", at::zeros({d})});
  for (auto& [n, v] : ts) v = v.to(lm.device(), lm.compute_dtype()).contiguous().requires_grad_(true);
  tensors_ = std::move(ts);
}

std::unique_ptr<IdPromptTuning> IdPromptTuning::create(const FrozenLM& lm, const IdptConfig& cfg, const std::string& base_model) {
  auto m = std::unique_ptr<IdPromptTuning>(new IdPromptTuning());
  m->cfg_ = cfg;
  m->base_model_ = base_model;
  m->base_checkpoint_id_ = lm.checkpoint_id();
  if (cfg.encoder != "self") {
    LoadOptions lo;
    lo.device = lm.device().str();
    std::shared_ptr<FrozenLM> e = load_model(cfg.encoder, lo);
    if (lm.compute_dtype() != at::kFloat) e->to(lm.device(), lm.compute_dtype());
    m->encoder_ = e;
    m->encoder_checkpoint_id_ = e->checkpoint_id();
  } else {
    m->encoder_checkpoint_id_ = lm.checkpoint_id();
  }
  m->build(lm);
  return m;
}

std::vector<at::Tensor> IdPromptTuning::parameters() const {
  std::vector<at::Tensor> out;
  for (auto& [n, v] : tensors_) out.push_back(v);
  return out;
}

double IdPromptTuning::lr_scale(size_t i) const {
  const std::string& n = tensors_.at(i).first;
  return n == "fixed_prompt" || n == "base_prompt" || n == "encoder_prompt" ? 1.0 : cfg_.generator_lr_scale;
}

at::Tensor IdPromptTuning::generate_prompt(const FrozenLM& lm, const ModuleInput& in) const {
  if (!in.ids.defined()) throw Error("ID-PT: the module input carries no token ids (build it with module_input())");
  const FrozenLM& enc = encoder_ ? *encoder_ : lm;
  const int64_t B = in.ids.size(0), P = cfg_.prompt_tokens, D = cfg_.dim;
  // ---- encoder: read the input only (target positions are masked out like padding) ----
  at::Tensor imask = (in.input_mask.defined() ? in.input_mask : in.mask).to(enc.device(), at::kBool);  // [B, T]
  ForwardInput fi;
  fi.embeds = enc.embed(in.ids.to(enc.device()));                                                    // [B, T, de]
  fi.mask = imask;
  if (cfg_.encoder_prompt) {
    const at::Tensor& ep = t("encoder_prompt");
    fi.embeds = at::cat({ep.unsqueeze(0).expand({B, ep.size(0), ep.size(1)}), fi.embeds.to(ep.scalar_type())}, 1);
    fi.mask = at::cat({at::ones({B, ep.size(0)}, imask.options()), imask}, 1);
  }
  ForwardOptions fo;
  fo.logits = false;
  fo.stop_after_layer = cfg_.encoder_layer < 0 ? enc.config().n_layers : cfg_.encoder_layer;
  at::Tensor states;  // [B, S, de]
  {
    // Without an encoder prompt nothing upstream of the states trains: skip the graph.
    at::AutoGradMode grad(cfg_.encoder_prompt > 0 && at::GradMode::is_enabled());
    states = enc.forward(fi, nullptr, fo).hidden;
  }
  at::Tensor key_mask = fi.mask.to(lm.device());                                  // [B, S]
  // States at unreadable positions (target, padding) are zeroed: they cannot reach the prompt even as NaN * 0.
  states = states.to(lm.device()).masked_fill(key_mask.logical_not().unsqueeze(-1), 0.0);
  // A row with nothing readable (an lm task's row is all target) attends to nothing: its prompt comes from the queries
  // alone. (A softmax over only −1e30 scores would be uniform over the target.)
  at::Tensor readable = key_mask.any(1).view({B, 1, 1, 1}).to(states.scalar_type());  // [B, 1, 1, 1]
  // ---- generator: P queries cross-attend to the encoder states ----
  at::Tensor src = at::linear(layer_norm(states, t("enc_norm.weight"), t("enc_norm.bias")), t("in_proj.weight"), t("in_proj.bias"));  // [B, S, D]
  const int64_t S = src.size(1);
  at::Tensor blocked = key_mask.logical_not().view({B, 1, 1, S});
  at::Tensor x = t("queries").unsqueeze(0).expand({B, P, D});                     // [B, P, D]
  auto lookup = [this](const std::string& n) -> const at::Tensor& { return t(n); };
  for (int64_t b = 0; b < cfg_.blocks; ++b) x = attention_block(lookup, "blocks." + std::to_string(b) + ".", x, src, blocked, cfg_.heads, readable);
  at::Tensor out = at::linear(layer_norm(x, t("out_norm.weight"), t("out_norm.bias")), t("out.weight"), t("out.bias"));  // [B, P, d]
  return out + t("base_prompt").unsqueeze(0);
}

ModuleInput IdPromptTuning::apply(const FrozenLM& lm, const ModuleInput& in) const {
  const int64_t B = in.embeds.size(0);
  std::vector<at::Tensor> parts;
  if (cfg_.fixed_tokens) {
    const at::Tensor& f = t("fixed_prompt");
    parts.push_back(f.unsqueeze(0).expand({B, f.size(0), f.size(1)}));
  }
  parts.push_back(generate_prompt(lm, in));
  parts.push_back(in.embeds.to(parts.back().scalar_type()));
  ModuleInput out = in;
  out.embeds = at::cat(parts, 1);
  at::Tensor mask = in.mask.defined() ? in.mask.to(at::kBool) : at::ones({B, in.embeds.size(1)}, in.embeds.options().dtype(at::kBool));
  out.mask = at::cat({at::ones({B, prefix_length()}, mask.options()), mask}, 1);
  out.ids = at::Tensor();  // positions no longer line up with ids
  out.input_mask = at::Tensor();
  return out;
}

void IdPromptTuning::save(const std::string& dir) const {
  ::mkdir(dir.c_str(), 0755);
  std::vector<std::pair<std::string, at::Tensor>> cpu;
  for (auto& [n, v] : tensors_) cpu.push_back({n, v.detach().to(at::kCPU, at::kFloat)});
  write_safetensors(dir + "/idpt_model.safetensors", cpu);
  json meta = {{"module", "ID_PT"}, {"config", config_json(cfg_)}, {"base_checkpoint_id", base_checkpoint_id_},
               {"base_model", base_model_}, {"token_dim", tensors_.back().second.size(0)},
               {"encoder_checkpoint_id", encoder_checkpoint_id_}, {"trainable_parameters", num_parameters()}};
  write_file_atomically(dir + "/idpt_config.json", meta.dump(2) + "\n");
}

std::unique_ptr<IdPromptTuning> IdPromptTuning::load(const std::string& dir, const FrozenLM& lm) {
  const std::string cfg_path = dir + "/idpt_config.json";
  std::ifstream f(cfg_path);
  if (!f) throw Error(cfg_path + ": cannot open (not an ID-PT module directory?)");
  json meta = json::parse(f, nullptr, false);
  if (meta.is_discarded() || !meta.is_object() || meta.value("module", std::string()) != "ID_PT" || !meta.contains("config"))
    throw Error(cfg_path + ": not an ID-PT configuration (expected {\"module\": \"ID_PT\", \"config\": {...}})");
  const IdptConfig cfg = config_from_json(meta["config"], cfg_path);
  check_module_base(meta, lm, dir);
  if (cfg.encoder != "self") {
    struct stat sb;
    if (::stat(cfg.encoder.c_str(), &sb) != 0)
      throw Error(dir + ": the module's encoder checkpoint " + cfg.encoder + " is missing");
  }
  auto m = create(lm, cfg, meta.value("base_model", std::string()));
  const std::string enc_id = meta.value("encoder_checkpoint_id", std::string());
  if (cfg.encoder != "self" && enc_id != m->encoder_checkpoint_id_)
    throw Error(dir + ": the encoder " + cfg.encoder + " differs from the one the module was trained with (checkpoint " +
                m->encoder_checkpoint_id_ + ", trained with " + enc_id + ")");
  load_named_tensors(dir + "/idpt_model.safetensors", m->tensors_);
  return m;
}

}  // namespace frozenlm
