// Logits of random-init tiny Llama (GQA, untied, q/k/v bias, llama3 rope scaling) and GPT-2 checkpoints, written
// as safetensors by the PyTorch reference (tests/reference/reference.py), against that reference: max |Δ| ≤ 1e-4.
#include "core/loader.h"
#include "core/safetensors.h"
#include "test_util.h"

namespace frozenlm::test {

static void check_against_reference(const std::string& dir) {
  auto lm = load_model(dir);
  auto ref = read_json(dir + "/reference.json");
  at::Tensor ids = json_to_tensor(ref["ids"], at::kLong);
  at::Tensor mask = json_to_tensor(ref["mask"], at::kLong);
  at::Tensor want = json_to_tensor(ref["logits"], at::kFloat);
  ForwardInput in;
  in.ids = ids;
  in.mask = mask;
  at::NoGradGuard ng;
  at::Tensor got = lm->forward(in).logits;
  ASSERT_EQ(got.sizes(), want.sizes());
  // Compare at real (non-padding) positions; padding positions are undefined in both.
  at::Tensor real = mask.to(at::kBool).unsqueeze(-1).expand_as(got);
  double err = (got - want).abs().masked_select(real).max().item<double>();
  EXPECT_LE(err, 1e-4) << dir;
  EXPECT_GT(want.abs().max().item<double>(), 0.5);  // the comparison is not vacuous
}

TEST(ModelReference, TinyLlamaGqaBiasUntiedLlama3RopeMatchesPyTorch) { check_against_reference(fixtures() + "/tiny-llama"); }

TEST(ModelReference, TinyGpt2MatchesPyTorch) { check_against_reference(fixtures() + "/tiny-gpt2"); }

}  // namespace frozenlm::test

namespace frozenlm::test {

// The same tiny Llama saved as two shards (model.safetensors.index.json) with F16 and BF16 tensors loads and computes
// exactly what an F32 file holding the same (rounded) values computes.
TEST(ModelReference, ShardedF16Bf16CheckpointEqualsF32OfTheSameValues) {
  const std::string src = fixtures() + "/tiny-llama";
  const std::string sharded = temp_dir("sharded"), rounded = temp_dir("rounded");
  SafetensorsFile full(src + "/model.safetensors");
  std::vector<std::pair<std::string, at::Tensor>> shard1, shard2, as_f32;
  nlohmann::json weight_map;
  int i = 0;
  for (auto& [name, info] : full.tensors()) {
    at::Tensor t = full.get_f32(name).to(i % 2 ? at::kHalf : at::kBFloat16);
    (i % 3 ? shard1 : shard2).push_back({name, t});
    weight_map[name] = i % 3 ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
    as_f32.push_back({name, t.to(at::kFloat)});
    ++i;
  }
  write_safetensors(sharded + "/model-00001-of-00002.safetensors", shard1);
  write_safetensors(sharded + "/model-00002-of-00002.safetensors", shard2);
  write_file(sharded + "/model.safetensors.index.json", nlohmann::json({{"metadata", {}}, {"weight_map", weight_map}}).dump());
  write_safetensors(rounded + "/model.safetensors", as_f32);
  for (auto& d : {sharded, rounded}) std::system(("cp '" + src + "/config.json' '" + d + "/'").c_str());
  auto a = load_model(sharded), b = load_model(rounded);
  ForwardInput in;
  in.ids = at::arange(0, 40, at::kLong).remainder(a->vocab_size()).view({2, 20});
  at::NoGradGuard ng;
  EXPECT_TRUE(at::equal(a->forward(in).logits, b->forward(in).logits));
  EXPECT_EQ(a->weights_hash(), b->weights_hash());
}

}  // namespace frozenlm::test
