// The server: request parsing (every malformed request a 4xx naming the field), completion text with stop strings,
// the continuous-batching engine (a batch that mixes modules gives each request exactly what it gets alone, and what
// `generate` gives), and the HTTP API end to end (SSE framing, errors, API key, hot load/unload, limits, drain).
#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <future>
#include <map>
#include <set>
#include <thread>

#include "chat/chat_template.h"
#include "core/generate.h"
#include "core/loader.h"
#include "methods/reader/reader_pipeline.h"
#include "methods/recursive/textual_recursion.h"
#include "modules/neural_recursion.h"
#include "retrieval/dense_index.h"
#include "retrieval/passage_index.h"
#include "tasks/task.h"
#include "modules/idpt.h"
#include "tokenizer/prompt_tokens.h"
#include "modules/prompt_tuning.h"
#include "serve/batch_cache.h"
#include "serve/completion_text.h"
#include "serve/http_server.h"
#include "serve/openai_api.h"
#include "test_util.h"

namespace frozenlm::test {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

// ---------------------------------------------------------------------------------------------------------------
// Request parsing

int status_of(const std::string& body, std::string* param = nullptr, std::string* code = nullptr) {
  try {
    serve::parse_completion_request(body);
    return 200;
  } catch (const serve::ApiError& e) {
    if (param) *param = e.param;
    if (code) *code = e.code;
    return e.status;
  }
}

TEST(ServeApi, ParsesEveryPromptFormAndTheSamplingFields) {
  auto r = serve::parse_completion_request(R"({"model":"m","prompt":"hi","max_tokens":3,"temperature":0,"top_p":0.5,"n":2,
      "stop":["\n","."],"seed":7,"logprobs":2,"echo":true,"stream":false,"user":"u",
      "frequency_penalty":0,"presence_penalty":0.0,"best_of":1,"logit_bias":{}})");
  EXPECT_EQ(r.model, "m");
  EXPECT_EQ(r.prompts, std::vector<std::string>{"hi"});
  EXPECT_EQ(r.max_tokens, 3);
  EXPECT_EQ(r.temperature, 0);
  EXPECT_EQ(r.top_p, 0.5);
  EXPECT_EQ(r.n, 2);
  EXPECT_EQ(r.stop.size(), 2u);
  EXPECT_EQ(*r.seed, 7u);
  EXPECT_EQ(r.logprobs, 2);
  EXPECT_TRUE(r.echo && !r.stream && !r.include_usage);
  r = serve::parse_completion_request(R"({"model":"m","prompt":"hi","stream":true,"stream_options":{"include_usage":true}})");
  EXPECT_TRUE(r.stream && r.include_usage);
  EXPECT_EQ(serve::parse_completion_request(R"({"model":"m","prompt":["a","b"]})").prompts.size(), 2u);
  EXPECT_EQ(serve::parse_completion_request(R"({"model":"m","prompt":[1,5,9]})").prompt_ids, (std::vector<std::vector<int64_t>>{{1, 5, 9}}));
  EXPECT_EQ(serve::parse_completion_request(R"({"model":"m","prompt":[[1],[2,3]]})").prompt_ids.size(), 2u);
  EXPECT_EQ(serve::parse_completion_request(R"({"model":"m","prompt":"x"})").max_tokens, 16);  // OpenAI's default
  EXPECT_EQ(serve::parse_completion_request(R"({"model":"m","prompt":"x","max_tokens":4.0})").max_tokens, 4);
}

TEST(ServeApi, EveryMalformedRequestIsA400NamingTheField) {
  std::string param, code;
  EXPECT_EQ(status_of("{not json", &param, &code), 400);
  EXPECT_EQ(code, "invalid_json");
  EXPECT_EQ(status_of("[1,2]"), 400);
  auto stops_body = [](int n, const std::string& stop) { return json{{"model", "m"}, {"prompt", "x"}, {"stop", std::vector<std::string>(n, stop)}}.dump(); };
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"prompt":"x"})", "model"},
      {R"({"model":3,"prompt":"x"})", "model"},
      {R"({"model":"m"})", "prompt"},
      {R"({"model":"m","prompt":42})", "prompt"},
      {R"({"model":"m","prompt":[]})", "prompt"},
      {R"({"model":"m","prompt":["a",1]})", "prompt"},
      {R"({"model":"m","prompt":[1,-2]})", "prompt"},
      {R"({"model":"m","prompt":[[1],[]]})", "prompt"},
      {R"({"model":"m","prompt":"x","max_tokens":-1})", "max_tokens"},
      {R"({"model":"m","prompt":"x","max_tokens":"5"})", "max_tokens"},
      {R"({"model":"m","prompt":"x","max_tokens":2.5})", "max_tokens"},
      {R"({"model":"m","prompt":"x","max_tokens":1e300})", "max_tokens"},
      {R"({"model":"m","prompt":"x","max_tokens":99999999999999999999})", "max_tokens"},
      {R"({"model":"m","prompt":"x","max_tokens":0})", "max_tokens"},
      {R"({"model":"m","prompt":"x","temperature":-1})", "temperature"},
      {R"({"model":"m","prompt":"x","temperature":"hot"})", "temperature"},
      {R"({"model":"m","prompt":"x","top_p":0})", "top_p"},
      {R"({"model":"m","prompt":"x","top_p":1.5})", "top_p"},
      {R"({"model":"m","prompt":"x","n":0})", "n"},
      {R"({"model":"m","prompt":"x","n":1000})", "n"},
      {R"({"model":"m","prompt":"x","stop":5})", "stop"},
      {stops_body(257, "s"), "stop"},  // past the bound (lm-eval sends a handful; 256 are taken, below)
      {stops_body(1, std::string(1025, 'a')), "stop"},
      {R"({"model":"m","prompt":"x","stop":[""]})", "stop"},
      {R"({"model":"m","prompt":"x","seed":"s"})", "seed"},
      {R"({"model":"m","prompt":"x","logprobs":6})", "logprobs"},
      {R"({"model":"m","prompt":"x","echo":"yes"})", "echo"},
      {R"({"model":"m","prompt":"x","stream":1})", "stream"},
      {R"({"model":"m","prompt":"x","stream_options":{"include_usage":true}})", "stream_options"},
      {R"({"model":"m","prompt":"x","frequency_penalty":0.5})", "frequency_penalty"},
      {R"({"model":"m","prompt":"x","best_of":3})", "best_of"},
      {R"({"model":"m","prompt":"x","logit_bias":{"5":1}})", "logit_bias"},
      {R"({"model":"m","prompt":"x","suffix":"end"})", "suffix"},
  };
  for (const auto& [body, field] : cases) {
    param.clear();
    EXPECT_EQ(status_of(body, &param), 400) << body;
    EXPECT_EQ(param, field) << body;
  }
  EXPECT_EQ(status_of(R"({"model":"m","prompt":"x","max_tokens":0,"echo":true,"logprobs":0})"), 200);  // scoring a prompt
  EXPECT_EQ(status_of(stops_body(256, "\n\nQuestion:")), 200);  // any number of stop strings up to the bound
  EXPECT_EQ(status_of(stops_body(1, std::string(1024, 'a'))), 200);
  EXPECT_TRUE(serve::valid_module_name("qa-v2.1_x"));
  for (std::string bad : std::vector<std::string>{"", ".hidden", "a/b", "../x", "a b", std::string(65, 'a')}) EXPECT_FALSE(serve::valid_module_name(bad)) << bad;
}

// ---------------------------------------------------------------------------------------------------------------
// Completion text: detokenised incrementally, cut before the first stop string, nothing streamed a stop could swallow.

