#include "modules/neural_recursion.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/safetensors.h"
#include "core/torch_pch.h"
#include "modules/attention_block.h"

namespace frozenlm {

using nlohmann::json;

json to_json(const RecursionConfig& c) {
  return {{"pass1_prompt", c.pass1_prompt}, {"pass2_prompt", c.pass2_prompt}, {"connector", c.connector}, {"dim", c.dim},
          {"blocks", c.blocks}, {"heads", c.heads}, {"residual", c.residual}, {"positions", c.positions},
          {"connector_lr_scale", c.connector_lr_scale}, {"seed", c.seed}};
}

RecursionConfig recursion_config_from_json(const json& j, const std::string& where) {
  RecursionConfig c;
  try {
    c.pass1_prompt = j.at("pass1_prompt");
    c.pass2_prompt = j.at("pass2_prompt");
    c.connector = j.at("connector");
    c.dim = j.at("dim");
    c.blocks = j.at("blocks");
    c.heads = j.at("heads");
    c.residual = j.at("residual");
    c.positions = j.at("positions");
    c.connector_lr_scale = j.at("connector_lr_scale");
    c.seed = j.at("seed");
  } catch (const json::exception& e) {
    throw Error(where + ": bad neural recursion configuration: " + e.what());
  }
  return c;
}

namespace {

void check_config(const RecursionConfig& c) {
  if (c.pass1_prompt < 0 || c.pass2_prompt < 0) throw Error("neural recursion: prompt lengths must be >= 0");
  if (c.connector != "mlp" && c.connector != "transformer")
    throw Error("neural recursion: connector must be mlp or transformer (not '" + c.connector + "')");
  if (c.dim <= 0) throw Error("neural recursion: connector width must be positive");
  if (c.connector == "transformer" && (c.blocks < 1 || c.heads <= 0 || c.dim % c.heads != 0))
    throw Error("neural recursion: a transformer connector needs blocks >= 1 and a width (" + std::to_string(c.dim) +
                ") divisible by its heads (" + std::to_string(c.heads) + ")");
  if (c.positions != "input" && c.positions != "all")
    throw Error("neural recursion: positions must be input or all (not '" + c.positions + "')");
}

}  // namespace

const at::Tensor& NeuralRecursion::t(const std::string& name) const {
  for (auto& [n, v] : tensors_)
    if (n == name) return v;
  throw Error("neural recursion: no tensor '" + name + "'");
}

void NeuralRecursion::build(const FrozenLM& lm) {
  const RecursionConfig& c = cfg_;
  check_config(c);
  const int64_t d = lm.dim(), D = c.dim;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(c.seed);
  auto randn = [&](std::vector<int64_t> shape, double std) { return at::randn(shape, gen, at::kFloat) * std; };
  auto vocab = [&](int64_t n) {  // sampled vocabulary embeddings (PEFT's SAMPLE_VOCAB), as prompt tuning starts
    return lm.embed(at::randint(0, lm.vocab_size(), {1, n}, gen, at::kLong))[0].to(at::kCPU, at::kFloat);
  };
  std::vector<std::pair<std::string, at::Tensor>> ts;
  if (c.pass1_prompt) ts.push_back({"pass1_prompt", vocab(c.pass1_prompt)});
  if (c.pass2_prompt) ts.push_back({"pass2_prompt", vocab(c.pass2_prompt)});
  ts.push_back({"in_norm.weight", at::ones({d})});
  ts.push_back({"in_norm.bias", at::zeros({d})});
  ts.push_back({"in.weight", randn({D, d}, 1.0 / std::sqrt(double(d)))});
  ts.push_back({"in.bias", at::zeros({D})});
  if (c.connector == "transformer") {
    for (int64_t b = 0; b < c.blocks; ++b) add_attention_block(ts, "blocks." + std::to_string(b) + ".", D, 2 * D, randn);
    ts.push_back({"out_norm.weight", at::ones({D})});
    ts.push_back({"out_norm.bias", at::zeros({D})});
  }
  ts.push_back({"out.weight", at::zeros({d, D})});  // zero: pass 2 starts as prompt tuning
  ts.push_back({"out.bias", at::zeros({d})});
  for (auto& [n, v] : ts) v = v.to(lm.device(), lm.compute_dtype()).contiguous().requires_grad_(true);
  tensors_ = std::move(ts);
}

std::unique_ptr<NeuralRecursion> NeuralRecursion::create(const FrozenLM& lm, const RecursionConfig& cfg, const std::string& base_model) {
  auto m = std::unique_ptr<NeuralRecursion>(new NeuralRecursion());
  m->cfg_ = cfg;
  m->base_model_ = base_model;
  m->base_checkpoint_id_ = lm.checkpoint_id();
  m->build(lm);
  return m;
}

void NeuralRecursion::set_positions(const std::string& positions) {
  RecursionConfig c = cfg_;
  c.positions = positions;
  check_config(c);
  cfg_ = c;
}

std::vector<at::Tensor> NeuralRecursion::parameters() const {
  std::vector<at::Tensor> out;
  for (auto& [n, v] : tensors_) out.push_back(v);
  return out;
}

double NeuralRecursion::lr_scale(size_t i) const {
  const std::string& n = tensors_.at(i).first;
  return n == "pass1_prompt" || n == "pass2_prompt" ? 1.0 : cfg_.connector_lr_scale;
}

at::Tensor NeuralRecursion::connect(const at::Tensor& h1, const at::Tensor& pass_on) const {
  const int64_t B = h1.size(0), T = h1.size(1);
  at::Tensor x = at::linear(layer_norm(h1, t("in_norm.weight"), t("in_norm.bias")), t("in.weight"), t("in.bias"));  // [B, T, D]
  if (cfg_.connector == "mlp") {
    x = at::silu(x);
  } else {
    // Causal, and only over passed-on positions (a key elsewhere is padding or target).
    at::Tensor future = at::ones({T, T}, h1.options().dtype(at::kFloat)).triu(1).to(at::kBool).view({1, 1, T, T});
    at::Tensor blocked = future.logical_or(pass_on.logical_not().view({B, 1, 1, T}));  // [B, 1, T, T]
    auto lookup = [this](const std::string& n) -> const at::Tensor& { return t(n); };
    for (int64_t b = 0; b < cfg_.blocks; ++b) x = attention_block(lookup, "blocks." + std::to_string(b) + ".", x, {}, blocked, cfg_.heads);
    x = layer_norm(x, t("out_norm.weight"), t("out_norm.bias"));
  }
  at::Tensor c = at::linear(x, t("out.weight"), t("out.bias"));  // [B, T, d]
  return c.masked_fill(pass_on.logical_not().unsqueeze(-1), 0.0);
}

ModuleInput NeuralRecursion::apply(const FrozenLM& lm, const ModuleInput& in) const {
  const int64_t B = in.embeds.size(0), T = in.embeds.size(1), P1 = cfg_.pass1_prompt, P2 = cfg_.pass2_prompt;
  const at::ScalarType dt = tensors_.back().second.scalar_type();
  const at::Tensor mask = in.mask.defined() ? in.mask.to(at::kBool) : at::ones({B, T}, in.embeds.options().dtype(at::kBool));
  at::Tensor pass_on = mask;
  if (cfg_.positions == "input" && in.input_mask.defined()) pass_on = mask.logical_and(in.input_mask.to(at::kBool));
  const at::Tensor e = in.embeds.to(dt);
  // ---- pass 1: the frozen LM reads [P1 | the passed-on positions] ----
  ForwardInput fi;
  fi.embeds = e;
  fi.mask = pass_on;
  if (P1) {
    const at::Tensor& p1 = t("pass1_prompt");
    fi.embeds = at::cat({p1.unsqueeze(0).expand({B, P1, p1.size(1)}), e}, 1);
    fi.mask = at::cat({at::ones({B, P1}, pass_on.options()), pass_on}, 1);
  }
  ForwardOptions fo;
  fo.logits = false;
  fo.hidden = true;
  at::Tensor h1 = lm.forward(fi, nullptr, fo).hidden.narrow(1, P1, T).to(dt);  // [B, T, d], post-norm
  // States at positions not passed on (target, padding) are zeroed: they cannot reach the connector even as NaN * 0.
  h1 = h1.masked_fill(pass_on.logical_not().unsqueeze(-1), 0.0);
  // ---- connector, then pass 2's input ----
  const at::Tensor c = connect(h1, pass_on);
  at::Tensor x2 = cfg_.residual ? e + c : at::where(pass_on.unsqueeze(-1), c, e);
  ModuleInput out = in;
  out.embeds = x2;
  out.mask = mask;
  if (P2) {
    const at::Tensor& p2 = t("pass2_prompt");
    out.embeds = at::cat({p2.unsqueeze(0).expand({B, P2, p2.size(1)}), x2}, 1);
    out.mask = at::cat({at::ones({B, P2}, mask.options()), mask}, 1);
  }
  out.ids = at::Tensor();  // positions no longer line up with ids
  out.input_mask = at::Tensor();
  return out;
}

void NeuralRecursion::save(const std::string& dir) const {
  std::filesystem::create_directories(dir);
  std::vector<std::pair<std::string, at::Tensor>> cpu;
  for (auto& [n, v] : tensors_) cpu.push_back({n, v.detach().to(at::kCPU, at::kFloat)});
  write_safetensors(dir + "/recursion_model.safetensors", cpu);
  const json meta = {{"module", "NEURAL_RECURSION"}, {"config", to_json(cfg_)}, {"base_checkpoint_id", base_checkpoint_id_},
                     {"base_model", base_model_}, {"token_dim", tensors_.back().second.size(0)}, {"stages", stages_},
                     {"trainable_parameters", num_parameters()}};
  write_file_atomically(dir + "/recursion_config.json", meta.dump(2) + "\n");
}

std::unique_ptr<NeuralRecursion> NeuralRecursion::load(const std::string& dir, const FrozenLM& lm) {
  const std::string cfg_path = dir + "/recursion_config.json";
  std::ifstream f(cfg_path);
  if (!f) throw Error(cfg_path + ": cannot open (not a neural recursion module directory?)");
  const json meta = json::parse(f, nullptr, false);
  if (meta.is_discarded() || !meta.is_object() || meta.value("module", std::string()) != "NEURAL_RECURSION" || !meta.contains("config"))
    throw Error(cfg_path + ": not a neural recursion configuration (expected {\"module\": \"NEURAL_RECURSION\", \"config\": {...}})");
  const RecursionConfig cfg = recursion_config_from_json(meta["config"], cfg_path);
  check_module_base(meta, lm, dir);
  auto m = create(lm, cfg, meta.value("base_model", std::string()));
  m->stages_ = meta.value("stages", json::array());
  load_named_tensors(dir + "/recursion_model.safetensors", m->tensors_);
  return m;
}

}  // namespace frozenlm
