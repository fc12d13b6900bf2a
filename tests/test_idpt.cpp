// Input-dependent prompt tuning: gradients of every generator tensor (and the encoder prompt) against finite
// differences (fp64); the generated prompt never reads the target; save/load round trip and the refusals (another
// base model, a missing or different encoder). That ID-PT learns what one shared prompt cannot: test_input_dependence.cpp.
#include <ATen/CPUGeneratorImpl.h>

#include <random>

#include "core/error.h"
#include "core/hf_export.h"
#include "core/loader.h"
#include "core/losses.h"
#include "eval/evaluate.h"
#include "modules/idpt.h"
#include "modules/prompt_tuning.h"
#include "tasks/task.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"
#include "train/trainer.h"

namespace frozenlm::test {

// Every tensor to a random non-degenerate value (the zero-initialised output layer would hide upstream gradients).
static void randomise(IdPromptTuning& m, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  at::NoGradGuard ng;
  for (auto& [n, t] : m.named()) t.copy_(at::randn(t.sizes(), gen, at::kDouble).to(t.scalar_type()) * 0.3 + (n.find("norm.weight") != std::string::npos || n.find("ln") != std::string::npos && n.find("weight") != std::string::npos ? 1.0 : 0.0));
}

TEST(IdPt, GeneratorGradientsMatchFiniteDifferences) {
  auto lm = load_model(fixtures() + "/tiny-llama");
  lm->to(at::kCPU, at::kDouble);
  IdptConfig c;
  c.prompt_tokens = 3;
  c.fixed_tokens = 2;
  c.encoder_prompt = 2;
  c.encoder_layer = 1;
  c.dim = 16;
  c.heads = 2;
  c.blocks = 2;
  auto m = IdPromptTuning::create(*lm, c);
  randomise(*m, 3);
  at::Tensor ids = at::randint(3, lm->vocab_size(), {2, 7}, at::make_generator<at::CPUGeneratorImpl>(1), at::kLong);
  at::Tensor mask = at::ones({2, 7}, at::kBool), input_mask = at::ones({2, 7}, at::kBool);
  mask[1][6] = false;                                           // right padding
  input_mask.narrow(1, 4, 3).fill_(false);                      // the last 3 positions are the target
  at::Tensor targets = at::roll(ids, {-1}, {1});
  targets.narrow(1, 0, 3).fill_(-100);
  targets.select(1, 6).fill_(-100);
  auto loss_fn = [&] {
    return token_cross_entropy(module_forward_logits(*lm, *m, module_input(*lm, ids, mask, input_mask)).reshape({-1, lm->vocab_size()}),
                               targets.reshape({-1}));
  };
  loss_fn().backward();
  int checked = 0;
  for (auto& [name, t] : m->named()) {
    ASSERT_TRUE(t.grad().defined()) << name;
    at::Tensor g = t.grad().view({-1});
    for (int64_t i : {g.abs().argmax().item<int64_t>(), g.numel() / 3}) {
      expect_fd_gradient(t, i, loss_fn, name);
      ++checked;
    }
  }
  EXPECT_GE(checked, 2 * 30);  // every tensor of a 2-block generator, the prompts and the encoder prompt
}

// A 4-token, 32-wide generator on `lm` with random (non-degenerate) weights.
static std::unique_ptr<IdPromptTuning> small_random_idpt(const FrozenLM& lm, uint64_t seed) {
  IdptConfig c;
  c.prompt_tokens = 4;
  c.dim = 32;
  auto m = IdPromptTuning::create(lm, c);
  randomise(*m, seed);
  return m;
}

TEST(IdPt, ThePromptDependsOnTheInputAndNeverOnTheTarget) {
  auto lm = load_model(tinystories());
  auto m = small_random_idpt(*lm, 5);
  at::NoGradGuard ng;
  at::Tensor a = at::tensor(std::vector<int64_t>{1, 100, 200, 300, 400, 500}, at::kLong).view({1, 6});
  at::Tensor b = a.clone();
  b[0][4] = 7;  // a different target
  b[0][5] = 9;
  at::Tensor input_mask = at::tensor(std::vector<uint8_t>{1, 1, 1, 1, 0, 0}).to(at::kBool).view({1, 6});
  at::Tensor pa = m->generate_prompt(*lm, module_input(*lm, a, {}, input_mask));
  at::Tensor pb = m->generate_prompt(*lm, module_input(*lm, b, {}, input_mask));
  EXPECT_TRUE(at::equal(pa, pb));
  at::Tensor c2 = a.clone();
  c2[0][2] = 42;  // a different input
  EXPECT_FALSE(at::allclose(pa, m->generate_prompt(*lm, module_input(*lm, c2, {}, input_mask))));
}

// The mask the trainer really builds (encode_example -> make_batch), not a hand-made one: same input, different
// targets (in one padded batch) give the same prompt; a row with nothing readable (an lm row without BOS) gives a
// prompt that depends on nothing it must not read.
TEST(IdPt, TheMaskMakeBatchBuildsHidesTheTarget) {
  auto lm = load_model(tinystories());
  auto tok = load_tokenizer_for_model(tinystories(), "");
  auto m = small_random_idpt(*lm, 6);
  at::NoGradGuard ng;
  const std::string input = "Review: the film was a joy.\nSentiment:";
  std::vector<EncodedExample> items = {encode_example(*tok, 1, input, " positive and moving", 64),
                                       encode_example(*tok, 1, input, " negative", 64)};
  ASSERT_NE(items[0].ids.size(), items[1].ids.size());  // padding differs too
  Batch b = make_batch(items, lm->device());
  for (int64_t r = 0; r < 2; ++r)
    for (int64_t i = 0; i < b.ids.size(1); ++i)
      EXPECT_EQ(b.input_mask[r][i].item<bool>(), i < items[r].target_start) << "row " << r << " position " << i;
  // Rows of one batch may take different GEMM code paths (edge tiles, thread splits): a few fp32 ulps apart (3.6e-6
  // measured at 1 thread); a target that leaked would move the prompt by orders of magnitude more.
  at::Tensor p = m->generate_prompt(*lm, module_input(*lm, b.ids, b.mask, b.input_mask));
  EXPECT_TRUE(at::allclose(p[0], p[1], 1e-5, 1e-5)) << (p[0] - p[1]).abs().max().item<double>();
  // The same through apply(): the prompt part of what the LM reads.
  ModuleInput x = m->apply(*lm, module_input(*lm, b.ids, b.mask, b.input_mask));
  EXPECT_TRUE(at::allclose(x.embeds[0].narrow(0, 0, 4), x.embeds[1].narrow(0, 0, 4), 1e-5, 1e-5));

  // No BOS and an empty input: every position is target. Two different texts must give the same prompt.
  std::vector<EncodedExample> lm_rows = {encode_example(*tok, -1, "", "Once upon a time there was a cat.", 64),
                                         encode_example(*tok, -1, "", "The dog ran to the park and played.", 64)};
  ASSERT_EQ(lm_rows[0].target_start, 0);
  Batch lb = make_batch(lm_rows, lm->device());
  EXPECT_FALSE(lb.input_mask.any().item<bool>());
  at::Tensor q = m->generate_prompt(*lm, module_input(*lm, lb.ids, lb.mask, lb.input_mask));
  EXPECT_TRUE(q.isfinite().all().item<bool>());
  EXPECT_TRUE(at::allclose(q[0], q[1], 1e-6, 1e-6)) << "an unreadable row attended to its target: " << (q[0] - q[1]).abs().max().item<double>();
}

TEST(IdPt, SaveLoadRoundTripAndRefusals) {
  auto lm = load_model(fixtures() + "/tiny-llama");
  // A second encoder checkpoint with the LM's vocabulary (97), another shape.
  ModelConfig ec = lm->config();
  ec.dim = 32; ec.n_heads = 4; ec.n_kv_heads = 2; ec.head_dim = 8; ec.ffn_dim = 64; ec.n_layers = 3;
  ec.rope_scaling = {};
  const std::string enc_dir = temp_dir("idpt-encoder");
  save_hf_model(*make_random_model(ec, WeightFormat::F32, 1), enc_dir);
  IdptConfig c;
  c.prompt_tokens = 3;
  c.encoder = enc_dir;
  c.encoder_layer = 2;
  c.encoder_prompt = 2;
  c.dim = 16;
  c.heads = 2;
  auto m = IdPromptTuning::create(*lm, c);
  randomise(*m, 7);
  const std::string dir = temp_dir("idpt-save");
  m->save(dir);
  auto back = load_module(dir, *lm);
  EXPECT_EQ(back->kind(), "id_prompt_tuning");
  at::Tensor ids = at::randint(3, 97, {2, 5}, at::make_generator<at::CPUGeneratorImpl>(2), at::kLong);
  {
    at::NoGradGuard ng;
    EXPECT_TRUE(at::equal(module_forward_logits(*lm, *m, module_input(*lm, ids)), module_forward_logits(*lm, *back, module_input(*lm, ids))));
  }
  auto expect_refusal = [&](const FrozenLM& model, const std::string& needle) {
    try {
      load_module(dir, model);
      ADD_FAILURE() << "accepted; expected a refusal mentioning '" << needle << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << "expected '" << needle << "' in: " << e.what();
    }
  };
  expect_refusal(*load_model(tinystories()), "token_dim");                    // another width (128 vs 48)
  auto other = make_random_model(lm->config(), WeightFormat::F32, 9);         // same shape, another checkpoint
  other->set_checkpoint_id("another");
  expect_refusal(*other, "another base model");
  save_hf_model(*make_random_model(ec, WeightFormat::F32, 2), enc_dir);     // the encoder changed on disk
  expect_refusal(*lm, "differs from the one the module was trained with");
  ASSERT_EQ(std::system(("rm -rf '" + enc_dir + "'").c_str()), 0);          // the encoder is gone
  expect_refusal(*lm, "is missing");
  // an encoder with another vocabulary is refused when the module is created
  IdptConfig bad = c;
  bad.encoder = tinystories();
  EXPECT_THROW(IdPromptTuning::create(*lm, bad), Error);
}

}  // namespace frozenlm::test
