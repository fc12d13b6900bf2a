// ID-PT's inference-time overhead on a random-init Llama shape: the frozen LM's forward on B × T tokens against the
// prompt generator's own work (encoder pass + cross-attention generator), for three encoders: none (layer 0: the
// embedding lookup only, i.e. the generator alone), the frozen LM's own first block, and a small second checkpoint
// with the LM's vocabulary. Also the whole forward with the module (the prompt adds P positions). Prints JSON lines.
// Usage: frozenlm_bench_idpt [--shape 100m|1b|tiny] [--batch 2] [--seq 256] [--threads 2] [--reps 3]
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "bench_shapes.h"
#include "core/hf_export.h"
#include "core/loader.h"
#include "core/runtime.h"
#include "core/torch_pch.h"
#include "modules/idpt.h"

using namespace frozenlm;

int main(int argc, char** argv) {
  std::string shape_name = "100m";
  int64_t B = 2, T = 256;
  int threads = 2, reps = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--shape") shape_name = v;
    else if (k == "--batch") B = std::stoll(v);
    else if (k == "--seq") T = std::stoll(v);
    else if (k == "--threads") threads = std::stoi(v);
    else if (k == "--reps") reps = std::stoi(v);
    else { std::fprintf(stderr, "unknown flag %s\n", k.c_str()); return 2; }
  }
  init_runtime(threads);
  const ModelConfig cfg = bench_shape(shape_name);
  auto lm = make_random_model(cfg, WeightFormat::F32, 0);
  // The small encoder: 4 layers, d = 256 (tiny: 64), the LM's vocabulary, written as an HF directory.
  ModelConfig ec = cfg;
  ec.dim = shape_name == "tiny" ? 64 : 256; ec.n_layers = 4; ec.n_heads = 4; ec.n_kv_heads = 4; ec.head_dim = ec.dim / 4;
  ec.ffn_dim = 4 * ec.dim;
  const std::string enc_dir = "/tmp/frozenlm-bench-encoder-" + std::to_string(::getpid());
  save_hf_model(*make_random_model(ec, WeightFormat::F32, 1), enc_dir);

  at::Tensor ids = at::randint(0, cfg.vocab_size, {B, T}, at::kLong);
  auto time_it = [&](auto&& fn) {
    at::NoGradGuard ng;
    return median_seconds(reps, fn);
  };
  ForwardInput plain;
  plain.ids = ids;
  const double lm_s = time_it([&] { lm->forward(plain); });
  struct Variant { const char* name; std::string encoder; int64_t layer; };
  const int64_t D = shape_name == "1b" ? 512 : shape_name == "100m" ? 256 : 32;
  for (const Variant& v : {Variant{"generator only (encoder layer 0)", "self", 0}, Variant{"encoder = the LM's first block", "self", 1},
                           Variant{"encoder = small 4-layer checkpoint", enc_dir, -1}}) {
    IdptConfig c;
    c.prompt_tokens = 20;
    c.encoder = v.encoder;
    c.encoder_layer = v.layer;
    c.dim = D;
    c.blocks = 2;
    c.heads = 8;
    auto m = IdPromptTuning::create(*lm, c);
    const double apply_s = time_it([&] { m->apply(*lm, module_input(*lm, ids)); });
    const double total_s = time_it([&] { module_forward_logits(*lm, *m, module_input(*lm, ids)); });
    std::printf("{\"impl\": \"frozenlm\", \"bench\": \"idpt\", \"shape\": \"%s\", \"lm_params\": %lld, \"variant\": \"%s\", \"gen_dim\": %lld, "
                "\"blocks\": 2, \"P\": 20, \"trainable_params\": %lld, \"trainable_pct\": %.3f, \"batch\": %lld, \"seq\": %lld, "
                "\"threads\": %d, \"lm_forward_s\": %.4f, \"module_s\": %.4f, \"module_pct_of_lm\": %.2f, \"lm_with_module_s\": %.4f, "
                "\"total_overhead_pct\": %.2f}\n",
                shape_name.c_str(), (long long)lm->num_parameters(), v.name, (long long)D, (long long)m->num_parameters(),
                100.0 * m->num_parameters() / lm->num_parameters(), (long long)B, (long long)T, threads, lm_s, apply_s,
                100.0 * apply_s / lm_s, total_s, 100.0 * (total_s - lm_s) / lm_s);
    std::fflush(stdout);
  }
  std::system(("rm -rf '" + enc_dir + "'").c_str());
  return 0;
}
