// frozenlm: thin command-line front end over the library. Each subcommand lives in its own cmd_*.cpp.
#include <cstdio>

#include "cli/cli_common.h"
#include "core/error.h"
#include "core/torch_pch.h"

int main(int argc, char** argv) {
  using namespace frozenlm::cli;
  set_command_line(argc, argv);
  CLI::App app{"frozenlm: many skills from one frozen language model"};
  app.require_subcommand(1);
  Commands cmds;
  add_info_command(app, cmds);
  add_tokenize_command(app, cmds);
  add_generate_command(app, cmds);
  add_score_command(app, cmds);
  add_train_commands(app, cmds);
  add_eval_command(app, cmds);
  add_index_commands(app, cmds);
  add_answer_command(app, cmds);
  add_serve_command(app, cmds);
  add_export_command(app, cmds);
  CLI11_PARSE(app, argc, argv);
  try {
    return cmds.run_parsed();
  } catch (const frozenlm::Error& e) {
    std::fprintf(stderr, "frozenlm: error: %s\n", e.what());
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "frozenlm: error (torch): %s\n", e.what_without_backtrace());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "frozenlm: error: %s\n", e.what());
  }
  return 1;
}
