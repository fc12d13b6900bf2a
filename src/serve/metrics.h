// The server's Prometheus metrics (prometheus-cpp, text exposition at GET /metrics): requests by module and status,
// tokens, time to first token, inter-token and end-to-end latency, queue length, running requests, batch occupancy.
#pragma once
#include <memory>
#include <string>

#include "serve/engine.h"

namespace prometheus {
class Registry;
}

namespace frozenlm::serve {

class Metrics : public EngineObserver {
 public:
  Metrics();
  ~Metrics() override;
  // A finished HTTP request (any endpoint's completions): counted by module and status.
  void on_request(const std::string& module, int status);
  void on_tokens(const std::string& module, int64_t prompt, int64_t completion);
  void on_end_to_end(const std::string& module, double seconds);
  // Engine state sampled at scrape time.
  void set_engine_state(const EngineStats& s, int64_t modules_loaded);
  std::string render() const;  // Prometheus text format

  void on_step(int64_t rows, int64_t max_rows, double seconds) override;
  void on_prefill(int64_t rows, int64_t tokens, double seconds) override;
  void on_module_apply(const std::string& kind, double seconds) override;
  void on_first_token(const Request& r, double seconds_since_submit) override;
  void on_token_gap(const Request& r, double seconds) override;

 private:
  struct Impl;
  std::unique_ptr<Impl> p_;
};

}  // namespace frozenlm::serve
