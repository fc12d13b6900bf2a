#include "core/loader.h"

#include <ATen/CPUGeneratorImpl.h>

#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "core/cpu_allocator.h"
#include "core/error.h"
#include "core/fnv1a.h"
#include "core/gguf_model.h"
#include "core/llama2c_header.h"
#include "core/rope_layout.h"
#include "core/safetensors.h"
#include "core/torch_pch.h"

namespace frozenlm {

using nlohmann::json;

static bool is_dir(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}
static bool is_file(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool is_llama2c_checkpoint(const std::string& path) { return is_file(path) && !is_gguf_file(path); }

namespace {

// All tensors of a (possibly sharded) safetensors checkpoint, by name.
class Checkpoint {
 public:
  explicit Checkpoint(const std::string& dir) {
    const std::string single = dir + "/model.safetensors", index = dir + "/model.safetensors.index.json";
    if (is_file(single)) {
      add(single);
    } else if (is_file(index)) {
      std::ifstream f(index);
      json j;
      try {
        j = json::parse(f);
      } catch (const json::exception& e) {
        throw Error(index + ": not valid JSON: " + e.what());
      }
      if (!j.contains("weight_map") || !j["weight_map"].is_object()) throw Error(index + ": missing 'weight_map' object");
      std::set<std::string> shards;
      for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) shards.insert(it.value().get<std::string>());
      for (auto& s : shards) add(dir + "/" + s);
    } else {
      throw Error(dir + ": no model.safetensors or model.safetensors.index.json (only safetensors checkpoints are supported)");
    }
  }
  bool has(const std::string& n) const { return where_.count(n) > 0; }
  std::vector<std::string> files() const {
    std::vector<std::string> out;
    for (auto& f : files_) out.push_back(f->path());
    return out;
  }
  at::Tensor get(const std::string& n, std::vector<int64_t> shape) const {
    auto it = where_.find(n);
    if (it == where_.end()) throw Error(files_.front()->path() + ": tensor '" + n + "' is missing from the checkpoint");
    const SafetensorsFile& f = *files_[it->second];
    const auto& have = f.tensors().at(n).shape;
    if (have != shape) throw Error(f.path() + ": tensor '" + n + "' has shape " + fmt(have) + ", config implies " + fmt(shape));
    return f.get_f32(n);
  }
  at::Tensor get_opt(const std::string& n, std::vector<int64_t> shape) const { return has(n) ? get(n, shape) : at::Tensor(); }
  std::string prefix_of(const std::string& suffix) const {  // "transformer." or "" for GPT-2 style names
    for (auto& [n, i] : where_)
      if (n.size() >= suffix.size() && n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0)
        return n.substr(0, n.size() - suffix.size());
    throw Error(files_.front()->path() + ": tensor '*" + suffix + "' is missing from the checkpoint");
  }

 private:
  static std::string fmt(const std::vector<int64_t>& s) {
    std::string o = "[";
    for (size_t i = 0; i < s.size(); ++i) o += (i ? ", " : "") + std::to_string(s[i]);
    return o + "]";
  }
  void add(const std::string& path) {
    if (!is_file(path)) throw Error(path + ": shard file is missing");
    files_.push_back(std::make_unique<SafetensorsFile>(path));
    for (auto& [n, info] : files_.back()->tensors()) where_[n] = files_.size() - 1;
  }
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t> where_;
};

at::Device parse_device(const std::string& d) {
  try {
    at::Device dev(d);
    if (dev.is_cuda() && !torch::cuda::is_available()) throw Error("--device " + d + ": CUDA is not available in this build/machine");
    return dev;
  } catch (const c10::Error&) {
    throw Error("--device: unknown device '" + d + "' (cpu, cuda, cuda:N)");
  }
}

std::unique_ptr<FrozenLM> load_hf_llama(const ModelConfig& c, const Checkpoint& ck, WeightFormat fmt) {
  const int64_t d = c.dim, qd = c.q_dim(), kvd = c.kv_dim(), f = c.ffn_dim;
  // With tied embeddings, safetensors writers may keep only one of the two names (e.g. lm_head.weight).
  const bool emb_as_head = c.tied_embeddings && !ck.has("model.embed_tokens.weight") && ck.has("lm_head.weight");
  FrozenEmbedding emb(ck.get(emb_as_head ? "lm_head.weight" : "model.embed_tokens.weight", {c.vocab_size, d}), fmt);
  std::vector<TransformerLayer> layers(c.n_layers);
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    TransformerLayer& L = layers[i];
    L.attn_norm_w = ck.get(p + "input_layernorm.weight", {d});
    L.mlp_norm_w = ck.get(p + "post_attention_layernorm.weight", {d});
    at::Tensor wq = ck.get(p + "self_attn.q_proj.weight", {qd, d}), wk = ck.get(p + "self_attn.k_proj.weight", {kvd, d}),
               wv = ck.get(p + "self_attn.v_proj.weight", {kvd, d});
    at::Tensor bqkv;
    if (c.qkv_bias)
      bqkv = at::cat({ck.get(p + "self_attn.q_proj.bias", {qd}), ck.get(p + "self_attn.k_proj.bias", {kvd}),
                      ck.get(p + "self_attn.v_proj.bias", {kvd})});
    L.qkv = FrozenLinear(at::cat({wq, wk, wv}), bqkv, fmt);
    L.o = FrozenLinear(ck.get(p + "self_attn.o_proj.weight", {d, qd}), c.o_bias ? ck.get(p + "self_attn.o_proj.bias", {d}) : at::Tensor(), fmt);
    at::Tensor bgu;
    if (c.mlp_bias) bgu = at::cat({ck.get(p + "mlp.gate_proj.bias", {f}), ck.get(p + "mlp.up_proj.bias", {f})});
    L.up = FrozenLinear(at::cat({ck.get(p + "mlp.gate_proj.weight", {f, d}), ck.get(p + "mlp.up_proj.weight", {f, d})}), bgu, fmt);
    L.down = FrozenLinear(ck.get(p + "mlp.down_proj.weight", {d, f}), c.mlp_bias ? ck.get(p + "mlp.down_proj.bias", {d}) : at::Tensor(), fmt);
    release_cpu_cache();  // the layer's fp32 conversion buffers: never an fp32 copy of all weights at once
  }
  at::Tensor norm = ck.get("model.norm.weight", {d});
  FrozenLinear head;
  if (!c.tied_embeddings) head = FrozenLinear(ck.get("lm_head.weight", {c.vocab_size, d}), at::Tensor(), fmt);
  return std::make_unique<FrozenLM>(c, std::move(emb), at::Tensor(), std::move(layers), norm, at::Tensor(), std::move(head));
}

std::unique_ptr<FrozenLM> load_hf_gpt2(const ModelConfig& c, const Checkpoint& ck, WeightFormat fmt) {
  const int64_t d = c.dim, f = c.ffn_dim;
  const std::string P = ck.prefix_of("wte.weight");
  FrozenEmbedding emb(ck.get(P + "wte.weight", {c.vocab_size, d}), fmt);
  at::Tensor wpe = ck.get(P + "wpe.weight", {c.max_seq_len, d});
  std::vector<TransformerLayer> layers(c.n_layers);
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string p = P + "h." + std::to_string(i) + ".";
    TransformerLayer& L = layers[i];
    L.attn_norm_w = ck.get(p + "ln_1.weight", {d});
    L.attn_norm_b = ck.get(p + "ln_1.bias", {d});
    L.mlp_norm_w = ck.get(p + "ln_2.weight", {d});
    L.mlp_norm_b = ck.get(p + "ln_2.bias", {d});
    // Conv1D stores W as [in, out]: transpose to [out, in]. c_attn is already q|k|v fused.
    L.qkv = FrozenLinear(ck.get(p + "attn.c_attn.weight", {d, 3 * d}).t(), ck.get(p + "attn.c_attn.bias", {3 * d}), fmt);
    L.o = FrozenLinear(ck.get(p + "attn.c_proj.weight", {d, d}).t(), ck.get(p + "attn.c_proj.bias", {d}), fmt);
    L.up = FrozenLinear(ck.get(p + "mlp.c_fc.weight", {d, f}).t(), ck.get(p + "mlp.c_fc.bias", {f}), fmt);
    L.down = FrozenLinear(ck.get(p + "mlp.c_proj.weight", {f, d}).t(), ck.get(p + "mlp.c_proj.bias", {d}), fmt);
    release_cpu_cache();
  }
  FrozenLinear head;
  if (!c.tied_embeddings) head = FrozenLinear(ck.get("lm_head.weight", {c.vocab_size, d}), at::Tensor(), fmt);
  return std::make_unique<FrozenLM>(c, std::move(emb), wpe, std::move(layers), ck.get(P + "ln_f.weight", {d}),
                                    ck.get(P + "ln_f.bias", {d}), std::move(head));
}

