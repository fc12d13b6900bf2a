// Fine-tuning baseline and Hugging Face export: saving a model writes the exact inverse of the loader (every tensor
// bit-identical after a reload, and the reloaded tiny Llama/GPT-2 still match the PyTorch reference logits), gradients
// of the LM's own weights match finite differences (fp64), fine-tuning the last k blocks changes only them, and
// pretraining from random initialisation (--init random) learns.
#include <ATen/CPUGeneratorImpl.h>

#include "core/error.h"
#include "core/hf_export.h"
#include "core/loader.h"
#include "core/losses.h"
#include "core/safetensors.h"
#include "modules/finetune.h"
#include "tasks/task.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"
#include "train/trainer.h"

namespace frozenlm::test {

static void expect_same_tensors(const FrozenLM& a, const FrozenLM& b, const std::string& what) {
  auto ta = a.named_tensors(), tb = b.named_tensors();
  ASSERT_EQ(ta.size(), tb.size()) << what;
  for (size_t i = 0; i < ta.size(); ++i) {
    EXPECT_EQ(ta[i].first, tb[i].first) << what;
    EXPECT_TRUE(at::equal(ta[i].second, tb[i].second)) << what << ": " << ta[i].first;
  }
}

static double max_diff_to_reference(const FrozenLM& lm, const std::string& fixture) {
  auto ref = read_json(fixture + "/reference.json");
  ForwardInput in;
  in.ids = json_to_tensor(ref["ids"], at::kLong);
  in.mask = json_to_tensor(ref["mask"], at::kBool);
  at::NoGradGuard ng;
  at::Tensor got = lm.forward(in).logits;
  at::Tensor want = json_to_tensor(ref["logits"], at::kFloat);
  return ((got - want).abs() * in.mask.unsqueeze(-1)).max().item<double>();
}

TEST(HfExport, SavedModelReloadsBitIdenticalAndStillMatchesThePyTorchReference) {
  for (const std::string fx : {"tiny-llama", "tiny-gpt2"}) {
    auto lm = load_model(fixtures() + "/" + fx);
    const std::string dir = temp_dir("export-" + fx);
    save_hf_model(*lm, dir);
    auto back = load_model(dir);
    expect_same_tensors(*lm, *back, fx);
    EXPECT_LT(max_diff_to_reference(*back, fixtures() + "/" + fx), 1e-4) << fx;
    auto cfg = read_json(dir + "/config.json");
    EXPECT_EQ(cfg["model_type"], fx == "tiny-llama" ? "llama" : "gpt2");
    SafetensorsFile st(dir + "/model.safetensors");  // HF names, unfused
    EXPECT_TRUE(st.tensors().count(fx == "tiny-llama" ? "model.layers.1.self_attn.k_proj.bias" : "h.1.attn.c_attn.weight"));
  }
  // llama2.c checkpoint -> HF Llama: same tensors (wq/wk already in rotate-half order) and same greedy behaviour.
  auto l2c = load_model(stories260k());
  const std::string dir = temp_dir("export-260k");
  save_hf_model(*l2c, dir);
  expect_same_tensors(*l2c, *load_model(dir), "stories260K");
}

TEST(HfExport, Bf16AndInt8ExportsAreTheDequantisedWeights) {
  auto lm = load_model(tinystories(), {WeightFormat::Int8, "cpu"});
  const std::string dir = temp_dir("export-int8");
  save_hf_model(*lm, dir, ExportDtype::BF16);
  EXPECT_EQ(read_json(dir + "/config.json")["torch_dtype"], "bfloat16");
  auto back = load_model(dir);  // f32 in memory
  const at::Tensor want = lm->named_tensors()[0].second.to(at::kFloat) * lm->named_tensors()[1].second.unsqueeze(1);  // tok_emb
  EXPECT_TRUE(at::equal(back->named_tensors()[0].second, want.to(at::kBFloat16).to(at::kFloat)));
}

TEST(FineTune, WeightGradientsMatchFiniteDifferences) {
  for (const std::string model : {fixtures() + "/tiny-llama", tinystories()}) {
    auto lm = load_model(model);
    lm->to(at::kCPU, at::kDouble);
    FineTune ft(*lm, -1, {});
    at::Tensor ids = at::randint(3, lm->vocab_size(), {2, 6}, at::make_generator<at::CPUGeneratorImpl>(1), at::kLong);
    at::Tensor targets = at::roll(ids, {-1}, {1});
    targets.select(1, 5).fill_(-100);
    auto loss_fn = [&] {
      ModuleInput in{lm->embed(ids), at::ones({2, 6}, at::kBool)};
      return token_cross_entropy(module_forward_logits(*lm, ft, in).reshape({-1, lm->vocab_size()}), targets.reshape({-1}));
    };
    loss_fn().backward();
    auto params = ft.parameters();
    const auto& names = ft.trainable_names();
    int checked = 0;
    for (size_t p = 0; p < params.size(); ++p) {
      // the (tied) embeddings, a fused q|k|v weight, a norm and the down projection of the last block
      if (names[p] != "tok_emb.weight" && names[p].find("qkv.weight") == std::string::npos && names[p] != "final_norm.weight" &&
          names[p].find("1.down.weight") == std::string::npos)
        continue;
      at::Tensor g = params[p].grad().view({-1});
      // the largest-gradient entry (an embedding row that occurs in `ids`) and two fixed ones
      for (int64_t i : {g.abs().argmax().item<int64_t>(), int64_t(7) % g.numel(), g.numel() / 2}) {
        expect_fd_gradient(params[p], i, loss_fn, model + " " + names[p]);
        ++checked;
      }
    }
    EXPECT_GE(checked, 12) << model;
  }
}

TEST(FineTune, LastKBlocksTrainOnlyThemAndTheSavedModelIsWhatWasTrained) {
  auto lm = load_model(tinystories());
  auto before = load_model(tinystories());
  auto tok = load_tokenizer_for_model(tinystories(), "");
  Task task = load_task(std::string(FROZENLM_SOURCE) + "/tasks/sst2.json");
  ReadOptions ro;
  ro.limit = 64;
  auto train = task.examples("train", ro);
  FineTune ft(*lm, 1, {tinystories() + "/tokenizer.json"});
  EXPECT_LT(ft.num_parameters(), lm->num_parameters() / 2);  // one of two blocks + final norm
  TrainOptions o;
  o.steps = 20;
  o.batch_size = 8;
  o.lr = 1e-3;
  o.eval_every = 0;
  o.progress = false;
  const std::string out = temp_dir("ft-lastk");
  TrainResult r = train_module(*lm, ft, *tok, task, train, {}, out, o);
  std::printf("[ learning ] sst2 fine-tuning the last block, 20 steps: loss %.3f -> %.3f\n", r.first_loss, r.last_loss);
  EXPECT_LT(r.last_loss, 0.5 * r.first_loss);
  auto run = read_json(out + "/run.json");
  EXPECT_NE(run["frozen_weights_hash_before"], run["frozen_weights_hash_after"]);
  EXPECT_EQ(run["base_model_trained"], true);
  auto now = lm->named_tensors(), was = before->named_tensors();
  for (size_t i = 0; i < now.size(); ++i) {
    const bool trained = now[i].first.rfind("layers.1.", 0) == 0 || now[i].first.rfind("final_norm", 0) == 0;
    EXPECT_EQ(!at::equal(now[i].second, was[i].second), trained) << now[i].first;
  }
  // The output directory is a Hugging Face model with its tokenizer; it is the trained model, not a module.
  auto saved = load_model(out);
  expect_same_tensors(*lm, *saved, "saved fine-tuned model");
  EXPECT_NO_THROW(load_tokenizer_for_model(out, ""));
  EXPECT_THROW(load_module(out, *lm), Error);
}

TEST(FineTune, RefusesCompactStorageAndBadK) {
  auto bf = load_model(tinystories(), {WeightFormat::BF16, "cpu"});
  EXPECT_THROW(FineTune(*bf, -1, {}), Error);
  auto lm = load_model(tinystories());
  EXPECT_THROW(FineTune(*lm, 3, {}), Error);  // 2 blocks
  EXPECT_THROW(FineTune(*lm, 0, {}), Error);
}

TEST(FineTune, PretrainingFromRandomInitLearnsPlainText) {
  ModelConfig c = load_hf_config(tinystories() + "/config.json");
  c.dim = 64; c.n_heads = 4; c.n_kv_heads = 2; c.head_dim = 16; c.ffn_dim = 128; c.n_layers = 2;
  auto lm = make_random_model(c, WeightFormat::F32, 5);
  auto tok = load_tokenizer_for_model(tinystories(), "");
  const std::string dir = temp_dir("pretrain");
  std::string data;
  const char* lines[] = {"The capital of France is Paris.", "The capital of Italy is Rome.", "The capital of Spain is Madrid.",
                         "Lily has a red ball and a blue kite.", "Tom likes to run in the park with his dog."};
  for (int rep = 0; rep < 4; ++rep)
    for (const char* l : lines) data += nlohmann::json({{"text", l}}).dump() + "\n";
  write_file(dir + "/train.jsonl", data);
  write_file(dir + "/lm.json", R"({"name": "facts", "type": "lm", "data": {"train": "train.jsonl"}, "text": "{text}", "max_tokens": 64})");
  Task task = load_task(dir + "/lm.json");
  FineTune ft(*lm, -1, {tinystories() + "/tokenizer.json"});
  TrainOptions o;
  o.steps = 80;
  o.batch_size = 5;
  o.lr = 3e-3;
  o.weight_decay = 0;
  o.warmup = 5;
  o.eval_every = 0;
  o.progress = false;
  TrainResult r = train_module(*lm, ft, *tok, task, task.examples("train"), {}, dir + "/out", o);
  std::printf("[ learning ] pretraining a random 64-wide model on 5 sentences, 80 steps: loss %.3f -> %.3f\n", r.first_loss, r.last_loss);
  EXPECT_GT(r.first_loss, 6.0);  // ~ln(2048) at random init
  EXPECT_LT(r.last_loss, 1.5);
  auto saved = load_model(dir + "/out");
  EXPECT_EQ(saved->config().dim, 64);
}

}  // namespace frozenlm::test
