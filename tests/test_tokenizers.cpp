// Tokenizers against Hugging Face's `tokenizers` library (Node bindings) on the same tokenizer.json files, and the
// llama2.c tokenizer against a Python port of run.c's encoder; plus encode/decode round trips.
#include "test_util.h"
#include "tokenizer/hf_tokenizer.h"
#include "tokenizer/tokenizer.h"

namespace frozenlm::test {

TEST(Tokenizers, HfTokenizerJsonIdsEqualHuggingFaceTokenizers) {
  auto cases = read_json(fixtures() + "/tokenizer_cases.json");
  ASSERT_GE(cases.size(), 60u);
  std::map<std::string, std::unique_ptr<Tokenizer>> toks;
  for (auto& c : cases) {
    const std::string file = c["file"];
    if (!toks.count(file)) toks[file] = load_tokenizer(file);
    const Tokenizer& t = *toks[file];
    const std::string text = c["text"];
    EXPECT_EQ(t.encode(text, true), c["ids"].get<std::vector<int64_t>>()) << file << " | " << text;
    EXPECT_EQ(t.encode(text, false), c["ids_no_special"].get<std::vector<int64_t>>()) << file << " | " << text;
    EXPECT_EQ(t.decode(c["ids"].get<std::vector<int64_t>>(), false), c["decoded"].get<std::string>()) << file << " | " << text;
  }
}

TEST(Tokenizers, RoundTripUnicodeAndByteFallback) {
  const std::vector<std::string> texts{"Ünïcödé café naïve Straße Ελληνικά русский 中文 日本語 😀🎉 ∑∫√",
                                       "mixed\ttabs\nand\r\nnewlines  double  spaces", "plain ascii, punctuation!?"};
  for (const std::string dir : {"gpt2", "llama3style", "bytefallback"}) {
    auto t = load_tokenizer(fixtures() + "/" + dir + "/tokenizer.json");
    for (auto& s : texts) EXPECT_EQ(t->decode(t->encode(s, true), true), s) << dir;
  }
  auto bf = load_tokenizer(fixtures() + "/bytefallback/tokenizer.json");
  auto ids = bf->encode("中", false);  // not in the vocabulary: three byte tokens after '▁'
  EXPECT_EQ(ids.size(), 4u);
  EXPECT_EQ(bf->id_to_token(ids[1]), "<0xE4>");
  auto l2c = load_tokenizer(tok512());
  for (auto& s : texts) EXPECT_EQ(l2c->decode(l2c->encode(s, true), true), s) << "llama2.c";
}

TEST(Tokenizers, Llama2cIdsEqualRunCEncoder) {
  auto cases = read_json(fixtures() + "/llama2c_tokenizer_cases.json");
  auto t = load_tokenizer(tok512());
  ASSERT_GE(cases.size(), 5u);
  for (auto& c : cases) EXPECT_EQ(t->encode(c["text"].get<std::string>(), true), c["ids"].get<std::vector<int64_t>>()) << c["text"];
}

TEST(Tokenizers, StreamDecoderNeverSplitsACharacter) {
  auto t = load_tokenizer(fixtures() + "/gpt2/tokenizer.json");
  auto ids = t->encode("日本語 😀 ok", false);
  StreamDecoder s(*t, {});
  std::string out;
  for (auto id : ids) {
    std::string piece = s.push(id);
    out += piece;
    EXPECT_TRUE(piece.empty() || (static_cast<unsigned char>(piece[0]) & 0xC0) != 0x80);
    EXPECT_EQ(piece.find("\xEF\xBF\xBD"), std::string::npos);
  }
  out += s.flush();
  EXPECT_EQ(out, "日本語 😀 ok");
}

TEST(Tokenizers, SpecialTokensAreSkippedOnRequest) {
  auto t = load_tokenizer_for_model(tinystories(), "");
  auto ids = t->encode("Once upon a time", true);
  EXPECT_EQ(ids.front(), 1);
  EXPECT_EQ(t->decode(ids, true), "Once upon a time");
  EXPECT_EQ(t->bos_id(), 1);
  EXPECT_EQ(t->eos_id(), 2);
}

}  // namespace frozenlm::test
