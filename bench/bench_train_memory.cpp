// Memory of training a module through a large frozen LM (issue 13, part 3): load a checkpoint (or random-init a
// shape) straight into its storage format, then train a soft prompt or an ID-PT generator through it for a few
// steps at batch B × T, as `frozenlm train` does (the module's forward, the loss on the target positions only,
// backward to the module, clipping, AdamW). Prints one JSON line per phase with the resident set size then and the
// peak so far; the benchmark script runs it under `/usr/bin/time -v` for the whole process's peak.
// Usage: frozenlm_bench_train_memory [--model DIR | --shape 1b|100m|tiny] [--weights bf16] [--module idpt|pt]
//                                    [--batch 4] [--seq 256] [--target 16] [--steps 2] [--threads 2]
//        frozenlm_bench_train_memory --write-checkpoint DIR --shape 1b   (a random bf16 Hugging Face directory)
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "bench_shapes.h"
#include "core/hf_export.h"
#include "core/loader.h"
#include "core/runtime.h"
#include "core/torch_pch.h"
#include "eval/evaluate.h"
#include "modules/idpt.h"
#include "modules/prompt_tuning.h"

using namespace frozenlm;

namespace {
double rss_mb() {  // resident now (/proc/self/statm, pages)
  std::ifstream f("/proc/self/statm");
  long long size = 0, resident = 0;
  f >> size >> resident;
  return resident * (sysconf(_SC_PAGESIZE) / 1048576.0);
}
double peak_rss_mb() {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / 1024.0;
}
void phase(const char* name, double seconds) {
  std::printf("{\"phase\": \"%s\", \"seconds\": %.2f, \"rss_mb\": %.0f, \"peak_rss_mb\": %.0f}\n", name, seconds, rss_mb(), peak_rss_mb());
  std::fflush(stdout);
}
double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

static int run(int argc, char** argv) {
  std::string shape = "1b", model, weights = "bf16", module = "idpt", write_dir;
  int64_t B = 4, T = 256, target = 16, steps = 2;
  int threads = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--shape") shape = v;
    else if (k == "--model") model = v;
    else if (k == "--weights") weights = v;
    else if (k == "--module") module = v;
    else if (k == "--batch") B = std::stoll(v);
    else if (k == "--seq") T = std::stoll(v);
    else if (k == "--target") target = std::stoll(v);
    else if (k == "--steps") steps = std::stoll(v);
    else if (k == "--threads") threads = std::stoi(v);
    else if (k == "--write-checkpoint") write_dir = v;
    else { std::fprintf(stderr, "unknown flag %s\n", k.c_str()); return 2; }
  }
  init_runtime(threads);
  auto t0 = std::chrono::steady_clock::now();
  if (!write_dir.empty()) {
    save_hf_model(*make_random_model(bench_shape(shape), WeightFormat::BF16, 0), write_dir, ExportDtype::BF16);
    phase("write_checkpoint", since(t0));
    return 0;
  }
  std::unique_ptr<FrozenLM> lm;
  if (!model.empty()) {
    LoadOptions lo;
    lo.weights = parse_weight_format(weights);
    lm = load_model(model, lo);
  } else {
    lm = make_random_model(bench_shape(shape), parse_weight_format(weights), 0);
  }
  std::printf("{\"model\": \"%s\", \"params\": %lld, \"weights\": \"%s\", \"weight_mb\": %.0f, \"module\": \"%s\", \"batch\": %lld, "
              "\"seq\": %lld, \"target_tokens\": %lld, \"threads\": %d}\n",
              model.empty() ? shape.c_str() : model.c_str(), (long long)lm->num_parameters(), weights.c_str(), lm->weight_bytes() / 1048576.0,
              module.c_str(), (long long)B, (long long)T, (long long)target, threads);
  phase("load", since(t0));

  std::unique_ptr<TrainableModule> m;
  if (module == "pt") {
    m = PromptTuning::create(*lm, 20, PromptInit::SampledVocab, {}, 0);
  } else {
    IdptConfig c;  // the bench_idpt generator: reads the embeddings, 2 cross-attention blocks
    c.prompt_tokens = 20;
    c.encoder_layer = 0;
    c.dim = 512;
    c.blocks = 2;
    c.heads = 8;
    m = IdPromptTuning::create(*lm, c);
  }
  // B examples of T − P tokens (the module adds P): the last `target` tokens of each are the answer.
  const int64_t n = T - m->prefix_length();
  at::Tensor ids = at::randint(0, lm->vocab_size(), {B, n}, at::kLong);
  std::vector<EncodedExample> items(B);
  for (int64_t b = 0; b < B; ++b) {
    items[b].ids.assign(ids[b].data_ptr<int64_t>(), ids[b].data_ptr<int64_t>() + n);
    items[b].target_start = n - target;
  }
  auto params = m->parameters();
  torch::optim::AdamW optim(params, torch::optim::AdamWOptions(1e-3));
  for (int64_t s = 0; s < steps; ++s) {
    t0 = std::chrono::steady_clock::now();
    optim.zero_grad();
    Batch batch = make_batch(items, lm->device());
    at::Tensor loss = module_target_loss(*lm, *m, module_input(*lm, batch.ids, batch.mask, batch.input_mask), batch.targets);
    loss.backward();
    torch::nn::utils::clip_grad_norm_(params, 1.0);
    optim.step();
    std::printf("{\"step\": %lld, \"loss\": %.4f}\n", (long long)s + 1, loss.item<double>());
    phase("train_step", since(t0));
  }
  return 0;
}

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {  // a missing checkpoint, a bad --weights: say so, no abort
    std::fprintf(stderr, "frozenlm_bench_train_memory: %s\n", e.what());
    return 1;
  }
}
