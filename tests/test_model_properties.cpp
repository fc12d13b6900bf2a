// Properties every frozen LM must have, checked on the tiny reference fixtures and the real models:
// KV cache == full recomputation, padded batch == one by one, embeddings input == ids, gradients to the input
// embeddings == finite differences (fp64), weights untouched by backward, compact storage close to fp32.
#include "core/error.h"
#include "core/generate.h"
#include "core/kernels/panel_matmul.h"
#include "core/kernels/skinny_matmul.h"
#include "core/loader.h"
#include "test_util.h"

namespace frozenlm::test {

class EveryModel : public ::testing::TestWithParam<std::string> {
 protected:
  std::unique_ptr<FrozenLM> load(WeightFormat f = WeightFormat::F32) {
    LoadOptions o;
    o.weights = f;
    const std::string p = GetParam();
    return load_model(p == "tiny-llama" || p == "tiny-gpt2" ? fixtures() + "/" + p : p == "tinystories" ? tinystories() : stories260k(), o);
  }
  at::Tensor random_ids(const FrozenLM& lm, int64_t B, int64_t T, uint64_t seed) {
    auto g = at::make_generator<at::CPUGeneratorImpl>(seed);
    return at::randint(3, lm.vocab_size(), {B, T}, g, at::kLong);
  }
};

// Whether any matrix of the model is stored in Q8_0 blocks (fp16 scales): rows that are whole blocks of 32.
static bool lm_has_q8_blocks(const FrozenLM& lm) {
  for (auto& [n, t] : lm.named_tensors())
    if (t.scalar_type() == at::kHalf) return true;
  return false;
}

static at::Tensor logits_of(const FrozenLM& lm, const at::Tensor& ids, const at::Tensor& mask = {}) {
  ForwardInput in;
  in.ids = ids;
  in.mask = mask;
  return lm.forward(in).logits;
}

TEST_P(EveryModel, KvCacheDecodingEqualsFullRecomputation) {
  auto lm = load();
  at::NoGradGuard ng;
  at::Tensor ids = random_ids(*lm, 2, 14, 7);
  at::Tensor full = logits_of(*lm, ids);
  for (bool prefix_as_embeds : {false, true}) {
    KVCache cache = lm->new_cache(2);
    ForwardInput p;
    if (prefix_as_embeds) p.embeds = lm->embed(ids.narrow(1, 0, 5));
    else p.ids = ids.narrow(1, 0, 5);
    std::vector<at::Tensor> parts{lm->forward(p, &cache).logits};
    for (int64_t t = 5; t < 14; t += 3) {  // chunks of 3, then 1
      ForwardInput s;
      s.ids = ids.narrow(1, t, std::min<int64_t>(3, 14 - t));
      parts.push_back(lm->forward(s, &cache).logits);
    }
    EXPECT_EQ(cache.length(), 14);
    EXPECT_LE((at::cat(parts, 1) - full).abs().max().item<double>(), 1e-4) << "prefix as embeds: " << prefix_as_embeds;
  }
}

// A bad token id on the lean path is refused with the range, before the cache is touched: a caller can go on decoding.
TEST_P(EveryModel, OutOfRangeTokenOnTheDecodePathIsRefusedAndTheCacheKept) {
  auto lm = load();
  at::NoGradGuard ng;
  KVCache cache = lm->new_cache(2, 8);
  ForwardInput p;
  p.ids = random_ids(*lm, 2, 3, 5);
  lm->forward(p, &cache);
  for (int64_t bad : {lm->vocab_size(), int64_t(-1)}) {
    ForwardInput s;
    s.ids = at::tensor(std::vector<int64_t>{1, bad}, at::kLong).view({2, 1});
    try {
      lm->forward(s, &cache);
      ADD_FAILURE() << "id " << bad << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("token id out of range [0, " + std::to_string(lm->vocab_size()) + ")"), std::string::npos) << e.what();
    }
    EXPECT_EQ(cache.length(), 3);
  }
  ForwardInput ok;
  ok.ids = at::tensor(std::vector<int64_t>{1, 2}, at::kLong).view({2, 1});
  EXPECT_EQ(lm->forward(ok, &cache).logits.size(2), lm->vocab_size());
  EXPECT_EQ(cache.length(), 4);
}

