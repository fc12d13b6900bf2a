// The serving engine: one frozen LM, requests for any module, continuously batched. One thread owns the model; between
// decode steps it admits queued requests, prefills them together whatever their modules (each row's input is its own
// module's output: a soft prompt, a generated prompt, a connector's vectors — all just embeddings), adds them to the
// running batch, and decodes every running row in one forward. A request's tokens depend only on its own module,
// prompt and seed: each row samples with its own generator, so a batch mixing modules gives each request what it gets
// alone.
//
// Isolation: a failure that belongs to one request — its module's forward, sampling its token, decoding its text —
// fails that request alone (its rows leave the batch; every other row goes on). Only a failure of the shared decode
// forward itself fails every running request. Clients see "internal error (request id …)"; the detail goes to the log.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/transformer.h"
#include "serve/batch_cache.h"
#include "modules/trainable_module.h"
#include "tokenizer/tokenizer.h"

namespace frozenlm::serve {

using Clock = std::chrono::steady_clock;

// A module as the server holds it (shared by the requests that use it: unloading it lets them finish).
struct ServedModule {
  std::string name, kind, path;
  std::unique_ptr<TrainableModule> module;  // what the engine applies in front of the prompt
  // Multi-pass modules (a textual recursion, a frozen reader) first turn the request's prompt into the text their last
  // pass reads — pass 1's candidates + the question; retrieved, re-ranked, packed passages + the question — on the
  // request's own thread, one request at a time per module; then that pass runs in the engine like any module.
  std::function<std::string(const std::string& prompt)> rewrite;
  std::shared_ptr<void> owner;                        // what `rewrite` and `last_pass` live in
  const TrainableModule* last_pass = nullptr;         // the engine's module when it is not `module` (pass 2)
  std::unique_ptr<std::mutex> rewrite_m = std::make_unique<std::mutex>();
  const TrainableModule* lm_module() const { return last_pass ? last_pass : module.get(); }
};

// One completion (an OpenAI "choice") to generate.
struct ChoiceParams {
  std::vector<int64_t> prompt_ids;
  int prompt_index = 0;          // which of the request's prompts (usage counts each prompt once, repeated or not)
  int64_t max_tokens = 16;
  double temperature = 1.0;  // below kGreedyBelowTemperature (generate.h): greedy
  double top_p = 1.0;
  int64_t top_k = 0;
  uint64_t seed = 0;
  std::vector<std::string> stops;
  int top_logprobs = -1;         // -1: no logprobs; k >= 0: each token's logprob and the k most likely
  bool prompt_logprobs = false;  // also the prompt's tokens' logprobs (echo with logprobs)
  bool ignore_eos = false;       // generate max_tokens whatever comes (benchmarks)
};

struct TokenLogprob {
  int64_t id = 0;
  float logprob = 0;
  std::vector<std::pair<int64_t, float>> top;  // most likely first
};

// What the consumer of a request receives, in order, per choice.
struct Update {
  int choice = 0;
  std::string text;                    // text that became final
  std::vector<TokenLogprob> tokens;    // the tokens generated since the last update (with logprobs when asked)
  std::vector<TokenLogprob> prompt;    // prompt_logprobs: once, first (the first token's logprob is NaN)
  bool finished = false;
  std::string finish_reason;           // "stop" (EOS or a stop string) or "length"
};

// A submitted request, shared by its consumer (an HTTP handler) and the engine.
class Request {
 public:
  Request(std::shared_ptr<const ServedModule> module, std::vector<ChoiceParams> choices, std::string id = "");
  // Waits up to `timeout` for updates; false when the request is over and everything was taken.
  bool next(std::vector<Update>* out, std::chrono::milliseconds timeout);
  // The client went away: the engine drops the request's rows at its next step.
  void cancel() { cancelled_ = true; }
  bool cancelled() const { return cancelled_; }
  bool done() const;
  // Set when the engine failed this request: what the client may read (no internal detail), and what the log gets.
  std::string error() const;
  std::string error_detail() const;
  const std::string& id() const { return id_; }  // the request id the log lines carry

  const std::shared_ptr<const ServedModule>& module() const { return module_; }
  const std::vector<ChoiceParams>& choices() const { return choices_; }
  std::string module_name() const { return module_ ? module_->name : std::string(); }
  int64_t prompt_tokens() const;          // summed over the request's prompts (each once, whatever n)
  int64_t completion_tokens() const { return completion_tokens_; }
  Clock::time_point submitted, first_token;  // first_token: when the first choice's first token came