// llama2.c legacy format (core/llama2c_header.h): a 28-byte header, then fp32 arrays in a fixed order.
std::unique_ptr<FrozenLM> load_llama2c(const std::string& path, WeightFormat fmt) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) throw Error(path + ": cannot open");
  const int64_t size = f.tellg();
  f.seekg(0);
  uint8_t hdr[28] = {};
  f.read(reinterpret_cast<char*>(hdr), sizeof hdr);
  const ModelConfig c = parse_llama2c_header(hdr, size_t(f.gcount()), size, path);
  f.clear();
  f.seekg(28);
  const int64_t d = c.dim, L = c.n_layers, kvd = c.kv_dim(), fd = c.ffn_dim, V = c.vocab_size, hd = c.head_dim;
  auto read = [&](std::vector<int64_t> shape) {
    at::Tensor t = at::empty(shape, at::kFloat);
    f.read(reinterpret_cast<char*>(t.data_ptr()), t.numel() * 4);
    return t;
  };
  at::Tensor tok = read({V, d}), rms_att = read({L, d}), wq = read({L, d, d}), wk = read({L, kvd, d}), wv = read({L, kvd, d}),
             wo = read({L, d, d}), rms_ffn = read({L, d}), w1 = read({L, fd, d}), w2 = read({L, d, fd}), w3 = read({L, fd, d}),
             rms_final = read({d});
  f.seekg(4 * c.max_seq_len * hd, std::ios::cur);  // freq_cis_real/imag: recomputed
  at::Tensor wcls = c.tied_embeddings ? at::Tensor() : read({V, d});
  if (!f) throw Error(path + ": read failed");
  std::vector<TransformerLayer> layers(L);
  for (int64_t i = 0; i < L; ++i) {
    TransformerLayer& Ly = layers[i];
    Ly.attn_norm_w = rms_att[i].clone();
    Ly.mlp_norm_w = rms_ffn[i].clone();
    // llama2.c rotates interleaved pairs (x0,x1),(x2,x3)…; we rotate halves (core/rope_layout.h).
    Ly.qkv = FrozenLinear(at::cat({rope_rows_to_halves(wq[i], c.n_heads), rope_rows_to_halves(wk[i], c.n_kv_heads), wv[i]}), at::Tensor(), fmt);
    Ly.o = FrozenLinear(wo[i], at::Tensor(), fmt);
    Ly.up = FrozenLinear(at::cat({w1[i], w3[i]}), at::Tensor(), fmt);
    Ly.down = FrozenLinear(w2[i], at::Tensor(), fmt);
  }
  FrozenLinear head;
  if (!c.tied_embeddings) head = FrozenLinear(wcls, at::Tensor(), fmt);
  return std::make_unique<FrozenLM>(c, FrozenEmbedding(tok, fmt), at::Tensor(), std::move(layers), rms_final, at::Tensor(),
                                    std::move(head));
}

