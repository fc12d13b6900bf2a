#include "core/gguf_model.h"

#include <cstring>

#include "core/cpu_allocator.h"
#include "core/error.h"
#include "core/kernels/skinny_matmul.h"
#include "core/rope_layout.h"
#include "core/torch_pch.h"
#include "core/transformer.h"
#include "core/weight_memory.h"
#include "tokenizer/gguf_vocab.h"

namespace frozenlm {

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string o = "[";
  for (size_t i = 0; i < s.size(); ++i) o += (i ? ", " : "") + std::to_string(s[i]);
  return o + "]";
}

// One tensor of the file: fp32, or (Q8_0 kept as it is) int8 values and fp16 block scales.
struct Stored {
  at::Tensor f32;   // [rows..., cols]
  at::Tensor q, d;  // Q8_0: [rows, cols] int8, [rows, cols/32] fp16
  bool is_q8_0() const { return q.defined(); }
  at::Tensor to_f32() const { return is_q8_0() ? dequantize_weight(q, d, WeightFormat::Q8_0) : f32; }
};

class TensorReader {
 public:
  explicit TensorReader(const GgufFile& f) : f_(f) {}
  bool has(const std::string& n) const { return f_.header().tensor(n) != nullptr; }
  // `shape` in PyTorch order ([out, in] for a matrix). keep_q8_0: a Q8_0 tensor comes back as (q, d).
  Stored get(const std::string& n, const std::vector<int64_t>& shape, bool keep_q8_0) const {
    const GgufTensorInfo* t = f_.header().tensor(n);
    if (!t) throw Error(f_.path() + ": tensor '" + n + "' is missing from the GGUF file");
    std::vector<int64_t> have(t->ne.rbegin(), t->ne.rend());
    if (have != shape) throw Error(f_.path() + ": tensor '" + n + "' has shape " + shape_str(have) + ", the metadata implies " + shape_str(shape));
    const uint8_t* p = f_.data(*t);
    Stored s;
    switch (t->type) {
      case GgmlType::F32: s.f32 = at::from_blob(const_cast<uint8_t*>(p), shape, at::kFloat).clone(); break;
      case GgmlType::F16: s.f32 = at::from_blob(const_cast<uint8_t*>(p), shape, at::kHalf).to(at::kFloat); break;
      case GgmlType::BF16: s.f32 = at::from_blob(const_cast<uint8_t*>(p), shape, at::kBFloat16).to(at::kFloat); break;
      case GgmlType::Q8_0: {
        const int64_t cols = int64_t(t->ne[0]), rows = int64_t(t->numel() / t->ne[0]), nb = cols / kernels::kQ8Block;
        s.q = at::empty({rows, cols}, at::kChar);
        s.d = at::empty({rows, nb}, at::kHalf);
        int8_t* q = s.q.data_ptr<int8_t>();
        uint8_t* d = reinterpret_cast<uint8_t*>(s.d.data_ptr<at::Half>());
        for (int64_t b = 0; b < rows * nb; ++b) {  // block: fp16 scale, then 32 int8
          std::memcpy(d + 2 * b, p + 34 * b, 2);
          std::memcpy(q + kernels::kQ8Block * b, p + 34 * b + 2, kernels::kQ8Block);
        }
        if (shape.size() != 2) {
          s.f32 = s.to_f32().view(shape);
          s.q = s.d = at::Tensor();
        } else if (!keep_q8_0) {
          s.f32 = s.to_f32();
          s.q = s.d = at::Tensor();
        }
        break;
      }
      default:
        throw Error(f_.path() + ": tensor '" + n + "' is stored as " + ggml_type_info(uint32_t(t->type))->name +
                    "; this loader reads F32, F16, BF16 and Q8_0 (llama.cpp's llama-quantize can convert the model to Q8_0 or F16)");
    }
    return s;
  }

 private:
  const GgufFile& f_;
};

