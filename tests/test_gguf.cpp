// GGUF (core/gguf_file.h, core/gguf_model.h, tokenizer/gguf_vocab.h) against what llama.cpp itself produced:
// the shared TinyStories-656K GGUFs written by llama.cpp's converter and quantiser, and llama.cpp's tokenizer test
// vocabularies with their expected ids.
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/generate.h"
#include "core/error.h"
#include "core/gguf_file.h"
#include "core/gguf_model.h"
#include "core/loader.h"
#include "core/transformer.h"
#include "test_util.h"
#include "tokenizer/gguf_vocab.h"
#include "tokenizer/tokenizer.h"

namespace frozenlm::test {

namespace {

std::string gguf_dir() { return shared() + "/data/gguf"; }
std::string ts_f32() { return gguf_dir() + "/tinystories-656k-f32.gguf"; }
std::string ts_q8() { return gguf_dir() + "/tinystories-656k-q8_0.gguf"; }

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(path + ": missing");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

at::Tensor logits_of(const FrozenLM& lm, const std::vector<int64_t>& ids) {
  at::NoGradGuard ng;
  ForwardInput in;
  in.ids = at::tensor(ids, at::kLong).unsqueeze(0);
  return lm.forward(in).logits;
}

std::unique_ptr<FrozenLM> load(const std::string& path, WeightFormat fmt, bool keep_q8_0) {
  LoadOptions o;
  o.weights = fmt;
  o.keep_q8_0 = keep_q8_0;
  return load_model(path, o);
}

std::vector<int64_t> greedy_from_bos(const FrozenLM& lm, int64_t n) {
  SamplingParams p;
  p.temperature = 0;
  p.max_new_tokens = n;
  auto out = generate(lm, {{lm.config().bos_id}}, p)[0];
  out.insert(out.begin(), lm.config().bos_id);
  return out;
}

// llama.cpp's test-tokenizer-0 cases: texts separated by "\n__ggml_vocab_test__\n", one line of ids per text.
void expect_vocab_test_cases(const std::string& vocab) {
  const std::string base = gguf_dir() + "/ggml-vocab-" + vocab + ".gguf";
  auto tok = load_tokenizer(base);
  const std::string inp = slurp(base + ".inp"), sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> texts;
  for (size_t pos = 0, next; (next = inp.find(sep, pos)) != std::string::npos; pos = next + sep.size()) texts.push_back(inp.substr(pos, next - pos));
  std::istringstream out(slurp(base + ".out"));
  std::string line;
  size_t n = 0, failures = 0;
  for (const std::string& text : texts) {
    ASSERT_TRUE(std::getline(out, line)) << vocab << ": .out has fewer lines than .inp has texts";
    std::vector<int64_t> want;
    std::istringstream ids(line);
    for (int64_t id; ids >> id;) want.push_back(id);
    const auto got = tok->encode(text, /*add_special=*/false);
    if (got != want && ++failures <= 5) ADD_FAILURE() << vocab << " case " << n << " '" << text << "'";
    EXPECT_EQ(got, want) << vocab << " case " << n;
    if (got == want && !text.empty()) EXPECT_EQ(tok->decode(got), text) << vocab << " case " << n << ": decode(encode(text)) != text";
    ++n;
  }
  EXPECT_EQ(n, 46u) << vocab << ": the number of test cases llama.cpp ships";
}

}  // namespace

TEST(GgufTokenizer, Gpt2VocabGivesLlamaCppsExpectedIds) { expect_vocab_test_cases("gpt-2"); }

TEST(GgufTokenizer, LlamaSpmVocabGivesLlamaCppsExpectedIds) { expect_vocab_test_cases("llama-spm"); }

TEST(GgufTokenizer, SpmAddsBosAndMatchesSpecialTokensInText) {
  auto tok = load_tokenizer(gguf_dir() + "/ggml-vocab-llama-spm.gguf");
  EXPECT_EQ(tok->encode("Hello world", true), (std::vector<int64_t>{1, 15043, 3186}));
  EXPECT_EQ(tok->encode("Hello</s>", false).back(), 2);  // a control token written in the text is that token
  EXPECT_EQ(tok->encode_continuation("world"), (std::vector<int64_t>{11526}));  // no space prefix: "world", not "▁world"
  EXPECT_EQ(tok->decode({1, 15043, 3186, 2}), "Hello world");
}

// Found by fuzz_gguf: a byte-level BPE token that is not UTF-8 made building the tokenizer throw an exception that
// named no file. It is an error naming the file and the token now.
TEST(GgufTokenizer, ByteLevelTokensMustBeUtf8) {
  const std::string dir = temp_dir("gguf-bad-vocab");
  auto write = [&](const std::string& path, const std::string& second_token) {
    GgufWriter w;
    w.add_string("tokenizer.ggml.model", "gpt2");
    w.add_strings("tokenizer.ggml.tokens", {"a", second_token, "ab"});
    w.add_i32s("tokenizer.ggml.token_type", {1, 1, 1});
    w.add_strings("tokenizer.ggml.merges", {"a b"});
    w.write(path);
  };
  write(dir + "/good.gguf", "b");
  EXPECT_EQ(load_tokenizer(dir + "/good.gguf")->encode("ab", false), std::vector<int64_t>{2});
  write(dir + "/bad.gguf", "\xA0");
  try {
    load_tokenizer(dir + "/bad.gguf");
    ADD_FAILURE() << "a vocabulary with a non-UTF-8 byte-level token was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.gguf: GGUF tokenizer.ggml.tokens[1] is not valid UTF-8"), std::string::npos) << e.what();
  }
}

