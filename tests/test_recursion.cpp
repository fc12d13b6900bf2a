// Neural recursion (LM – Connector – LM, modules/neural_recursion.h): gradients of every tensor through both passes
// of the frozen LM against finite differences (fp64), for the MLP and the transformer connector; a fresh module is
// exactly prompt tuning with its pass-2 prompt; the target never reaches pass 1 or the connector (nothing leaks into
// the input's positions); save/load round trip and the refusals; stage A pretraining lowers the LM loss through the
// connector. That the connector learns what one shared prompt cannot: test_input_dependence.cpp.
#include <ATen/CPUGeneratorImpl.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/loader.h"
#include "core/losses.h"
#include "eval/evaluate.h"
#include "modules/neural_recursion.h"
#include "modules/prompt_tuning.h"
#include "tasks/task.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"
#include "train/trainer.h"


namespace frozenlm::test {

// Every tensor to a random non-degenerate value (the zero-initialised output layer would hide upstream gradients).
static void randomise(NeuralRecursion& m, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  at::NoGradGuard ng;
  for (auto& [n, t] : m.named()) {
    const bool gain = n.find("norm.weight") != std::string::npos || (n.find("ln") != std::string::npos && n.find("weight") != std::string::npos);
    t.copy_(at::randn(t.sizes(), gen, at::kDouble).to(t.scalar_type()) * 0.3 + (gain ? 1.0 : 0.0));
  }
}

struct TinyBatch {
  at::Tensor ids, mask, input_mask, targets;
};

static TinyBatch tiny_batch(const FrozenLM& lm) {
  TinyBatch b;
  b.ids = at::randint(3, lm.vocab_size(), {2, 7}, at::make_generator<at::CPUGeneratorImpl>(1), at::kLong);
  b.mask = at::ones({2, 7}, at::kBool);
  b.input_mask = at::ones({2, 7}, at::kBool);
  b.mask[1][6] = false;                        // right padding
  b.input_mask.narrow(1, 4, 3).fill_(false);   // the last 3 positions are the target
  b.targets = at::roll(b.ids, {-1}, {1});
  b.targets.narrow(1, 0, 3).fill_(-100);
  b.targets.select(1, 6).fill_(-100);
  return b;
}

class RecursionGradients : public ::testing::TestWithParam<std::string> {};

TEST_P(RecursionGradients, EveryTensorMatchesFiniteDifferencesThroughBothPasses) {
  auto lm = load_model(fixtures() + "/tiny-llama");
  lm->to(at::kCPU, at::kDouble);
  RecursionConfig c;
  c.pass1_prompt = 2;
  c.pass2_prompt = 3;
  c.connector = GetParam();
  c.dim = 16;
  c.blocks = 2;
  c.heads = 2;
  auto m = NeuralRecursion::create(*lm, c);
  randomise(*m, 3);
  const TinyBatch b = tiny_batch(*lm);
  auto loss_fn = [&] {
    return token_cross_entropy(module_forward_logits(*lm, *m, module_input(*lm, b.ids, b.mask, b.input_mask)).reshape({-1, lm->vocab_size()}),
                               b.targets.reshape({-1}));
  };
  loss_fn().backward();
  int checked = 0;
  for (auto& [name, t] : m->named()) {
    ASSERT_TRUE(t.grad().defined()) << name;
    EXPECT_GT(t.grad().abs().max().item<double>(), 0.0) << name << ": no gradient reaches it";
    at::Tensor g = t.grad().view({-1});
    for (int64_t i : {g.abs().argmax().item<int64_t>(), g.numel() / 3}) {
      expect_fd_gradient(t, i, loss_fn, name);
      ++checked;
    }
  }
  EXPECT_GE(checked, 2 * (c.connector == "mlp" ? 8 : 8 + 2 * 12 + 2));
}

INSTANTIATE_TEST_SUITE_P(Connectors, RecursionGradients, ::testing::Values("mlp", "transformer"));

TEST(NeuralRecursion, AFreshModuleIsPromptTuningWithItsPass2Prompt) {
  auto lm = load_model(fixtures() + "/tiny-llama");
  RecursionConfig c;
  c.pass2_prompt = 4;
  auto m = NeuralRecursion::create(*lm, c);
  const TinyBatch b = tiny_batch(*lm);
  at::NoGradGuard ng;
  const ModuleInput in = module_input(*lm, b.ids, b.mask, b.input_mask);
  const ModuleInput out = m->apply(*lm, in);
  ASSERT_EQ(out.embeds.size(1), 4 + 7);
  EXPECT_TRUE(at::equal(out.embeds.narrow(1, 4, 7), in.embeds)) << "the zero-initialised connector changed the input";
  const at::Tensor& p2 = m->named()[1].second;
  EXPECT_EQ(m->named()[1].first, "pass2_prompt");
  EXPECT_TRUE(at::equal(out.embeds[0].narrow(0, 0, 4), p2));
  EXPECT_TRUE(out.mask.narrow(1, 0, 4).all().item<bool>());
  EXPECT_TRUE(at::equal(out.mask.narrow(1, 4, 7), b.mask));
}

TEST(NeuralRecursion, TheTargetNeverReachesPassOneOrTheConnector) {
  auto lm = load_model(fixtures() + "/tiny-llama");
  for (const char* kind : {"mlp", "transformer"}) {
    RecursionConfig c;
    c.connector = kind;
    c.dim = 16;
    c.heads = 2;
    auto m = NeuralRecursion::create(*lm, c);
    randomise(*m, 5);
    const TinyBatch b = tiny_batch(*lm);
    at::Tensor other = b.ids.clone();
    other.narrow(1, 4, 3).fill_(7);  // another target
    at::NoGradGuard ng;
    const ModuleInput x = m->apply(*lm, module_input(*lm, b.ids, b.mask, b.input_mask));
    const ModuleInput y = m->apply(*lm, module_input(*lm, other, b.mask, b.input_mask));
    const int64_t P = m->prefix_length();
    EXPECT_LT((x.embeds.narrow(1, 0, P + 4) - y.embeds.narrow(1, 0, P + 4)).abs().max().item<double>(), 1e-7) << kind;
    // The target's positions carry their plain embeddings; the input's are changed by the connector.
    const at::Tensor plain = lm->embed(b.ids);
    EXPECT_TRUE(at::allclose(x.embeds.narrow(1, P + 4, 3), plain.narrow(1, 4, 3))) << kind;
    EXPECT_GT((x.embeds.narrow(1, P, 4) - plain.narrow(1, 0, 4)).abs().max().item<double>(), 1e-3) << kind;
    // positions = all: every real position passes on, and the input prefix still sees nothing of the future.
    m->set_positions("all");
    const ModuleInput z = m->apply(*lm, module_input(*lm, b.ids, b.mask, b.input_mask));
    const ModuleInput w = m->apply(*lm, module_input(*lm, other, b.mask, b.input_mask));
    EXPECT_LT((z.embeds.narrow(1, 0, P + 4) - w.embeds.narrow(1, 0, P + 4)).abs().max().item<double>(), 1e-6) << kind << " (all)";
    EXPECT_GT((z.embeds.narrow(1, P + 4, 3) - plain.narrow(1, 4, 3)).abs().max().item<double>(), 1e-3) << kind << " (all)";
  }
}

TEST(NeuralRecursion, SaveLoadRoundTripAndRefusals) {
  auto lm = load_model(fixtures() + "/tiny-llama");
  RecursionConfig c;
  c.connector = "transformer";
  c.dim = 16;
  c.heads = 2;
  c.pass1_prompt = 3;
  auto m = NeuralRecursion::create(*lm, c, "tiny");
  randomise(*m, 9);
  m->add_stage({{"stage", "A"}, {"steps", 5}});
  const std::string dir = temp_dir("recursion-save");
  std::filesystem::remove_all(dir);
  m->save(dir);
  auto back = load_module(dir, *lm);
  ASSERT_EQ(back->kind(), "neural_recursion");
  const TinyBatch b = tiny_batch(*lm);
  at::NoGradGuard ng;
  const ModuleInput in = module_input(*lm, b.ids, b.mask, b.input_mask);
  EXPECT_TRUE(at::equal(m->apply(*lm, in).embeds, back->apply(*lm, in).embeds));
  EXPECT_EQ(read_json(dir + "/recursion_config.json")["stages"][0]["stage"], "A");
  auto other = load_model(stories260k());
  try {
    load_module(dir, *other);
    ADD_FAILURE() << "a module for another base model was loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("module was trained"), std::string::npos) << e.what();
  }
  RecursionConfig bad = c;
  bad.heads = 5;
  EXPECT_THROW(NeuralRecursion::create(*lm, bad), Error);
  bad = c;
  bad.positions = "some";
  EXPECT_THROW(NeuralRecursion::create(*lm, bad), Error);
}

// Stage A: language modelling through LM–C–LM on plain text (every position passed on) lowers the held-out loss,
// and the connector carries part of it: with its output layer zeroed again (pass 2 = the trained prompts alone) the
// loss goes back up. Text: SST-2 sentences, far from the story model's own domain.
TEST(NeuralRecursion, StageAPretrainingLowersLanguageModellingLossThroughTheConnector) {
  auto lm = load_model(tinystories());
  auto tok = load_tokenizer_for_model(tinystories(), "");
  const std::string dir = temp_dir("recursion-stage-a");
  std::ifstream in(shared() + "/data/sst2/dev.tsv");
  std::string line, train, test;
  std::getline(in, line);  // header
  for (int i = 0; i < 256 && std::getline(in, line); ++i)
    (i < 192 ? train : test) += nlohmann::json({{"text", line.substr(0, line.find('\t'))}}).dump() + "\n";
  write_file(dir + "/train.jsonl", train);
  write_file(dir + "/test.jsonl", test);
  write_file(dir + "/task.json", R"({"name": "sentences", "type": "lm", "data": {"train": "train.jsonl", "test": "test.jsonl"},
    "text": "{text}", "max_tokens": 48})");
  const Task task = load_task(dir + "/task.json");
  const auto held_out = task.examples("test");
  RecursionConfig c;
  c.pass1_prompt = 4;
  c.pass2_prompt = 4;
  c.dim = 64;
  c.positions = "all";
  auto m = NeuralRecursion::create(*lm, c);
  auto ppl = [&] { return evaluate(*lm, m.get(), *tok, task, held_out, EvalOptions{})["perplexity"].get<double>(); };
  const double before = ppl();
  TrainOptions o;
  o.steps = 80;
  o.batch_size = 8;
  o.eval_every = 0;
  o.progress = false;
  o.lr = 0.3;
  train_module(*lm, *m, *tok, task, task.examples("train"), {}, dir + "/out", o);
  const double after = ppl();
  {
    at::NoGradGuard ng;
    for (auto& [n, t] : m->named())
      if (n == "out.weight" || n == "out.bias") t.zero_();
  }
  const double without_connector = ppl();
  std::printf("[ learning ] stage A, 80 steps × 8 sentences: held-out perplexity %.2f -> %.2f (trained prompts without the connector: %.2f)\n",
              before, after, without_connector);
  EXPECT_LT(after, 0.9 * before);
  EXPECT_LT(after, without_connector);
}

}  // namespace frozenlm::test