TEST(ServeText, StopStringsCutTheTextAndAreNeverStreamed) {
  auto tok = load_tokenizer_for_model(tinystories(), "");
  const std::vector<int64_t> prompt = tok->encode("Once upon a time", true);
  const std::vector<int64_t> ids = tok->encode_continuation(" there was a little girl. She was happy.");
  // No stop: the streamed pieces are the whole text (with its leading space, read after the prompt).
  serve::CompletionText plain(*tok, prompt, {});
  std::string full;
  for (int64_t id : ids) full += plain.push(id);
  full += plain.finish();
  EXPECT_EQ(full, " there was a little girl. She was happy.");
  // A stop that spans tokens: the text ends before it, and no piece ever contained any of it.
  for (const std::string stop : {"girl.", ". She", "l."}) {
    serve::CompletionText t(*tok, prompt, {stop, "never"});
    std::string out;
    const std::string want = full.substr(0, full.find(stop));
    for (int64_t id : ids) {
      if (t.stopped()) break;
      out += t.push(id);
      EXPECT_EQ(want.compare(0, out.size(), out), 0) << "streamed text that is not the final text's: '" << out << "' stop '" << stop << "'";
    }
    out += t.finish();
    EXPECT_TRUE(t.stopped()) << stop;
    EXPECT_EQ(out, want) << stop;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The engine

struct Served {
  std::unique_ptr<FrozenLM> lm = load_model(tinystories());
  std::unique_ptr<Tokenizer> tok = load_tokenizer_for_model(tinystories(), "");
  std::vector<std::shared_ptr<serve::ServedModule>> modules;  // 3 prompt-tuning modules and an ID-PT module
  Served() {
    for (int i = 0; i < 3; ++i) {
      auto m = std::make_shared<serve::ServedModule>();
      m->name = "pt" + std::to_string(i);
      m->module = PromptTuning::create(*lm, 3 + i, PromptInit::RandomUniform, {}, 100 + i);
      m->kind = m->module->kind();
      modules.push_back(m);
    }
    IdptConfig c;
    c.prompt_tokens = 4;
    c.dim = 32;
    c.heads = 2;
    c.seed = 5;
    auto m = std::make_shared<serve::ServedModule>();
    m->name = "idpt";
    m->module = IdPromptTuning::create(*lm, c);
    {  // a generator that is not zero (a fresh ID-PT equals prompt tuning): its prompt must depend on the input
      at::NoGradGuard ng;
      for (auto& p : m->module->parameters()) p.add_(at::randn(p.sizes(), at::TensorOptions().dtype(p.dtype())) * 0.05);
    }
    m->kind = m->module->kind();
    modules.push_back(m);
  }
  // What `generate` gives alone for this module (null: base), prompt and sampling.
  std::vector<int64_t> alone(const serve::ServedModule* m, const std::vector<int64_t>& ids, int64_t max_new, double temperature, uint64_t seed) {
    at::NoGradGuard ng;
    SamplingParams sp;
    sp.max_new_tokens = max_new;
    sp.temperature = temperature;
    sp.seed = seed;
    sp.eos_ids = lm->config().eos_ids;
    ModuleInput x = module_input(*lm, at::tensor(ids, at::kLong).view({1, -1}));
    if (m) x = m->module->apply(*lm, x);
    return generate_from_embeds(*lm, x.embeds, x.mask, sp)[0];
  }
};

std::vector<std::vector<int64_t>> collect(serve::Request& r, std::vector<std::string>* finish = nullptr, std::string* text = nullptr) {
  std::vector<std::vector<int64_t>> out(r.choices().size());
  if (finish) finish->assign(r.choices().size(), "");
  std::vector<serve::Update> ups;
  while (r.next(&ups, 100ms)) {
    for (auto& u : ups) {
      for (auto& t : u.tokens) out[u.choice].push_back(t.id);
      if (u.finished && finish) (*finish)[u.choice] = u.finish_reason;
      if (text && u.choice == 0) *text += u.text;
    }
    ups.clear();
  }
  EXPECT_EQ(r.error(), "");
  return out;
}

TEST(ServeEngine, AMixedModuleBatchGivesEachRequestWhatGenerateGivesAlone) {
  Served s;
  serve::EngineOptions eo;
  eo.max_batch = 8;
  eo.threads = 1;
  serve::Engine engine(*s.lm, *s.tok, eo);
  const std::vector<std::string> texts = {"Once upon a time", "The dog", "Lily saw a big red ball and", "Tom", "One day, a"};
  struct Job {
    std::shared_ptr<serve::Request> req;
    const serve::ServedModule* module;
    std::vector<int64_t> ids;
    int64_t max_new;
    double temperature;
    uint64_t seed;
  };
  std::vector<Job> jobs;
  auto submit = [&](const serve::ServedModule* m, size_t text, int64_t max_new, double temperature, uint64_t seed) {
    serve::ChoiceParams c;
    c.prompt_ids = s.tok->encode(texts[text], true);
    c.max_tokens = max_new;
    c.temperature = temperature;
    c.seed = seed;
    std::shared_ptr<const serve::ServedModule> sm;
    for (auto& x : s.modules)
      if (x.get() == m) sm = x;
    jobs.push_back({engine.submit(sm, {c}), m, c.prompt_ids, max_new, temperature, seed});
  };
  // 12 requests over the base, three soft prompts and an ID-PT module, greedy and sampled, different lengths; the
  // second half arrives while the first is decoding (admitted between steps into a running batch of at most 8 rows).
  for (int i = 0; i < 6; ++i) submit(i % 5 == 4 ? nullptr : s.modules[i % 4].get(), i % 5, 10 + 7 * i, i % 2 ? 0.8 : 0.0, 40 + i);
  std::vector<serve::Update> first;
  while (first.empty()) jobs[0].req->next(&first, 100ms);
  for (int i = 6; i < 12; ++i) submit(i % 5 == 0 ? nullptr : s.modules[i % 4].get(), (i * 3) % 5, 6 + 5 * i, i % 3 ? 0.0 : 1.0, 40 + i);
  std::map<std::string, std::vector<int64_t>> by_module;
  for (size_t i = 0; i < jobs.size(); ++i) {
    Job& j = jobs[i];
    auto got = collect(*j.req)[0];
    if (i == 0) {
      std::vector<int64_t> head;
      for (auto& u : first)
        for (auto& t : u.tokens) head.push_back(t.id);
      got.insert(got.begin(), head.begin(), head.end());
    }
    const auto want = s.alone(j.module, j.ids, j.max_new, j.temperature, j.seed);
    EXPECT_EQ(got, want) << "request " << i << " module " << (j.module ? j.module->name : "base") << " T=" << j.temperature;
    if (j.temperature == 0 && j.ids == jobs[0].ids) by_module[j.module ? j.module->name : "base"] = got;
  }
  EXPECT_GE(engine.stats().steps, 30);
  // The check can fail: greedy outputs of the same prompt differ between the modules (so a row reading another
  // row's prompt would be caught).
  std::set<std::vector<int64_t>> distinct;
  const auto ids0 = jobs[0].ids;
  for (auto& m : s.modules) distinct.insert(s.alone(m.get(), ids0, 12, 0, 0));
  distinct.insert(s.alone(nullptr, ids0, 12, 0, 0));
  EXPECT_EQ(distinct.size(), s.modules.size() + 1);
}

TEST(ServeEngine, NChoicesStopsLogprobsAndCancellation) {
  Served s;
  serve::EngineOptions eo;
  eo.max_batch = 4;
  eo.threads = 1;
  serve::Engine engine(*s.lm, *s.tok, eo);
  serve::ChoiceParams c;
  c.prompt_ids = s.tok->encode("Once upon a time", true);
  c.max_tokens = 40;
  c.temperature = 0;
  c.top_logprobs = 3;
  // Greedy logprobs: the chosen token is the top one, and its logprob is log_softmax's.
  auto r = engine.submit(nullptr, {c});
  std::vector<serve::Update> ups, all;
  while (r->next(&ups, 100ms)) all.insert(all.end(), ups.begin(), ups.end()), ups.clear();
  ASSERT_FALSE(all.empty());
  std::vector<int64_t> ids = c.prompt_ids;
  for (auto& u : all)
    for (auto& t : u.tokens) {
      ASSERT_EQ(t.top.size(), 3u);
      EXPECT_EQ(t.top[0].first, t.id);
      EXPECT_FLOAT_EQ(t.top[0].second, t.logprob);
      EXPECT_GE(t.top[0].second, t.top[1].second);
      at::NoGradGuard ng;
      const at::Tensor lp = s.lm->forward({at::tensor(ids, at::kLong).view({1, -1})}).logits[0][-1].log_softmax(-1);
      EXPECT_NEAR(t.logprob, lp[t.id].item<float>(), 1e-4);
      ids.push_back(t.id);
    }
  // "length", unless greedy decoding met EOS on the 40th token (CPU rounding decides such ties: assert the rule).
  const auto& eos = s.lm->config().eos_ids;
  EXPECT_EQ(all.back().finish_reason, std::find(eos.begin(), eos.end(), ids.back()) != eos.end() ? "stop" : "length");
  // A stop string: the text ends before it, finish_reason "stop".
  std::string greedy_text = s.tok->decode(std::vector<int64_t>(ids.begin() + c.prompt_ids.size(), ids.end()), true);
  const size_t cut = greedy_text.find(' ', 10);
  ASSERT_NE(cut, std::string::npos);
  c.top_logprobs = -1;
  c.stops = {greedy_text.substr(cut, 3)};
  std::vector<std::string> finish;
  std::string text;
  auto r2 = engine.submit(nullptr, {c});
  collect(*r2, &finish, &text);
  EXPECT_EQ(finish[0], "stop");
  EXPECT_EQ(text, greedy_text.substr(0, greedy_text.find(c.stops[0])));
  // n = 3 sampled choices with seeds 0, 1, 2: each is generate() with that seed.
  c.stops.clear();
  c.temperature = 1.0;
  c.max_tokens = 12;
  std::vector<serve::ChoiceParams> three(3, c);
  for (int i = 0; i < 3; ++i) three[i].seed = i;
  auto r3 = engine.submit(nullptr, three);
  auto got = collect(*r3);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(got[i], s.alone(nullptr, c.prompt_ids, 12, 1.0, i)) << i;
  EXPECT_NE(got[0], got[1]);
  // Cancelled mid-way: the row leaves the batch and the engine goes idle.
  c.max_tokens = 400;
  auto r4 = engine.submit(nullptr, {c});
  std::vector<serve::Update> u4;
  while (u4.empty()) r4->next(&u4, 100ms);
  r4->cancel();
  for (int i = 0; i < 100 && engine.stats().running_rows > 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(engine.stats().running_rows, 0);
  EXPECT_LT(r4->completion_tokens(), 400);
  // Requests that can never run are refused at once.
  c.max_tokens = 600;
  EXPECT_THROW(engine.submit(nullptr, {c}), Error);  // beyond the 512-token context
  EXPECT_THROW(engine.submit(nullptr, std::vector<serve::ChoiceParams>(5, three[0])), Error);  // more rows than max_batch
}

// A module that misbehaves on purpose: its forward throws (a LibTorch-like message: a first line, then a stack with
// the binary's file names), or takes `delay` before it returns the input unchanged.
class MisbehavingModule : public TrainableModule {
 public:
  explicit MisbehavingModule(std::chrono::milliseconds delay, bool throws = false) : delay_(delay), throws_(throws) {}
  std::string kind() const override { return "misbehaving"; }
  ModuleInput apply(const FrozenLM&, const ModuleInput& in) const override {
    std::this_thread::sleep_for(delay_);
    if (throws_) throw std::runtime_error("module forward exploded\nException raised from secret_kernel at /build/secret_file.cpp:42");
    return in;
  }
  int64_t prefix_length() const override { return 0; }
  std::vector<at::Tensor> parameters() const override { return {}; }
  void save(const std::string&) const override {}

 private:
  std::chrono::milliseconds delay_;
  bool throws_;
};

std::shared_ptr<serve::ServedModule> served(const std::string& name, std::unique_ptr<TrainableModule> m) {
  auto sm = std::make_shared<serve::ServedModule>();
  sm->name = name;
  sm->kind = m->kind();
  sm->module = std::move(m);
  return sm;
}

// A soft prompt of NaNs: every logit it leads to is NaN, so sampling its token throws inside LibTorch.
std::unique_ptr<TrainableModule> nan_prompt(const FrozenLM& lm) {
  auto m = PromptTuning::create(lm, 2, PromptInit::RandomUniform, {}, 1);
  at::NoGradGuard ng;
  for (auto& p : m->parameters()) p.fill_(NAN);
  return m;
}

serve::EngineOptions one_thread() {
  serve::EngineOptions eo;
  eo.threads = 1;
  return eo;
}

// A greedy choice of `max_tokens` for `prompt` (BOS first).
serve::ChoiceParams greedy(const Served& s, const std::string& prompt, int64_t max_tokens) {
  serve::ChoiceParams c;
  c.prompt_ids = s.tok->encode(prompt, true);
  c.max_tokens = max_tokens;
  c.temperature = 0;
  return c;
}

TEST(ServeEngine, AFailingRequestFailsAloneWhileOthersDecode) {
  // A long stream runs; meanwhile requests fail in each place a request's own work can fail — its module's forward,
  // sampling its token (NaN logits) — and a near-zero temperature (1e-40, which overflows logits / T) is greedy.
  // Each bad request gets an internal error naming its id and no detail; the stream finishes exactly as alone.
  Served s;
  serve::Engine engine(*s.lm, *s.tok, one_thread());
  serve::ChoiceParams c = greedy(s, "Once upon a time", 480);
  c.ignore_eos = true;
  auto stream = engine.submit(nullptr, {c}, "stream-1");
  std::vector<serve::Update> first;
  while (first.empty()) stream->next(&first, 100ms);

  serve::ChoiceParams bad = c;
  bad.max_tokens = 8;
  bad.ignore_eos = false;
  auto throws = served("throws", std::make_unique<MisbehavingModule>(0ms, true));
  auto r1 = engine.submit(throws, {bad}, "req-throws");
  bad.temperature = 1.0;
  auto nan = served("nan", nan_prompt(*s.lm));
  auto r2 = engine.submit(nan, {bad, bad}, "req-nan");  // two rows: both leave the batch
  bad.temperature = 1e-40;
  auto r3 = engine.submit(nullptr, {bad}, "req-tiny-temperature");
  for (auto* r : {r1.get(), r2.get()}) {
    std::vector<serve::Update> ups;
    while (r->next(&ups, 100ms)) ups.clear();
    EXPECT_EQ(r->error(), "internal error (request id " + r->id() + ")");
    EXPECT_EQ(r->error().find("secret"), std::string::npos);
  }
  EXPECT_NE(r1->error_detail().find("module forward exploded"), std::string::npos) << r1->error_detail();
  EXPECT_FALSE(r2->error_detail().empty());
  std::vector<std::string> finish;
  EXPECT_EQ(collect(*r3, &finish)[0], s.alone(nullptr, c.prompt_ids, 8, 0, 0));  // greedy, as temperature 0

  std::vector<int64_t> got;
  for (auto& u : first)
    for (auto& t : u.tokens) got.push_back(t.id);
  std::vector<serve::Update> ups;
  while (stream->next(&ups, 100ms)) {
    for (auto& u : ups)
      for (auto& t : u.tokens) got.push_back(t.id);
    ups.clear();
  }
  EXPECT_EQ(stream->error(), "");
  SamplingParams sp;
  sp.max_new_tokens = 480;
  sp.temperature = 0;
  EXPECT_EQ(got, generate(*s.lm, {c.prompt_ids}, sp)[0]);
  for (int i = 0; i < 200 && engine.stats().running_rows > 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(engine.stats().running_rows, 0);
}

TEST(ServeEngine, DrainWaitsForARequestStillInPrefill) {
  // A request taken off the queue is in its module's forward (slow on purpose) when drain() is called: drain
  // returns only once that request has finished.
  Served s;
  serve::Engine engine(*s.lm, *s.tok, one_thread());
  const serve::ChoiceParams c = greedy(s, "Once upon a time", 4);
  auto slow = served("slow", std::make_unique<MisbehavingModule>(400ms));
  auto r = engine.submit(slow, {c});
  for (int i = 0; i < 1000 && engine.stats().queued > 0; ++i) std::this_thread::sleep_for(1ms);
  ASSERT_EQ(engine.stats().queued, 0);
  engine.drain();
  EXPECT_TRUE(r->done());
  EXPECT_EQ(r->error(), "");
  EXPECT_EQ(r->completion_tokens(), 4);
}

// The model's tokenizer, told to know only ids below `limit` (as a checkpoint whose embedding rows are padded past its
// vocabulary): decoding a higher id throws.
class TruncatedVocab : public Tokenizer {
 public:
  TruncatedVocab(const Tokenizer& t, int64_t limit) : t_(t), limit_(limit) {}
  std::vector<int64_t> encode(const std::string& text, bool add_special) const override { return t_.encode(text, add_special); }
  std::vector<int64_t> encode_continuation(const std::string& text) const override { return t_.encode_continuation(text); }
  std::string decode(const std::vector<int64_t>& ids, bool skip_special) const override {
    for (int64_t id : ids)
      if (id >= limit_) throw Error("no token " + std::to_string(id));
    return t_.decode(ids, skip_special);
  }
  int64_t vocab_size() const override { return limit_; }
  std::string id_to_token(int64_t id) const override { return id < limit_ ? t_.id_to_token(id) : throw Error("no token"); }
  int64_t token_to_id(const std::string& token) const override { return t_.token_to_id(token); }
  int64_t bos_id() const override { return t_.bos_id(); }
  int64_t eos_id() const override { return t_.eos_id(); }

 private:
  const Tokenizer& t_;
  int64_t limit_;
};

TEST(ServeEngine, IdsPastTheTokenizersVocabularyAreNeitherTakenNorGenerated) {
  Served s;
  at::NoGradGuard ng;
  const std::vector<int64_t> prompt = s.tok->encode("Once upon a time", true);
  // The vocabulary ends just below the token greedy decoding would pick first.
  const at::Tensor logits = s.lm->forward({at::tensor(prompt, at::kLong).view({1, -1})}).logits[0][-1];
  const int64_t top = logits.argmax().item<int64_t>();
  ASSERT_GT(top, 10);
  TruncatedVocab tok(*s.tok, top);
  serve::EngineOptions eo;
  eo.threads = 1;
  serve::Engine engine(*s.lm, tok, eo);
  EXPECT_EQ(engine.usable_vocab(), top);
  serve::ChoiceParams c;
  c.prompt_ids = prompt;
  c.max_tokens = 30;
  c.temperature = 0;
  c.top_logprobs = 2;
  c.prompt_ids.back() = top;  // a prompt holding an id past the vocabulary is refused at once
  EXPECT_THROW(engine.submit(nullptr, {c}), Error);
  c.prompt_ids = prompt;
  auto r = engine.submit(nullptr, {c});
  std::vector<serve::Update> ups, all;
  while (r->next(&ups, 100ms)) all.insert(all.end(), ups.begin(), ups.end()), ups.clear();
  EXPECT_EQ(r->error(), "");
  ASSERT_FALSE(all.empty());
  ASSERT_FALSE(all[0].tokens.empty());
  EXPECT_EQ(all[0].tokens[0].id, logits.narrow(0, 0, top).argmax().item<int64_t>());  // the best of the usable ids
  for (auto& u : all)
    for (auto& t : u.tokens) {
      EXPECT_LT(t.id, top);
      for (auto& [id, lp] : t.top) EXPECT_LT(id, top);
    }
  // Sampled at a high temperature too: never an id past the vocabulary.
  c.temperature = 2.0;
  c.max_tokens = 200;
  c.ignore_eos = true;
  std::vector<serve::ChoiceParams> four(4, c);
  for (int i = 0; i < 4; ++i) four[i].seed = i;
  for (const auto& row : collect(*engine.submit(nullptr, four)))
    for (int64_t id : row) EXPECT_LT(id, top);
}

TEST(ServeEngine, PromptLogprobsEqualTheFullLogitsLogSoftmaxBlockByBlock) {
  // Echo + logprobs of a prompt longer than several of the LM head's row blocks, for the base and a soft prompt: each
  // token's logprob and its top 2 are log_softmax of one forward's full [T, V] logits (the way they were computed
  // before the head ran in blocks).
  Served s;
  serve::Engine engine(*s.lm, *s.tok, one_thread());
  std::string text;
  for (int i = 0; i < 30; ++i) text += "Once upon a time, there was a little girl named Lily. ";
  serve::ChoiceParams c = greedy(s, text, 0);
  ASSERT_GT(c.prompt_ids.size(), 200u);
  c.prompt_ids.resize(std::min<size_t>(c.prompt_ids.size(), 300));
  c.prompt_logprobs = true;
  c.top_logprobs = 2;
  at::NoGradGuard ng;
  for (const std::shared_ptr<serve::ServedModule>& m : {std::shared_ptr<serve::ServedModule>(), s.modules[0]}) {
    auto r = engine.submit(m, {c});
    std::vector<serve::Update> ups, all;
    while (r->next(&ups, 100ms)) all.insert(all.end(), ups.begin(), ups.end()), ups.clear();
    ASSERT_EQ(r->error(), "");
    std::vector<serve::TokenLogprob> got;
    for (auto& u : all)
      if (!u.prompt.empty()) got = u.prompt;
    ASSERT_EQ(got.size(), c.prompt_ids.size());
    EXPECT_TRUE(std::isnan(got[0].logprob));
    ModuleInput x = module_input(*s.lm, at::tensor(c.prompt_ids, at::kLong).view({1, -1}));
    if (m) x = m->module->apply(*s.lm, x);
    ForwardInput fi;
    fi.embeds = x.embeds;
    fi.mask = x.mask;
    const int64_t T = int64_t(c.prompt_ids.size()), off = x.embeds.size(1) - T;
    const at::Tensor lp = s.lm->forward(fi).logits[0].narrow(0, off, T).log_softmax(-1);  // [T, V]
    for (int64_t i = 1; i < T; ++i) {
      EXPECT_NEAR(got[size_t(i)].logprob, lp[i - 1][c.prompt_ids[size_t(i)]].item<float>(), 1e-4) << i;
      const auto top = lp[i - 1].topk(2);
      ASSERT_EQ(got[size_t(i)].top.size(), 2u);
      EXPECT_EQ(got[size_t(i)].top[0].first, std::get<1>(top)[0].item<int64_t>()) << i;
      EXPECT_NEAR(got[size_t(i)].top[0].second, std::get<0>(top)[0].item<float>(), 1e-4) << i;
    }
  }
}

TEST(ServeEngine, TheKvBudgetBoundsTheCachesRealMemory) {
  // 12 requests of up to 45 positions each through a budget of 256 positions: rows are allocated in powers of two, so
  // at most 4 run at once (8 × 45 > 256). Every request gets what it gets alone, and the cache's buffers never hold
  // more than the budget's positions — sampled while they run (the engine's kv_cache_bytes).
  Served s;
  serve::EngineOptions eo = one_thread();
  eo.max_batch = 8;
  eo.kv_budget_tokens = 256;
  EXPECT_THROW(serve::Engine(*s.lm, *s.tok, eo), Error);  // below one full-context row: refused at start
  eo.kv_budget_tokens = s.lm->config().max_seq_len;         // 512
  serve::Engine engine(*s.lm, *s.tok, eo);
  const ModelConfig& mc = s.lm->config();
  const int64_t per_position = 2 * mc.n_layers * mc.n_kv_heads * mc.head_dim * 4 + 1;  // K and V in fp32, and the mask
  std::vector<std::shared_ptr<serve::Request>> reqs;
  const std::vector<std::string> prompts = {"Once upon a time", "Tom had a dog", "The sun", "Lily and Ben went to the park"};
  for (int i = 0; i < 12; ++i) {
    serve::ChoiceParams c = greedy(s, prompts[i % 4], 40 - i);
    c.ignore_eos = true;
    reqs.push_back(engine.submit(nullptr, {c}));
  }
  int64_t peak = 0, most_rows = 0;
  while (std::any_of(reqs.begin(), reqs.end(), [](auto& r) { return !r->done(); })) {
    const serve::EngineStats st = engine.stats();
    peak = std::max(peak, st.kv_cache_bytes);
    most_rows = std::max(most_rows, st.running_rows);
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  EXPECT_LE(peak, eo.kv_budget_tokens * per_position + eo.max_batch * 8) << "bytes held beyond the budget";
  EXPECT_GT(peak, 0);
  EXPECT_LE(most_rows, 8);
  for (int i = 0; i < 12; ++i) {
    const std::vector<int64_t> got = collect(*reqs[size_t(i)])[0];
    SamplingParams sp;
    sp.max_new_tokens = 40 - i;
    sp.temperature = 0;  // (ignore_eos: no EOS ids)
    EXPECT_EQ(got, generate(*s.lm, {s.tok->encode(prompts[i % 4], true)}, sp)[0]) << i;
  }
  // A request that could never fit is refused at once, naming the budget.
  std::vector<serve::ChoiceParams> wide(8, greedy(s, "Once", 200));
  try {
    engine.submit(nullptr, wide);
    ADD_FAILURE() << "8 rows of 200 positions fit a budget of 512";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--kv-budget-tokens"), std::string::npos) << e.what();
  }
}

// One decode step of the batch cache's rows; each row's logits must be those of decoding it alone (its own cache).
struct AloneRow {
  KVCache alone;
  int64_t token = 0, length = 0;
};
void step_against_alone(const Served& s, serve::BatchCache& bc, std::vector<AloneRow>& refs, int step) {
  ForwardOptions fo;
  fo.last_logits_only = true;
  bc.ensure_room(1);
  std::vector<int64_t> next;
  for (auto& r : refs) next.push_back(r.token);
  ForwardInput in;
  in.ids = at::tensor(next, at::kLong).view({-1, 1});
  at::Tensor lg = s.lm->forward(in, &bc.cache(), fo).logits.squeeze(1);
  bc.after_forward();
  for (size_t i = 0; i < refs.size(); ++i) {
    ForwardInput one;
    one.ids = at::tensor(std::vector<int64_t>{refs[i].token}, at::kLong).view({1, 1});
    at::Tensor want = s.lm->forward(one, &refs[i].alone, fo).logits.squeeze(1)[0];
    EXPECT_LT((lg[int64_t(i)] - want).abs().max().item<double>(), 1e-4) << "row " << i << " step " << step;
    refs[i].token = want.argmax().item<int64_t>();
    ++refs[i].length;
  }
}

TEST(ServeEngine, ABatchCacheAtItsBudgetCompactsAndStaysExact) {
  // Rows join and leave a cache whose budget (8 rows × 48 positions) is what they need: it allocates rows in powers
  // of two, never holds more than its budget, compacts when that is all there is, and every row's logits stay those
  // of decoding it alone.
  Served s;
  at::NoGradGuard ng;
  serve::BatchCache bc(*s.lm, 8, 8 * 48);
  std::vector<AloneRow> refs;
  const std::vector<std::string> texts = {"Once upon a time", "Tom", "The sun was hot", "A cat sat", "Lily ran", "Ben and his dog"};
  size_t next_text = 0;
  ForwardOptions fo;
  fo.last_logits_only = true;
  auto add = [&] {
    auto ids = s.tok->encode(texts[next_text++ % texts.size()], true);
    KVCache c = s.lm->new_cache(1, 0);
    at::Tensor lg = s.lm->forward({at::tensor(ids, at::kLong).view({1, -1})}, &c, fo).logits;
    bc.add_row(c, 0);
    KVCache alone = s.lm->new_cache(1, 0);
    s.lm->forward({at::tensor(ids, at::kLong).view({1, -1})}, &alone, fo);
    refs.push_back({std::move(alone), lg.argmax(-1).item<int64_t>(), int64_t(ids.size())});
  };
  int64_t compactions = 0, most_rows = 0;
  for (int step = 0; step < 160; ++step) {
    if (refs.size() < 8 && step % 3 == 0) add();
    const int64_t cols = bc.columns();
    bc.ensure_room(1);  // (here, to count compactions; the step finds the room made)
    if (bc.columns() < cols) ++compactions;
    step_against_alone(s, bc, refs, step);
    EXPECT_LE(bc.rows_allocated() * bc.capacity(), bc.budget()) << "step " << step;
    most_rows = std::max<int64_t>(most_rows, bc.rows());
    for (size_t i = refs.size(); i-- > 0;)
      if (refs[i].length >= 47) {  // a row leaves before it outgrows its 48 positions
        bc.remove_row(int64_t(i));
        refs[i] = std::move(refs.back());
        refs.pop_back();
      }
  }
  EXPECT_GT(compactions, 0);
  EXPECT_GE(most_rows, 5);  // and it held more than 4 rows: 8 allocated
}

TEST(ServeEngine, BatchCacheCompactionAndGrowthKeepEveryRowExact) {
  // A running batch whose rows join at different times, leave in the middle and outlive the first capacity: every
  // row's logits stay those of decoding it alone (the compaction and growth paths both run).
  Served s;
  at::NoGradGuard ng;
  serve::BatchCache bc(*s.lm, 4);
  std::vector<AloneRow> refs;
  auto add = [&](const std::string& text) {
    auto ids = s.tok->encode(text, true);
    KVCache c = s.lm->new_cache(1, 0);
    ForwardOptions fo;
    fo.last_logits_only = true;
    at::Tensor lg = s.lm->forward({at::tensor(ids, at::kLong).view({1, -1})}, &c, fo).logits;
    bc.add_row(c, 0);
    KVCache alone = s.lm->new_cache(1, 0);
    s.lm->forward({at::tensor(ids, at::kLong).view({1, -1})}, &alone, fo);
    refs.push_back({std::move(alone), lg.argmax(-1).item<int64_t>(), int64_t(ids.size())});
  };
  int steps = 0;
  auto step = [&] { step_against_alone(s, bc, refs, steps++); };
  add("Once upon a time, there was a little girl");
  const int64_t first_capacity = bc.capacity();
  for (int i = 0; i < 5; ++i) step();
  add("Tom");
  add("The sun was hot and the children played");
  int64_t compactions_seen = 0, last_cols = bc.columns();
  for (int i = 0; i < 80; ++i) {
    step();
    if (bc.columns() < last_cols) ++compactions_seen;
    last_cols = bc.columns();
    if (i == 20) {  // the first row leaves; the last moves into its place
      bc.remove_row(0);
      refs[0] = std::move(refs.back());
      refs.pop_back();
    }
    if (i == 30) add("A cat");
    if (i == 40)  // all but the short late row leave: its real keys are far fewer than the columns, so they compact
      while (refs.size() > 1) {
        const size_t i = refs.size() - 2;  // the last row ("A cat") moves into its place
        bc.remove_row(i);
        refs[i] = std::move(refs.back());
        refs.pop_back();
      }
  }
  EXPECT_GT(compactions_seen, 0);
  EXPECT_GE(bc.capacity(), 4 * first_capacity);  // and it grew (by doubling) before
}

// ---------------------------------------------------------------------------------------------------------------
// HTTP end to end

struct Running {
  Served s;
  // Its own directory per test: CTest runs the tests of this file in parallel.
  std::string root = temp_dir(std::string("serve-modules-") + ::testing::UnitTest::GetInstance()->current_test_info()->name());
  std::unique_ptr<serve::ModuleRegistry> reg;
  serve::Metrics metrics;
  std::unique_ptr<serve::Engine> engine;
  std::unique_ptr<serve::Server> server;
  std::thread th;
  int port = 0;
  explicit Running(serve::EngineOptions eo = {}, std::string key = "", std::shared_ptr<const chat::ChatTemplate> chat = nullptr) {
    for (int i = 0; i < 2; ++i) s.modules[i]->module->save(root + "/" + s.modules[i]->name);
    s.modules[3]->module->save(root + "/idpt");
    reg = std::make_unique<serve::ModuleRegistry>(*s.lm, *s.tok, root);
    EXPECT_TRUE(reg->load_root().empty());
    eo.threads = 1;
    engine = std::make_unique<serve::Engine>(*s.lm, *s.tok, eo, &metrics);
    serve::ServerOptions so;
    so.port = 0;
    so.model_name = "tinystories";
    so.api_key = key;
    so.max_body_bytes = 64 * 1024;
    so.log_requests = std::getenv("SERVE_TEST_LOG") != nullptr;
    so.chat_template = std::move(chat);
    server = std::make_unique<serve::Server>(*s.lm, *s.tok, *engine, *reg, metrics, so);
    port = server->bind();
    th = std::thread([this] { server->serve(); });
  }
  ~Running() {
    server->stop();
    th.join();
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(60, 0);
    return c;
  }
};

json post(httplib::Client& c, const std::string& path, const json& body, int* status = nullptr, httplib::Headers h = {}) {
  auto res = c.Post(path.c_str(), h, body.dump(), "application/json");
  EXPECT_TRUE(res) << path;
  if (!res) return {};
  if (status) *status = res->status;
  return json::parse(res->body, nullptr, false);
}

// Server-sent events: every event is "data: <json>\n\n" and the stream ends with "data: [DONE]\n\n".
std::vector<json> sse_events(const std::string& body, bool* done) {
  std::vector<json> out;
  *done = false;
  size_t at = 0;
  while (at < body.size()) {
    const size_t end = body.find("\n\n", at);
    EXPECT_NE(end, std::string::npos) << "unterminated event";
    if (end == std::string::npos) break;
    const std::string ev = body.substr(at, end - at);
    EXPECT_EQ(ev.rfind("data: ", 0), 0u) << ev;
    EXPECT_FALSE(*done) << "an event after [DONE]";
    if (ev == "data: [DONE]") *done = true;
    else out.push_back(json::parse(ev.substr(6)));
    at = end + 2;
  }
  return out;
}

TEST(ServeHttp, CompletionsEqualGenerateStreamedOrNotForTheBaseAndEveryModule) {
  Running r;
  auto c = r.client();
  auto models = json::parse(c.Get("/v1/models")->body);
  std::map<std::string, std::string> kinds;
  for (auto& m : models["data"]) kinds[m["id"]] = m["kind"];
  EXPECT_EQ(kinds, (std::map<std::string, std::string>{{"tinystories", "base"}, {"pt0", "prompt_tuning"}, {"pt1", "prompt_tuning"}, {"idpt", "id_prompt_tuning"}}));
  EXPECT_EQ(c.Get("/health")->body, R"({"status":"ok"})");
  for (const std::string model : {"tinystories", "pt0", "pt1", "idpt"}) {
    const serve::ServedModule* m = nullptr;
    for (auto& x : r.s.modules)
      if (x->name == model) m = x.get();
    int status = 0;
    json j = post(c, "/v1/completions", {{"model", model}, {"prompt", "Once upon a time"}, {"max_tokens", 20}, {"temperature", 0}, {"logprobs", 1}}, &status);
    ASSERT_EQ(status, 200) << j.dump();
    EXPECT_EQ(j["object"], "text_completion");
    EXPECT_EQ(j["model"], model);
    const auto ids = r.s.tok->encode("Once upon a time", true);
    const auto want = r.s.alone(m, ids, 20, 0, 0);
    std::vector<int64_t> want_text_ids;
    for (int64_t t : want)
      if (std::find(r.s.lm->config().eos_ids.begin(), r.s.lm->config().eos_ids.end(), t) == r.s.lm->config().eos_ids.end()) want_text_ids.push_back(t);
    std::vector<int64_t> ctx(ids.end() - std::min<size_t>(8, ids.size()), ids.end()), full = ctx;
    full.insert(full.end(), want_text_ids.begin(), want_text_ids.end());
    const std::string want_text = r.s.tok->decode(full, true).substr(r.s.tok->decode(ctx, true).size());
    EXPECT_EQ(j["choices"][0]["text"], want_text) << model;
    EXPECT_EQ(j["choices"][0]["logprobs"]["tokens"].size(), want.size());
    EXPECT_EQ(j["usage"]["completion_tokens"], want.size());
    EXPECT_EQ(j["usage"]["prompt_tokens"], ids.size());
    // "stop" when generation ended at EOS — whether that fell before the 20th token or on it (where it falls depends
    // on the CPU's rounding: Zen 5's AVX-512 numerics put EOS exactly on the 20th), else "length".
    const auto& eos = r.s.lm->config().eos_ids;
    const bool ended_at_eos = !want.empty() && std::find(eos.begin(), eos.end(), want.back()) != eos.end();
    EXPECT_EQ(j["choices"][0]["finish_reason"], ended_at_eos ? "stop" : "length") << model;
    // The same request streamed: SSE framing, the pieces add up to the same text, usage at the end.
    auto res = c.Post("/v1/completions", json{{"model", model}, {"prompt", "Once upon a time"}, {"max_tokens", 20}, {"temperature", 0},
                                              {"stream", true}, {"stream_options", {{"include_usage", true}}}}.dump(), "application/json");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->get_header_value("Content-Type"), "text/event-stream");
    bool done = false;
    auto events = sse_events(res->body, &done);
    EXPECT_TRUE(done);
    std::string text;
    int finished = 0;
    for (size_t i = 0; i + 1 < events.size(); ++i) {
      EXPECT_EQ(events[i]["object"], "text_completion");
      text += events[i]["choices"][0]["text"].get<std::string>();
      finished += !events[i]["choices"][0]["finish_reason"].is_null();
    }
    EXPECT_EQ(finished, 1);
    EXPECT_EQ(text, want_text);
    EXPECT_TRUE(events.back()["choices"].empty());
    EXPECT_EQ(events.back()["usage"]["completion_tokens"], want.size());
  }
  // Usage counts every prompt, the same text twice included; n choices of one prompt count it once (as OpenAI).
  const size_t n_once = r.s.tok->encode("Once upon a time", true).size();
  json u = post(c, "/v1/completions", {{"model", "tinystories"}, {"prompt", {"Once upon a time", "Once upon a time"}}, {"max_tokens", 1}, {"n", 2}});
  EXPECT_EQ(u["choices"].size(), 4u);
  EXPECT_EQ(u["usage"]["prompt_tokens"], 2 * n_once) << u.dump();
  // Echo with logprobs (scoring a prompt, max_tokens 0): the prompt's tokens, the first without a logprob.
  json j = post(c, "/v1/completions", {{"model", "pt0"}, {"prompt", "Once upon a time"}, {"max_tokens", 0}, {"echo", true}, {"logprobs", 0}});
  EXPECT_EQ(j["choices"][0]["text"], "Once upon a time");
  EXPECT_TRUE(j["choices"][0]["logprobs"]["token_logprobs"][0].is_null());
  EXPECT_LT(j["choices"][0]["logprobs"]["token_logprobs"][1].get<double>(), 0);
  // Metrics count the requests by module.
  const std::string metrics = c.Get("/metrics")->body;
  EXPECT_NE(metrics.find("frozenlm_requests_total{module=\"pt1\",status=\"200\"} 2"), std::string::npos) << metrics.substr(0, 2000);
  EXPECT_NE(metrics.find("frozenlm_time_to_first_token_seconds_count{module=\"idpt\"} 2"), std::string::npos);
  EXPECT_NE(metrics.find("frozenlm_module_apply_seconds_count{kind=\"id_prompt_tuning\"}"), std::string::npos);
}

TEST(ServeHttp, BadRequestsGetTheRight4xxAndTheApiKeyGuardsEverythingButHealth) {
  serve::EngineOptions eo;
  Running r(eo, "sekret");
  auto c = r.client();
  httplib::Headers key = {{"Authorization", "Bearer sekret"}};
  EXPECT_EQ(c.Get("/health")->status, 200);
  EXPECT_EQ(c.Get("/v1/models")->status, 401);
  EXPECT_EQ(c.Get("/v1/models", httplib::Headers{{"Authorization", "Bearer wrong"}})->status, 401);
  EXPECT_EQ(c.Get("/metrics")->status, 401);
  EXPECT_EQ(c.Get("/v1/models", key)->status, 200);
  int status = 0;
  json j = post(c, "/v1/completions", {{"model", "tinystories"}, {"prompt", "hi"}}, &status);
  EXPECT_EQ(status, 401);
  EXPECT_EQ(j["error"]["type"], "authentication_error");
  auto expect = [&](const std::string& body, int want, const std::string& code, const std::string& path = "/v1/completions") {
    auto res = c.Post(path.c_str(), key, body, "application/json");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, want) << body;
    json e = json::parse(res->body, nullptr, false);
    ASSERT_TRUE(e.is_object() && e.contains("error")) << res->body;
    for (const char* f : {"message", "type", "param", "code"}) EXPECT_TRUE(e["error"].contains(f)) << f;
    if (!code.empty()) EXPECT_EQ(e["error"]["code"], code) << body;
  };
  expect("{oops", 400, "invalid_json");
  expect(R"({"model":"nope","prompt":"x"})", 404, "model_not_found");
  expect(R"({"model":"tinystories","prompt":"x","max_tokens":-5})", 400, "invalid_value");
  expect(R"({"model":"tinystories","prompt":"x","max_tokens":100000})", 400, "context_length_exceeded");
  expect(json{{"model", "tinystories"}, {"prompt", std::string(3000, 'a') + " b c d e f g h i j k l m n o p q r s t u v w x y z"}, {"max_tokens", 1}}.dump(), 400, "");
  expect(R"({"model":"tinystories","prompt":[1, 99999]})", 400, "");
  expect(json{{"model", "tinystories"}, {"prompt", std::string(70000, 'x')}}.dump(), 413, "request_too_large");
  expect(R"({"name":"x","path":"../etc"})", 400, "", "/v1/modules");
  expect(R"({"name":"x","path":"/etc"})", 400, "", "/v1/modules");
  expect(R"({"name":"x","path":"missing"})", 404, "module_not_found", "/v1/modules");
  expect(R"({"name":"../x","path":"pt0"})", 400, "", "/v1/modules");
  expect(R"({"name":"tinystories","path":"pt0"})", 409, "name_taken", "/v1/modules");
  expect(R"({"name":"pt0","path":"pt0"})", 409, "name_taken", "/v1/modules");
  // A symlink inside the root that leads out of it.
  std::filesystem::create_directory_symlink("/tmp", r.root + "/escape");
  expect(R"({"name":"esc","path":"escape"})", 400, "", "/v1/modules");
  // A module trained for another base model (another width) is refused with the reason.
  {
    auto other = load_model(stories260k());
    PromptTuning::create(*other, 2, PromptInit::RandomUniform)->save(r.root + "/other");
    auto res = c.Post("/v1/modules", key, R"({"name":"other","path":"other"})", "application/json");
    EXPECT_EQ(res->status, 400);
    EXPECT_NE(res->body.find("token_dim"), std::string::npos) << res->body;
  }
  auto nf = c.Get("/v1/nothing", key);
  EXPECT_EQ(nf->status, 404);
  EXPECT_TRUE(json::parse(nf->body).contains("error"));
  // Never a 5xx for bad input.
  const std::string m = c.Get("/metrics", key)->body;
  EXPECT_EQ(m.find("status=\"5"), std::string::npos);
}

TEST(ServeHttp, AHostileRequestFailsAloneWhileAStreamRuns) {
  // A stream runs while a temperature of 1e-40 (overflows logits / T), a module whose logits are NaN (sampling throws
  // inside LibTorch) and the same streamed arrive: the first is greedy, the second a 500 that names its request id and
  // nothing of the server's insides, the third ends its stream with that error; the running stream is untouched.
  Running r;
  r.reg->add(served("nan", nan_prompt(*r.s.lm)));
  const json long_req = {{"model", "tinystories"}, {"prompt", "Once upon a time"}, {"max_tokens", 480}, {"temperature", 0},
                         {"ignore_eos", true}, {"stream", true}};
  auto stream = std::async(std::launch::async, [&] { return r.client().Post("/v1/completions", long_req.dump(), "application/json"); });
  for (int i = 0; i < 2000 && r.engine->stats().running_rows == 0; ++i) std::this_thread::sleep_for(1ms);
  auto c = r.client();
  int status = 0;
  json tiny = post(c, "/v1/completions", {{"model", "tinystories"}, {"prompt", "Once"}, {"max_tokens", 8}, {"temperature", 1e-40}}, &status);
  EXPECT_EQ(status, 200) << tiny.dump();
  auto res = c.Post("/v1/completions", {{"X-Request-Id", "trace-7"}}, json{{"model", "nan"}, {"prompt", "Once"}, {"max_tokens", 8}}.dump(), "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 500);
  EXPECT_EQ(res->get_header_value("X-Request-Id"), "trace-7");  // a client's own id is kept
  json err = json::parse(res->body);
  EXPECT_EQ(err["error"]["message"], "internal error (request id trace-7)") << res->body;
  EXPECT_EQ(err["error"]["type"], "server_error");
  res = c.Post("/v1/completions", json{{"model", "nan"}, {"prompt", "Once"}, {"max_tokens", 8}, {"stream", true}}.dump(), "application/json");
  ASSERT_TRUE(res);
  const std::string id = res->get_header_value("X-Request-Id");
  EXPECT_EQ(id.rfind("req-", 0), 0u) << id;  // else one of the server's
  bool done = false;
  auto events = sse_events(res->body, &done);
  EXPECT_TRUE(done);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back()["error"]["message"], "internal error (request id " + id + ")") << res->body;

  auto s = stream.get();
  ASSERT_TRUE(s);
  EXPECT_EQ(s->status, 200);
  events = sse_events(s->body, &done);
  EXPECT_TRUE(done);
  std::string text;
  for (auto& e : events) {
    EXPECT_FALSE(e.contains("error")) << e.dump();
    if (e.contains("choices") && !e["choices"].empty()) text += e["choices"][0]["text"].get<std::string>();
  }
  json alone = long_req;
  alone["stream"] = false;
  EXPECT_EQ(text, post(c, "/v1/completions", alone)["choices"][0]["text"]);
  json greedy = post(c, "/v1/completions", {{"model", "tinystories"}, {"prompt", "Once"}, {"max_tokens", 8}, {"temperature", 0}});
  EXPECT_EQ(tiny["choices"][0]["text"], greedy["choices"][0]["text"]);
}

// A plain TCP connection, for requests no HTTP client library would send.
struct RawConnection {
  int fd = -1;
  explicit RawConnection(int port) {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(uint16_t(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    timeval tv{2, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  }
  ~RawConnection() { close(); }
  void close() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
  bool send_all(const std::string& s) {
    for (size_t at = 0; at < s.size();) {
      const ssize_t n = ::send(fd, s.data() + at, s.size() - at, MSG_NOSIGNAL);
      if (n <= 0) return false;
      at += size_t(n);
    }
    return true;
  }
  bool readable(int ms) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, ms) > 0;
  }
  // What arrives within `ms` (at most one read's worth after the first bytes).
  std::string read(int ms) {
    if (!readable(ms)) return "";
    char buf[65536];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, size_t(n)) : "";
  }
  // A whole response (headers and its Content-Length of body; the server may send them in separate segments), or
  // what arrived before `ms` passed without more.
  std::string response(int ms) {
    std::string r = read(ms);
    while (true) {
      const size_t head = r.find("\r\n\r\n");
      const size_t cl = r.find("Content-Length: ");
      if (head != std::string::npos && cl != std::string::npos && cl < head &&
          r.size() >= head + 4 + std::stoul(r.substr(cl + 16, r.find("\r\n", cl) - cl - 16)))
        return r;
      const std::string more = read(ms);
      if (more.empty()) return r;
      r += more;
    }
  }
};

std::string gzip(const std::string& data) {
  z_stream z{};
  EXPECT_EQ(deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);  // 15 + 16: a gzip wrapper
  std::string out(deflateBound(&z, data.size()), '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = uInt(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = uInt(out.size());
  EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

TEST(ServeHttp, EveryBodyIsBoundedWhateverItsFraming) {
  Running r;  // --max-body-bytes 64 KiB
  const std::string head = "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n";
  // Chunked, endless: the server stops reading near the limit (the client cannot push more than the socket buffers
  // hold beyond it) and answers 413 — it does not read the whole body first.
  for (const std::string path : {"/v1/completions", "/no/such/route"}) {
    RawConnection k(r.port);
    ASSERT_TRUE(k.send_all("POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"));
    const std::string piece(64 * 1024, 'x');
    char size_line[32];
    std::snprintf(size_line, sizeof size_line, "%zx\r\n", piece.size());
    const std::string chunk = size_line + piece + "\r\n";
    size_t sent = 0;
    std::string answer;
    while (sent < (64u << 20) && answer.empty()) {
      answer = k.read(0);
      if (answer.empty() && !k.send_all(chunk)) break;
      sent += chunk.size();
    }
    if (answer.empty()) answer = k.read(3000);
    EXPECT_LT(sent, 16u << 20) << path << ": the server read on past the limit";
    if (!answer.empty()) EXPECT_EQ(answer.rfind("HTTP/1.1 413", 0), 0u) << answer.substr(0, 300);
  }
  // Chunked, a little over the limit and complete: 413 with the API's error.
  {
    RawConnection k(r.port);
    const std::string body = json{{"model", "tinystories"}, {"prompt", std::string(70000, 'x')}}.dump();
    char size_line[32];
    std::snprintf(size_line, sizeof size_line, "%zx\r\n", body.size());
    ASSERT_TRUE(k.send_all(head + "Transfer-Encoding: chunked\r\n\r\n" + size_line + body + "\r\n0\r\n\r\n"));
    const std::string answer = k.response(5000);
    EXPECT_EQ(answer.rfind("HTTP/1.1 413", 0), 0u) << answer.substr(0, 300);
    EXPECT_NE(answer.find("request_too_large"), std::string::npos) << answer.substr(0, 600);
  }
  // Chunked within the limit: served as any other request.
  {
    RawConnection k(r.port);
    const std::string body = json{{"model", "tinystories"}, {"prompt", "Once"}, {"max_tokens", 2}}.dump();
    char size_line[32];
    std::snprintf(size_line, sizeof size_line, "%zx\r\n", body.size());
    ASSERT_TRUE(k.send_all(head + "Transfer-Encoding: chunked\r\n\r\n" + size_line + body + "\r\n0\r\n\r\n"));
    EXPECT_EQ(k.read(10000).rfind("HTTP/1.1 200", 0), 0u);
  }
  // gzip: 1 MB of JSON in about 1 KB. Its decompressed size is what counts: 413. A small one is read as sent.
  auto c = r.client();
  const std::string big = json{{"model", "tinystories"}, {"prompt", std::string(1 << 20, 'x')}}.dump();
  auto res = c.Post("/v1/completions", {{"Content-Encoding", "gzip"}}, gzip(big), "application/json");
  ASSERT_TRUE(res);
  EXPECT_LT(gzip(big).size(), 8000u);
  EXPECT_EQ(res->status, 413) << res->body;
  res = c.Post("/v1/completions", {{"Content-Encoding", "gzip"}}, gzip(json{{"model", "tinystories"}, {"prompt", "Once"}, {"max_tokens", 2}}.dump()), "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200) << res->body;
  // Neither Content-Length nor chunked: the request has no body (RFC 9112) and is answered at once, while the client
  // keeps the connection open — not read until the client closes it.
  {
    RawConnection k(r.port);
    ASSERT_TRUE(k.send_all(head + "\r\n" + R"({"model":"tinystories","prompt":"Once"})"));
    const std::string answer = k.read(5000);
    EXPECT_EQ(answer.rfind("HTTP/1.1 400", 0), 0u) << answer.substr(0, 300);
  }
}

TEST(ServeHttp, AClientThatLeavesANonStreamedRequestCancelsIt) {
  // One row: a slow module's request holds the engine in its prefill while a non-streamed request waits in the queue;
  // that client goes away. Its request is dropped: the engine never decodes a step for it.
  serve::EngineOptions eo;
  eo.max_batch = 1;
  Running r(eo);
  r.reg->add(served("slow", std::make_unique<MisbehavingModule>(1500ms)));
  auto slow = std::async(std::launch::async, [&] {
    return r.client().Post("/v1/completions", json{{"model", "slow"}, {"prompt", "Once"}, {"max_tokens", 1}}.dump(), "application/json");
  });
  for (int i = 0; i < 2000 && (r.engine->stats().queued > 0 || r.engine->stats().steps > 0 || i < 50); ++i) std::this_thread::sleep_for(1ms);
  {
    RawConnection k(r.port);
    const std::string body = json{{"model", "tinystories"}, {"prompt", "Once upon a time"}, {"max_tokens", 60}, {"ignore_eos", true}}.dump();
    ASSERT_TRUE(k.send_all("POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: " +
                           std::to_string(body.size()) + "\r\n\r\n" + body));
    std::this_thread::sleep_for(300ms);
  }  // closed
  auto res = slow.get();
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  std::this_thread::sleep_for(1000ms);
  EXPECT_EQ(r.engine->stats().steps, 0) << "the abandoned request was decoded";
  const std::string metrics = r.client().Get("/metrics")->body;
  EXPECT_NE(metrics.find("status=\"499\"} 1"), std::string::npos) << metrics.substr(0, 3000);
}

// A real model's chat template (Phi-3.5's, from the shared set) over the test model.
std::shared_ptr<const chat::ChatTemplate> shared_template(const std::string& name) {
  const std::string path = std::string(FROZENLM_SHARED) + "/data/chat-templates/templates/" + name;
  return std::make_shared<const chat::ChatTemplate>(std::map<std::string, std::string>{{"default", read_text(path)}}, path, "<s>", "</s>");
}

TEST(ServeHttp, ChatCompletionsRenderTheTemplateAndGenerateAsCompletionsDo) {
  auto tmpl = shared_template("microsoft-Phi-3.5-mini-instruct.jinja");
  Running r({}, "", tmpl);
  auto c = r.client();
  const json messages = json::array({{{"role", "system"}, {"content", "Tell stories."}}, {{"role", "user"}, {"content", "Once upon a time"}}});
  const std::string rendered = tmpl->render(nlohmann::ordered_json::parse(messages.dump()), true);
  EXPECT_EQ(rendered, "<|system|>\nTell stories.<|end|>\n<|user|>\nOnce upon a time<|end|>\n<|assistant|>\n");
  const std::vector<int64_t> ids = r.s.tok->encode(rendered, false);
  for (const std::string model : {"tinystories", "pt0"}) {
    const serve::ServedModule* m = model == "pt0" ? r.s.modules[0].get() : nullptr;
    const std::vector<int64_t> want = r.s.alone(m, ids, 12, 0, 0);
    int status = 0;
    json j = post(c, "/v1/chat/completions", {{"model", model}, {"messages", messages}, {"max_completion_tokens", 12}, {"temperature", 0},
                                              {"logprobs", true}, {"top_logprobs", 2}}, &status);
    ASSERT_EQ(status, 200) << j.dump();
    EXPECT_EQ(j["object"], "chat.completion");
    EXPECT_EQ(j["id"].get<std::string>().rfind("chatcmpl-", 0), 0u);
    EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
    EXPECT_EQ(j["usage"]["prompt_tokens"], ids.size());
    EXPECT_EQ(j["usage"]["completion_tokens"], want.size());
    // The same tokens as /v1/completions given the rendered prompt's ids: the content is that completion's text.
    json same = post(c, "/v1/completions", {{"model", model}, {"prompt", ids}, {"max_tokens", 12}, {"temperature", 0}});
    EXPECT_EQ(j["choices"][0]["message"]["content"], same["choices"][0]["text"]) << model;
    EXPECT_EQ(j["choices"][0]["finish_reason"], same["choices"][0]["finish_reason"]);
    const json& lp = j["choices"][0]["logprobs"]["content"];
    ASSERT_EQ(lp.size(), want.size());
    for (size_t k = 0; k < lp.size(); ++k) {
      ASSERT_EQ(lp[k]["top_logprobs"].size(), 2u);
      EXPECT_EQ(lp[k]["top_logprobs"][0]["token"], lp[k]["token"]);  // greedy: the chosen token is the most likely
      EXPECT_LE(lp[k]["logprob"].get<double>(), 0);
      EXPECT_EQ(lp[k]["bytes"].size(), lp[k]["token"].get<std::string>().size());
    }
    // Streamed: the role first, then content deltas that add up to the same text; usage; [DONE].
    auto res = c.Post("/v1/chat/completions", json{{"model", model}, {"messages", messages}, {"max_tokens", 12}, {"temperature", 0}, {"stream", true},
                                                   {"stream_options", {{"include_usage", true}}}}.dump(), "application/json");
    ASSERT_TRUE(res);
    bool done = false;
    auto events = sse_events(res->body, &done);
    EXPECT_TRUE(done);
    ASSERT_GE(events.size(), 3u);
    EXPECT_EQ(events[0]["object"], "chat.completion.chunk");
    EXPECT_EQ(events[0]["choices"][0]["delta"]["role"], "assistant");
    std::string text;
    int finished = 0;
    for (size_t k = 1; k + 1 < events.size(); ++k) {
      const json& d = events[k]["choices"][0]["delta"];
      if (d.contains("content")) text += d["content"].get<std::string>();
      finished += !events[k]["choices"][0]["finish_reason"].is_null();
    }
    EXPECT_EQ(text, j["choices"][0]["message"]["content"]);
    EXPECT_EQ(finished, 1);
    EXPECT_EQ(events.back()["usage"]["completion_tokens"], want.size());
  }
  // n choices with a seed: each is its own seed's sample, as in completions.
  json two = post(c, "/v1/chat/completions", {{"model", "tinystories"}, {"messages", messages}, {"max_tokens", 8}, {"n", 2}, {"seed", 5}});
  ASSERT_EQ(two["choices"].size(), 2u);
  EXPECT_EQ(two["choices"][0]["message"]["content"], post(c, "/v1/completions", {{"model", "tinystories"}, {"prompt", ids}, {"max_tokens", 8}, {"seed", 5}})["choices"][0]["text"]);
  // What the request gets wrong is a 400 naming the field; a template's own refusal is a 400 with its message.
  int status = 0;
  json e = post(c, "/v1/chat/completions", {{"model", "tinystories"}, {"messages", json::array()}}, &status);
  EXPECT_EQ(status, 400);
  EXPECT_EQ(e["error"]["param"], "messages");
  e = post(c, "/v1/chat/completions", {{"model", "tinystories"}, {"messages", {{{"content", "no role"}}}}}, &status);
  EXPECT_EQ(status, 400);
  e = post(c, "/v1/chat/completions", {{"model", "tinystories"}, {"messages", messages}, {"max_tokens", 4}, {"max_completion_tokens", 5}}, &status);
  EXPECT_EQ(status, 400);
  EXPECT_EQ(e["error"]["param"], "max_completion_tokens");
  // Content given as text parts reads as the text.
  json parts = post(c, "/v1/chat/completions", {{"model", "tinystories"}, {"max_tokens", 6}, {"temperature", 0},
                                                {"messages", {{{"role", "system"}, {"content", "Tell stories."}}, {{"role", "user"}, {"content", {{{"type", "text"}, {"text", "Once upon a time"}}}}}}}});
  EXPECT_EQ(parts["usage"]["prompt_tokens"], ids.size());
}

TEST(ServeHttp, ChatWithoutATemplateOrAgainstItsRulesIsA400) {
  {
    Running r;  // no chat template
    int status = 0;
    auto c = r.client();
    json e = post(c, "/v1/chat/completions", {{"model", "tinystories"}, {"messages", {{{"role", "user"}, {"content", "hi"}}}}}, &status);
    EXPECT_EQ(status, 400);
    EXPECT_EQ(e["error"]["code"], "no_chat_template");
    EXPECT_NE(e["error"]["message"].get<std::string>().find("--chat-template"), std::string::npos);
    EXPECT_TRUE(json::parse(c.Get("/tokenizer_info")->body)["chat_template"].is_null());
  }
  Running r({}, "", shared_template("google-gemma-2-2b-it.jinja"));  // refuses a system message
  int status = 0;
  auto c = r.client();
  json e = post(c, "/v1/chat/completions", {{"model", "tinystories"}, {"messages", {{{"role", "system"}, {"content", "x"}}, {{"role", "user"}, {"content", "hi"}}}}}, &status);
  EXPECT_EQ(status, 400);
  EXPECT_EQ(e["error"]["code"], "chat_template_error");
  EXPECT_NE(e["error"]["message"].get<std::string>().find("System role not supported"), std::string::npos) << e.dump();
  json ok = post(c, "/v1/chat/completions", {{"model", "tinystories"}, {"messages", {{{"role", "user"}, {"content", "hi"}}}}, {"max_tokens", 3}}, &status);
  EXPECT_EQ(status, 200) << ok.dump();
}

TEST(ServeHttp, TokenizerEndpointsAgreeWithWhatGenerationReads) {
  auto tmpl = shared_template("microsoft-Phi-3.5-mini-instruct.jinja");
  Running r({}, "", tmpl);
  auto c = r.client();
  int status = 0;
  // A prompt with special tokens: the ids /v1/completions reads (BOS by the model's rule); without: the bare text.
  json t = post(c, "/tokenize", {{"prompt", "Once upon a time"}}, &status);
  ASSERT_EQ(status, 200) << t.dump();
  EXPECT_EQ(t["tokens"].get<std::vector<int64_t>>(), prompt_ids(r.s.lm->config(), *r.s.tok, "Once upon a time"));
  EXPECT_EQ(t["count"], t["tokens"].size());
  EXPECT_EQ(t["max_model_len"], r.s.lm->config().max_seq_len);
  EXPECT_EQ(post(c, "/tokenize", {{"prompt", "Once upon a time"}, {"add_special_tokens", false}})["tokens"].get<std::vector<int64_t>>(),
            r.s.tok->encode("Once upon a time", false));
  // Messages: the chat template's rendering, tokenized as chat completions tokenize it (its usage agrees).
  const json messages = {{{"role", "user"}, {"content", "Once upon a time"}}};
  json tm = post(c, "/tokenize", {{"messages", messages}}, &status);
  ASSERT_EQ(status, 200) << tm.dump();
  EXPECT_EQ(tm["tokens"].get<std::vector<int64_t>>(), r.s.tok->encode(tmpl->render(nlohmann::ordered_json::parse(messages.dump()), true), false));
  EXPECT_EQ(post(c, "/v1/chat/completions", {{"model", "tinystories"}, {"messages", messages}, {"max_tokens", 2}})["usage"]["prompt_tokens"], tm["count"]);
  // Detokenize reads back the text.
  json d = post(c, "/detokenize", {{"tokens", r.s.tok->encode("Once upon a time", false)}}, &status);
  EXPECT_EQ(status, 200);
  EXPECT_EQ(d["prompt"], "Once upon a time");
  post(c, "/detokenize", {{"tokens", {1, 1 << 30}}}, &status);
  EXPECT_EQ(status, 400);
  post(c, "/tokenize", {{"prompt", "x"}, {"messages", messages}}, &status);
  EXPECT_EQ(status, 400);
  // The tokenizer's description (lm-eval's remote tokenizer reads it).
  json info = json::parse(c.Get("/tokenizer_info")->body);
  EXPECT_EQ(info["chat_template"], tmpl->source());
  EXPECT_EQ(info["eos_token_ids"].get<std::vector<int64_t>>(), eos_ids_for(r.s.lm->config(), *r.s.tok));
  EXPECT_EQ(info["eos_token"], r.s.tok->id_to_token(eos_ids_for(r.s.lm->config(), *r.s.tok)[0]));
  EXPECT_EQ(info["model_max_length"], r.s.lm->config().max_seq_len);
}

TEST(ServeHttp, EmbeddingsAreTheDenseRetrieversVectorsInOpenAIsShape) {
  Running r;
  auto c = r.client();
  const std::vector<std::string> texts = {"Once upon a time", "The cat sat on the mat and looked at the sun."};
  DenseOptions d;
  d.max_tokens = r.s.lm->config().max_seq_len;
  d.progress = false;
  const at::Tensor want = embed_texts(*r.s.lm, *r.s.tok, texts, d);
  int status = 0;
  json j = post(c, "/v1/embeddings", {{"model", "tinystories"}, {"input", texts}}, &status);
  ASSERT_EQ(status, 200) << j.dump();
  EXPECT_EQ(j["object"], "list");
  ASSERT_EQ(j["data"].size(), 2u);
  int64_t tokens = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    EXPECT_EQ(j["data"][i]["object"], "embedding");
    EXPECT_EQ(j["data"][i]["index"], i);
    const auto v = j["data"][i]["embedding"].get<std::vector<float>>();
    ASSERT_EQ(int64_t(v.size()), r.s.lm->dim());
    double norm = 0;
    for (size_t k = 0; k < v.size(); ++k) {
      EXPECT_NEAR(v[k], want[int64_t(i)][int64_t(k)].item<float>(), 1e-6) << i << "," << k;
      norm += double(v[k]) * v[k];
    }
    EXPECT_NEAR(norm, 1.0, 1e-5);
    tokens += int64_t(r.s.tok->encode(texts[i], false).size());
  }
  EXPECT_EQ(j["usage"]["prompt_tokens"], tokens);
  // Token ids read as their text; base64 is the same floats' bytes; another layer is another vector.
  // (Alone rather than beside a longer text: other padding, so equal to fp32 rounding, not bit for bit.)
  auto near = [](const json& a, const json& b) {
    const auto x = a.get<std::vector<float>>(), y = b.get<std::vector<float>>();
    if (x.size() != y.size()) return false;
    for (size_t k = 0; k < x.size(); ++k)
      if (std::abs(x[k] - y[k]) > 1e-5) return false;
    return true;
  };
  json ids = post(c, "/v1/embeddings", {{"model", "tinystories"}, {"input", {r.s.tok->encode(texts[0], false)}}});
  json one = post(c, "/v1/embeddings", {{"model", "tinystories"}, {"input", texts[0]}});
  EXPECT_EQ(ids["data"][0]["embedding"], one["data"][0]["embedding"]);
  EXPECT_TRUE(near(one["data"][0]["embedding"], j["data"][0]["embedding"]));
  json b64 = post(c, "/v1/embeddings", {{"model", "tinystories"}, {"input", texts[0]}, {"encoding_format", "base64"}});
  const std::string enc = b64["data"][0]["embedding"];
  std::string bytes;
  static const std::string abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (size_t k = 0; k + 3 < enc.size() + 0; k += 4) {
    uint32_t x = 0;
    int pad = 0;
    for (int q = 0; q < 4; ++q) {
      const char ch = enc[k + q];
      x = x << 6 | (ch == '=' ? (++pad, 0u) : uint32_t(abc.find(ch)));
    }
    for (int q = 0; q < 3 - pad; ++q) bytes += char((x >> (16 - 8 * q)) & 0xFF);
  }
  ASSERT_EQ(bytes.size(), size_t(r.s.lm->dim()) * 4);
  std::vector<float> decoded(size_t(r.s.lm->dim()));
  std::memcpy(decoded.data(), bytes.data(), bytes.size());
  EXPECT_EQ(json(decoded), one["data"][0]["embedding"]);
  d.layer = 1;  // (of the test model's 2)
  const at::Tensor want2 = embed_texts(*r.s.lm, *r.s.tok, {texts[0]}, d);
  json l2 = post(c, "/v1/embeddings", {{"model", "tinystories"}, {"input", texts[0]}, {"layer", 1}});
  EXPECT_NEAR(l2["data"][0]["embedding"][0].get<float>(), want2[0][0].item<float>(), 1e-6);
  EXPECT_FALSE(near(l2["data"][0]["embedding"], one["data"][0]["embedding"]));
  // What cannot be embedded is a 4xx naming the field.
  for (const auto& [body, field] : std::vector<std::pair<json, std::string>>{
           {{{"model", "pt0"}, {"input", "x"}}, "model"},
           {{{"model", "tinystories"}, {"input", ""}}, "input"},
           {{{"model", "tinystories"}, {"input", json::array()}}, "input"},
           {{{"model", "tinystories"}, {"input", "x"}, {"dimensions", 3}}, "dimensions"},
           {{{"model", "tinystories"}, {"input", "x"}, {"layer", 999}}, "layer"},
           {{{"model", "tinystories"}, {"input", "x"}, {"encoding_format", "hex"}}, "encoding_format"},
           {{{"model", "tinystories"}, {"input", {1 << 30}}}, "input"}}) {
    json e = post(c, "/v1/embeddings", body, &status);
    EXPECT_EQ(status, 400) << body.dump();
    EXPECT_EQ(e["error"]["param"], field) << body.dump();
  }
}

TEST(ServeHttp, APortInUseIsAnErrorNotASharedPort) {
  Running r;
  serve::ServerOptions so;
  so.port = r.port;
  serve::Server second(*r.s.lm, *r.s.tok, *r.engine, *r.reg, r.metrics, so);
  EXPECT_THROW(second.bind(), Error);
}

TEST(ServeHttp, HotLoadUnloadLetsInFlightRequestsFinish) {
  Running r;
  auto c = r.client();
  std::filesystem::create_directories(r.root + "/later");
  r.s.modules[2]->module->save(r.root + "/later/pt2");
  int status = 0;
  json j = post(c, "/v1/modules", {{"name", "late"}, {"path", "later/pt2"}}, &status);
  ASSERT_EQ(status, 200) << j.dump();
  EXPECT_EQ(j["kind"], "prompt_tuning");
  j = post(c, "/v1/completions", {{"model", "late"}, {"prompt", "The dog"}, {"max_tokens", 8}, {"temperature", 0}}, &status);
  ASSERT_EQ(status, 200);
  const auto ids = r.s.tok->encode("The dog", true);
  EXPECT_EQ(j["usage"]["completion_tokens"], r.s.alone(r.s.modules[2].get(), ids, 8, 0, 0).size());
  // A long stream of the module; unloaded while it runs: the stream still completes, new requests get 404.
  const int64_t steps0 = r.engine->stats().steps;
  auto fut = std::async(std::launch::async, [&] {
    auto c2 = r.client();
    return c2.Post("/v1/completions", json{{"model", "late"}, {"prompt", "The dog"}, {"max_tokens", 400}, {"temperature", 0.9}, {"seed", 1},
                                           {"ignore_eos", true}, {"stream", true}}.dump(), "application/json");
  });
  for (int i = 0; i < 2000 && r.engine->stats().steps < steps0 + 5; ++i) std::this_thread::sleep_for(1ms);  // it is decoding
  EXPECT_EQ(c.Delete("/v1/modules/late")->status, 200);
  EXPECT_EQ(c.Delete("/v1/modules/late")->status, 404);
  post(c, "/v1/completions", {{"model", "late"}, {"prompt", "x"}}, &status);
  EXPECT_EQ(status, 404);
  auto res = fut.get();
  ASSERT_TRUE(res);
  bool done = false;
  auto events = sse_events(res->body, &done);
  EXPECT_TRUE(done);
  ASSERT_FALSE(events.empty());
  EXPECT_FALSE(events.back()["choices"][0]["finish_reason"].is_null());
}

TEST(ServeHttp, AFullQueueAnswers429WithRetryAfterAndADrainFinishesInFlightStreams) {
  serve::EngineOptions eo;
  eo.max_batch = 1;
  eo.max_queue = 1;
  Running r(eo);
  // Long enough (400 tokens, no early EOS) that the first two still hold the one row and the one queue place when the
  // others arrive.
  const json long_req = {{"model", "tinystories"}, {"prompt", "Once"}, {"max_tokens", 400}, {"temperature", 1.0}, {"ignore_eos", true}, {"stream", true}};
  std::vector<std::future<httplib::Result>> futs;
  for (int i = 0; i < 4; ++i) {
    futs.push_back(std::async(std::launch::async, [&] { return r.client().Post("/v1/completions", long_req.dump(), "application/json"); }));
    std::this_thread::sleep_for(2ms);
  }
  int ok = 0, busy = 0;
  for (auto& f : futs) {
    auto res = f.get();
    ASSERT_TRUE(res);
    if (res->status == 200) ++ok;
    if (res->status == 429) {
      ++busy;
      EXPECT_EQ(res->get_header_value("Retry-After"), "1");
      EXPECT_EQ(json::parse(res->body)["error"]["type"], "rate_limit_error");
    }
  }
  EXPECT_GE(ok, 2);
  EXPECT_GE(busy, 1);
  EXPECT_EQ(ok + busy, 4);
  // Drain with a stream in flight: it completes; health says draining meanwhile; the server then stops.
  // (The engine's counters lag its last update by a moment: wait for this request's own decode steps.)
  const int64_t steps0 = r.engine->stats().steps;
  auto fut = std::async(std::launch::async, [&] { return r.client().Post("/v1/completions", long_req.dump(), "application/json"); });
  for (int i = 0; i < 2000 && r.engine->stats().steps < steps0 + 5; ++i) std::this_thread::sleep_for(1ms);
  std::thread drain([&] { r.server->drain_and_stop(); });
  std::this_thread::sleep_for(20ms);
  auto h = r.client().Get("/health");
  if (h) EXPECT_EQ(h->status, 503);
  auto res = fut.get();
  drain.join();
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200);
  bool done = false;
  sse_events(res->body, &done);
  EXPECT_TRUE(done);
}

TEST(ServeHttp, EveryModuleKindIsServedAsItsCommandRunsIt) {
  // A textual recursion (pass 1 proposes, pass 2 reads the candidates in the engine) and a frozen reader (retrieve,
  // re-rank, pack, then read in the engine): the server's greedy answer is what `generate --module` / `answer` give.
  Running r;
  auto c = r.client();
  const std::string tr_dir = r.root + "/tr";
  std::filesystem::create_directories(tr_dir);
  r.s.modules[0]->module->save(tr_dir + "/pass1");
  r.s.modules[1]->module->save(tr_dir + "/pass2");
  write_file(tr_dir + "/textual_recursion.json",
             json{{"config", {{"samples", 3}, {"temperature", 1.0}, {"top_k", 0}, {"include_greedy", true}, {"max_answer_tokens", 6}, {"seed", 0}}},
                  {"token_dim", r.s.lm->dim()}, {"base_checkpoint_id", r.s.lm->checkpoint_id()}}.dump());
  int status = 0;
  json j = post(c, "/v1/modules", {{"name", "tr"}, {"path", "tr"}}, &status);
  ASSERT_EQ(status, 200) << j.dump();
  EXPECT_EQ(j["kind"], "textual_recursion");
  const std::string q = "Once upon a time";
  auto tr = TextualRecursion::load(tr_dir, *r.s.lm);
  Task t;
  t.max_tokens = 1 << 30;
  const std::string read = tr->pass2_input(*r.s.lm, *r.s.tok, t, q);
  ASSERT_EQ(read.rfind("Candidates: ", 0), 0u);
  j = post(c, "/v1/completions", {{"model", "tr"}, {"prompt", q}, {"max_tokens", 10}, {"temperature", 0}, {"echo", true}, {"logprobs", 0}}, &status);
  ASSERT_EQ(status, 200) << j.dump();
  const std::string text = j["choices"][0]["text"];
  EXPECT_EQ(text.substr(0, read.size()), read);  // echo shows what pass 2 read
  const auto ids = r.s.tok->encode(read, true);
  std::vector<int64_t> gen;
  {
    SamplingParams sp;
    sp.max_new_tokens = 10;
    sp.temperature = 0;
    sp.eos_ids = r.s.lm->config().eos_ids;
    at::NoGradGuard ng;
    ModuleInput x = tr->pass2().apply(*r.s.lm, module_input(*r.s.lm, at::tensor(ids, at::kLong).view({1, -1})));
    gen = generate_from_embeds(*r.s.lm, x.embeds, x.mask, sp)[0];
  }
  const size_t n_prompt = j["choices"][0]["logprobs"]["tokens"].size() - gen.size();
  EXPECT_EQ(n_prompt, ids.size());
  EXPECT_EQ(j["usage"]["completion_tokens"], gen.size());

  // A reader over a BM25 index of the test corpus. What its reader.json names is confined to the modules root too:
  // an index outside it is refused, naming the field; inside it, the reader loads.
  const std::string outside = r.root + "-index", idx = r.root + "/reader-index";
  IndexBuildOptions io;
  io.progress = false;
  for (const std::string& dir : {outside, idx}) {
    std::filesystem::remove_all(dir);
    build_index(std::string(FROZENLM_SOURCE) + "/tests/data/retrieval/tiny_corpus.jsonl", dir, io);
  }
  ReaderOptions ro;
  ro.index = outside;
  ro.candidates = 3;
  ro.max_new_tokens = 8;
  r.s.modules[2]->module->save(r.root + "/reader");
  write_file(r.root + "/reader/reader.json", ro.to_json().dump());
  j = post(c, "/v1/modules", {{"name", "reader"}, {"path", "reader"}}, &status);
  EXPECT_EQ(status, 400) << j.dump();
  EXPECT_NE(j["error"]["message"].get<std::string>().find("\"index\""), std::string::npos) << j.dump();
  EXPECT_NE(j["error"]["message"].get<std::string>().find("outside the modules root"), std::string::npos) << j.dump();
  ro.reranker = "/etc";  // (a path the pipeline would open when re-ranking is trained)
  ro.rerank = "trained";
  ro.index = idx;
  write_file(r.root + "/reader/reader.json", ro.to_json().dump());
  j = post(c, "/v1/modules", {{"name", "reader"}, {"path", "reader"}}, &status);
  EXPECT_EQ(status, 400) << j.dump();
  EXPECT_NE(j["error"]["message"].get<std::string>().find("\"reranker\""), std::string::npos) << j.dump();
  ro.reranker = "";
  ro.rerank = "none";
  write_file(r.root + "/reader/reader.json", ro.to_json().dump());
  j = post(c, "/v1/modules", {{"name", "reader"}, {"path", "reader"}}, &status);
  ASSERT_EQ(status, 200) << j.dump();
  EXPECT_EQ(j["kind"], "reader");
  ReaderPipeline pipe(*r.s.lm, *r.s.tok, ro, r.s.modules[2]->module.get());
  for (const std::string question : {"Name the capital of Zorvatha.", "Which symbol does gold have?"}) {
    const ReaderOutput want = pipe.answer(question);
    j = post(c, "/v1/completions", {{"model", "reader"}, {"prompt", question}, {"max_tokens", 8}, {"temperature", 0}, {"stop", "\n"}, {"echo", true}}, &status);
    ASSERT_EQ(status, 200) << j.dump();
    // The same tokens; `answer` decodes them alone (a SentencePiece tokenizer then drops the first one's leading
    // space), the server reads them after the prompt, as OpenAI's API returns text.
    const std::string got = j["choices"][0]["text"];
    ASSERT_EQ(got.substr(0, want.input.size()), want.input) << question;
    auto lstrip = [](std::string x) { return x.erase(0, x.find_first_not_of(' ')); };
    EXPECT_EQ(lstrip(got.substr(want.input.size())), lstrip(want.answer.substr(0, want.answer.find('\n')))) << question;
  }
  // Multi-pass modules read text: token-id prompts are refused with the reason.
  j = post(c, "/v1/completions", {{"model", "reader"}, {"prompt", {1, 2, 3}}}, &status);
  EXPECT_EQ(status, 400);
  // Neural recursion is one module to the engine (pass 1, the connector, pass 2 all in its apply).
  RecursionConfig nc;
  nc.dim = 32;
  auto nr = NeuralRecursion::create(*r.s.lm, nc);
  nr->save(r.root + "/nr");
  j = post(c, "/v1/modules", {{"name", "nr"}, {"path", "nr"}}, &status);
  ASSERT_EQ(status, 200) << j.dump();
  EXPECT_EQ(j["kind"], "neural_recursion");
  serve::ServedModule as_module;
  as_module.module = std::move(nr);
  j = post(c, "/v1/completions", {{"model", "nr"}, {"prompt", q}, {"max_tokens", 12}, {"temperature", 0}}, &status);
  ASSERT_EQ(status, 200) << j.dump();
  EXPECT_EQ(j["usage"]["completion_tokens"], r.s.alone(&as_module, r.s.tok->encode(q, true), 12, 0, 0).size());
}

}  // namespace
}  // namespace frozenlm::test
