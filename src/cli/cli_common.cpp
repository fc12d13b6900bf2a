#include "cli/cli_common.h"

#include <cstdio>
#include <fstream>
#include <iterator>

#include "core/error.h"
#include "core/text_file.h"
#include "core/loader.h"
#include "core/runtime.h"
#include "core/torch_pch.h"
#include "tokenizer/prompt_tokens.h"
#include "tokenizer/tokenizer.h"

namespace frozenlm::cli {

namespace {
int g_argc = 0;
char** g_argv = nullptr;
}  // namespace

void set_command_line(int argc, char** argv) {
  g_argc = argc;
  g_argv = argv;
}
int command_argc() { return g_argc; }
char** command_argv() { return g_argv; }

void add_model_args(CLI::App* app, ModelArgs& a, bool need_tokenizer) {
  app->add_option("--model", a.model, "Hugging Face model directory, GGUF file or llama2.c .bin checkpoint")->capture_default_str();
  if (need_tokenizer)
    app->add_option("--tokenizer", a.tokenizer, "tokenizer.json, llama2.c tokenizer.bin or a GGUF (default: beside the model, or the GGUF model's own)");
  app->add_option("--weights", a.weights,
                  "in-memory weight storage: auto (f32; a GGUF's Q8_0 stays q8_0) | f32 | bf16 | int8 (per-row scales) | q8_0 (GGUF "
                  "blocks of 32) (compute is fp32; decoding int8 / q8_0 rounds activations to int16 / int8 for integer products)")->capture_default_str();
  app->add_option("--device", a.device, "cpu | cuda | cuda:N")->capture_default_str();
  app->add_option("--threads", a.threads, "CPU threads (0: OMP_NUM_THREADS if set, else all cores)")->capture_default_str();
}

std::unique_ptr<FrozenLM> open_model(const ModelArgs& a) {
  init_runtime(a.threads);
  LoadOptions lo;
  lo.keep_q8_0 = a.weights == "auto";
  lo.weights = lo.keep_q8_0 ? WeightFormat::F32 : parse_weight_format(a.weights);
  lo.device = a.device;
  return load_model(a.model, lo);
}

std::unique_ptr<Tokenizer> open_tokenizer(const ModelArgs& a, const FrozenLM& lm, bool check_vocab) {
  auto tok = load_tokenizer_for_model(a.model, a.tokenizer, lm.vocab_size());
  if (check_vocab && tok->vocab_size() > lm.vocab_size())
    throw Error("tokenizer has " + std::to_string(tok->vocab_size()) + " tokens but the model only " + std::to_string(lm.vocab_size()));
  return tok;
}

void add_text_args(CLI::App* app, TextArgs& a, const std::string& what) {
  a.text_opt = app->add_option("--text", a.text, "text to " + what);
  auto* file = app->add_option("--file", a.file, "read the text from this file instead");
  a.text_opt->excludes(file);
}

std::string TextArgs::get() const {
  if (file.empty() && !text_opt->count()) throw Error("give --text TEXT or --file PATH");
  if (file.empty()) return text;
  std::string out;
  if (!read_text_file(file, &out)) throw Error(file + ": cannot open");
  return out;
}


std::vector<int64_t> prompt_ids(const FrozenLM& lm, const Tokenizer& tok, const std::string& text) {
  return frozenlm::prompt_ids(lm.config(), tok, text);
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB"};
  int u = 0;
  while (b >= 1024 && u < 3) { b /= 1024; ++u; }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f %s", b, units[u]);
  return buf;
}

int Commands::run_parsed() const {
  for (const auto& [sub, run] : list_)
    if (sub->parsed()) return run();
  return 0;
}

}  // namespace frozenlm::cli
