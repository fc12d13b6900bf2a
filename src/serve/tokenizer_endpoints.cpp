// The endpoints that only tokenize, as vLLM's server has them (lm-eval's remote tokenizer reads them):
//   POST /tokenize         {"prompt"} or {"messages"} (+ add_special_tokens, add_generation_prompt)
//                          -> {"tokens", "count", "max_model_len"}
//   POST /detokenize       {"tokens"} -> {"prompt"}
//   GET  /tokenizer_info   the special tokens, the chat template, the context length
#include "core/torch_pch.h"
#include "serve/server_impl.h"
#include "tokenizer/prompt_tokens.h"
#include "tokenizer/tokenizer.h"

namespace frozenlm::serve {

void handle_tokenize(Server::Impl& P, const ServerOptions& opt, const std::string& body, httplib::Response& res) {
  try {
    const TokenizeRequest t = parse_tokenize_request(body);
    std::vector<int64_t> ids;
    if (t.prompt) {
      // With special tokens: exactly what /v1/completions feeds the model for this prompt (BOS by the model's rule).
      ids = t.add_special_tokens ? prompt_ids(P.lm.config(), P.tok, *t.prompt) : P.tok.encode(*t.prompt, false);
    } else {
      if (!opt.chat_template)
        throw ApiError(400, "the model '" + opt.model_name + "' has no chat template: start the server with --chat-template FILE", "messages", "no_chat_template");
      std::string text;
      try {
        text = opt.chat_template->render(t.messages, t.add_generation_prompt, t.tools);
      } catch (const jinja::TemplateError& e) {
        throw ApiError(400, std::string("the chat template cannot render these messages: ") + e.what(), "messages", "chat_template_error");
      }
      ids = P.tok.encode(text, t.add_special_tokens);  // as /v1/chat/completions tokenizes it when add_special_tokens is false
    }
    send_json(res, 200, {{"tokens", ids}, {"count", ids.size()}, {"max_model_len", P.engine.context_length()}});
  } catch (const ApiError& e) {
    t_log.error = e.what();
    send_error(res, e);
  } catch (const Error& e) {
    t_log.error = e.what();
    send_error(res, ApiError(400, e.what(), "prompt"));
  }
}

void handle_detokenize(Server::Impl& P, const std::string& body, httplib::Response& res) {
  try {
    const std::vector<int64_t> ids = parse_detokenize_request(body);
    for (int64_t id : ids)
      if (id >= P.engine.usable_vocab())
        throw ApiError(400, "token id " + std::to_string(id) + " is outside the vocabulary (ids 0.." + std::to_string(P.engine.usable_vocab() - 1) + ")", "tokens");
    send_json(res, 200, {{"prompt", P.tok.decode(ids, /*skip_special=*/false)}});
  } catch (const ApiError& e) {
    t_log.error = e.what();
    send_error(res, e);
  }
}

void handle_tokenizer_info(Server::Impl& P, const ServerOptions& opt, httplib::Response& res) {
  const Tokenizer& tok = P.tok;
  auto token = [&](int64_t id) { return id >= 0 ? json(tok.id_to_token(id)) : json(nullptr); };
  const std::vector<int64_t> eos = eos_ids_for(P.lm.config(), tok);
  const int64_t bos = bos_for(P.lm.config(), tok);
  json info = {{"tokenizer_class", "frozenlm"},
               {"bos_token", token(bos)},
               {"bos_token_id", bos >= 0 ? json(bos) : json(nullptr)},
               {"eos_token", eos.empty() ? json(nullptr) : token(eos[0])},
               {"eos_token_id", eos.empty() ? json(nullptr) : json(eos[0])},
               {"eos_token_ids", eos},
               {"pad_token", nullptr},
               {"add_bos_token", prompt_ids(P.lm.config(), tok, "").size() == 1},
               {"vocab_size", P.engine.usable_vocab()},
               {"model_max_length", P.engine.context_length()},
               {"max_model_len", P.engine.context_length()},
               {"chat_template", opt.chat_template ? json(opt.chat_template->source()) : json(nullptr)}};
  send_json(res, 200, info);
}

}  // namespace frozenlm::serve
