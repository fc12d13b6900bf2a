// Prompt tuning: gradients of the soft prompt against finite differences (fp64), PEFT-format save/load and refusal of
// another base model, the three initialisations, and a learning curve on the real tinystories-656k model.
#include "core/error.h"
#include "core/loader.h"
#include "core/losses.h"
#include "core/safetensors.h"
#include "modules/prompt_tuning.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace frozenlm::test {

static ModuleInput batch_of(const FrozenLM& lm, const at::Tensor& ids, const at::Tensor& mask = {}) {
  ModuleInput in;
  in.embeds = lm.embed(ids);
  in.mask = mask.defined() ? mask : at::ones(ids.sizes(), at::kBool);
  return in;
}

TEST(PromptTuning, SoftPromptGradientMatchesFiniteDifferences) {
  for (const std::string model : {fixtures() + "/tiny-llama", tinystories()}) {
    auto lm = load_model(model);
    lm->to(at::kCPU, at::kDouble);
    auto pt = PromptTuning::create(*lm, 4, PromptInit::RandomUniform, {}, 3);
    at::Tensor ids = at::randint(3, lm->vocab_size(), {2, 6}, at::make_generator<at::CPUGeneratorImpl>(1), at::kLong);
    at::Tensor mask = at::ones({2, 6}, at::kBool);
    mask[0][0] = false;  // a left-padded row
    ModuleInput in = batch_of(*lm, ids, mask);
    at::Tensor targets = at::roll(ids, {-1}, {1});
    targets.select(1, 5).fill_(-100);
    auto loss_fn = [&] { return token_cross_entropy(module_forward_logits(*lm, *pt, in).reshape({-1, lm->vocab_size()}), targets.reshape({-1})); };
    loss_fn().backward();
    at::Tensor grad = pt->prompt().grad().clone();
    ASSERT_GT(grad.abs().max().item<double>(), 0.0);
    at::NoGradGuard ng;
    const double h = 1e-6;
    for (int k = 0; k < 8; ++k) {
      const int64_t r = k % 4, c = (k * 37) % lm->dim();
      at::Tensor p = pt->prompt();
      const double orig = p[r][c].item<double>();
      p[r][c] = orig + h;
      const double up = loss_fn().item<double>();
      p[r][c] = orig - h;
      const double down = loss_fn().item<double>();
      p[r][c] = orig;
      EXPECT_NEAR(grad[r][c].item<double>(), (up - down) / (2 * h), 1e-7 * std::max(1.0, std::abs(grad[r][c].item<double>())))
          << model << " [" << r << "," << c << "]";
    }
  }
}

// The trainer's loss (module_target_loss: the LM head on the target rows only) equals the cross-entropy of the full
// logits, value and soft-prompt gradient, for f32 and for compact storage (whose backward re-widens the weights).
TEST(PromptTuning, TargetRowsLossEqualsTheFullLogitsLoss) {
  for (WeightFormat f : {WeightFormat::F32, WeightFormat::BF16, WeightFormat::Int8, WeightFormat::Q8_0}) {
    LoadOptions o;
    o.weights = f;
    auto lm = load_model(tinystories(), o);
    auto pt = PromptTuning::create(*lm, 4, PromptInit::RandomUniform, {}, 3);
    const at::Tensor ids = at::randint(3, lm->vocab_size(), {3, 9}, at::make_generator<at::CPUGeneratorImpl>(2), at::kLong);
    at::Tensor mask = at::ones({3, 9}, at::kBool);
    mask[1].narrow(0, 0, 3).fill_(false);
    at::Tensor targets = at::full({3, 9}, -100, at::kLong);
    targets[0].narrow(0, 6, 3).copy_(ids[0].narrow(0, 6, 3));
    targets[1][8] = 17;
    targets[2].narrow(0, 2, 7).copy_(ids[2].narrow(0, 2, 7));
    const ModuleInput in = batch_of(*lm, ids, mask);
    const at::Tensor full = token_cross_entropy(module_forward_logits(*lm, *pt, in).reshape({-1, lm->vocab_size()}), targets.reshape({-1}));
    full.backward();
    const at::Tensor g_full = pt->prompt().grad().clone();
    pt->prompt().grad().zero_();
    const at::Tensor rows = module_target_loss(*lm, *pt, in, targets);
    rows.backward();
    EXPECT_NEAR(rows.item<double>(), full.item<double>(), 1e-5) << weight_format_name(f);
    EXPECT_LE((pt->prompt().grad() - g_full).abs().max().item<double>(), 1e-6 + 1e-4 * g_full.abs().max().item<double>()) << weight_format_name(f);
    EXPECT_GT(g_full.abs().max().item<double>(), 0.0);
  }
}

