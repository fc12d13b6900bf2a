// Golden generations of the two real checkpoints in ../shared/models: greedy decoding from BOS equals the
// independent PyTorch reference token for token, and reads as the story the model is known to tell.
#include "core/generate.h"
#include "core/loader.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace frozenlm::test {

static std::vector<int64_t> greedy_from_bos(const FrozenLM& lm, int64_t bos, int64_t n) {
  SamplingParams p;
  p.temperature = 0;
  p.max_new_tokens = n;  // no EOS stop: the reference runs all n steps
  auto out = generate(lm, {{bos}}, p)[0];
  out.insert(out.begin(), bos);
  return out;
}

TEST(RealModels, Stories260kGreedyEqualsReference) {
  auto lm = load_model(stories260k());
  auto want = read_json(fixtures() + "/greedy_stories260k.json").get<std::vector<int64_t>>();
  auto got = greedy_from_bos(*lm, 1, int64_t(want.size()) - 1);
  EXPECT_EQ(got, want);
  auto tok = load_tokenizer(tok512());
  EXPECT_EQ(tok->decode(got).rfind("Once upon a time, there was a little girl named Lily. She loved to play outside in the park.", 0), 0u)
      << tok->decode(got);
}

TEST(RealModels, TinyStories656kGreedyEqualsReference) {
  auto lm = load_model(tinystories());
  auto want = read_json(fixtures() + "/greedy_tinystories.json").get<std::vector<int64_t>>();
  auto got = greedy_from_bos(*lm, lm->config().bos_id, int64_t(want.size()) - 1);
  EXPECT_EQ(got, want);
  auto tok = load_tokenizer_for_model(tinystories(), "");
  EXPECT_EQ(tok->decode(got).rfind("Once upon a time, there was a little girl named Lily.", 0), 0u) << tok->decode(got);
}

TEST(RealModels, TinyStoriesBf16AndInt8GreedyStayOnTheStory) {
  for (WeightFormat f : {WeightFormat::BF16, WeightFormat::Int8}) {
    LoadOptions o;
    o.weights = f;
    auto lm = load_model(tinystories(), o);
    auto tok = load_tokenizer_for_model(tinystories(), "");
    const std::string text = tok->decode(greedy_from_bos(*lm, lm->config().bos_id, 12));
    EXPECT_EQ(text.rfind("Once upon a time", 0), 0u) << weight_format_name(f) << ": " << text;
  }
}

}  // namespace frozenlm::test

namespace frozenlm::test {

TEST(RealModels, GenerationStopsAtAStopStringAndAtEos) {
  auto lm = load_model(stories260k());
  auto tok = load_tokenizer(tok512());
  SamplingParams p;
  p.temperature = 0;
  p.max_new_tokens = 60;
  auto out = generate(*lm, {{1}}, p, nullptr, stop_at_strings(*tok, {"Lily"}))[0];
  out.insert(out.begin(), 1);
  const std::string text = tok->decode(out);
  EXPECT_EQ(text, "Once upon a time, there was a little girl named Lily") << text;
  // EOS: make the first greedy token an end-of-sequence id; generation stops right after it.
  auto first = generate(*lm, {{1}}, p)[0][0];
  p.eos_ids = {first};
  EXPECT_EQ(generate(*lm, {{1}}, p)[0], std::vector<int64_t>{first});
}

}  // namespace frozenlm::test