// The lean decode step (core/decode_step.cpp) against the LibTorch graph it replaces, step by step: left-padded
// prompts of different lengths, a row that has finished (masked dummy tokens), a cache that starts too small and grows,
// new tokens given as contiguous ids and as a strided view.
TEST_P(EveryModel, LeanDecodeStepEqualsTheLibTorchGraph) {
  auto lm = load();
  at::NoGradGuard ng;
  const int64_t B = 3, T = 6, steps = 9;
  at::Tensor prompt = random_ids(*lm, B, T, 17), mask = at::ones({B, T}, at::kBool);
  mask[0].narrow(0, 0, 2).fill_(false);
  mask[2].narrow(0, 0, 5).fill_(false);
  at::Tensor next = random_ids(*lm, B, steps, 19);
  auto run = [&](bool lean, int64_t capacity) {
    FrozenLM::set_lean_decode(lean);
    KVCache cache = lm->new_cache(B, capacity);
    ForwardInput p;
    p.ids = prompt;
    p.mask = mask;
    lm->forward(p, &cache);
    std::vector<at::Tensor> logits;
    for (int64_t t = 0; t < steps; ++t) {
      ForwardInput s;
      // Both ways into the lean step: contiguous CPU int64 ids (embedded without tensor ops, as generate() and the
      // server pass them) on even steps, a strided view (embedded by the tensor lookup) on odd ones.
      s.ids = t % 2 == 0 ? next.narrow(1, t, 1).contiguous() : next.narrow(1, t, 1);
      s.mask = at::ones({B, 1}, at::kBool);
      if (t >= 4) s.mask[1][0] = false;  // row 1 finished: a masked dummy token
      logits.push_back(lm->forward(s, &cache).logits);
    }
    FrozenLM::set_lean_decode(true);
    EXPECT_EQ(cache.length(), T + steps);
    EXPECT_TRUE(at::equal(cache.next_pos, at::tensor(std::vector<int64_t>{4 + steps, 6 + 4, 1 + steps}, at::kLong)));
    return std::pair{at::cat(logits, 1), cache.keys(lm->config().n_layers - 1).clone()};
  };
  auto [graph, graph_k] = run(false, 0);
  auto [lean, lean_k] = run(true, 0);         // grows from nothing, doubling
  auto [roomy, roomy_k] = run(true, T + steps);
  EXPECT_LE((lean - graph).abs().max().item<double>(), 1e-4);
  EXPECT_LE((lean_k - graph_k).abs().max().item<double>(), 1e-4);
  EXPECT_TRUE(at::equal(lean, roomy)) << "the cache's capacity changed the result";
  // Not the graph under another name: the step's own arithmetic (summation order) leaves different low bits.
  EXPECT_FALSE(at::equal(lean, graph));
}

TEST_P(EveryModel, PaddedBatchEqualsExamplesOneByOne) {
  auto lm = load();
  at::NoGradGuard ng;
  const std::vector<int64_t> lens{9, 4, 12};
  const int64_t T = 12;
  at::Tensor ids = random_ids(*lm, 3, T, 11);
  for (bool left : {true, false}) {
    at::Tensor batch = at::zeros({3, T}, at::kLong), mask = at::zeros({3, T}, at::kLong);
    for (int64_t b = 0; b < 3; ++b) {
      const int64_t off = left ? T - lens[b] : 0;
      batch[b].narrow(0, off, lens[b]).copy_(ids[b].narrow(0, 0, lens[b]));
      mask[b].narrow(0, off, lens[b]).fill_(1);
    }
    at::Tensor got = logits_of(*lm, batch, mask);
    for (int64_t b = 0; b < 3; ++b) {
      at::Tensor alone = logits_of(*lm, ids[b].narrow(0, 0, lens[b]).unsqueeze(0))[0];
      at::Tensor mine = got[b].narrow(0, left ? T - lens[b] : 0, lens[b]);
      EXPECT_LE((mine - alone).abs().max().item<double>(), 1e-4) << "row " << b << (left ? " left" : " right") << "-padded";
    }
  }
}

TEST_P(EveryModel, EmbeddingsInputEqualsIds) {
  auto lm = load();
  at::NoGradGuard ng;
  at::Tensor ids = random_ids(*lm, 2, 10, 3);
  ForwardInput e;
  e.embeds = lm->embed(ids);
  EXPECT_EQ(e.embeds.sizes(), (std::vector<int64_t>{2, 10, lm->dim()}));
  EXPECT_TRUE(at::equal(lm->forward(e).logits, logits_of(*lm, ids)));
}

