// Decode speed (issue 13): this machine's memory read bandwidth, then batched greedy decoding on a random-init
// shape in each storage format, in one process, two ways: "libtorch" (the forward graph and LibTorch's matmuls: what
// decoding was before issue 13) and "lean" (the lean decode step, core/decode_step.cpp, with the skinny kernels of
// core/kernels/skinny_matmul.h up to 8 rows and LibTorch's GEMM beyond: what users get). Tokens/s counts generated tokens (all rows); weight GB/s = stored weight bytes × decode
// steps / decode time (batch-1 decoding reads every weight once per step); % of the measured bandwidth.
// --rounds N (this VM's bandwidth moves by ±20% within minutes): N rounds, each measuring the bandwidth again and then
// every configuration, so that every ratio (% of bandwidth, × f32) compares numbers taken seconds apart; a "summary"
// line per configuration gives the median and range over the rounds.
// Mode "lean-gemm": the lean step with LibTorch's GEMM instead of the panel kernels (panel_matmul.h) beyond the
// skinny kernels' rows — batched decoding before the panel kernels, measured in the same process.
// --kernels-alone 1 (random shapes): also times the shape's matrices alone, one x row through every one in turn as a
// decode step meets them (same kernels, no norms, attention or sampling between them): the gap to the batch-1 decode
// is what the rest of the step costs; and the same pass over the model's own matrices ("model-matrices": the same
// weight memory as the step, so allocation order — which moves this VM's streaming speed — cancels out).
// Usage: frozenlm_bench_decode [--shape 100m|1b|tiny|PATH-to-model] [--threads 2] [--tokens 64] [--prompt 16]
//                              [--batches 1,8,64] [--formats f32,bf16,int8,q8_0] [--reps 3]
//                              [--modes libtorch,lean,lean-gemm] [--rounds 1] [--kernels-alone 0|1]
//                              [--skinny-rows 8] (the most rows the skinny kernels take; LibTorch's GEMM beyond)
//                              [--prefetch 1024,2048] (int8 / q8_0: each software prefetch distance in bytes, 0 = none,
//                              measured in every round; the configurations are named e.g. "int8@1024")
//                              [--huge-pages 0,1] (each format's model built with its large weights on 4 KiB pages
//                              and on huge pages, core/weight_memory.h: "int8:4k", "int8:2m"; default: as configured)
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "bench_shapes.h"
#include "core/frozen_weights.h"
#include "core/generate.h"
#include "core/kernels/panel_matmul.h"
#include "core/kernels/skinny_matmul.h"
#include "core/loader.h"
#include "core/runtime.h"
#include "core/weight_memory.h"
#include "core/torch_pch.h"

using namespace frozenlm;

namespace {

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');) out.push_back(item);
  return out;
}

// Sum of floats [b·64, e·64) with AVX2 (8 independent accumulators: loads, not additions, are the limit), with or
// without software prefetch `prefetch_bytes` ahead (the decode kernels prefetch: the probe must be able to as well).
__attribute__((target("avx2"))) double sum_chunk(const float* buf, int64_t b, int64_t e, int64_t prefetch_bytes) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  for (int64_t i = b * 64; i < e * 64; i += 64) {
    const float* p = buf + i;
    if (prefetch_bytes) {
      const char* f = reinterpret_cast<const char*>(p) + prefetch_bytes;
      for (int k = 0; k < 4; ++k) _mm_prefetch(f + 64 * k, _MM_HINT_T0);
    }
    a0 = _mm256_add_ps(a0, _mm256_loadu_ps(p));
    a1 = _mm256_add_ps(a1, _mm256_loadu_ps(p + 8));
    a2 = _mm256_add_ps(a2, _mm256_loadu_ps(p + 16));
    a3 = _mm256_add_ps(a3, _mm256_loadu_ps(p + 24));
    a4 = _mm256_add_ps(a4, _mm256_loadu_ps(p + 32));
    a5 = _mm256_add_ps(a5, _mm256_loadu_ps(p + 40));
    a6 = _mm256_add_ps(a6, _mm256_loadu_ps(p + 48));
    a7 = _mm256_add_ps(a7, _mm256_loadu_ps(p + 56));
  }
  const __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                                 _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
  float lanes[8];
  _mm256_storeu_ps(lanes, s);
  double t = 0;
  for (float v : lanes) t += v;
  return t;
}