TEST(GgufModel, F32FileGivesTheSafetensorsLogits) {
  auto st = load_model(tinystories());
  auto gg = load_model(ts_f32());
  EXPECT_EQ(gg->config().n_kv_heads, 4);
  EXPECT_TRUE(gg->config().tied_embeddings);
  EXPECT_EQ(gg->config().bos_id, 1);
  EXPECT_EQ(gg->config().eos_ids, std::vector<int64_t>{2});
  const std::vector<int64_t> ids{1, 400, 34, 1024, 7, 99, 1500, 2000, 3, 512, 640, 11};
  const at::Tensor a = logits_of(*st, ids), b = logits_of(*gg, ids);
  EXPECT_LE((a - b).abs().max().item<double>(), 1e-5);
}

TEST(GgufModel, F32AndQ8_0FilesTellTheGoldenStory) {
  const auto want = read_json(fixtures() + "/greedy_tinystories.json").get<std::vector<int64_t>>();
  auto f32 = load_model(ts_f32());
  EXPECT_EQ(greedy_from_bos(*f32, int64_t(want.size()) - 1), want);
  auto q8 = load(ts_q8(), WeightFormat::F32, /*keep_q8_0=*/true);
  EXPECT_EQ(q8->weight_format(), WeightFormat::Q8_0);
  auto tok = load_tokenizer(ts_q8());  // the GGUF's own vocabulary decodes it
  const std::string text = tok->decode(greedy_from_bos(*q8, 40));
  EXPECT_EQ(text.rfind("Once upon a time, there was a little girl named Lily. She had a toy car", 0), 0u) << text;
}