 private:
  friend class Engine;
  void push(Update u);
  void fail(const std::string& message, const std::string& detail = "");
  std::shared_ptr<const ServedModule> module_;
  std::string id_;
  std::vector<ChoiceParams> choices_;
  mutable std::mutex m_;
  std::condition_variable cv_;
  std::deque<Update> updates_;
  int finished_choices_ = 0;
  std::string error_, error_detail_;
  std::atomic<bool> cancelled_{false};
  std::atomic<int64_t> completion_tokens_{0};
  bool got_first_ = false;
};

struct QueueFull : Error {
  using Error::Error;
};

struct EngineOptions {
  int64_t max_batch = 64;         // rows decoded together
  int64_t max_queue = 256;        // requests waiting; more are refused (QueueFull -> 429)
  // KV-cache positions the decode batch may hold (its memory: positions × 2 × layers × kv heads × head dim × 4 bytes):
  // rows allocated (a power of two) × columns. A request joins the batch while rows_to_allocate(rows) × (the longest
  // any row can become: input + max_tokens) stays within it. 0: max_batch × context length.
  int64_t kv_budget_tokens = 0;
  int threads = 0;                // LibTorch threads of the engine thread (0: all cores)
};

// What the engine reports as it runs (metrics); called on the engine thread.
class EngineObserver {
 public:
  virtual ~EngineObserver() = default;
  virtual void on_step(int64_t rows, int64_t max_rows, double seconds) {}
  virtual void on_prefill(int64_t rows, int64_t tokens, double seconds) {}
  virtual void on_module_apply(const std::string& kind, double seconds) {}
  virtual void on_first_token(const Request& r, double seconds_since_submit) {}
  virtual void on_token_gap(const Request& r, double seconds) {}
};

struct EngineStats {
  int64_t queued = 0, running_requests = 0, running_rows = 0, max_rows = 0, kv_cache_bytes = 0, steps = 0;
};

class Engine {
 public:
  Engine(const FrozenLM& lm, const Tokenizer& tok, EngineOptions opt, EngineObserver* observer = nullptr);
  ~Engine();  // stops the engine thread (requests still running get an error)

  // Queues a request (one row per choice); throws QueueFull when the queue is full and Error when it can never run
  // (more choices than max_batch, longer than the budget or the context, a token id outside the vocabulary).
  // `id` names the request in the engine's log lines.
  std::shared_ptr<Request> submit(std::shared_ptr<const ServedModule> module, std::vector<ChoiceParams> choices, std::string id = "");
  // Token ids a request may hold and the engine may emit: the model's embedding rows that the tokenizer can decode
  // (a checkpoint's vocabulary padded to a multiple of 64 has rows no token maps to; they are never sampled).
  int64_t usable_vocab() const { return usable_vocab_; }
  // Stops admitting new requests (submit throws) and waits until every queued and running one has finished — those
  // being prefilled included.
  void drain();
  // Runs `fn` on the engine thread between two decode steps, as a prefill runs (a forward outside the batch: the
  // embeddings endpoint); the future carries its exception. Throws Error when the server is shutting down.
  std::future<void> run_on_engine(std::function<void()> fn);
  EngineStats stats() const;
  int64_t context_length() const;  // longest input + completion the model takes
  // Positions a request's input takes: its module's prefix + the prompt.
  static int64_t input_length(const ServedModule* m, const ChoiceParams& c);
  const EngineOptions& options() const { return opt_; }

 private:
  struct Row;
  void run();
  void admit_and_prefill();
  void prefill(const std::vector<std::shared_ptr<Request>>& admitted);
  void decode_step();
  // Samples row's next token from logits [V]; emits it; returns true when the row is finished.
  bool take_token(Row& row, const float* logits, int64_t V);
  // take_token, but a failure fails the row's request alone (true: the row leaves the batch).
  bool take_token_isolated(Row& row, const float* logits, int64_t V);
  void prepare_rows(const std::shared_ptr<Request>& r, std::vector<std::unique_ptr<Row>>* rows, std::vector<at::Tensor>* embeds,
                    std::vector<at::Tensor>* masks);
  void push_prompt_logprobs(Request& r, size_t c, const ModuleInput& x);
  void drop_cancelled();  // and failed
  // Fails one request with an internal error: the detail goes to the log, the client reads the request id.
  void fail_internal(Request& r, const char* where, const std::exception* e);
  void remove_row(size_t i);
  int64_t longest_row_need() const;  // the most positions a running row can come to (input + max_tokens)

  const FrozenLM& lm_;
  const Tokenizer& tok_;
  EngineOptions opt_;
  EngineObserver* observer_;
  mutable std::mutex m_;
  std::condition_variable cv_, idle_cv_;
  std::deque<std::shared_ptr<Request>> queue_;
  std::deque<std::packaged_task<void()>> tasks_;  // run_on_engine
  bool stop_ = false, draining_ = false;
  bool busy_ = false;  // (under m_) requests popped from the queue are being prefilled or decoded
  int64_t usable_vocab_ = 0;
  std::vector<std::unique_ptr<Row>> rows_;  // aligned with the batch cache's rows
  struct Batch;
  std::unique_ptr<Batch> batch_;
  std::atomic<int64_t> running_rows_{0}, running_requests_{0}, kv_bytes_{0}, steps_{0};
  std::thread thread_;
};

}  // namespace frozenlm::serve