// Builds one stored matrix from row blocks of the file (q|k|v, gate|up): exactly the file's Q8_0 when all parts
// are Q8_0 and that is the storage kept/asked for, else through fp32 into `fmt`.
FrozenLinear make_linear(std::vector<Stored> parts, const at::Tensor& bias, WeightFormat fmt, bool keep_q8_0) {
  bool all_q8 = true;
  for (const auto& p : parts) all_q8 = all_q8 && p.is_q8_0();
  if (all_q8 && (fmt == WeightFormat::Q8_0 || keep_q8_0)) {
    std::vector<at::Tensor> qs, ds;
    int64_t rows = 0;
    for (const auto& p : parts) { qs.push_back(p.q); ds.push_back(p.d); rows += p.q.size(0); }
    at::Tensor q = empty_weight({rows, qs[0].size(1)}, at::kChar);  // joined straight into weight memory: one copy
    at::cat_out(q, qs, 0);
    return FrozenLinear::from_q8_0(q, at::cat(ds), bias);
  }
  std::vector<at::Tensor> ws;
  for (const auto& p : parts) ws.push_back(p.to_f32());
  return FrozenLinear(ws.size() == 1 ? ws[0] : at::cat(ws), bias, fmt);
}

Stored permuted(Stored s, int64_t heads) {
  if (s.is_q8_0()) {
    s.q = rope_rows_to_halves(s.q, heads);
    s.d = rope_rows_to_halves(s.d, heads);
  } else {
    s.f32 = rope_rows_to_halves(s.f32, heads);
  }
  return s;
}

}  // namespace

ModelConfig gguf_model_config(const GgufHeader& h, const std::string& path) {
  const std::string arch = h.get_string("general.architecture", path);
  if (arch != "llama" && arch != "qwen2")
    throw Error(path + ": GGUF architecture '" + arch + "' is not supported (llama, qwen2)");
  const std::string K = arch + ".";
  auto positive = [&](const std::string& key, int64_t v) {
    if (v <= 0 || v > (int64_t(1) << 31)) throw Error(path + ": GGUF metadata '" + key + "' = " + std::to_string(v) + " is out of range");
    return v;
  };
  ModelConfig c;
  c.family = "llama";
  c.model_type = arch;
  c.dim = positive(K + "embedding_length", h.get_int(K + "embedding_length", path));
  c.n_layers = positive(K + "block_count", h.get_int(K + "block_count", path));
  c.ffn_dim = positive(K + "feed_forward_length", h.get_int(K + "feed_forward_length", path));
  c.n_heads = positive(K + "attention.head_count", h.get_int(K + "attention.head_count", path));
  c.n_kv_heads = positive(K + "attention.head_count_kv", h.get_int(K + "attention.head_count_kv", c.n_heads, path));
  if (c.n_heads % c.n_kv_heads != 0)
    throw Error(path + ": GGUF head_count " + std::to_string(c.n_heads) + " is not a multiple of head_count_kv " + std::to_string(c.n_kv_heads));
  c.head_dim = positive(K + "attention.key_length", h.get_int(K + "attention.key_length", c.dim / c.n_heads, path));
  if (h.get_int(K + "attention.value_length", c.head_dim, path) != c.head_dim)
    throw Error(path + ": GGUF value_length differs from key_length: not supported");
  const int64_t rope_dims = h.get_int(K + "rope.dimension_count", c.head_dim, path);
  if (rope_dims != c.head_dim || c.head_dim % 2 != 0)
    throw Error(path + ": GGUF rope.dimension_count " + std::to_string(rope_dims) + " != head dim " + std::to_string(c.head_dim) +
                ": partial rotary embeddings are not supported");
  c.max_seq_len = positive(K + "context_length", h.get_int(K + "context_length", path));
  c.norm_eps = h.get_float(K + "attention.layer_norm_rms_epsilon", 1e-5, path);
  if (!(c.norm_eps > 0 && c.norm_eps < 1)) throw Error(path + ": GGUF layer_norm_rms_epsilon must be in (0, 1)");
  c.rope_theta = h.get_float(K + "rope.freq_base", 10000.0, path);
  if (!(c.rope_theta > 1)) throw Error(path + ": GGUF rope.freq_base must be > 1");
  const GgufValue* st = h.find(K + "rope.scaling.type");
  if (st) {
    const std::string type = h.get_string(K + "rope.scaling.type", path);
    if (type == "linear") {
      c.rope_scaling.type = "linear";
      c.rope_scaling.factor = h.get_float(K + "rope.scaling.factor", 1.0, path);
      if (!(c.rope_scaling.factor > 0)) throw Error(path + ": GGUF rope.scaling.factor must be > 0");
    } else if (type != "none") {
      throw Error(path + ": GGUF rope.scaling.type '" + type + "' is not supported (none, linear)");
    }
  }
  c.qkv_bias = arch == "qwen2";
  const GgufTensorInfo* emb = h.tensor("token_embd.weight");
  if (!emb || emb->ne.size() != 2) throw Error(path + ": GGUF tensor 'token_embd.weight' is missing or not 2-D");
  c.vocab_size = h.get_int(K + "vocab_size", int64_t(emb->ne[1]), path);
  if (c.vocab_size != int64_t(emb->ne[1]))
    throw Error(path + ": GGUF " + K + "vocab_size " + std::to_string(c.vocab_size) + " != token_embd rows " + std::to_string(emb->ne[1]));
  c.tied_embeddings = h.tensor("output.weight") == nullptr;
  // BOS/EOS as llama.cpp uses them: BOS only when the tokenizer adds it (SentencePiece-style vocabularies by default).
  const bool spm = h.find("tokenizer.ggml.model") && h.get_string("tokenizer.ggml.model", path) == "llama";
  const int64_t bos = h.get_int("tokenizer.ggml.bos_token_id", -1, path), eos = h.get_int("tokenizer.ggml.eos_token_id", -1, path);
  if (h.get_bool("tokenizer.ggml.add_bos_token", spm, path) && bos >= 0 && bos < c.vocab_size) c.bos_id = bos;
  if (eos >= 0 && eos < c.vocab_size) c.eos_ids.push_back(eos);
  const int64_t eot = h.get_int("tokenizer.ggml.eot_token_id", -1, path);
  if (eot >= 0 && eot < c.vocab_size && eot != eos) c.eos_ids.push_back(eot);
  return c;
}

