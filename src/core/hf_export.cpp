#include "core/hf_export.h"

#include <sys/stat.h>

#include <map>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/safetensors.h"
#include "core/torch_pch.h"

namespace frozenlm {

using nlohmann::json;

std::string hf_config_json(const ModelConfig& c) {
  json j;
  if (c.family == "gpt2") {
    j = {{"architectures", {"GPT2LMHeadModel"}}, {"model_type", "gpt2"}, {"vocab_size", c.vocab_size}, {"n_embd", c.dim},
         {"n_layer", c.n_layers}, {"n_head", c.n_heads}, {"n_positions", c.max_seq_len}, {"n_inner", c.ffn_dim},
         {"activation_function", c.act == Activation::Gelu ? "gelu" : "gelu_new"}, {"layer_norm_epsilon", c.norm_eps},
         {"tie_word_embeddings", c.tied_embeddings}};
  } else {
    // llama2.c, SmolLM, TinyLlama are plain Llama; Mistral and Qwen2 keep their own type (Qwen2: q/k/v bias only).
    const std::string type = c.model_type == "mistral" || c.model_type == "qwen2" ? c.model_type : "llama";
    const std::string arch = type == "mistral" ? "MistralForCausalLM" : type == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM";
    j = {{"architectures", {arch}}, {"model_type", type}, {"vocab_size", c.vocab_size}, {"hidden_size", c.dim},
         {"intermediate_size", c.ffn_dim}, {"num_hidden_layers", c.n_layers}, {"num_attention_heads", c.n_heads},
         {"num_key_value_heads", c.n_kv_heads}, {"head_dim", c.head_dim}, {"max_position_embeddings", c.max_seq_len},
         {"rms_norm_eps", c.norm_eps}, {"rope_theta", c.rope_theta}, {"hidden_act", "silu"},
         {"tie_word_embeddings", c.tied_embeddings}, {"mlp_bias", c.mlp_bias}};
    if (type != "qwen2") {
      if (c.qkv_bias != c.o_bias) throw Error("export: q/k/v bias without o_proj bias cannot be written as " + type);
      j["attention_bias"] = c.qkv_bias;
    }
    const RopeScaling& rs = c.rope_scaling;
    if (rs.type == "llama3")
      j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", rs.factor}, {"low_freq_factor", rs.low_freq_factor},
                           {"high_freq_factor", rs.high_freq_factor},
                           {"original_max_position_embeddings", rs.original_max_position_embeddings}};
    else if (rs.type == "factors")
      throw Error("export: per-frequency RoPE factors (a GGUF's rope_freqs.weight) have no Hugging Face config form");
    else if (rs.type == "linear")
      j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", rs.factor}};
    else
      j["rope_scaling"] = nullptr;
  }
  if (c.bos_id >= 0) j["bos_token_id"] = c.bos_id;
  if (c.eos_ids.size() == 1) j["eos_token_id"] = c.eos_ids[0];
  else if (!c.eos_ids.empty()) j["eos_token_id"] = c.eos_ids;
  j["torch_dtype"] = "float32";
  return j.dump(2) + "\n";
}

