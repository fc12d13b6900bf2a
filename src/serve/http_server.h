// frozenlm's HTTP server (cpp-httplib): the OpenAI-compatible completions API over the engine, the module registry
// (hot load/unload), health, Prometheus metrics, API-key checks, and a graceful drain on shutdown.
//
//   GET  /                        the web playground (static page; the API key is asked for on the page)
//   GET  /health                  {"status": "ok"} (503 "draining" during shutdown); never needs the API key
//   GET  /v1/models               the base model and every loaded module, with its kind
//   POST /v1/completions          OpenAI's completions (model = base or module name), streamed as SSE with "stream"
//   POST /v1/chat/completions     OpenAI's chat completions: the messages rendered by the model's chat template
//   POST /v1/embeddings           the frozen LM's pooled hidden states (the dense retriever's vectors), OpenAI's shape
//   POST /tokenize, /detokenize   vLLM's tokenizer endpoints (text or chat messages); GET /tokenizer_info
//   POST /v1/modules              {"name", "path"}: load a module from inside --modules-dir
//   DELETE /v1/modules/{name}     unload (its in-flight requests finish)
//   GET  /metrics                 Prometheus text format
#pragma once
#include <atomic>
#include <memory>
#include <string>

#include "serve/engine.h"
#include "serve/metrics.h"
#include "serve/module_registry.h"

namespace httplib {
class Server;
}
namespace frozenlm::chat {
class ChatTemplate;
}

namespace frozenlm::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;              // 0: any free port (bind() returns it)
  std::string api_key;          // empty: no key needed
  std::string model_name;       // the base model's name in the API (default: its directory's name)
  size_t max_body_bytes = 1 << 20;
  int http_threads = 0;         // 0: enough for every running and queued request (max_batch + max_queue + 8)
  bool log_requests = true;     // one JSON line per request on stderr
  // The model's chat template (POST /v1/chat/completions; null: chat requests get a 400 that says how to give one).
  std::shared_ptr<const chat::ChatTemplate> chat_template;
};

class Server {
 public:
  Server(const FrozenLM& lm, const Tokenizer& tok, Engine& engine, ModuleRegistry& modules, Metrics& metrics, ServerOptions opt);
  ~Server();
  // Binds the listening socket; returns the port (useful with port 0). Throws Error when it cannot.
  int bind();
  // Serves until stop() or drain_and_stop(); returns then.
  void serve();
  // Stops accepting requests (health says "draining", completions get 503), lets every queued and running request
  // finish and be delivered, then stops the server. Safe from any thread (not a signal handler).
  void drain_and_stop();
  void stop();
  const std::string& model_name() const { return opt_.model_name; }
  struct Impl;

 private:
  void configure_transport();
  void install_middleware();
  void install_routes();
  std::unique_ptr<Impl> p_;
  ServerOptions opt_;
};

}  // namespace frozenlm::serve