std::unique_ptr<FrozenLM> load_gguf_model(const std::string& path, WeightFormat fmt, bool keep_q8_0) {
  at::NoGradGuard no_grad;
  const GgufFile file(path);
  ModelConfig c = gguf_model_config(file.header(), path);
  const TensorReader r(file);
  const int64_t d = c.dim, qd = c.q_dim(), kvd = c.kv_dim(), f = c.ffn_dim;
  const bool keep = keep_q8_0 || fmt == WeightFormat::Q8_0;
  const bool llama_rope = c.model_type == "llama";  // qwen2 files keep HF's row order (llama.cpp's NEOX RoPE)
  if (r.has("rope_freqs.weight")) {
    const at::Tensor ff = r.get("rope_freqs.weight", {c.head_dim / 2}, false).f32;
    c.rope_scaling.type = "factors";
    c.rope_scaling.freq_factors.assign(ff.data_ptr<float>(), ff.data_ptr<float>() + ff.numel());
  }
  FrozenEmbedding emb(make_linear({r.get("token_embd.weight", {c.vocab_size, d}, keep)}, at::Tensor(), fmt, keep_q8_0));
  std::vector<TransformerLayer> layers(c.n_layers);
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    TransformerLayer& L = layers[i];
    L.attn_norm_w = r.get(p + "attn_norm.weight", {d}, false).f32;
    L.mlp_norm_w = r.get(p + "ffn_norm.weight", {d}, false).f32;
    Stored q = r.get(p + "attn_q.weight", {qd, d}, keep), k = r.get(p + "attn_k.weight", {kvd, d}, keep);
    if (llama_rope) {
      q = permuted(std::move(q), c.n_heads);
      k = permuted(std::move(k), c.n_kv_heads);
    }
    at::Tensor bqkv;
    if (c.qkv_bias) {
      at::Tensor bq = r.get(p + "attn_q.bias", {qd}, false).f32, bk = r.get(p + "attn_k.bias", {kvd}, false).f32;
      if (llama_rope) {
        bq = rope_rows_to_halves(bq, c.n_heads);
        bk = rope_rows_to_halves(bk, c.n_kv_heads);
      }
      bqkv = at::cat({bq, bk, r.get(p + "attn_v.bias", {kvd}, false).f32});
    }
    L.qkv = make_linear({q, k, r.get(p + "attn_v.weight", {kvd, d}, keep)}, bqkv, fmt, keep_q8_0);
    L.o = make_linear({r.get(p + "attn_output.weight", {d, qd}, keep)}, at::Tensor(), fmt, keep_q8_0);
    L.up = make_linear({r.get(p + "ffn_gate.weight", {f, d}, keep), r.get(p + "ffn_up.weight", {f, d}, keep)}, at::Tensor(), fmt, keep_q8_0);
    L.down = make_linear({r.get(p + "ffn_down.weight", {d, f}, keep)}, at::Tensor(), fmt, keep_q8_0);
    release_cpu_cache();  // the layer's conversion buffers
  }
  at::Tensor norm = r.get("output_norm.weight", {d}, false).f32;
  FrozenLinear head;
  if (!c.tied_embeddings) head = make_linear({r.get("output.weight", {c.vocab_size, d}, keep)}, at::Tensor(), fmt, keep_q8_0);
  auto lm = std::make_unique<FrozenLM>(c, std::move(emb), at::Tensor(), std::move(layers), norm, at::Tensor(), std::move(head));
  release_cpu_cache();
  return lm;
}

