// The server under load, in one process and one run (issue 14's performance table): an in-process `frozenlm serve`
// (engine + HTTP on 127.0.0.1) and HTTP clients on threads, streaming every request (SSE) with ignore_eos so that all
// requests generate exactly --tokens tokens.
//   1. one stream: the server's end-to-end time per request against `generate()` on the same prompt in the same
//      process (the server must not cost more than 5% over it);
//   2. throughput under load: 1, 8, 32, 64 concurrent streams on the base model: aggregate generated tokens/s, time to
//      first token and inter-token latency p50/p99;
//   3. mixed-module overhead: 64 concurrent requests each for a different prompt-tuning module vs 64 for one module
//      (same lengths), then the same for ID-PT modules (whose generator runs per request: its time is reported apart).
// Usage: frozenlm_bench_serve [--shape 100m|tiny|PATH-to-model] [--tokenizer PATH] [--threads 2] [--tokens 32]
//        [--prompt 16] [--virtual-tokens 20] [--reps 3]
// Random shapes take the tokenizer's vocabulary size (the server needs a tokenizer to write text).
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "bench_shapes.h"
#include "core/generate.h"
#include "core/loader.h"
#include "core/runtime.h"
#include "core/torch_pch.h"
#include "modules/idpt.h"
#include "modules/prompt_tuning.h"
#include "serve/http_server.h"

using namespace frozenlm;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

double secs(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

double pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, size_t(p * (v.size() - 1) + 0.5))];
}

struct LoadResult {
  double wall = 0, tokens = 0;
  std::vector<double> ttft, itl, e2e;
  int failed = 0;
  double tok_per_s() const { return tokens / wall; }
};

// `clients` threads, each sending `per_client` streamed requests one after another; model_of(i) names request i's model.
LoadResult run_load(int port, int clients, int per_client, const std::vector<int64_t>& prompt, int64_t tokens,
                    const std::function<std::string(int)>& model_of) {
  LoadResult r;
  std::mutex m;
  std::atomic<int> next{0};
  const auto t0 = Clock::now();
  std::vector<std::thread> th;
  for (int c = 0; c < clients; ++c)
    th.emplace_back([&, c] {
      httplib::Client cli("127.0.0.1", port);
      cli.set_read_timeout(600, 0);
      for (int k = 0; k < per_client; ++k) {
        const int i = next++;
        httplib::Request req;
        req.method = "POST";
        req.path = "/v1/completions";
        req.set_header("Content-Type", "application/json");
        req.body = json{{"model", model_of(i)}, {"prompt", prompt}, {"max_tokens", tokens}, {"temperature", 0}, {"ignore_eos", true},
                        {"stream", true}}.dump();
        std::vector<Clock::time_point> at;
        std::string buf;
        const auto start = Clock::now();
        req.content_receiver = [&](const char* d, size_t n, uint64_t, uint64_t) {
          buf.append(d, n);
          size_t e;
          while ((e = buf.find("\n\n")) != std::string::npos) {  // one SSE event = one token here
            if (buf.compare(0, 12, "data: [DONE]") != 0) at.push_back(Clock::now());
            buf.erase(0, e + 2);
          }
          return true;
        };
        httplib::Response res;
        httplib::Error err;
        const bool ok = cli.send(req, res, err) && res.status == 200 && int64_t(at.size()) == tokens;
        const auto end = Clock::now();
        std::lock_guard<std::mutex> lk(m);
        if (!ok) {
          ++r.failed;
          continue;
        }
        r.tokens += tokens;
        r.ttft.push_back(secs(start, at[0]));
        for (size_t j = 1; j < at.size(); ++j) r.itl.push_back(secs(at[j - 1], at[j]));
        r.e2e.push_back(secs(start, end));
      }
    });
  for (auto& t : th) t.join();
  r.wall = secs(t0, Clock::now());
  return r;
}

double metric_sum(const std::string& text, const std::string& name) {  // a histogram's _sum line from /metrics
  const size_t at = text.find(name + " ");
  return at == std::string::npos ? 0 : std::stod(text.substr(at + name.size() + 1));
}

}  // namespace

