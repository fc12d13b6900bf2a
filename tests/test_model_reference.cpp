// Logits of random-init tiny Llama (GQA, untied, q/k/v bias, llama3 rope scaling) and GPT-2 checkpoints, written
// as safetensors by the PyTorch reference (tests/reference/reference.py), against that reference: max |Δ| ≤ 1e-4.
#include "core/loader.h"
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
