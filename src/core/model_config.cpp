#include "core/model_config.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace frozenlm {

using nlohmann::json;

int64_t ModelConfig::num_parameters() const {
  int64_t emb = vocab_size * dim;
  int64_t attn = dim * (q_dim() + 2 * kv_dim()) + q_dim() * dim;
  if (qkv_bias) attn += q_dim() + 2 * kv_dim();
  if (o_bias) attn += dim;
  int64_t mlp = (gated_mlp ? 3 : 2) * dim * ffn_dim + (mlp_bias ? ffn_dim * (gated_mlp ? 2 : 1) + dim : 0);
  int64_t norms = (norm_bias ? 2 : 1) * dim;
  int64_t total = emb + n_layers * (attn + mlp + 2 * norms) + norms;
  if (!tied_embeddings) total += vocab_size * dim;
  if (!rope) total += max_seq_len * dim;
  return total;
}

double ModelConfig::forward_flops_per_token(int64_t context) const {
  double per_layer = 2.0 * (dim * (q_dim() + 2 * kv_dim()) + q_dim() * dim + (gated_mlp ? 3 : 2) * dim * ffn_dim);
  double attention = 2.0 * 2.0 * context * q_dim();  // QK^T and AV (full, not causal-halved)
  return n_layers * (per_layer + attention) + 2.0 * dim * vocab_size;
}

static const json& need(const json& j, const char* key, const std::string& path) {
  if (!j.contains(key) || j[key].is_null()) throw Error(path + ": missing required field '" + key + "'");
  return j[key];
}

template <typename T>
static T get_as(const json& j, const char* key, const std::string& path) {
  const json& v = need(j, key, path);
  try {
    return v.get<T>();
  } catch (const json::exception&) {
    throw Error(path + ": field '" + key + "' has the wrong type (" + v.dump() + ")");
  }
}

template <typename T>
static T get_or(const json& j, const char* key, T dflt, const std::string& path) {
  if (!j.contains(key) || j[key].is_null()) return dflt;
  return get_as<T>(j, key, path);
}

static std::vector<int64_t> id_list(const json& j, const char* key, const std::string& path) {
  if (!j.contains(key) || j[key].is_null()) return {};
  if (j[key].is_array()) {
    std::vector<int64_t> out;
    for (auto& v : j[key]) out.push_back(v.get<int64_t>());
    return out;
  }
  return {get_as<int64_t>(j, key, path)};
}