TEST_P(EveryModel, HiddenStatesAreReturnedOnRequest) {
  auto lm = load();
  at::NoGradGuard ng;
  ForwardInput in;
  in.ids = random_ids(*lm, 1, 6, 5);
  ForwardOptions o;
  o.hidden = o.all_hidden = true;
  ForwardOutput out = lm->forward(in, nullptr, o);
  EXPECT_EQ(out.hidden.sizes(), (std::vector<int64_t>{1, 6, lm->dim()}));
  EXPECT_EQ(int64_t(out.layer_hidden.size()), lm->config().n_layers + 1);
  EXPECT_TRUE(at::allclose(lm->head(out.hidden), out.logits));
}

TEST_P(EveryModel, InputEmbeddingGradientsMatchFiniteDifferences) {
  auto lm = load();
  lm->to(at::kCPU, at::kDouble);
  at::Tensor ids = random_ids(*lm, 2, 6, 9);
  at::Tensor mask = at::ones({2, 6}, at::kLong);
  mask[1][0] = 0;  // a padded row too
  at::Tensor emb = lm->embed(ids).clone().requires_grad_(true);
  auto g = at::make_generator<at::CPUGeneratorImpl>(1);
  at::Tensor proj = at::randn({2, 6, lm->vocab_size()}, g, at::kDouble);
  auto loss_of = [&](const at::Tensor& e) {
    ForwardInput in;
    in.embeds = e;
    in.mask = mask;
    return (lm->forward(in).logits * proj).sum();
  };
  loss_of(emb).backward();
  at::Tensor grad = emb.grad();
  ASSERT_TRUE(grad.defined());
  EXPECT_GT(grad.abs().max().item<double>(), 0.0);
  at::NoGradGuard ng;
  const double h = 1e-6;
  auto gi = at::make_generator<at::CPUGeneratorImpl>(2);
  for (int k = 0; k < 12; ++k) {
    const int64_t b = k % 2, t = at::randint(0, 6, {1}, gi, at::kLong).item<int64_t>(),
                  d = at::randint(0, lm->dim(), {1}, gi, at::kLong).item<int64_t>();
    if (b == 1 && t == 0) continue;
    at::Tensor ep = emb.detach().clone(), em = emb.detach().clone();
    ep[b][t][d] += h;
    em[b][t][d] -= h;
    const double fd = (loss_of(ep).item<double>() - loss_of(em).item<double>()) / (2 * h);
    const double an = grad[b][t][d].item<double>();
    EXPECT_NEAR(an, fd, 1e-6 * std::max(1.0, std::abs(fd))) << "at [" << b << "," << t << "," << d << "]";
  }
}

TEST_P(EveryModel, BackwardLeavesEveryWeightBitIdenticalAndWithoutGrad) {
  auto lm = load();
  const std::string before = lm->weights_hash();
  std::vector<at::Tensor> copies;
  for (auto& [n, t] : lm->named_tensors()) copies.push_back(t.clone());
  at::Tensor emb = lm->embed(random_ids(*lm, 2, 8, 4)).clone().requires_grad_(true);
  ForwardInput in;
  in.embeds = emb;
  at::Tensor loss = at::log_softmax(lm->forward(in).logits, -1).mean();
  loss.backward();
  EXPECT_TRUE(emb.grad().defined());
  EXPECT_GT(emb.grad().abs().sum().item<double>(), 0.0);
  size_t i = 0;
  for (auto& [n, t] : lm->named_tensors()) {
    EXPECT_FALSE(t.requires_grad()) << n;
    EXPECT_FALSE(t.grad().defined()) << n;
    EXPECT_TRUE(at::equal(t, copies[i++])) << n;
  }
  EXPECT_EQ(lm->weights_hash(), before);
}