TEST(PromptTuning, InitialisationsFollowPeft) {
  auto lm = load_model(tinystories());
  at::NoGradGuard ng;
  auto text = PromptTuning::create(*lm, 5, PromptInit::Text, {10, 11}, 0, "base", "ab");
  at::Tensor want = lm->embed(at::tensor(std::vector<int64_t>{10, 11, 10, 11, 10}, at::kLong).view({1, 5}))[0];
  EXPECT_TRUE(at::equal(text->prompt(), want));  // text ids repeated to fill P
  auto vocab = PromptTuning::create(*lm, 6, PromptInit::SampledVocab, {}, 1);
  at::Tensor table = lm->embed(at::arange(lm->vocab_size(), at::kLong).view({1, -1}))[0];
  for (int64_t r = 0; r < 6; ++r) EXPECT_TRUE((table - vocab->prompt()[r]).abs().sum(1).min().item<double>() == 0.0) << r;
  auto uni = PromptTuning::create(*lm, 64, PromptInit::RandomUniform, {}, 2);
  EXPECT_LE(uni->prompt().abs().max().item<double>(), 0.5);
  EXPECT_GT(uni->prompt().std().item<double>(), 0.25);  // U(−0.5, 0.5): std 0.289
  EXPECT_EQ(uni->num_parameters(), 64 * lm->dim());
}

// PEFT initialises from tokenizer(text)["input_ids"]: for a Llama tokenizer, BOS first. The saved config names the
// text and the tokenizer (PEFT refuses TEXT without them); no text: refused, never written as TEXT with null.
TEST(PromptTuning, TextInitTokenizesLikePeftAndIsRecorded) {
  auto lm = load_model(tinystories());
  auto tok = load_tokenizer_for_model(tinystories(), "");
  at::NoGradGuard ng;
  const std::vector<int64_t> ids = tok->encode("Classify the story", true);  // what PEFT's tokenizer(text) gives
  ASSERT_EQ(ids.front(), 1);  // <|start_story|>: the tokenizer's post-processor adds it
  auto pt = PromptTuning::create_from_text(*lm, int64_t(ids.size()) + 2, *tok, "Classify the story", tinystories());
  std::vector<int64_t> want = ids;
  want.push_back(ids[0]);
  want.push_back(ids[1]);
  EXPECT_TRUE(at::equal(pt->prompt(), lm->embed(at::tensor(want, at::kLong).view({1, -1}))[0]));
  const std::string dir = temp_dir("pt-text");
  pt->save(dir);
  auto cfg = read_json(dir + "/adapter_config.json");
  EXPECT_EQ(cfg["prompt_tuning_init"], "TEXT");
  EXPECT_EQ(cfg["prompt_tuning_init_text"], "Classify the story");
  EXPECT_EQ(cfg["tokenizer_name_or_path"], tinystories());
  EXPECT_THROW(PromptTuning::create_from_text(*lm, 4, *tok, "", tinystories()), Error);
  EXPECT_THROW(PromptTuning::create(*lm, 4, PromptInit::Text, {5, 6}, 0, tinystories(), ""), Error);
  auto vocab = PromptTuning::create(*lm, 4, PromptInit::SampledVocab, {}, 0, tinystories());
  vocab->save(dir);
  cfg = read_json(dir + "/adapter_config.json");
  EXPECT_EQ(cfg["prompt_tuning_init"], "SAMPLE_VOCAB");
  EXPECT_TRUE(cfg["prompt_tuning_init_text"].is_null());
}