// ---- writing ----

GgufExportType parse_gguf_export_type(const std::string& s) {
  if (s == "f32") return GgufExportType::F32;
  if (s == "f16") return GgufExportType::F16;
  if (s == "bf16") return GgufExportType::BF16;
  if (s == "q8_0") return GgufExportType::Q8_0;
  throw Error("--type: unknown GGUF tensor type '" + s + "' (f32, f16, bf16, q8_0)");
}

namespace {

std::vector<uint64_t> ggml_ne(const at::Tensor& t) {
  auto s = t.sizes().vec();
  return std::vector<uint64_t>(s.rbegin(), s.rend());
}

void fill_from(const at::Tensor& t, std::vector<uint8_t>& out) {
  const at::Tensor c = t.contiguous();
  const auto* p = static_cast<const uint8_t*>(c.data_ptr());
  out.assign(p, p + c.numel() * c.element_size());
}

// A matrix as the file stores it: q|d blocks of 34 bytes from Q8_0 storage.
void fill_q8_0(const at::Tensor& q, const at::Tensor& d, std::vector<uint8_t>& out) {
  const at::Tensor qc = q.contiguous(), dc = d.contiguous();
  const int64_t blocks = dc.numel();
  out.resize(blocks * 34);
  const int8_t* qp = qc.data_ptr<int8_t>();
  const uint8_t* dp = reinterpret_cast<const uint8_t*>(dc.data_ptr<at::Half>());
  for (int64_t b = 0; b < blocks; ++b) {
    std::memcpy(out.data() + 34 * b, dp + 2 * b, 2);
    std::memcpy(out.data() + 34 * b + 2, qp + kernels::kQ8Block * b, kernels::kQ8Block);
  }
}

class ModelWriter {
 public:
  ModelWriter(GgufWriter& w, GgufExportType type) : w_(w), type_(type) {}

  void vector(const std::string& name, const at::Tensor& t) {  // 1-D tensors: always F32, as llama.cpp keeps them
    const at::Tensor v = t.detach().to(at::kCPU).to(at::kFloat).contiguous();
    w_.add_tensor(name, ggml_ne(v), GgmlType::F32, [v](std::vector<uint8_t>& b) { fill_from(v, b); });
  }

