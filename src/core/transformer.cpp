#include "core/transformer.h"

#include "core/fnv1a.h"

#include <cmath>
#include <cstdio>

#include "core/error.h"
#include "core/torch_pch.h"

namespace frozenlm {

FrozenLM::FrozenLM(ModelConfig cfg, FrozenEmbedding tok_emb, at::Tensor pos_emb, std::vector<TransformerLayer> layers,
                   at::Tensor final_norm_w, at::Tensor final_norm_b, FrozenLinear head)
    : cfg_(std::move(cfg)),
      tok_emb_(std::move(tok_emb)),
      pos_emb_(std::move(pos_emb)),
      layers_(std::move(layers)),
      final_norm_w_(std::move(final_norm_w)),
      final_norm_b_(std::move(final_norm_b)),
      head_(std::move(head)) {
  tied_ = !head_.raw_weight().defined();
  // The storage format asked for: a Q8_0 model may hold per-row int8 matrices where rows are not whole blocks.
  fmt_ = tok_emb_.as_linear().format();
  for (const auto& L : layers_)
    for (const FrozenLinear* f : {&L.qkv, &L.o, &L.up, &L.down})
      if (f->format() == WeightFormat::Q8_0) fmt_ = WeightFormat::Q8_0;
  if (cfg_.rope) {
    // inv_freq[i] = θ^(-2i/hd), as in Hugging Face (computed in fp32), then the checkpoint's scaling rule.
    const int64_t hd = cfg_.head_dim;
    at::Tensor inv = 1.0 / at::pow(cfg_.rope_theta, at::arange(0, hd, 2, at::kLong).to(at::kFloat) / double(hd));
    const RopeScaling& rs = cfg_.rope_scaling;
    if (rs.type == "linear") {
      inv = inv / rs.factor;
    } else if (rs.type == "llama3") {
      const double old_ctx = double(rs.original_max_position_embeddings);
      const double low_wavelen = old_ctx / rs.low_freq_factor, high_wavelen = old_ctx / rs.high_freq_factor;
      at::Tensor wavelen = 2 * M_PI / inv;
      at::Tensor scaled = at::where(wavelen > low_wavelen, inv / rs.factor, inv);
      at::Tensor smooth = (old_ctx / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
      at::Tensor smoothed = (1 - smooth) * scaled / rs.factor + smooth * scaled;
      at::Tensor medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
      inv = at::where(medium, smoothed, scaled);
    } else if (rs.type == "factors") {
      TORCH_CHECK(int64_t(rs.freq_factors.size()) == hd / 2, "rope freq_factors: need head_dim / 2 values");
      inv = inv / at::tensor(rs.freq_factors, at::kFloat);
    }
    inv_freq_ = inv.contiguous();
  }
}

at::Tensor FrozenLM::embed(const at::Tensor& ids) const {
  // No graph unless the table itself is being trained (fine-tuning): then gradients reach it through the lookup.
  at::AutoGradMode grad(tok_emb_.as_linear().raw_weight().requires_grad() && at::GradMode::is_enabled());
  return tok_emb_.lookup(ids.to(device_, at::kLong));
}

at::Tensor FrozenLM::head(const at::Tensor& hidden) const {
  return tied_ ? tok_emb_.as_linear().forward(hidden) : head_.forward(hidden);
}

at::Tensor FrozenLM::norm(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) const {
  if (cfg_.norm == NormKind::LayerNorm) return at::layer_norm(x, {cfg_.dim}, w, b, cfg_.norm_eps);
  // RMSNorm: x / sqrt(mean(x²) + eps) · w
  return x * at::rsqrt(x.pow(2).mean(-1, /*keepdim=*/true) + cfg_.norm_eps) * w;
}

std::pair<at::Tensor, at::Tensor> FrozenLM::rope_tables(const at::Tensor& pos) const {
  at::Tensor freqs = pos.to(inv_freq_.scalar_type()).unsqueeze(-1) * inv_freq_;  // [B, T, hd/2]
  at::Tensor emb = at::cat({freqs, freqs}, -1).unsqueeze(1);        // [B, 1, T, hd]
  at::Tensor sin = at::cat({-freqs.sin(), freqs.sin()}, -1).unsqueeze(1);  // sign of rotate-half folded in
  return {emb.cos(), sin};
}

// Rotary embedding, rotate-half convention: (x1, x2) -> (x1·cos − x2·sin, x2·cos + x1·sin) per half.
// roll(x, hd/2) = (x2, x1), and the sign lives in `sin` (see rope_tables): one op each way, no slicing.
at::Tensor FrozenLM::rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) const {
  return x * cos + at::roll(x, {x.size(-1) / 2}, {-1}) * sin;
}

void KVCache::reserve(int64_t positions) {
  const int64_t cap = capacity();
  if (positions <= cap) return;
  const int64_t n = std::max(positions, 2 * cap);
  auto grow = [&](at::Tensor& t, int64_t dim) {
    auto shape = t.sizes().vec();
    shape[dim] = n;
    at::Tensor g = at::zeros(shape, t.options());
    g.narrow(dim, 0, len).copy_(t.narrow(dim, 0, len));
    t = g;
  };
  for (auto& t : k_buf) grow(t, 2);
  for (auto& t : v_buf) grow(t, 2);
  grow(mask_buf, 1);
}

void KVCache::select_rows(const at::Tensor& idx) {
  for (auto& t : k_buf) t = t.index_select(0, idx);
  for (auto& t : v_buf) t = t.index_select(0, idx);
  mask_buf = mask_buf.index_select(0, idx);
  next_pos = next_pos.index_select(0, idx);
}

KVCache FrozenLM::new_cache(int64_t batch, int64_t capacity) const {
  KVCache c;
  auto opt = at::TensorOptions().device(device_);
  capacity = std::max<int64_t>(capacity, 0);
  for (int64_t l = 0; l < cfg_.n_layers; ++l) {
    c.k_buf.push_back(at::zeros({batch, cfg_.n_kv_heads, capacity, cfg_.head_dim}, opt.dtype(dtype_)));
    c.v_buf.push_back(at::zeros({batch, cfg_.n_kv_heads, capacity, cfg_.head_dim}, opt.dtype(dtype_)));
  }
  c.mask_buf = at::zeros({batch, capacity}, opt.dtype(at::kBool));
  c.next_pos = at::zeros({batch}, opt.dtype(at::kLong));
  return c;
}

// softmax(q·Kᵀ · scale, blocked keys at −1e30) for qg [B, Hkv, G·T, hd], k [B, Hkv, S, hd], blocked
// [B, 1, 1, T, S] -> [B, Hkv, G·T, S]. The −1e30 is finite: rows with every key blocked (all padding) stay NaN-free.
static at::Tensor attention_probs(const at::Tensor& qg, const at::Tensor& k, const at::Tensor& blocked, double scale, int64_t G) {
  const int64_t B = qg.size(0), Hkv = qg.size(1), T = qg.size(2) / G, S = k.size(2);
  at::Tensor scores = at::matmul(qg, k.transpose(-1, -2)).mul_(scale);  // [B, Hkv, G·T, S]
  scores = scores.view({B, Hkv, G, T, S}).masked_fill(blocked, -1e30);
  return at::softmax(scores, -1).view({B, Hkv, G * T, S});
}

// Attention as one autograd node for training: it keeps q, K and V (which the two matmuls kept anyway) and recomputes
// the probabilities in backward instead of keeping them — [B, H, T, S] per layer, the largest activation of a
// training step at long contexts (Llama-3.2-1B shape, batch 4 × 276: 39 MiB a layer, 0.6 GiB in all).
struct AttentionFn : public torch::autograd::Function<AttentionFn> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& qg, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& blocked, double scale, int64_t G) {
    ctx->save_for_backward({qg, k, v});
    ctx->saved_data["blocked"] = blocked;
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["G"] = G;
    return at::matmul(attention_probs(qg, k, blocked, scale, G), v);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list g) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &qg = saved[0], &k = saved[1], &v = saved[2];
    const at::Tensor blocked = ctx->saved_data["blocked"].toTensor();
    const double scale = ctx->saved_data["scale"].toDouble();
    const int64_t G = ctx->saved_data["G"].toInt();
    const at::Tensor P = attention_probs(qg, k, blocked, scale, G);  // [B, Hkv, G·T, S]
    const at::Tensor& dO = g[0];                                     // [B, Hkv, G·T, hd]
    const at::Tensor dV = at::matmul(P.transpose(-1, -2), dO);
    const at::Tensor dP = at::matmul(dO, v.transpose(-1, -2));
    // softmax backward, then the mask (blocked scores were constants) and the scale
    at::Tensor dS = P * (dP - (dP * P).sum(-1, /*keepdim=*/true));
    const int64_t B = qg.size(0), Hkv = qg.size(1), T = qg.size(2) / G, S = k.size(2);
    dS = dS.view({B, Hkv, G, T, S}).masked_fill(blocked, 0.0).view({B, Hkv, G * T, S}).mul_(scale);
    return {at::matmul(dS, k), at::matmul(dS.transpose(-1, -2), qg), dV, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

static at::Tensor attention(const at::Tensor& qg, const at::Tensor& k, const at::Tensor& v, const at::Tensor& blocked, double scale, int64_t G) {
  if (at::GradMode::is_enabled() && (qg.requires_grad() || k.requires_grad() || v.requires_grad()))
    return AttentionFn::apply(qg, k, v, blocked, scale, G);
  return at::matmul(attention_probs(qg, k, blocked, scale, G), v);
}

// silu(gate) · up of the fused up-projection output [.., 2·ffn] (gate first). As one autograd node it keeps only its
// input for backward — autograd's silu then mul would also keep silu(gate), another [B, T, ffn] per layer (on the
// Llama-3.2-1B shape at batch 4 × 256: 0.55 GiB of the training step's peak).
struct SwiGluFn : public torch::autograd::Function<SwiGluFn> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& gu) {
    ctx->save_for_backward({gu});
    const auto parts = gu.chunk(2, -1);
    return at::silu(parts[0]) * parts[1];
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list g) {
    const at::Tensor gu = ctx->get_saved_variables()[0];
    const auto parts = gu.chunk(2, -1);
    const at::Tensor& gate = parts[0];
    const at::Tensor sig = at::sigmoid(gate);
    // d silu(x)/dx = σ(x) · (1 + x · (1 − σ(x)))
    at::Tensor d_gate = g[0] * parts[1] * sig * (1 + gate * (1 - sig));
    at::Tensor d_up = g[0] * (gate * sig);
    return {at::cat({d_gate, d_up}, -1)};
  }
};