void save_hf_model(const FrozenLM& lm, const std::string& dir, ExportDtype dtype) {
  at::NoGradGuard no_grad;
  const ModelConfig& c = lm.config();
  ::mkdir(dir.c_str(), 0755);
  // Dequantised fp32 copies of every stored tensor, by our internal name (int8 rows times their ".scale").
  std::map<std::string, at::Tensor> W;
  for (auto& [name, t] : lm.named_tensors()) W[name] = t.detach().to(at::kCPU).to(at::kFloat);
  for (auto it = W.begin(); it != W.end();) {
    const std::string& n = it->first;
    if (n.size() > 6 && n.compare(n.size() - 6, 6, ".scale") == 0) {
      at::Tensor& w = W.at(n.substr(0, n.size() - 6) + ".weight");
      w = dequantize_weight(w, it->second, it->second.dim() == 2 ? WeightFormat::Q8_0 : WeightFormat::Int8);  // blocks / rows
      it = W.erase(it);
    } else {
      ++it;
    }
  }
  std::vector<std::pair<std::string, at::Tensor>> out;
  auto put = [&](const std::string& hf, const at::Tensor& t) {
    if (t.defined()) out.push_back({hf, (dtype == ExportDtype::BF16 ? t.to(at::kBFloat16) : t).contiguous()});
  };
  auto get = [&](const std::string& n) { auto it = W.find(n); return it == W.end() ? at::Tensor() : it->second; };
  const bool gpt2 = c.family == "gpt2";
  put(gpt2 ? "wte.weight" : "model.embed_tokens.weight", get("tok_emb.weight"));
  if (gpt2) put("wpe.weight", get("pos_emb"));
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    if (gpt2) {
      const std::string h = "h." + std::to_string(l) + ".";
      put(h + "ln_1.weight", get(p + "attn_norm.weight"));
      put(h + "ln_1.bias", get(p + "attn_norm.bias"));
      put(h + "ln_2.weight", get(p + "mlp_norm.weight"));
      put(h + "ln_2.bias", get(p + "mlp_norm.bias"));
      // Conv1D: [in, out]
      put(h + "attn.c_attn.weight", get(p + "qkv.weight").t());
      put(h + "attn.c_attn.bias", get(p + "qkv.bias"));
      put(h + "attn.c_proj.weight", get(p + "o.weight").t());
      put(h + "attn.c_proj.bias", get(p + "o.bias"));
      put(h + "mlp.c_fc.weight", get(p + "up.weight").t());
      put(h + "mlp.c_fc.bias", get(p + "up.bias"));
      put(h + "mlp.c_proj.weight", get(p + "down.weight").t());
      put(h + "mlp.c_proj.bias", get(p + "down.bias"));
      continue;
    }
    const std::string h = "model.layers." + std::to_string(l) + ".";
    put(h + "input_layernorm.weight", get(p + "attn_norm.weight"));
    put(h + "post_attention_layernorm.weight", get(p + "mlp_norm.weight"));
    const std::vector<int64_t> qkv_split{c.q_dim(), c.kv_dim(), c.kv_dim()};
    const char* qkv_names[] = {"q_proj", "k_proj", "v_proj"};
    for (const char* kind : {"weight", "bias"}) {
      at::Tensor fused = get(p + "qkv." + kind);
      if (!fused.defined()) continue;
      auto parts = fused.split_with_sizes(qkv_split, 0);
      for (int i = 0; i < 3; ++i) put(h + "self_attn." + qkv_names[i] + "." + kind, parts[i]);
    }
    put(h + "self_attn.o_proj.weight", get(p + "o.weight"));
    put(h + "self_attn.o_proj.bias", get(p + "o.bias"));
    for (const char* kind : {"weight", "bias"}) {
      at::Tensor fused = get(p + "up." + kind);
      if (!fused.defined()) continue;
      auto parts = fused.split_with_sizes({c.ffn_dim, c.ffn_dim}, 0);  // gate | up
      put(h + "mlp.gate_proj." + kind, parts[0]);
      put(h + "mlp.up_proj." + kind, parts[1]);
    }
    put(h + "mlp.down_proj.weight", get(p + "down.weight"));
    put(h + "mlp.down_proj.bias", get(p + "down.bias"));
  }
  put(gpt2 ? "ln_f.weight" : "model.norm.weight", get("final_norm.weight"));
  if (gpt2) put("ln_f.bias", get("final_norm.bias"));
  if (!c.tied_embeddings) put("lm_head.weight", get("head.weight"));

  write_safetensors(dir + "/model.safetensors", out);
  std::string cfg = hf_config_json(c);
  if (dtype == ExportDtype::BF16) {
    json j = json::parse(cfg);
    j["torch_dtype"] = "bfloat16";
    cfg = j.dump(2) + "\n";
  }
  write_file_atomically(dir + "/config.json", cfg);
  json gen;
  if (c.bos_id >= 0) gen["bos_token_id"] = c.bos_id;
  if (c.eos_ids.size() == 1) gen["eos_token_id"] = c.eos_ids[0];
  else if (!c.eos_ids.empty()) gen["eos_token_id"] = c.eos_ids;
  write_file_atomically(dir + "/generation_config.json", gen.dump(2) + "\n");
}

}  // namespace frozenlm