  // Rows [row0, row0 + rows) of a stored matrix; heads > 0: apply llama.cpp's Q/K row permutation.
  void matrix(const std::string& name, const FrozenLinear& lin, int64_t row0, int64_t rows, int64_t heads) {
    const int64_t in = lin.in_features();
    const std::vector<uint64_t> ne{uint64_t(in), uint64_t(rows)};
    const FrozenLinear* l = &lin;
    if (type_ == GgufExportType::Q8_0 && in % kernels::kQ8Block == 0) {
      w_.add_tensor(name, ne, GgmlType::Q8_0, [l, row0, rows, heads](std::vector<uint8_t>& b) {
        at::Tensor q, d;
        if (l->format() == WeightFormat::Q8_0) {  // as stored: bit-exact
          q = l->raw_weight().detach().to(at::kCPU).narrow(0, row0, rows);
          d = l->raw_scale().detach().to(at::kCPU).narrow(0, row0, rows);
        } else {  // quantised with ggml's rule (FrozenLinear's Q8_0 is quantize_row_q8_0_ref)
          const FrozenLinear requant(dequant(*l, row0, rows), at::Tensor(), WeightFormat::Q8_0);
          q = requant.raw_weight();
          d = requant.raw_scale();
        }
        if (heads > 0) {
          q = rope_rows_to_interleaved(q, heads);
          d = rope_rows_to_interleaved(d, heads);
        }
        fill_q8_0(q, d, b);
      });
      return;
    }
    // Q8_0 files keep rows that are not whole blocks in F16, as llama.cpp does.
    const GgmlType gt = type_ == GgufExportType::F32 ? GgmlType::F32 : type_ == GgufExportType::BF16 ? GgmlType::BF16 : GgmlType::F16;
    w_.add_tensor(name, ne, gt, [l, row0, rows, heads, gt](std::vector<uint8_t>& b) {
      at::Tensor m = dequant(*l, row0, rows);
      if (heads > 0) m = rope_rows_to_interleaved(m, heads);
      fill_from(gt == GgmlType::F32 ? m : m.to(gt == GgmlType::BF16 ? at::kBFloat16 : at::kHalf), b);
    });
  }