int main(int argc, char** argv) {
  std::string shape = "100m", tok_path = "testbed/model/tokenizer.json";
  int threads = 2, reps = 3;
  int64_t tokens = 32, prompt_len = 16, virtual_tokens = 20;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--shape") shape = v;
    else if (k == "--tokenizer") tok_path = v;
    else if (k == "--threads") threads = std::stoi(v);
    else if (k == "--tokens") tokens = std::stoll(v);
    else if (k == "--prompt") prompt_len = std::stoll(v);
    else if (k == "--virtual-tokens") virtual_tokens = std::stoll(v);
    else if (k == "--reps") reps = std::stoi(v);
    else { std::fprintf(stderr, "unknown option %s\n", k.c_str()); return 2; }
  }
  init_runtime(threads);
  std::unique_ptr<FrozenLM> lm;
  std::unique_ptr<Tokenizer> tok;
  if (shape.find('/') != std::string::npos) {
    lm = load_model(shape);
    tok = load_tokenizer_for_model(shape, "");
  } else {
    tok = load_tokenizer(tok_path);
    ModelConfig c = bench_shape(shape);
    c.vocab_size = tok->vocab_size();
    lm = make_random_model(c, WeightFormat::F32, 0);
  }
  std::printf("model %s: %.1fM parameters, vocab %lld; %d threads; prompt %lld tokens, %lld generated per request (ignore_eos), "
              "modules with %lld prompt vectors\n", shape.c_str(), lm->num_parameters() / 1e6, (long long)lm->vocab_size(), threads,
              (long long)prompt_len, (long long)tokens, (long long)virtual_tokens);

  // 64 prompt-tuning and 64 ID-PT modules, saved and loaded as the server loads them.
  const std::string root = "/tmp/frozenlm-bench-serve-modules";
  std::filesystem::remove_all(root);
  std::filesystem::create_directories(root);
  const int M = 64;
  for (int i = 0; i < M; ++i) {
    PromptTuning::create(*lm, virtual_tokens, PromptInit::SampledVocab, {}, 1000 + i)->save(root + "/pt" + std::to_string(i));
    IdptConfig c;
    c.prompt_tokens = virtual_tokens;
    c.seed = 2000 + i;
    IdPromptTuning::create(*lm, c)->save(root + "/idpt" + std::to_string(i));
  }
  serve::ModuleRegistry reg(*lm, *tok, root);
  for (auto& s : reg.load_root()) std::printf("skipped %s\n", s.c_str());
  serve::Metrics metrics;
  serve::EngineOptions eo;
  eo.max_batch = 64;
  eo.threads = threads;
  serve::Engine engine(*lm, *tok, eo, &metrics);
  serve::ServerOptions so;
  so.port = 0;
  so.model_name = "base";
  so.log_requests = false;
  serve::Server server(*lm, *tok, engine, reg, metrics, so);
  const int port = server.bind();
  std::thread th([&] { server.serve(); });

  std::vector<int64_t> prompt(prompt_len);
  for (int64_t i = 0; i < prompt_len; ++i) prompt[i] = 1 + (i * 37) % (lm->vocab_size() - 1);

  // ---- 1. one stream against generate() ----
  SamplingParams sp;
  sp.max_new_tokens = tokens;
  sp.temperature = 0;
  // generate(), the engine alone (no HTTP) and the server over HTTP take turns, one request each per turn: this VM's
  // memory bandwidth drifts by ±15% within minutes, so three back-to-back medians compared the drift, not the paths
  // (server / generate read 0.99–1.32 in runs minutes apart). The ratio is the median of the turns' own ratios.
  const auto engine_once = [&] {
    serve::ChoiceParams c;
    c.prompt_ids = prompt;
    c.max_tokens = tokens;
    c.temperature = 0;
    c.ignore_eos = true;
    auto r = engine.submit(nullptr, {c});
    std::vector<serve::Update> ups;
    while (r->next(&ups, std::chrono::milliseconds(100))) ups.clear();
  };
  const auto timed = [](const auto& fn) {
    const auto t0 = Clock::now();
    fn();
    return secs(t0, Clock::now());
  };
  std::vector<double> gen_t, eng_t, srv_t, eng_ratio, srv_ratio;
  for (int turn = -1; turn < 2 * reps + 3; ++turn) {  // turn −1 warms all three up
    const double g = timed([&] { generate(*lm, {prompt}, sp); });
    const double e = timed(engine_once);
    LoadResult one = run_load(port, 1, 1, prompt, tokens, [](int) { return std::string("base"); });
    if (one.e2e.empty()) { std::fprintf(stderr, "bench_serve: a one-stream request failed\n"); return 1; }
    if (turn < 0) continue;
    gen_t.push_back(g);
    eng_t.push_back(e);
    srv_t.push_back(one.e2e[0]);
    eng_ratio.push_back(e / g);
    srv_ratio.push_back(one.e2e[0] / g);
  }
  const double gen_s = pct(gen_t, 0.5), eng_s = pct(eng_t, 0.5), srv_s = pct(srv_t, 0.5);
  std::printf("\n1. one stream, %zu turns: generate() %.4f s per request (%.1f tokens/s); the engine alone %.4f s (%.3f×); the server "
              "over HTTP %.4f s (%.1f tokens/s): server/generate time %.3f (turns %.3f–%.3f; aim <= 1.05)\n",
              gen_t.size(), gen_s, tokens / gen_s, eng_s, pct(eng_ratio, 0.5), srv_s, tokens / srv_s, pct(srv_ratio, 0.5),
              pct(srv_ratio, 0), pct(srv_ratio, 1));

  // ---- 2. throughput under load ----
  std::printf("\n2. throughput under load (base model, streamed):\n");
  std::printf("| concurrent streams | requests | generated tokens/s | TTFT p50 / p99 (ms) | inter-token p50 / p99 (ms) | failed |\n|---|---|---|---|---|---|\n");
  for (int clients : {1, 8, 32, 64}) {
    const int per = clients == 1 ? reps + 2 : 2;
    LoadResult r = run_load(port, clients, per, prompt, tokens, [](int) { return std::string("base"); });
    std::printf("| %d | %d | %.1f | %.1f / %.1f | %.2f / %.2f | %d |\n", clients, clients * per, r.tok_per_s(), pct(r.ttft, .5) * 1e3,
                pct(r.ttft, .99) * 1e3, pct(r.itl, .5) * 1e3, pct(r.itl, .99) * 1e3, r.failed);
  }

  // ---- 3. mixed-module overhead: 64 concurrent, each round same-module then mixed (interleaved, median of reps) ----
  httplib::Client mc("127.0.0.1", port);
  std::printf("\n3. mixed-module overhead, 64 concurrent requests per round, median of %d rounds:\n", reps);
  std::printf("| modules | one module: tokens/s | 64 different: tokens/s | mixed / one | module apply per request, one / mixed (ms) |\n|---|---|---|---|---|\n");
  for (const std::string kind : {"pt", "idpt"}) {
    std::vector<double> same_t, mixed_t, same_apply, mixed_apply;
    const std::string apply_metric = std::string("frozenlm_module_apply_seconds_sum{kind=\"") + (kind == "pt" ? "prompt_tuning" : "id_prompt_tuning") + "\"}";
    run_load(port, M, 1, prompt, tokens, [&](int i) { return kind + std::to_string(i % M); });  // warm-up
    for (int rep = 0; rep < reps; ++rep)
      for (bool mixed : {false, true}) {
        const double a0 = metric_sum(mc.Get("/metrics")->body, apply_metric);
        LoadResult r = run_load(port, M, 1, prompt, tokens, [&](int i) { return kind + std::to_string(mixed ? i % M : 0); });
        const double a1 = metric_sum(mc.Get("/metrics")->body, apply_metric);
        (mixed ? mixed_t : same_t).push_back(r.tok_per_s());
        (mixed ? mixed_apply : same_apply).push_back((a1 - a0) / M * 1e3);
        if (r.failed) std::printf("  (%d failed)\n", r.failed);
      }
    const double s = pct(same_t, .5), x = pct(mixed_t, .5);
    std::printf("| %s | %.1f | %.1f | %.3f (aim >= 0.95) | %.2f / %.2f |\n", kind == "pt" ? "prompt tuning" : "ID-PT", s, x, x / s,
                pct(same_apply, .5), pct(mixed_apply, .5));
  }
  server.stop();
  th.join();
  std::filesystem::remove_all(root);
  return 0;
}