static at::Tensor swiglu(const at::Tensor& gu) {
  if (at::GradMode::is_enabled() && gu.requires_grad()) return SwiGluFn::apply(gu);
  const auto parts = gu.chunk(2, -1);
  return at::silu(parts[0]) * parts[1];
}

ForwardOutput FrozenLM::forward(const ForwardInput& in, KVCache* cache, const ForwardOptions& opt) const {
  // ---- one new token id per row with a cache: the lean decode step, embedded without tensor ops (each costs
  // microseconds, a 100M-shape token at the bandwidth wall only ~4 ms) ----
  if (cache && !in.embeds.defined() && in.ids.defined() && in.ids.dim() == 2 && in.ids.size(1) == 1 && in.ids.device().is_cpu() &&
      in.ids.scalar_type() == at::kLong && in.ids.is_contiguous() && can_decode_lean(in.ids.size(0), cache, in, opt) &&
      !(at::GradMode::is_enabled() && tok_emb_.as_linear().raw_weight().requires_grad())) {
    const int64_t B = in.ids.size(0);
    const int64_t* ids = in.ids.data_ptr<int64_t>();
    for (int64_t b = 0; b < B; ++b)
      if (ids[b] < 0 || ids[b] >= cfg_.vocab_size) throw Error("forward: token id out of range [0, " + std::to_string(cfg_.vocab_size) + ")");
    std::vector<float> x(B * cfg_.dim);
    tok_emb_.lookup_into(ids, B, x.data());
    return decode_step(x.data(), B, in, *cache, opt);
  }
  // ---- input: ids or embeddings -> x [B, T, d] ----
  at::Tensor x;
  if (in.embeds.defined()) {
    if (in.embeds.dim() != 3 || in.embeds.size(2) != cfg_.dim)
      throw Error("forward: embeds must be [B, T, " + std::to_string(cfg_.dim) + "]");
    x = in.embeds.to(device_, dtype_);
  } else if (in.ids.defined()) {
    if (in.ids.dim() != 2) throw Error("forward: ids must be [B, T]");
    at::Tensor ids = in.ids.to(device_, at::kLong);
    if (ids.numel() > 0 && (ids.min().item<int64_t>() < 0 || ids.max().item<int64_t>() >= cfg_.vocab_size))
      throw Error("forward: token id out of range [0, " + std::to_string(cfg_.vocab_size) + ")");
    x = tok_emb_.lookup(ids);
  } else {
    throw Error("forward: give ids or embeds");
  }
  if (cache && x.dim() == 3 && x.size(1) == 1 && x.scalar_type() == at::kFloat && !(at::GradMode::is_enabled() && x.requires_grad()) &&
      can_decode_lean(x.size(0), cache, in, opt)) {
    const at::Tensor xc = x.contiguous();
    return decode_step(xc.data_ptr<float>(), x.size(0), in, *cache, opt);
  }
  const int64_t B = x.size(0), T = x.size(1);
  const int64_t H = cfg_.n_heads, Hkv = cfg_.n_kv_heads, hd = cfg_.head_dim, G = H / Hkv;
  auto lopt = at::TensorOptions().device(device_).dtype(at::kLong);

  at::Tensor mask = in.mask.defined() ? in.mask.to(device_).to(at::kBool) : at::ones({B, T}, lopt.dtype(at::kBool));
  if (mask.size(0) != B || mask.size(1) != T) throw Error("forward: mask must be [B, T]");
  if (cache && cache->batch() != B) throw Error("forward: KV cache batch size differs from the input's");
  const int64_t past = cache ? cache->length() : 0;
  at::Tensor start = cache ? cache->next_pos : at::zeros({B}, lopt);

  // Position ids: number of real tokens before this one (so padding never shifts positions).
  at::Tensor pos = in.position_ids.defined()
                       ? in.position_ids.to(device_, at::kLong)
                       : (start.unsqueeze(1) + mask.to(at::kLong).cumsum(1) - 1).clamp_min(0);  // [B, T]
  const int64_t S = past + T;
  at::Tensor key_mask = mask;  // [B, S]
  if (cache) {
    cache->reserve(S);
    cache->mask_buf.narrow(1, past, T).copy_(mask);
    key_mask = cache->mask_buf.narrow(1, 0, S);
  }
  // allowed[b, i, j]: query i (absolute past + i) may see key j.
  at::Tensor causal = at::arange(S, lopt).unsqueeze(0) <= (at::arange(T, lopt) + past).unsqueeze(1);  // [T, S]
  at::Tensor blocked = causal.unsqueeze(0).logical_and(key_mask.unsqueeze(1)).logical_not()            // [B, T, S]
                           .view({B, 1, 1, T, S});
  if (cache) {
    cache->next_pos = start + mask.to(at::kLong).sum(1);
    cache->len = S;
  }

  if (!cfg_.rope) {
    if (pos.numel() > 0 && pos.max().item<int64_t>() >= cfg_.max_seq_len)
      throw Error("forward: position " + std::to_string(pos.max().item<int64_t>()) + " beyond the model's " +
                  std::to_string(cfg_.max_seq_len) + " learned positions");
    x = x + pos_emb_.index_select(0, pos.reshape({-1})).view({B, T, cfg_.dim});
  }
  at::Tensor cos, sin;
  if (cfg_.rope) std::tie(cos, sin) = rope_tables(pos);
  const double scale = 1.0 / std::sqrt(double(hd));

  ForwardOutput out;
  if (opt.stop_after_layer > int64_t(layers_.size())) throw Error("forward: stop_after_layer beyond the model's " + std::to_string(layers_.size()) + " layers");
  for (size_t l = 0; l < layers_.size(); ++l) {
    if (opt.stop_after_layer >= 0 && int64_t(l) == opt.stop_after_layer) break;
    const TransformerLayer& L = layers_[l];
    if (opt.all_hidden) out.layer_hidden.push_back(x);
    // ---- attention ----
    at::Tensor h = norm(x, L.attn_norm_w, L.attn_norm_b);
    auto qkv = L.qkv.forward(h).split_with_sizes({H * hd, Hkv * hd, Hkv * hd}, 2);  // one matmul, one split node
    at::Tensor q = qkv[0].view({B, T, H, hd}).transpose(1, 2);                        // [B, H, T, hd]
    at::Tensor k = qkv[1].view({B, T, Hkv, hd}).transpose(1, 2);                      // [B, Hkv, T, hd]
    at::Tensor v = qkv[2].view({B, T, Hkv, hd}).transpose(1, 2);
    if (cfg_.rope) {
      q = rope(q, cos, sin);
      k = rope(k, cos, sin);
    }
    if (cache) {
      // Written into the preallocated buffers; attention reads them back as [B, Hkv, S, hd] (through a cat when
      // gradients must reach the new keys/values).
      cache->k_buf[l].narrow(2, past, T).copy_(k.detach());
      cache->v_buf[l].narrow(2, past, T).copy_(v.detach());
      if (at::GradMode::is_enabled() && (k.requires_grad() || v.requires_grad())) {
        k = at::cat({cache->k_buf[l].narrow(2, 0, past), k}, 2);
        v = at::cat({cache->v_buf[l].narrow(2, 0, past), v}, 2);
      } else {
        k = cache->k_buf[l].narrow(2, 0, S);
        v = cache->v_buf[l].narrow(2, 0, S);
      }
    } else {
      // Contiguous [B, Hkv, S, hd]: Kᵀ is then a transposed view, which BLAS takes as is (4× faster than a
      // materialised Kᵀ on the 100M bench).
      k = k.contiguous();
      v = v.contiguous();
    }
    // Grouped-query attention without copying K/V: the G query heads that share a KV head are stacked along time.
    at::Tensor qg = q.reshape({B, Hkv, G * T, hd});
    at::Tensor att = attention(qg, k, v, blocked, scale, G).view({B, H, T, hd}).transpose(1, 2).reshape({B, T, H * hd});
    x = x + L.o.forward(att);
    // ---- MLP ----
    h = norm(x, L.mlp_norm_w, L.mlp_norm_b);
    at::Tensor m;
    if (cfg_.gated_mlp) {
      m = swiglu(L.up.forward(h));  // silu(gate) · up
    } else {
      m = L.up.forward(h);
      m = cfg_.act == Activation::GeluTanh ? at::gelu(m, "tanh") : cfg_.act == Activation::Gelu ? at::gelu(m) : at::silu(m);
    }
    x = x + L.down.forward(m);
  }
  if (opt.stop_after_layer >= 0) {
    out.hidden = x;
    return out;
  }
  if (opt.all_hidden) out.layer_hidden.push_back(x);
  at::Tensor final_h = norm(x, final_norm_w_, final_norm_b_);
  if (opt.hidden) out.hidden = final_h;
  if (opt.logits) out.logits = head(opt.last_logits_only ? final_h.narrow(1, T - 1, 1) : final_h);
  return out;
}

