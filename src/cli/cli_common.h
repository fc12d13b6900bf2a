// What every frozenlm subcommand shares: the model options, opening the model, text input, and the registry that
// maps a parsed subcommand to the function that runs it. Each cmd_*.cpp adds its subcommands with add_*_commands.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace frozenlm {
class FrozenLM;
class Tokenizer;
}  // namespace frozenlm

namespace frozenlm::cli {

// --model, --tokenizer, --weights, --device, --threads
struct ModelArgs {
  std::string model = "../shared/models/tinystories-656k";
  std::string tokenizer;
  std::string weights = "auto";
  std::string device = "cpu";
  int threads = 0;
};
void add_model_args(CLI::App* app, ModelArgs& a, bool need_tokenizer = true);
std::unique_ptr<FrozenLM> open_model(const ModelArgs& a);
// The tokenizer for --model/--tokenizer; with check_vocab, refuses one with more tokens than the model has.
std::unique_ptr<Tokenizer> open_tokenizer(const ModelArgs& a, const FrozenLM& lm, bool check_vocab);

// --text TEXT or --file PATH (exclusive); text() reads the file when one was given.
struct TextArgs {
  std::string text, file;
  CLI::Option* text_opt = nullptr;
  std::string get() const;
};
void add_text_args(CLI::App* app, TextArgs& a, const std::string& what);

// A generation prompt's ids, BOS first when the model has one (as training and eval encode; BOS alone for an empty
// prompt), whether or not the tokenizer adds it.
std::vector<int64_t> prompt_ids(const FrozenLM& lm, const Tokenizer& tok, const std::string& text);
std::string human_bytes(double bytes);

// The process's command line (main sets it: `--nproc` re-runs it as ranks).
void set_command_line(int argc, char** argv);
int command_argc();
char** command_argv();

// Parsed subcommand -> its action.
class Commands {
 public:
  void add(CLI::App* sub, std::function<int()> run) { list_.emplace_back(sub, std::move(run)); }
  int run_parsed() const;  // runs the (one) parsed subcommand; 0 when none matched
 private:
  std::vector<std::pair<CLI::App*, std::function<int()>>> list_;
};

void add_info_command(CLI::App& app, Commands& cmds);      // cmd_info.cpp
void add_tokenize_command(CLI::App& app, Commands& cmds);  // cmd_tokenize.cpp
void add_generate_command(CLI::App& app, Commands& cmds);  // cmd_generate.cpp
void add_score_command(CLI::App& app, Commands& cmds);     // cmd_score.cpp
void add_train_commands(CLI::App& app, Commands& cmds);    // cmd_train.cpp: prompt-tuning, idpt, finetune
void add_eval_command(CLI::App& app, Commands& cmds);      // cmd_eval.cpp
void add_index_commands(CLI::App& app, Commands& cmds);    // cmd_index.cpp: index build|add|embed|stats, retrieve
void add_answer_command(CLI::App& app, Commands& cmds);    // cmd_answer.cpp: the frozen-reader pipeline
void add_export_command(CLI::App& app, Commands& cmds);    // cmd_export.cpp
void add_serve_command(CLI::App& app, Commands& cmds);     // cmd_serve.cpp: the OpenAI-compatible server

}  // namespace frozenlm::cli