TEST_P(EveryModel, Bf16Int8AndQ8_0StorageStayCloseToFp32) {
  auto f32 = load(WeightFormat::F32), bf16 = load(WeightFormat::BF16), i8 = load(WeightFormat::Int8), q8 = load(WeightFormat::Q8_0);
  at::NoGradGuard ng;
  at::Tensor ids = random_ids(*f32, 2, 16, 5);
  at::Tensor ref = at::log_softmax(logits_of(*f32, ids), -1);
  // Stated tolerances, on log-probabilities: mean |Δ| ≤ 0.02 (bf16) / 0.08 (int8, q8_0); the argmax agrees on ≥ 90%.
  for (auto [lm, tol] : {std::pair{bf16.get(), 0.02}, std::pair{i8.get(), 0.08}, std::pair{q8.get(), 0.08}}) {
    at::Tensor got = at::log_softmax(logits_of(*lm, ids), -1);
    EXPECT_LE((got - ref).abs().mean().item<double>(), tol) << weight_format_name(lm->weight_format());
    double agree = (got.argmax(-1) == ref.argmax(-1)).to(at::kFloat).mean().item<double>();
    EXPECT_GE(agree, 0.9) << weight_format_name(lm->weight_format());
  }
  // Storage: every matrix is 2 bytes (bf16) / 1 byte (int8) an element; norms, biases, scales and learned
  // positions stay fp32, which at these tiny sizes is a visible share of the total.
  auto is_scale = [](const std::string& n) { return n.size() > 6 && n.compare(n.size() - 6, 6, ".scale") == 0; };
  for (auto [lm, bytes] : {std::pair{bf16.get(), 2}, std::pair{i8.get(), 1}, std::pair{q8.get(), 1}})
    for (auto& [n, t] : lm->named_tensors())
      if (t.dim() == 2 && n != "pos_emb" && !is_scale(n)) EXPECT_EQ(t.element_size(), bytes) << n;
  EXPECT_LE(bf16->weight_bytes(), 0.55 * f32->weight_bytes());
  EXPECT_LE(i8->weight_bytes(), 0.35 * f32->weight_bytes());
  EXPECT_LE(q8->weight_bytes(), 0.4 * f32->weight_bytes());
  EXPECT_EQ(q8->weight_format(), lm_has_q8_blocks(*q8) ? WeightFormat::Q8_0 : WeightFormat::Int8);
}

TEST_P(EveryModel, BatchedGenerationEqualsOneByOneAndSamplingIsSeeded) {
  auto lm = load();
  at::Tensor ids = random_ids(*lm, 3, 7, 21);
  std::vector<std::vector<int64_t>> prompts;
  for (int64_t b = 0; b < 3; ++b) {
    auto row = ids[b].narrow(0, 0, 3 + 2 * b).contiguous();
    prompts.emplace_back(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + row.numel());
  }
  SamplingParams greedy;
  greedy.temperature = 0;
  greedy.max_new_tokens = 12;
  auto batched = generate(*lm, prompts, greedy);
  for (int64_t b = 0; b < 3; ++b) EXPECT_EQ(batched[b], generate(*lm, {prompts[b]}, greedy)[0]) << "row " << b;
  SamplingParams s;
  s.temperature = 1.0;
  s.top_p = 0.9;
  s.top_k = 50;
  s.max_new_tokens = 12;
  s.seed = 5;
  EXPECT_EQ(generate(*lm, prompts, s), generate(*lm, prompts, s));
  SamplingParams k1 = s;
  k1.top_k = 1;  // top-k 1 is greedy whatever the temperature
  EXPECT_EQ(generate(*lm, prompts, k1), batched);
}

// Twelve sequences at once: the decode steps' matmuls take the panel kernels (more rows than the skinny kernels'
// limit of 8 for fp32 weights; core/kernels/panel_matmul.h), the prompts' too (12 × 5 rows ≤ 64): the same greedy
// tokens as one at a time (1 row: the skinny kernels) and as with LibTorch's GEMM for those rows.
TEST_P(EveryModel, BatchedDecodeThroughThePanelKernelsEqualsOneByOne) {
  auto lm = load();
  const int64_t B = 12;
  at::Tensor ids = random_ids(*lm, B, 5, 33);
  std::vector<std::vector<int64_t>> prompts;
  for (int64_t b = 0; b < B; ++b) prompts.emplace_back(ids[b].data_ptr<int64_t>(), ids[b].data_ptr<int64_t>() + 5);
  SamplingParams greedy;
  greedy.temperature = 0;
  greedy.max_new_tokens = 8;
  ASSERT_GT(B, kernels::skinny_rows_limit());
  const auto batched = generate(*lm, prompts, greedy);
  kernels::set_panel_kernels(false);
  const auto gemm = generate(*lm, prompts, greedy);
  kernels::set_panel_kernels(true);
  EXPECT_EQ(batched, gemm);
  for (int64_t b = 0; b < B; ++b) EXPECT_EQ(batched[b], generate(*lm, {prompts[b]}, greedy)[0]) << "row " << b;
}

INSTANTIATE_TEST_SUITE_P(Models, EveryModel, ::testing::Values("tiny-llama", "tiny-gpt2", "tinystories", "stories260k"),
                         [](const auto& info) { std::string s = info.param; for (auto& c : s) if (c == '-') c = '_'; return s; });

}  // namespace frozenlm::test