void FrozenLM::to(const at::Device& d, at::ScalarType dtype) {
  if (dtype != at::kFloat && fmt_ != WeightFormat::F32) throw Error("FrozenLM::to: a non-fp32 compute dtype needs f32 weight storage");
  tok_emb_.as_linear().to(d, dtype);
  head_.to(d, dtype);
  auto mv = [&](at::Tensor& t) { if (t.defined()) t = t.to(d, t.is_floating_point() ? dtype : t.scalar_type()); };
  mv(pos_emb_);
  mv(final_norm_w_);
  mv(final_norm_b_);
  mv(inv_freq_);
  for (auto& L : layers_) {
    mv(L.attn_norm_w); mv(L.attn_norm_b); mv(L.mlp_norm_w); mv(L.mlp_norm_b);
    L.qkv.to(d, dtype); L.o.to(d, dtype); L.up.to(d, dtype); L.down.to(d, dtype);
  }
  device_ = d;
  dtype_ = dtype;
}

std::vector<std::pair<std::string, at::Tensor>> FrozenLM::named_tensors() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  auto add = [&](const std::string& n, const at::Tensor& t) { if (t.defined()) out.push_back({n, t}); };
  auto add_lin = [&](const std::string& n, const FrozenLinear& f) {
    add(n + ".weight", f.raw_weight());
    add(n + ".scale", f.raw_scale());
    add(n + ".bias", f.bias());
  };
  add_lin("tok_emb", tok_emb_.as_linear());
  add("pos_emb", pos_emb_);
  for (size_t l = 0; l < layers_.size(); ++l) {
    const auto& L = layers_[l];
    const std::string p = "layers." + std::to_string(l) + ".";
    add(p + "attn_norm.weight", L.attn_norm_w); add(p + "attn_norm.bias", L.attn_norm_b);
    add_lin(p + "qkv", L.qkv); add_lin(p + "o", L.o);
    add(p + "mlp_norm.weight", L.mlp_norm_w); add(p + "mlp_norm.bias", L.mlp_norm_b);
    add_lin(p + "up", L.up); add_lin(p + "down", L.down);
  }
  add("final_norm.weight", final_norm_w_);
  add("final_norm.bias", final_norm_b_);
  if (!tied_) add_lin("head", head_);
  return out;
}

int64_t FrozenLM::weight_bytes() const {
  int64_t b = 0;
  for (auto& [n, t] : named_tensors()) b += t.numel() * t.element_size();
  return b;
}

int64_t FrozenLM::num_parameters() const {
  int64_t n = 0;
  for (auto& [name, t] : named_tensors())
    if (name.size() < 6 || name.compare(name.size() - 6, 6, ".scale") != 0) n += t.numel();
  return n;
}

std::string FrozenLM::weights_hash() const {
  Fnv1a h;
  for (auto& [name, t] : named_tensors()) {
    h.mix(name.data(), name.size());
    at::Tensor c = t.to(at::kCPU).contiguous();
    h.mix(c.data_ptr(), c.numel() * c.element_size());
  }
  return h.hex();
}

}  // namespace frozenlm