// FNV-1a over: each file's name and size, its first and last MiB (safetensors: header + data edges).
std::string checkpoint_fingerprint(const std::vector<std::string>& files) {
  Fnv1a h;
  auto mix = [&](const void* p, size_t n) { h.mix(p, n); };
  for (const std::string& path : files) {
    std::ifstream f(path, std::ios::binary | std::ios::ate);
    if (!f) continue;
    const uint64_t size = f.tellg();
    const std::string name = path.substr(path.rfind('/') + 1);
    mix(name.data(), name.size());
    mix(&size, sizeof size);
    std::vector<char> buf(std::min<uint64_t>(size, 1 << 20));
    for (uint64_t off : {uint64_t(0), size - buf.size()}) {
      f.seekg(off);
      f.read(buf.data(), buf.size());
      mix(buf.data(), buf.size());
    }
  }
  return h.hex();
}

}  // namespace

std::unique_ptr<FrozenLM> make_random_model(const ModelConfig& c, WeightFormat fmt, uint64_t seed) {
  at::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto r = [&](std::vector<int64_t> shape) { return at::randn(shape, gen, at::kFloat) * 0.02; };
  auto ones = [&](int64_t n) { return at::ones({n}, at::kFloat); };
  auto zeros_if = [&](bool on, int64_t n) { return on ? at::zeros({n}, at::kFloat) : at::Tensor(); };
  const int64_t d = c.dim, qkv = c.q_dim() + 2 * c.kv_dim(), f = c.ffn_dim;
  std::vector<TransformerLayer> layers(c.n_layers);
  for (auto& L : layers) {
    L.attn_norm_w = ones(d);
    L.mlp_norm_w = ones(d);
    L.attn_norm_b = zeros_if(c.norm_bias, d);
    L.mlp_norm_b = zeros_if(c.norm_bias, d);
    L.qkv = FrozenLinear(r({qkv, d}), zeros_if(c.qkv_bias, qkv), fmt);
    L.o = FrozenLinear(r({d, c.q_dim()}), zeros_if(c.o_bias, d), fmt);
    L.up = FrozenLinear(r({(c.gated_mlp ? 2 : 1) * f, d}), zeros_if(c.mlp_bias, (c.gated_mlp ? 2 : 1) * f), fmt);
    L.down = FrozenLinear(r({d, f}), zeros_if(c.mlp_bias, d), fmt);
    release_cpu_cache();  // the layer's fp32 random draws
  }
  FrozenLinear head;
  if (!c.tied_embeddings) head = FrozenLinear(r({c.vocab_size, d}), at::Tensor(), fmt);
  auto lm = std::make_unique<FrozenLM>(c, FrozenEmbedding(r({c.vocab_size, d}), fmt), c.rope ? at::Tensor() : r({c.max_seq_len, d}),
                                       std::move(layers), ones(d), zeros_if(c.norm_bias, d), std::move(head));
  release_cpu_cache();
  return lm;
}

