// frozenlm export: the frozen LM (and its tokenizer) as a llama.cpp GGUF file or a Hugging Face directory.
#include <cstdio>

#include "cli/cli_common.h"
#include "core/atomic_file.h"
#include "core/error.h"
#include "core/gguf_model.h"
#include "core/hf_export.h"
#include "core/text_file.h"
#include "core/transformer.h"
#include "tokenizer/gguf_vocab.h"
#include "tokenizer/tokenizer.h"

namespace frozenlm::cli {

namespace {

// general.name: the model directory's or file's name.
std::string model_name(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  std::string base = path.substr(path.rfind('/') == std::string::npos ? 0 : path.rfind('/') + 1);
  for (const char* ext : {".gguf", ".bin"})
    if (base.size() > std::string(ext).size() && base.compare(base.size() - std::string(ext).size(), std::string::npos, ext) == 0)
      base.resize(base.size() - std::string(ext).size());
  return base;
}

}  // namespace

void add_export_command(CLI::App& app, Commands& cmds) {
  struct Args {
    ModelArgs model;
    std::string format = "gguf", out, type = "f32", name;
  };
  auto a = std::make_shared<Args>();
  auto* exp = app.add_subcommand("export", "Write the model (and its tokenizer) as a GGUF file for llama.cpp, or as a Hugging Face directory");
  add_model_args(exp, a->model);
  exp->add_option("--format", a->format, "gguf | hf")->check(CLI::IsMember({"gguf", "hf"}))->capture_default_str();
  exp->add_option("--out", a->out, "output file (gguf) or directory (hf)")->required();
  exp->add_option("--type", a->type,
                  "tensor type: gguf f32 | f16 | bf16 | q8_0 (matrices kept as q8_0 in memory are written as they are); hf f32 | bf16")
      ->capture_default_str();
  exp->add_option("--name", a->name, "gguf general.name (default: the model's file or directory name)");
  cmds.add(exp, [a] {
    if (a->format == "gguf") parse_gguf_export_type(a->type);  // a bad --type fails before the model is read
    else if (a->type != "f32" && a->type != "bf16") throw Error("--type: the hf format writes f32 or bf16, not '" + a->type + "'");
    auto lm = open_model(a->model);
    if (a->format == "gguf") {
      const GgufExportType type = parse_gguf_export_type(a->type);
      auto tok = load_tokenizer_for_model(a->model.model, a->model.tokenizer, lm->vocab_size());
      save_gguf_model(*lm, gguf_vocab_of(*tok), a->out, type, a->name.empty() ? model_name(a->model.model) : a->name);
    } else {
      save_hf_model(*lm, a->out, a->type == "bf16" ? ExportDtype::BF16 : ExportDtype::F32);
      const std::string tok = resolve_tokenizer_path(a->model.model, a->model.tokenizer, lm->vocab_size());
      std::string text;
      if (tok.size() > 5 && tok.compare(tok.size() - 5, 5, ".json") == 0 && read_text_file(tok, &text))
        write_file_atomically(a->out + "/tokenizer.json", text);
      else
        std::fprintf(stderr, "[export] %s is not a tokenizer.json: not copied (pass --tokenizer to the commands that read %s)\n",
                     tok.c_str(), a->out.c_str());
    }
    std::fprintf(stderr, "[export] wrote %s (%s, %s)\n", a->out.c_str(), a->format.c_str(), a->type.c_str());
    return 0;
  });
}

}  // namespace frozenlm::cli