// A streaming read of a buffer far larger than the caches (1 GiB), summed across LibTorch's threads: the read
// bandwidth a decode can hope for. Best of `reps` runs each without and with software prefetch (0, 1, 2, 4 KiB ahead).
double read_bandwidth_gbs(int reps) {
  const int64_t n = (int64_t(1) << 30) / sizeof(float);
  std::vector<float> buf(n, 1.0f);
  double best = 0, sink = 0;
  for (int r = 0; r < 4 * reps; ++r) {
    const int64_t prefetch = r % 4 == 0 ? 0 : int64_t(512) << (r % 4);
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<double> part(at::get_num_threads(), 0.0);
    at::parallel_for(0, n / 64, 1 << 14, [&](int64_t b, int64_t e) { part[at::get_thread_num()] += sum_chunk(buf.data(), b, e, prefetch); });
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (double v : part) sink += v;
    best = std::max(best, double(n) * sizeof(float) / secs / 1e9);
  }
  if (sink < 0) std::printf("%f\n", sink);  // keep the sum alive
  return best;
}

// fp32 FMA throughput with everything in registers (8 independent accumulators per thread, one per FMA latency
// slot): the compute ceiling a batch-64 GEMM step can approach, on the same threads. GFLOP/s, best of `reps`.
__attribute__((target("avx2,fma"))) float fma_chain(int64_t n) {
  __m256 a[8];
  for (auto& v : a) v = _mm256_set1_ps(1.f);
  const __m256 m = _mm256_set1_ps(0.9999f), c = _mm256_set1_ps(1e-4f);
  for (int64_t i = 0; i < n; ++i)
    for (auto& v : a) v = _mm256_fmadd_ps(v, m, c);
  __m256 s = a[0];
  for (int k = 1; k < 8; ++k) s = _mm256_add_ps(s, a[k]);
  float out[8];
  _mm256_storeu_ps(out, s);
  return out[0];
}

double fma_peak_gflops(int reps) {
  const int64_t per_thread = 50'000'000;
  double best = 0, sink = 0;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<float> part(at::get_num_threads(), 0.f);
    at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) part[t] = fma_chain(per_thread);
    });
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (float v : part) sink += v;
    best = std::max(best, double(per_thread) * at::get_num_threads() * 8 * 8 * 2 / secs / 1e9);
  }
  if (sink < 0) std::printf("%f\n", sink);
  return best;
}

}  // namespace

// A decode step's matrices as separate weights (fresh memory each, as a model's): per layer qkv, o, gate+up, down;
// then the tied head. One pass = one x row through all of them in that order.
struct StepMatrices {
  std::vector<FrozenLinear> mats;
  double gb = 0;
  int64_t widest = 0;
  StepMatrices(const ModelConfig& c, WeightFormat fmt) {
    const int64_t d = c.dim, q = c.n_heads * c.head_dim, kv = c.n_kv_heads * c.head_dim;
    const std::vector<std::pair<int64_t, int64_t>> layer = {{q + 2 * kv, d}, {d, q}, {2 * c.ffn_dim, d}, {d, c.ffn_dim}};
    for (int64_t l = 0; l < c.n_layers; ++l)
      for (auto [out, in] : layer) add(out, in, fmt);
    add(c.vocab_size, d, fmt);
  }
  void add(int64_t out, int64_t in, WeightFormat fmt) {
    mats.emplace_back(at::randn({out, in}) * 0.02, at::Tensor(), fmt);
    gb += mats.back().bytes() / 1e9;
    widest = std::max({widest, out, in});
  }
  void pass(const float* x, float* y) const {
    for (const FrozenLinear& m : mats) m.forward_rows(x, 1, y);
  }
};

// The same pass over the model's own matrices (its weight memory, in the order a decode step reads them): against
// StepMatrices it separates "these bytes stream slower" from "the rest of the step slows the matrices".
struct ModelMatrices {
  std::vector<const FrozenLinear*> mats;
  double gb = 0;
  int64_t widest = 0;
  explicit ModelMatrices(const FrozenLM& lm) {
    for (const TransformerLayer& L : lm.layers())
      for (const FrozenLinear* m : {&L.qkv, &L.o, &L.up, &L.down}) mats.push_back(m);
    mats.push_back(lm.output_head().raw_weight().defined() ? &lm.output_head() : &lm.token_embedding().as_linear());
    for (const FrozenLinear* m : mats) {
      gb += m->bytes() / 1e9;
      widest = std::max({widest, m->out_features(), m->in_features()});
    }
  }
  void pass(const float* x, float* y) const {
    for (const FrozenLinear* m : mats) m->forward_rows(x, 1, y);
  }
};