ModelConfig load_hf_config(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw Error(path + ": cannot open (is this a Hugging Face model directory with a config.json?)");
  json j;
  try {
    j = json::parse(f);
  } catch (const json::exception& e) {
    throw Error(path + ": not valid JSON: " + e.what());
  }
  if (!j.is_object()) throw Error(path + ": not a JSON object");
  ModelConfig c;
  c.model_type = get_or<std::string>(j, "model_type", "", path);
  static const char* llama_like[] = {"llama", "mistral", "qwen2", "smollm", "tinyllama"};
  bool is_llama = false;
  for (auto t : llama_like) is_llama |= c.model_type == t;
  if (is_llama) {
    c.family = "llama";
    c.vocab_size = get_as<int64_t>(j, "vocab_size", path);
    c.dim = get_as<int64_t>(j, "hidden_size", path);
    c.n_layers = get_as<int64_t>(j, "num_hidden_layers", path);
    c.n_heads = get_as<int64_t>(j, "num_attention_heads", path);
    c.n_kv_heads = get_or<int64_t>(j, "num_key_value_heads", c.n_heads, path);
    c.ffn_dim = get_as<int64_t>(j, "intermediate_size", path);
    c.head_dim = get_or<int64_t>(j, "head_dim", c.n_heads > 0 ? c.dim / c.n_heads : 0, path);
    c.max_seq_len = get_or<int64_t>(j, "max_position_embeddings", 2048, path);
    c.norm = NormKind::RMSNorm;
    c.norm_eps = get_or<double>(j, "rms_norm_eps", 1e-6, path);
    c.rope = true;
    c.rope_theta = get_or<double>(j, "rope_theta", 10000.0, path);
    std::string act = get_or<std::string>(j, "hidden_act", "silu", path);
    if (act != "silu") throw Error(path + ": hidden_act '" + act + "' is not supported for " + c.model_type + " (only silu)");
    c.act = Activation::SiLU;
    c.gated_mlp = true;
    // Qwen2 always has q/k/v bias; Llama-family configs say so with attention_bias.
    c.qkv_bias = c.model_type == "qwen2" ? true : get_or<bool>(j, "attention_bias", false, path);
    c.o_bias = c.model_type == "qwen2" ? false : c.qkv_bias;
    c.mlp_bias = get_or<bool>(j, "mlp_bias", false, path);
    c.tied_embeddings = get_or<bool>(j, "tie_word_embeddings", false, path);
    if (j.contains("rope_scaling") && j["rope_scaling"].is_object()) {
      const json& rs = j["rope_scaling"];
      std::string type = rs.value("rope_type", rs.value("type", std::string()));
      if (type == "llama3") {
        c.rope_scaling.type = type;
        c.rope_scaling.factor = rs.value("factor", 8.0);
        c.rope_scaling.low_freq_factor = rs.value("low_freq_factor", 1.0);
        c.rope_scaling.high_freq_factor = rs.value("high_freq_factor", 4.0);
        c.rope_scaling.original_max_position_embeddings = rs.value("original_max_position_embeddings", int64_t(8192));
      } else if (type == "linear") {
        c.rope_scaling.type = type;
        c.rope_scaling.factor = rs.value("factor", 1.0);
      } else if (type != "default" && !type.empty()) {
        throw Error(path + ": rope_scaling type '" + type + "' is not supported (supported: linear, llama3)");
      }
    }
  } else if (c.model_type == "gpt2") {
    c.family = "gpt2";
    c.vocab_size = get_as<int64_t>(j, "vocab_size", path);
    c.dim = get_as<int64_t>(j, "n_embd", path);
    c.n_layers = get_as<int64_t>(j, "n_layer", path);
    c.n_heads = get_as<int64_t>(j, "n_head", path);
    c.n_kv_heads = c.n_heads;
    c.head_dim = c.n_heads > 0 ? c.dim / c.n_heads : 0;
    c.ffn_dim = get_or<int64_t>(j, "n_inner", 4 * c.dim, path);
    c.max_seq_len = get_as<int64_t>(j, "n_positions", path);
    c.norm = NormKind::LayerNorm;
    c.norm_bias = true;
    c.norm_eps = get_or<double>(j, "layer_norm_epsilon", 1e-5, path);
    c.rope = false;
    std::string act = get_or<std::string>(j, "activation_function", "gelu_new", path);
    if (act == "gelu_new" || act == "gelu_pytorch_tanh") c.act = Activation::GeluTanh;
    else if (act == "gelu") c.act = Activation::Gelu;
    else throw Error(path + ": activation_function '" + act + "' is not supported (gelu_new, gelu)");
    c.gated_mlp = false;
    c.qkv_bias = c.o_bias = c.mlp_bias = true;
    c.tied_embeddings = get_or<bool>(j, "tie_word_embeddings", true, path);
  } else {
    throw Error(path + ": unknown architecture model_type '" + c.model_type +
                "' (supported: llama, mistral, qwen2, smollm, tinyllama, gpt2)");
  }
  if (c.dim <= 0 || c.n_layers <= 0 || c.n_heads <= 0 || c.n_kv_heads <= 0 || c.vocab_size <= 0 || c.ffn_dim <= 0)
    throw Error(path + ": sizes must be positive");
  if (c.n_heads % c.n_kv_heads != 0)
    throw Error(path + ": num_attention_heads (" + std::to_string(c.n_heads) + ") is not a multiple of num_key_value_heads (" +
                std::to_string(c.n_kv_heads) + ")");
  if (c.head_dim % 2 != 0 && c.rope) throw Error(path + ": head_dim must be even for rotary embeddings");
  if (j.contains("bos_token_id") && j["bos_token_id"].is_number_integer()) c.bos_id = j["bos_token_id"].get<int64_t>();
  c.eos_ids = id_list(j, "eos_token_id", path);
  return c;
}

}  // namespace frozenlm