TEST(PromptTuning, PeftFormatRoundTripAndRefusals) {
  auto lm = load_model(tinystories());
  auto pt = PromptTuning::create(*lm, 7, PromptInit::SampledVocab, {}, 4, "raincandy-u/TinyStories-656K");
  const std::string dir = temp_dir("pt-save");
  pt->save(dir);
  auto cfg = read_json(dir + "/adapter_config.json");
  EXPECT_EQ(cfg["peft_type"], "PROMPT_TUNING");
  EXPECT_EQ(cfg["task_type"], "CAUSAL_LM");
  EXPECT_EQ(cfg["num_virtual_tokens"], 7);
  EXPECT_EQ(cfg["token_dim"], lm->dim());
  EXPECT_EQ(cfg["base_model_name_or_path"], "raincandy-u/TinyStories-656K");
  SafetensorsFile st(dir + "/adapter_model.safetensors");
  ASSERT_EQ(st.tensors().size(), 1u);
  EXPECT_EQ(st.tensors().at("prompt_embeddings").shape, (std::vector<int64_t>{7, lm->dim()}));
  EXPECT_EQ(st.tensors().at("prompt_embeddings").dtype, StDtype::F32);
  auto back = load_module(dir, *lm);
  EXPECT_EQ(back->kind(), "prompt_tuning");
  EXPECT_TRUE(at::equal(back->parameters()[0], pt->prompt()));
  // Same checkpoint in another storage format: accepted. Another model: refused, by dimension or by identity.
  LoadOptions o;
  o.weights = WeightFormat::Int8;
  EXPECT_NO_THROW(load_module(dir, *load_model(tinystories(), o)));
  try {
    load_module(dir, *load_model(stories260k()));
    ADD_FAILURE() << "loaded on a d=64 model";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("token_dim 128"), std::string::npos) << e.what();
  }
  auto same_dim_other = load_model(fixtures() + "/tiny-llama");  // d=48: use a module of that width
  auto pt48 = PromptTuning::create(*same_dim_other, 2, PromptInit::RandomUniform);
  pt48->save(dir + "-48");
  auto other48 = make_random_model(same_dim_other->config(), WeightFormat::F32, 9);
  other48->set_checkpoint_id("0123456789abcdef");
  try {
    load_module(dir + "-48", *other48);
    ADD_FAILURE() << "loaded on another base model";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("trained on another base model"), std::string::npos) << e.what();
  }
}

TEST(PromptTuning, LoadsAnAdapterWrittenAsPeftWritesIt) {
  // The files PEFT's save_pretrained() writes for PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3,
  // prompt_tuning_init="TEXT") on a d=128 model; no frozenlm.json.
  const std::string dir = temp_dir("peft-made");
  write_file(dir + "/adapter_config.json", R"({
  "auto_mapping": null, "base_model_name_or_path": "raincandy-u/TinyStories-656K", "inference_mode": true,
  "num_attention_heads": 8, "num_layers": 2, "num_transformer_submodules": 1, "num_virtual_tokens": 3,
  "peft_type": "PROMPT_TUNING", "prompt_tuning_init": "TEXT", "prompt_tuning_init_text": "Once upon a time",
  "revision": null, "task_type": "CAUSAL_LM", "token_dim": 128, "tokenizer_kwargs": null,
  "tokenizer_name_or_path": "raincandy-u/TinyStories-656K"})");
  at::Tensor p = at::linspace(-1, 1, 3 * 128).view({3, 128});
  write_safetensors(dir + "/adapter_model.safetensors", {{"prompt_embeddings", p}});
  auto lm = load_model(tinystories());
  auto m = load_module(dir, *lm);
  EXPECT_TRUE(at::equal(m->parameters()[0].detach(), p));
  EXPECT_EQ(m->prefix_length(), 3);
  at::NoGradGuard ng;
  at::Tensor ids = at::tensor(std::vector<int64_t>{1, 147, 201}, at::kLong).view({1, 3});
  EXPECT_EQ(module_forward_logits(*lm, *m, batch_of(*lm, ids)).sizes(), (std::vector<int64_t>{1, 3, lm->vocab_size()}));
}