// The Q8_0 file is kept as it is (int8 values and fp16 block scales), and it is exactly what our own quantiser makes
// of the safetensors weights: the same numbers as llama.cpp's quantize_row_q8_0, so the same logits.
TEST(GgufModel, Q8_0FileEqualsOurQ8_0OfTheSafetensorsModel) {
  auto ours = load(tinystories(), WeightFormat::Q8_0, false);
  auto file = load(ts_q8(), WeightFormat::F32, true);
  EXPECT_EQ(ours->weights_hash(), file->weights_hash());
  const auto a = ours->named_tensors(), b = file->named_tensors();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].first, b[i].first);
    EXPECT_TRUE(a[i].second.equal(b[i].second)) << a[i].first;
  }
  const std::vector<int64_t> ids{1, 400, 34, 1024, 7, 99, 1500, 2000};
  EXPECT_TRUE(logits_of(*ours, ids).equal(logits_of(*file, ids)));
  // Stated tolerance against the f32 model, max |Δ logit| (logits span ≈ ±15): Q8_0 weights alone 0.25, plus the
  // decode kernels' Q8_0 activations (quantised as llama.cpp does, core/kernels/skinny_matmul.h) 0.35.
  auto f32 = load_model(tinystories());
  EXPECT_LE((logits_of(*file, ids) - logits_of(*f32, ids)).abs().max().item<double>(), 0.5);
  // Asked for f32 storage, the Q8_0 file is dequantised exactly (q · d) and computed in fp32: the weights' error alone.
  auto widened = load(ts_q8(), WeightFormat::F32, false);
  EXPECT_EQ(widened->weight_format(), WeightFormat::F32);
  for (size_t l = 0; l < widened->layers().size(); ++l)
    EXPECT_TRUE(widened->layers()[l].qkv.weight_f32().equal(file->layers()[l].qkv.weight_f32())) << "layer " << l;
  const double weight_only = (logits_of(*widened, ids) - logits_of(*f32, ids)).abs().max().item<double>();
  EXPECT_GT(weight_only, 0.0);
  EXPECT_LE(weight_only, 0.4);
}

// Export writes what llama.cpp's own converter (gguf-py) and quantiser wrote for the same model, byte for byte.
TEST(GgufExport, TinyStoriesExportIsByteIdenticalToLlamaCpps) {
  const std::string dir = temp_dir("gguf-export");
  auto lm = load_model(tinystories());
  auto tok = load_tokenizer_for_model(tinystories(), "");
  save_gguf_model(*lm, gguf_vocab_of(*tok), dir + "/f32.gguf", GgufExportType::F32, "tinystories-656k");
  EXPECT_TRUE(slurp(dir + "/f32.gguf") == slurp(ts_f32())) << "f32 export differs from llama.cpp's";
  save_gguf_model(*lm, gguf_vocab_of(*tok), dir + "/q8.gguf", GgufExportType::Q8_0, "tinystories-656k");
  EXPECT_TRUE(slurp(dir + "/q8.gguf") == slurp(ts_q8())) << "q8_0 export differs from llama.cpp's";
  // Re-exporting the loaded Q8_0 file writes its blocks as they are.
  auto q8 = load(ts_q8(), WeightFormat::F32, true);
  auto q8tok = load_tokenizer(ts_q8());
  save_gguf_model(*q8, gguf_vocab_of(*q8tok), dir + "/re.gguf", GgufExportType::Q8_0, "tinystories-656k");
  EXPECT_TRUE(slurp(dir + "/re.gguf") == slurp(ts_q8())) << "re-exported q8_0 differs";
}

