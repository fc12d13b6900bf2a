// Inside the HTTP server (not for use elsewhere): the state the endpoints share, the request log line's fields, and
// the helpers every endpoint answers with. http_server.cpp sets the server up (routes, API key, body bounds, logging,
// drain); generation_endpoints.cpp holds the endpoints that run the engine (completions, chat completions) and
// tokenizer_endpoints.cpp those that only tokenize.
#pragma once
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>

#include "chat/chat_template.h"
#include "serve/http_server.h"
#include "serve/openai_api.h"

namespace frozenlm::serve {

using json = nlohmann::json;

// JSON for a client: invalid UTF-8 (a token that is half a character) becomes U+FFFD instead of an exception.
std::string dump(const json& j);
void send_json(httplib::Response& res, int status, const json& j);
void send_error(httplib::Response& res, const ApiError& e);  // (429: with Retry-After)
int64_t unix_now();
// Unique within a process and across restarts (a random salt): "cmpl-…", "chatcmpl-…", "req-…".
std::string unique_id(const char* prefix);
// What a client reads of a failure inside the server: never its detail (a LibTorch message carries a C++ stack trace
// and the binary's file names), only the id that the log line with the detail carries.
std::string internal_error_message(const std::string& request_id);

// What the request log line says beyond method, path and status (set by the handler on its worker thread; a
// streamed response's provider runs on the same thread before the logger).
struct LogExtra {
  std::string request_id;
  std::string module;
  int64_t prompt_tokens = -1, completion_tokens = -1;
  double ttft_s = -1;
  bool stream = false;
  std::string error;
  bool completion = false;
  bool counted = false;  // the request's metrics were recorded (before its last bytes went out)
  std::chrono::steady_clock::time_point start;
};
extern thread_local LogExtra t_log;

struct Server::Impl {
  const FrozenLM& lm;
  const Tokenizer& tok;
  Engine& engine;
  ModuleRegistry& modules;
  Metrics& metrics;
  httplib::Server http;
  std::atomic<bool> draining{false};
  std::atomic<int> in_flight{0};  // generation requests being answered (streams included)
  std::mutex run_m;
  int listen_fd = -1;
  bool serving = false, stop_requested = false;
  int64_t created = unix_now();
  std::string weights_hash;  // computed once: it reads every weight byte

  Impl(const FrozenLM& l, const Tokenizer& t, Engine& e, ModuleRegistry& m, Metrics& mt) : lm(l), tok(t), engine(e), modules(m), metrics(mt) {}

  // Text of `id` as it reads after `prev` (so a SentencePiece token keeps its leading space).
  std::string token_text(int64_t prev, int64_t id) const {
    if (prev < 0) {
      std::string s = tok.decode({id}, true);
      return s.empty() ? tok.id_to_token(id) : s;
    }
    const std::string a = tok.decode({prev}, true), b = tok.decode({prev, id}, true);
    std::string s = b.compare(0, a.size(), a) == 0 ? b.substr(a.size()) : tok.decode({id}, true);
    return s.empty() && tok.decode({id}, true).empty() ? tok.id_to_token(id) : s;
  }
};

// POST /v1/completions and POST /v1/chat/completions (generation_endpoints.cpp).
void handle_completions(Server::Impl& P, const ServerOptions& opt, const httplib::Request& req, const std::string& body, httplib::Response& res);
void handle_chat_completions(Server::Impl& P, const ServerOptions& opt, const httplib::Request& req, const std::string& body, httplib::Response& res);
// POST /v1/embeddings (embedding_endpoint.cpp).
void handle_embeddings(Server::Impl& P, const ServerOptions& opt, const std::string& body, httplib::Response& res);
// POST /tokenize, POST /detokenize, GET /tokenizer_info (tokenizer_endpoints.cpp).
void handle_tokenize(Server::Impl& P, const ServerOptions& opt, const std::string& body, httplib::Response& res);
void handle_detokenize(Server::Impl& P, const std::string& body, httplib::Response& res);
void handle_tokenizer_info(Server::Impl& P, const ServerOptions& opt, httplib::Response& res);

}  // namespace frozenlm::serve