struct Range {
  std::vector<double> v;
  double median() const {
    std::vector<double> s = v;
    std::sort(s.begin(), s.end());
    return s.empty() ? 0 : s.size() % 2 ? s[s.size() / 2] : (s[s.size() / 2 - 1] + s[s.size() / 2]) / 2;
  }
  double min() const { return *std::min_element(v.begin(), v.end()); }
  double max() const { return *std::max_element(v.begin(), v.end()); }
};

int main(int argc, char** argv) {
  std::string shape = "100m", batches = "1,8,64", formats = "f32,bf16,int8,q8_0", modes = "libtorch,lean";
  int threads = 2, reps = 3, rounds = 1, kernels_alone = 0, skinny_rows = int(kernels::skinny_rows_limit());
  int64_t tokens = 64, prompt = 16;
  std::string prefetch;  // empty: the kernels' default distance only
  std::string huge_pages;  // empty: the default weight memory only
  if (argc % 2 == 0) { std::fprintf(stderr, "%s: every flag takes a value (see the usage at the top of bench_decode.cpp)\n", argv[0]); return 2; }
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    const auto number = [&](auto parse) {
      try {
        size_t used = 0;
        const auto n = parse(v, &used);
        if (used == v.size()) return n;
      } catch (const std::exception&) {
      }
      std::fprintf(stderr, "%s %s: not a number\n", k.c_str(), v.c_str());
      std::exit(2);
    };
    const auto to_int = [](const std::string& t, size_t* u) { return std::stoi(t, u); };
    const auto to_long = [](const std::string& t, size_t* u) { return std::stoll(t, u); };
    if (k == "--shape") shape = v;
    else if (k == "--threads") threads = number(to_int);
    else if (k == "--tokens") tokens = number(to_long);
    else if (k == "--prompt") prompt = number(to_long);
    else if (k == "--batches") batches = v;
    else if (k == "--formats") formats = v;
    else if (k == "--reps") reps = number(to_int);
    else if (k == "--modes") modes = v;
    else if (k == "--rounds") rounds = std::max(1, number(to_int));
    else if (k == "--kernels-alone") kernels_alone = number(to_int);
    else if (k == "--skinny-rows") skinny_rows = number(to_int);
    else if (k == "--prefetch") prefetch = v;
    else if (k == "--huge-pages") huge_pages = v;
    else { std::fprintf(stderr, "unknown flag %s\n", k.c_str()); return 2; }
  }
  for (const std::string& mode : split(modes))
    if (mode != "libtorch" && mode != "lean" && mode != "lean-gemm") { std::fprintf(stderr, "unknown mode %s (libtorch, lean, lean-gemm)\n", mode.c_str()); return 2; }
  const int64_t default_prefetch = kernels::prefetch_bytes();
  std::vector<int64_t> distances;
  for (const std::string& d : split(prefetch)) {
    size_t used = 0;
    try {
      distances.push_back(std::stoll(d, &used));
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != d.size() || distances.back() < 0) { std::fprintf(stderr, "--prefetch %s: not a list of byte counts >= 0\n", prefetch.c_str()); return 2; }
  }
  // The software prefetch distances a format is measured at, and the configuration's name for each (fp32 and bf16
  // rows are never prefetched in software: 0).
  const auto prefetch_runs = [&](const std::string& fs, const std::string& label) {
    std::vector<std::pair<int64_t, std::string>> runs;
    if (fs != "int8" && fs != "q8_0") runs.emplace_back(0, label);
    else if (distances.empty()) runs.emplace_back(default_prefetch, label);
    else
      for (int64_t d : distances) runs.emplace_back(d, label + "@" + std::to_string(d));
    return runs;
  };
  const bool default_huge = huge_page_weights();
  std::vector<std::pair<bool, std::string>> pages;  // (huge pages on, the name's suffix)
  for (const std::string& h : split(huge_pages)) {
    if (h != "0" && h != "1") { std::fprintf(stderr, "--huge-pages %s: a list of 0 and 1\n", huge_pages.c_str()); return 2; }
    pages.emplace_back(h == "1", h == "1" ? ":2m" : ":4k");
  }
  if (pages.empty()) pages.emplace_back(default_huge, "");
  init_runtime(threads);
  std::printf("{\"bench\": \"fp32_fma_peak\", \"threads\": %d, \"gflop_per_s\": %.1f}\n", threads, fma_peak_gflops(3));
  std::fflush(stdout);
  const bool is_path = shape.find('/') != std::string::npos;
  struct Model {
    std::string fs, label;  // the format; its name in the output (with the weight memory's suffix when swept)
    bool huge;              // large weights on huge pages
    std::unique_ptr<FrozenLM> lm;
    std::unique_ptr<StepMatrices> alone;
  };
  std::vector<Model> models;
  for (const std::string& fs : split(formats))
    for (const auto& [huge, suffix] : pages) {
      const WeightFormat fmt = parse_weight_format(fs);
      set_huge_page_weights(huge);
      Model m{fs, fs + suffix, huge, nullptr, nullptr};
      if (is_path) {
        LoadOptions lo;
        lo.weights = fmt;
        m.lm = load_model(shape, lo);
      } else {
        m.lm = make_random_model(bench_shape(shape), fmt, 0);
      }
      models.push_back(std::move(m));
    }
  if (kernels_alone && !is_path)
    for (auto& m : models) {
      set_huge_page_weights(m.huge);
      m.alone = std::make_unique<StepMatrices>(bench_shape(shape), parse_weight_format(m.fs));
    }
  set_huge_page_weights(default_huge);
  // per "weights batch mode": tokens/s, % of the round's bandwidth, × the same round's f32 (when f32 is measured)
  std::map<std::string, Range> tps, pct, vs_f32;
  std::vector<std::string> order;
  for (int round = 0; round < rounds; ++round) {
    const double bw = read_bandwidth_gbs(rounds > 1 ? 2 : 5);
    std::printf("{\"bench\": \"read_bandwidth\", \"round\": %d, \"threads\": %d, \"gb_per_s\": %.2f}\n", round, threads, bw);
    std::fflush(stdout);
    std::map<std::string, double> f32_this_round;
    for (const Model& m : models)
      for (const auto& [pf, name] : m.alone ? prefetch_runs(m.fs, m.label) : std::vector<std::pair<int64_t, std::string>>{}) {
        kernels::set_skinny_kernels(true);
        kernels::set_prefetch_bytes(pf);
        std::vector<float> x(m.alone->widest), y(m.alone->widest);
        for (size_t j = 0; j < x.size(); ++j) x[j] = float(j % 7) - 3.f;
        const double secs = median_seconds(5 * reps, [&] { m.alone->pass(x.data(), y.data()); });
        const double gbs = m.alone->gb / secs;
        std::printf("{\"bench\": \"kernels_alone\", \"round\": %d, \"model\": \"%s\", \"weights\": \"%s\", \"weight_gb\": %.3f, \"threads\": %d, "
                    "\"prefetch_bytes\": %lld, \"passes_per_s\": %.1f, \"weight_gb_per_s\": %.2f, \"pct_of_bandwidth\": %.1f}\n",
                    round, shape.c_str(), name.c_str(), m.alone->gb, threads, (long long)pf, 1 / secs, gbs, 100 * gbs / bw);
        const std::string key = name + " 1 kernels-alone";
        if (round == 0) order.push_back(key);
        tps[key].v.push_back(1 / secs);
        pct[key].v.push_back(100 * gbs / bw);
        const ModelMatrices own(*m.lm);
        const double own_secs = median_seconds(5 * reps, [&] { own.pass(x.data(), y.data()); });
        const double own_gbs = own.gb / own_secs;
        std::printf("{\"bench\": \"model_matrices_alone\", \"round\": %d, \"model\": \"%s\", \"weights\": \"%s\", \"weight_gb\": %.3f, "
                    "\"threads\": %d, \"prefetch_bytes\": %lld, \"passes_per_s\": %.1f, \"weight_gb_per_s\": %.2f, \"pct_of_bandwidth\": %.1f}\n",
                    round, shape.c_str(), name.c_str(), own.gb, threads, (long long)pf, 1 / own_secs, own_gbs, 100 * own_gbs / bw);
        const std::string own_key = name + " 1 model-matrices";
        if (round == 0) order.push_back(own_key);
        tps[own_key].v.push_back(1 / own_secs);
        pct[own_key].v.push_back(100 * own_gbs / bw);
      }
    for (const Model& m : models) {
      const std::string& fs = m.fs;
      const FrozenLM* lm = m.lm.get();
      const std::string pages_suffix = m.label.substr(fs.size());  // f32 ratios compare the same weight memory
      const double weight_gb = lm->weight_bytes() / 1e9;
      for (const std::string& bs : split(batches)) {
        const int64_t B = std::stoll(bs);
        std::vector<std::vector<int64_t>> prompts(B);
        for (int64_t b = 0; b < B; ++b)
          for (int64_t t = 0; t < prompt; ++t) prompts[b].push_back(1 + (b * 7919 + t * 104729) % (lm->vocab_size() - 1));
        SamplingParams sp;
        sp.temperature = 0;
        sp.max_new_tokens = tokens;
        for (const std::string& mode : split(modes))
          for (const auto& [pf, name] : prefetch_runs(fs, m.label)) {
            const bool on = mode != "libtorch";
            kernels::set_skinny_kernels(on, skinny_rows);
            kernels::set_panel_kernels(mode == "lean");
            kernels::set_prefetch_bytes(pf);
            FrozenLM::set_lean_decode(on);
            // Decode time = (prompt + `tokens` steps) − (prompt + 1 step): the prefill and the first token cancel out.
            SamplingParams one = sp;
            one.max_new_tokens = 1;
            const double full = median_seconds(reps, [&] { generate(*lm, prompts, sp); });
            const double pre = median_seconds(reps, [&] { generate(*lm, prompts, one); });
            const double decode = std::max(full - pre, 1e-9);
            const int64_t steps = tokens - 1;
            const double gbs = weight_gb * steps / decode, rate = B * steps / decode;
            std::printf("{\"bench\": \"decode\", \"round\": %d, \"model\": \"%s\", \"weights\": \"%s\", \"weight_gb\": %.3f, \"batch\": %lld, "
                        "\"threads\": %d, \"mode\": \"%s\", \"prefetch_bytes\": %lld, \"prefill_plus_first_s\": %.4f, \"decode_tokens_per_s\": %.1f, "
                        "\"per_row_tokens_per_s\": %.1f, \"weight_gb_per_s\": %.2f, \"pct_of_bandwidth\": %.1f}\n",
                        round, shape.c_str(), name.c_str(), weight_gb, (long long)B, threads, mode.c_str(), (long long)pf, pre, rate,
                        steps / decode, gbs, 100 * gbs / bw);
            std::fflush(stdout);
            const std::string key = name + " " + bs + " " + mode;
            if (round == 0) order.push_back(key);
            tps[key].v.push_back(rate);
            pct[key].v.push_back(100 * gbs / bw);
            const std::string same = bs + " " + mode + pages_suffix;
            if (fs == "f32") f32_this_round[same] = rate;
            if (f32_this_round.count(same)) vs_f32[key].v.push_back(rate / f32_this_round[same]);
          }
      }
    }
  }
  if (rounds > 1)
    for (const std::string& key : order) {
      std::istringstream k(key);
      std::string fs, bs, mode;
      k >> fs >> bs >> mode;
      std::printf("{\"bench\": \"summary\", \"rounds\": %d, \"model\": \"%s\", \"weights\": \"%s\", \"batch\": %s, \"threads\": %d, "
                  "\"mode\": \"%s\", \"decode_tokens_per_s\": {\"median\": %.1f, \"min\": %.1f, \"max\": %.1f}, "
                  "\"pct_of_bandwidth\": {\"median\": %.1f, \"min\": %.1f, \"max\": %.1f}",
                  rounds, shape.c_str(), fs.c_str(), bs.c_str(), threads, mode.c_str(), tps[key].median(), tps[key].min(), tps[key].max(),
                  pct[key].median(), pct[key].min(), pct[key].max());
      if (vs_f32.count(key))
        std::printf(", \"x_f32_same_round\": {\"median\": %.2f, \"min\": %.2f, \"max\": %.2f}", vs_f32[key].median(), vs_f32[key].min(),
                    vs_f32[key].max());
      std::printf("}\n");
    }
  kernels::set_skinny_kernels(true);
  kernels::set_panel_kernels(true);
  kernels::set_prefetch_bytes(default_prefetch);
  FrozenLM::set_lean_decode(true);
  return 0;
}