// Shapes the shared files do not cover: GQA with an untied head, F16, BF16, Qwen2's q/k/v biases (no Q/K permutation),
// llama2.c's tokenizer; the file read back gives the model's logits.
TEST(GgufExport, RoundTripsOtherShapesAndTypes) {
  const std::string dir = temp_dir("gguf-roundtrip");
  auto tok = load_tokenizer_for_model(tinystories(), "");
  ModelConfig c;
  c.family = "llama";
  c.model_type = "llama";
  c.vocab_size = 2048;
  c.dim = 64;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 16;
  c.ffn_dim = 96;
  c.max_seq_len = 64;
  c.norm_eps = 1e-6;
  c.rope_theta = 50000;
  c.bos_id = 1;
  c.eos_ids = {2};
  const std::vector<int64_t> ids{1, 5, 900, 77, 2047, 12, 300};
  for (const std::string type : {"llama", "qwen2"}) {
    c.model_type = type;
    c.qkv_bias = type == "qwen2";
    auto lm = make_random_model(c, WeightFormat::F32, 7);
    if (c.qkv_bias) {  // non-zero biases, so that a wrong permutation of them would show
      at::NoGradGuard ng;
      for (const auto& L : lm->layers()) const_cast<at::Tensor&>(L.qkv.bias()).normal_(0, 0.5);
    }
    const at::Tensor want = logits_of(*lm, ids);
    for (auto [t, tol] : {std::pair{GgufExportType::F32, 1e-5}, {GgufExportType::F16, 5e-3}, {GgufExportType::BF16, 5e-2}}) {
      const std::string path = dir + "/" + type + ".gguf";
      save_gguf_model(*lm, gguf_vocab_of(*tok), path, t, type);
      auto back = load_model(path);
      EXPECT_EQ(back->config().model_type, type);
      EXPECT_EQ(back->config().qkv_bias, c.qkv_bias);
      EXPECT_FALSE(back->config().tied_embeddings);
      EXPECT_DOUBLE_EQ(back->config().rope_theta, 50000);
      EXPECT_LE((logits_of(*back, ids) - want).abs().max().item<double>(), tol) << type << " " << int(t);
    }
  }
  // Llama 3's RoPE scaling has no GGUF metadata: it travels as rope_freqs.weight, the divisor of each frequency.
  c.model_type = "llama";
  c.qkv_bias = false;
  c.max_seq_len = 4096;
  c.rope_scaling.type = "llama3";
  c.rope_scaling.factor = 8;
  c.rope_scaling.original_max_position_embeddings = 64;  // small, so that these head dims fall in all three bands
  {
    auto lm = make_random_model(c, WeightFormat::F32, 9);
    std::vector<int64_t> long_ids;
    for (int64_t i = 0; i < 300; ++i) long_ids.push_back((i * 37) % 2048);
    save_gguf_model(*lm, gguf_vocab_of(*tok), dir + "/llama3.gguf", GgufExportType::F32, "llama3");
    auto back = load_model(dir + "/llama3.gguf");
    EXPECT_EQ(back->config().rope_scaling.type, "factors");
    EXPECT_LE((logits_of(*back, long_ids) - logits_of(*lm, long_ids)).abs().max().item<double>(), 1e-4);
    c.rope_scaling = RopeScaling();  // the same model without the scaling differs: the factors matter
    auto plain = make_random_model(c, WeightFormat::F32, 9);
    EXPECT_GT((logits_of(*plain, long_ids) - logits_of(*lm, long_ids)).abs().max().item<double>(), 1e-3);
  }
  // llama2.c: its tokenizer.bin becomes a "llama" vocabulary with its scores; the same ids come back.
  auto l2c = load_model(stories260k());
  auto l2ctok = load_tokenizer(tok512());
  save_gguf_model(*l2c, gguf_vocab_of(*l2ctok), dir + "/l2c.gguf", GgufExportType::F32, "stories260k");
  auto back = load_model(dir + "/l2c.gguf");
  const std::vector<int64_t> small{1, 5, 300, 77, 511, 12, 40};  // its vocabulary is 512
  EXPECT_LE((logits_of(*back, small) - logits_of(*l2c, small)).abs().max().item<double>(), 1e-5);
  auto backtok = load_tokenizer(dir + "/l2c.gguf");
  for (const std::string text : {"Once upon a time, there was a little girl named Lily.", "Tom said: \"Hi!\"\nThe end"})
    EXPECT_EQ(backtok->encode(text), l2ctok->encode(text)) << text;
}

// ---- the parser on bad files: every problem is an error naming the file and what is wrong ----

