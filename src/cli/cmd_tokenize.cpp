// frozenlm tokenize: the token ids (or ids and token strings) of a text.
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/cli_common.h"
#include "tokenizer/tokenizer.h"

namespace frozenlm::cli {

void add_tokenize_command(CLI::App& app, Commands& cmds) {
  struct Args {
    ModelArgs model;
    TextArgs text;
    bool json = false, no_special = false;
  };
  auto a = std::make_shared<Args>();
  auto* tokenize = app.add_subcommand("tokenize", "Print the token ids of a text");
  add_model_args(tokenize, a->model);
  add_text_args(tokenize, a->text, "tokenize");
  tokenize->add_flag("--json", a->json, "print {\"ids\": [...], \"tokens\": [...]}");
  tokenize->add_flag("--no-special", a->no_special, "do not add BOS/EOS");
  cmds.add(tokenize, [a] {
    const std::string text = a->text.get();
    auto tok = load_tokenizer_for_model(a->model.model, a->model.tokenizer, 0);
    auto ids = tok->encode(text, !a->no_special);
    if (a->json) {
      nlohmann::json toks = nlohmann::json::array();
      for (auto id : ids) toks.push_back(tok->id_to_token(id));
      std::cout << nlohmann::json({{"ids", ids}, {"tokens", toks}}).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    } else {
      for (size_t i = 0; i < ids.size(); ++i) std::cout << (i ? " " : "") << ids[i];
      std::cout << "\n";
    }
    return 0;
  });
}

}  // namespace frozenlm::cli