// Learning curve: a soft prompt steers the frozen model towards a continuation it would not choose.
TEST(PromptTuning, TrainingLowersTheLossAndLeavesTheLmUntouched) {
  auto lm = load_model(tinystories());
  auto tok = load_tokenizer_for_model(tinystories(), "");
  const std::string hash_before = lm->weights_hash();
  auto ids_v = tok->encode("The cat sat on the red box. The cat sat on the red box.", true);
  at::Tensor ids = at::tensor(ids_v, at::kLong).view({1, -1});
  const int64_t T = ids.size(1);
  at::Tensor targets = at::roll(ids, {-1}, {1});
  targets.select(1, T - 1).fill_(-100);
  auto pt = PromptTuning::create_from_text(*lm, 8, *tok, "Once upon a time", tinystories());
  ModuleInput in = batch_of(*lm, ids);
  auto loss_fn = [&] { return token_cross_entropy(module_forward_logits(*lm, *pt, in).reshape({-1, lm->vocab_size()}), targets.reshape({-1})); };
  torch::optim::AdamW opt(pt->parameters(), torch::optim::AdamWOptions(0.05).weight_decay(0.0));
  const double first = loss_fn().item<double>();
  double last = first;
  for (int step = 0; step < 40; ++step) {
    opt.zero_grad();
    at::Tensor loss = loss_fn();
    loss.backward();
    opt.step();
    last = loss.item<double>();
  }
  std::printf("[ learning ] tinystories-656k, P=8, 40 AdamW steps: loss %.3f -> %.3f\n", first, last);
  EXPECT_LT(last, 0.5 * first) << "first " << first << ", last " << last;
  EXPECT_EQ(lm->weights_hash(), hash_before);
  // What was learned survives a save/load.
  const std::string dir = temp_dir("pt-learned");
  pt->save(dir);
  auto back = load_module(dir, *lm);
  at::NoGradGuard ng;
  const double reloaded = token_cross_entropy(module_forward_logits(*lm, *back, in).reshape({-1, lm->vocab_size()}), targets.reshape({-1})).item<double>();
  EXPECT_NEAR(reloaded, loss_fn().item<double>(), 1e-5);
}

// The default prompt learning rate follows the frozen embeddings' scale: 0.6 × RMS, 2 significant digits. RMS values
// computed independently with numpy from the safetensors files (tinystories-656k: lm_head = tied embeddings 0.4972;
// testbed base v2: model.embed_tokens.weight 0.0660, bf16; v1 had 0.0670).
TEST(PromptTuning, DefaultLearningRateFollowsTheEmbeddingScale) {
  auto ts = load_model(tinystories());
  EXPECT_NEAR(embedding_rms(*ts), 0.4972, 5e-4);
  EXPECT_DOUBLE_EQ(default_prompt_lr(*ts), 0.3);  // Lester et al.'s rate, which worked on this model
  auto tb = load_model(std::string(FROZENLM_SOURCE) + "/testbed/model");
  const double rms = embedding_rms(*tb);
  EXPECT_NEAR(rms, 0.0660, 5e-4);
  const double lr = default_prompt_lr(*tb);
  EXPECT_NEAR(lr, 0.6 * rms, 0.0005);  // 2 significant digits: 0.0396 -> 0.040
  EXPECT_DOUBLE_EQ(lr, 0.04);
  EXPECT_LT(lr, 0.1) << "a fixed 0.3 was 4.5x this base's embedding scale";
}

}  // namespace frozenlm::test