 private:
  // Rows [row0, row0 + rows) of a stored matrix in fp32.
  static at::Tensor dequant(const FrozenLinear& lin, int64_t row0, int64_t rows) {
    const at::Tensor& sc = lin.raw_scale();
    return dequantize_weight(lin.raw_weight().detach().to(at::kCPU).narrow(0, row0, rows),
                             sc.defined() ? sc.to(at::kCPU).narrow(0, row0, rows) : sc, lin.format()).contiguous();
  }
  GgufWriter& w_;
  GgufExportType type_;
};

// llama.cpp's rope_freqs.weight for Llama 3 scaling: the divisor of each inverse frequency.
std::vector<float> llama3_freq_factors(const ModelConfig& c) {
  const RopeScaling& rs = c.rope_scaling;
  std::vector<float> out;
  const double low_wavelen = rs.original_max_position_embeddings / rs.low_freq_factor;
  const double high_wavelen = rs.original_max_position_embeddings / rs.high_freq_factor;
  for (int64_t i = 0; i < c.head_dim; i += 2) {
    const double freq = 1.0 / std::pow(c.rope_theta, double(i) / double(c.head_dim)), wavelen = 2 * M_PI / freq;
    if (wavelen < high_wavelen) {
      out.push_back(1.0f);
    } else if (wavelen > low_wavelen) {
      out.push_back(float(rs.factor));
    } else {
      const double smooth = (rs.original_max_position_embeddings / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
      out.push_back(float(1.0 / ((1 - smooth) / rs.factor + smooth)));
    }
  }
  return out;
}

}  // namespace

void save_gguf_model(const FrozenLM& lm, const GgufVocab& vocab, const std::string& path, GgufExportType type, const std::string& name) {
  at::NoGradGuard no_grad;
  const ModelConfig& c = lm.config();
  if (c.family != "llama" || c.mlp_bias || c.o_bias || c.norm_bias || !c.gated_mlp || c.act != Activation::SiLU)
    throw Error("export --format gguf: only Llama-family models (Llama, Mistral, SmolLM, llama2.c; Qwen2 with its q/k/v biases) "
                "can be written; this one is " + c.model_type + (c.family == "gpt2" ? " (GPT-2)" : " with biases"));
  const bool qwen2 = c.model_type == "qwen2";
  if (c.qkv_bias && !qwen2) throw Error("export --format gguf: a Llama with attention biases has no GGUF form here (only Qwen2's)");
  const std::string arch = qwen2 ? "qwen2" : "llama", K = arch + ".";
  GgufWriter w;
  w.add_string("general.architecture", arch);
  w.add_string("general.name", name);
  w.add_u32(K + "context_length", uint32_t(c.max_seq_len));
  w.add_u32(K + "embedding_length", uint32_t(c.dim));
  w.add_u32(K + "block_count", uint32_t(c.n_layers));
  w.add_u32(K + "feed_forward_length", uint32_t(c.ffn_dim));
  w.add_u32(K + "attention.head_count", uint32_t(c.n_heads));
  w.add_u32(K + "attention.head_count_kv", uint32_t(c.n_kv_heads));
  if (c.head_dim * c.n_heads != c.dim) {
    w.add_u32(K + "attention.key_length", uint32_t(c.head_dim));
    w.add_u32(K + "attention.value_length", uint32_t(c.head_dim));
  }
  w.add_f32(K + "attention.layer_norm_rms_epsilon", float(c.norm_eps));
  w.add_f32(K + "rope.freq_base", float(c.rope_theta));
  w.add_u32(K + "rope.dimension_count", uint32_t(c.head_dim));
  if (c.rope_scaling.type == "linear") {
    w.add_string(K + "rope.scaling.type", "linear");
    w.add_f32(K + "rope.scaling.factor", float(c.rope_scaling.factor));
  }
  // general.file_type: llama.cpp's LLAMA_FTYPE (0 all F32, 1 mostly F16, 7 mostly Q8_0, 32 mostly BF16).
  w.add_u32("general.file_type", type == GgufExportType::F32 ? 0 : type == GgufExportType::F16 ? 1 : type == GgufExportType::BF16 ? 32 : 7);
  write_gguf_vocab(w, vocab, c.vocab_size);

  ModelWriter mw(w, type);
  const int64_t d = c.dim, qd = c.q_dim(), kvd = c.kv_dim(), f = c.ffn_dim;
  const int64_t qh = qwen2 ? 0 : c.n_heads, kh = qwen2 ? 0 : c.n_kv_heads;
  mw.matrix("token_embd.weight", lm.token_embedding().as_linear(), 0, c.vocab_size, 0);
  mw.vector("output_norm.weight", lm.final_norm_weight());
  if (!c.tied_embeddings) mw.matrix("output.weight", lm.output_head(), 0, c.vocab_size, 0);
  if (c.rope_scaling.type == "factors" || c.rope_scaling.type == "llama3") {
    const std::vector<float> ff = c.rope_scaling.type == "factors" ? c.rope_scaling.freq_factors : llama3_freq_factors(c);
    mw.vector("rope_freqs.weight", at::tensor(ff, at::kFloat));
  }
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const TransformerLayer& L = lm.layers()[i];
    const std::string p = "blk." + std::to_string(i) + ".";
    mw.vector(p + "attn_norm.weight", L.attn_norm_w);
    mw.vector(p + "ffn_norm.weight", L.mlp_norm_w);
    mw.matrix(p + "attn_q.weight", L.qkv, 0, qd, qh);
    mw.matrix(p + "attn_k.weight", L.qkv, qd, kvd, kh);
    mw.matrix(p + "attn_v.weight", L.qkv, qd + kvd, kvd, 0);
    if (c.qkv_bias) {
      const at::Tensor b = L.qkv.bias();
      mw.vector(p + "attn_q.bias", b.narrow(0, 0, qd));
      mw.vector(p + "attn_k.bias", b.narrow(0, qd, kvd));
      mw.vector(p + "attn_v.bias", b.narrow(0, qd + kvd, kvd));
    }
    mw.matrix(p + "attn_output.weight", L.o, 0, d, 0);
    mw.matrix(p + "ffn_gate.weight", L.up, 0, f, 0);
    mw.matrix(p + "ffn_up.weight", L.up, f, f, 0);
    mw.matrix(p + "ffn_down.weight", L.down, 0, d, 0);
  }
  w.write(path);
}

}  // namespace frozenlm