std::unique_ptr<FrozenLM> load_model(const std::string& path, const LoadOptions& opt) {
  at::NoGradGuard no_grad;
  const at::Device dev = parse_device(opt.device);
  std::unique_ptr<FrozenLM> lm;
  if (is_dir(path)) {
    ModelConfig c = load_hf_config(path + "/config.json");
    if (c.eos_ids.empty() || c.bos_id < 0) {  // fall back to generation_config.json
      std::ifstream g(path + "/generation_config.json");
      if (g) {
        json j = json::parse(g, nullptr, false);
        if (j.is_object()) {
          if (c.bos_id < 0 && j.contains("bos_token_id") && j["bos_token_id"].is_number_integer()) c.bos_id = j["bos_token_id"];
          if (c.eos_ids.empty() && j.contains("eos_token_id")) {
            if (j["eos_token_id"].is_array()) for (auto& e : j["eos_token_id"]) c.eos_ids.push_back(e.get<int64_t>());
            else if (j["eos_token_id"].is_number_integer()) c.eos_ids.push_back(j["eos_token_id"].get<int64_t>());
          }
        }
      }
    }
    Checkpoint ck(path);
    lm = c.family == "gpt2" ? load_hf_gpt2(c, ck, opt.weights) : load_hf_llama(c, ck, opt.weights);
    std::vector<std::string> files{path + "/config.json"};
    for (auto& f : ck.files()) files.push_back(f);
    lm->set_checkpoint_id(checkpoint_fingerprint(files));
  } else if (is_file(path) && is_gguf_file(path)) {
    lm = load_gguf_model(path, opt.weights, opt.keep_q8_0);
    lm->set_checkpoint_id(checkpoint_fingerprint({path}));
  } else if (is_file(path)) {
    lm = load_llama2c(path, opt.weights);
    lm->set_checkpoint_id(checkpoint_fingerprint({path}));
  } else {
    throw Error(path + ": no such model (expected a Hugging Face model directory, a GGUF file or a llama2.c .bin file)");
  }
  if (dev != at::Device(at::kCPU)) lm->to(dev);
  release_cpu_cache();  // the embedding's and the last layer's conversion buffers
  return lm;
}

}  // namespace frozenlm