namespace {

std::string parse_error(const std::string& bytes) {
  try {
    parse_gguf(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "bad.gguf");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

template <class T>
void put(std::string& s, T v) { s.append(reinterpret_cast<const char*>(&v), sizeof v); }
void put_str(std::string& s, const std::string& v) { put<uint64_t>(s, v.size()); s += v; }

// A valid little file: one u32 key, one F32 tensor [4] at offset 0.
std::string tiny(uint64_t n_tensors = 1, uint64_t n_kv = 1, uint64_t dim = 4, uint32_t type = 0, uint64_t offset = 0) {
  std::string s = "GGUF";
  put<uint32_t>(s, 3);
  put<uint64_t>(s, n_tensors);
  put<uint64_t>(s, n_kv);
  put_str(s, "general.alignment");
  put<uint32_t>(s, 4);  // UINT32
  put<uint32_t>(s, 32);
  put_str(s, "w");
  put<uint32_t>(s, 1);
  put<uint64_t>(s, dim);
  put<uint32_t>(s, type);
  put<uint64_t>(s, offset);
  s.resize((s.size() + 31) / 32 * 32, '\0');
  s += std::string(16, '\0');
  return s;
}

}  // namespace

TEST(GgufFile, ParsesAValidFileAndRefusesBrokenOnes) {
  const std::string ok = tiny();
  const GgufHeader h = parse_gguf(reinterpret_cast<const uint8_t*>(ok.data()), ok.size(), "ok.gguf");
  ASSERT_EQ(h.tensors.size(), 1u);
  EXPECT_EQ(h.tensors[0].nbytes, 16u);
  EXPECT_EQ(h.data_start % 32, 0u);

  auto expect_error = [](const std::string& bytes, const std::string& words) {
    const std::string e = parse_error(bytes);
    EXPECT_NE(e.find("bad.gguf"), std::string::npos) << e;
    EXPECT_NE(e.find(words), std::string::npos) << "wanted '" << words << "' in: " << e;
  };
  expect_error("GGML" + ok.substr(4), "not a GGUF file");
  std::string v1 = ok;
  v1[4] = 1;
  expect_error(v1, "version 1");
  expect_error(tiny(1ull << 60), "tensors cannot fit");
  expect_error(tiny(1, 1ull << 61), "metadata pairs cannot fit");
  expect_error(tiny(1, 1, 1ull << 40), "runs past the end");       // a huge tensor in a tiny file
  expect_error(tiny(1, 1, 1ull << 62), "too");                      // element count overflow
  expect_error(tiny(1, 1, 4, 77), "unknown ggml type 77");
  expect_error(tiny(1, 1, 33, 8), "not a whole number of Q8_0 blocks");
  expect_error(tiny(1, 1, 4, 0, 16), "not aligned");
  expect_error(ok.substr(0, 40), "cannot fit");                       // truncated: the counts no longer fit
  std::string cut = ok.substr(0, 24 + 8 + 17);                        // a key, then the file ends before its type
  std::memcpy(&cut[8], "\0\0\0\0\0\0\0\0", 8);                           // (no tensors)
  expect_error(cut, "file ends inside a value type");
  expect_error(ok.substr(0, ok.size() - 8), "truncated");             // truncated in the data
  std::string longstr = ok;  // the key's length field claims more bytes than remain
  std::memcpy(&longstr[24], "\xff\xff\xff\xff\xff\xff\xff\x7f", 8);
  expect_error(longstr, "remain");
}

TEST(GgufFile, ModelErrorsNameTheKeyOrTensor) {
  const std::string dir = temp_dir("gguf-bad");
  // A tokenizer-only GGUF is not a model: the missing tensor is named.
  try {
    load_model(gguf_dir() + "/ggml-vocab-gpt-2.gguf");
    ADD_FAILURE() << "loaded a vocabulary-only GGUF as a model";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("architecture 'gpt2' is not supported"), std::string::npos) << e.what();
  }
  try {
    load_model(gguf_dir() + "/ggml-vocab-llama-spm.gguf");
    ADD_FAILURE() << "loaded a vocabulary-only GGUF as a model";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("token_embd.weight"), std::string::npos) << e.what();
  }
  // A truncated model file.
  const std::string full = slurp(ts_f32());
  { std::ofstream(dir + "/cut.gguf", std::ios::binary) << full.substr(0, full.size() / 2); }
  try {
    load_model(dir + "/cut.gguf");
    ADD_FAILURE() << "loaded a truncated GGUF";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cut.gguf"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
  }
}

}  // namespace frozenlm::test
