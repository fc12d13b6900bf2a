#include "serve/engine.h"

#include <ATen/CPUGeneratorImpl.h>
#include <malloc.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "core/cpu_allocator.h"
#include "core/generate.h"
#include "core/kernels/decode_ops.h"
#include "core/runtime.h"
#include "core/torch_pch.h"
#include "serve/batch_cache.h"
#include "serve/completion_text.h"
#include "tokenizer/prompt_tokens.h"

namespace frozenlm::serve {

// Two choices read the same prompt (they are consecutive: prompt i's n choices). Two equal prompts of one request are
// still two prompts (usage counts both).
static bool same_prompt(const ChoiceParams& a, const ChoiceParams& b) { return a.prompt_index == b.prompt_index && a.prompt_ids == b.prompt_ids; }

// ---------------------------------------------------------------------------------------------------------------
// Request: a queue of updates between the engine thread and the request's consumer.

Request::Request(std::shared_ptr<const ServedModule> module, std::vector<ChoiceParams> choices, std::string id)
    : module_(std::move(module)), id_(std::move(id)), choices_(std::move(choices)) {
  submitted = first_token = Clock::now();
}

bool Request::next(std::vector<Update>* out, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lk(m_);
  cv_.wait_for(lk, timeout, [&] { return !updates_.empty() || finished_choices_ == int(choices_.size()) || !error_.empty(); });
  while (!updates_.empty()) {
    out->push_back(std::move(updates_.front()));
    updates_.pop_front();
  }
  return !(updates_.empty() && (finished_choices_ == int(choices_.size()) || !error_.empty()) && out->empty());
}

bool Request::done() const {
  std::lock_guard<std::mutex> lk(m_);
  return finished_choices_ == int(choices_.size()) || !error_.empty();
}

int64_t Request::prompt_tokens() const {
  // Choices of one prompt are consecutive (prompt i's n choices); two equal prompts are still two prompts.
  int64_t n = 0;
  for (size_t i = 0; i < choices_.size(); ++i)
    if (i == 0 || !same_prompt(choices_[i], choices_[i - 1])) n += choices_[i].prompt_ids.size();
  return n;
}

std::string Request::error() const {
  std::lock_guard<std::mutex> lk(m_);
  return error_;
}

std::string Request::error_detail() const {
  std::lock_guard<std::mutex> lk(m_);
  return error_detail_.empty() ? error_ : error_detail_;
}

void Request::push(Update u) {
  {
    std::lock_guard<std::mutex> lk(m_);
    if (u.finished) ++finished_choices_;
    updates_.push_back(std::move(u));
  }
  cv_.notify_all();
}

void Request::fail(const std::string& message, const std::string& detail) {
  {
    std::lock_guard<std::mutex> lk(m_);
    if (error_.empty()) {
      error_ = message;
      error_detail_ = detail;
    }
  }
  cv_.notify_all();
}

// ---------------------------------------------------------------------------------------------------------------
// Engine

struct Engine::Row {
  std::shared_ptr<Request> req;
  int choice = 0;
  SamplingParams sp;
  at::Generator gen;
  std::unique_ptr<CompletionText> text;
  int64_t next_token = 0, generated = 0, budget = 0;
  Clock::time_point last_token;
};

struct Engine::Batch {
  Batch(const FrozenLM& lm, int64_t rows, int64_t budget) : cache(lm, rows, budget) {}
  BatchCache cache;
};

Engine::Engine(const FrozenLM& lm, const Tokenizer& tok, EngineOptions opt, EngineObserver* observer)
    : lm_(lm), tok_(tok), opt_(opt), observer_(observer) {
  if (opt_.max_batch < 1) throw Error("serve: --max-batch must be >= 1");
  if (opt_.max_queue < 0) throw Error("serve: --max-queue must be >= 0");
  if (opt_.kv_budget_tokens <= 0) opt_.kv_budget_tokens = opt_.max_batch * context_length();
  if (opt_.kv_budget_tokens < context_length())
    throw Error("serve: --kv-budget-tokens " + std::to_string(opt_.kv_budget_tokens) + " is below the model's context length " +
                std::to_string(context_length()) + " (a request of full length could never run)");
  usable_vocab_ = std::min(lm_.vocab_size(), tok_.vocab_size());
  batch_ = std::make_unique<Batch>(lm_, opt_.max_batch, opt_.kv_budget_tokens);
  thread_ = std::thread([this] { run(); });
}

Engine::~Engine() {
  {
    std::lock_guard<std::mutex> lk(m_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

int64_t Engine::context_length() const { return lm_.config().max_seq_len; }

int64_t Engine::input_length(const ServedModule* m, const ChoiceParams& c) {
  return (m && m->lm_module() ? m->lm_module()->prefix_length() : 0) + int64_t(c.prompt_ids.size());
}

std::shared_ptr<Request> Engine::submit(std::shared_ptr<const ServedModule> module, std::vector<ChoiceParams> choices, std::string id) {
  if (choices.empty()) throw Error("nothing to generate (no prompt)");
  if (int64_t(choices.size()) > opt_.max_batch)
    throw Error("this request asks for " + std::to_string(choices.size()) + " completions (prompts × n); the server decodes at most " +
                std::to_string(opt_.max_batch) + " together (--max-batch)");
  int64_t need = 0;  // the longest a row of this request can become
  for (const ChoiceParams& c : choices) {
    if (c.prompt_ids.empty()) throw Error("empty prompt (it needs at least one token)");
    for (int64_t t : c.prompt_ids)
      if (t < 0 || t >= usable_vocab_)
        throw Error("token id " + std::to_string(t) + " is outside the vocabulary (ids 0.." + std::to_string(usable_vocab_ - 1) + ")");
    const int64_t in = input_length(module.get(), c);
    if (in + c.max_tokens > context_length())
      throw Error("this request needs " + std::to_string(in) + " input positions" +
                  (module && module->lm_module() ? " (" + std::to_string(module->lm_module()->prefix_length()) + " of them the module's prompt)" : std::string()) +
                  " + max_tokens " + std::to_string(c.max_tokens) + " = " + std::to_string(in + c.max_tokens) +
                  ", more than the model's context length " + std::to_string(context_length()));
    need = std::max(need, in + c.max_tokens);
  }
  const int64_t positions = BatchCache::rows_to_allocate(int64_t(choices.size()), opt_.max_batch) * need;
  if (positions > opt_.kv_budget_tokens)
    throw Error("this request needs " + std::to_string(positions) + " KV-cache positions (" + std::to_string(choices.size()) + " completions of up to " +
                std::to_string(need) + " positions: rows allocated in powers of two × the longest), more than the server's budget of " +
                std::to_string(opt_.kv_budget_tokens) + " (--kv-budget-tokens)");
  auto r = std::make_shared<Request>(std::move(module), std::move(choices), std::move(id));
  {
    std::lock_guard<std::mutex> lk(m_);
    if (draining_ || stop_) throw Error("the server is shutting down");
    if (int64_t(queue_.size()) >= opt_.max_queue)
      throw QueueFull("the server's queue is full (" + std::to_string(queue_.size()) + " requests waiting, --max-queue); retry shortly");
    queue_.push_back(r);
  }
  cv_.notify_all();
  return r;
}

std::future<void> Engine::run_on_engine(std::function<void()> fn) {
  std::packaged_task<void()> task(std::move(fn));
  std::future<void> done = task.get_future();
  {
    std::lock_guard<std::mutex> lk(m_);
    if (draining_ || stop_) throw Error("the server is shutting down");
    tasks_.push_back(std::move(task));
  }
  cv_.notify_all();
  return done;
}

void Engine::drain() {
  std::unique_lock<std::mutex> lk(m_);
  draining_ = true;
  cv_.notify_all();
  idle_cv_.wait(lk, [&] { return queue_.empty() && tasks_.empty() && !busy_; });
}

EngineStats Engine::stats() const {
  EngineStats s;
  {
    std::lock_guard<std::mutex> lk(m_);
    s.queued = queue_.size();
  }
  s.running_rows = running_rows_;
  s.running_requests = running_requests_;
  s.max_rows = opt_.max_batch;
  s.kv_cache_bytes = kv_bytes_;
  s.steps = steps_;
  return s;
}

int64_t Engine::longest_row_need() const {
  int64_t n = 0;
  for (const auto& r : rows_) n = std::max(n, r->budget);
  return n;
}

void Engine::run() {
  set_threads(opt_.threads);  // OpenMP's thread count is per thread: this one runs every forward
  at::NoGradGuard no_grad;
  while (true) {
    bool idle = false;
    {
      std::unique_lock<std::mutex> lk(m_);
      idle = !cv_.wait_for(lk, std::chrono::seconds(1), [&] { return stop_ || !queue_.empty() || !tasks_.empty() || !rows_.empty(); });
      if (stop_) break;
    }
    while (true) {  // forwards outside the batch, first (a packaged_task keeps its exception for its caller)
      std::packaged_task<void()> task;
      {
        std::lock_guard<std::mutex> lk(m_);
        if (tasks_.empty()) break;
        task = std::move(tasks_.front());
        tasks_.pop_front();
        busy_ = true;
      }
      task();
      idle = false;
    }
    if (idle) {
      // Nothing to do for a second: give the batch's KV buffers (grown to the busiest moment) back to the system,
      // so that memory returns to its idle level after a burst.
      if (batch_->cache.capacity() > 0) {
        batch_ = std::make_unique<Batch>(lm_, opt_.max_batch, opt_.kv_budget_tokens);
        release_cpu_cache();
        malloc_trim(0);  // and what the HTTP threads' malloc arenas hold free
        kv_bytes_ = batch_->cache.bytes();
      }
      continue;
    }
    try {
      drop_cancelled();
      admit_and_prefill();
      if (!rows_.empty()) decode_step();
    } catch (const std::exception& e) {
      // Only a failure of the shared decode forward (or of the batch's cache) gets here: it leaves the batch in an
      // unknown state, so everything running fails and the batch starts again. Per-request failures never do.
      for (auto& r : rows_) fail_internal(*r->req, "decode step", &e);
      rows_.clear();
      batch_ = std::make_unique<Batch>(lm_, opt_.max_batch, opt_.kv_budget_tokens);
    }
    running_rows_ = rows_.size();
    std::vector<const Request*> reqs;
    for (auto& r : rows_) reqs.push_back(r->req.get());
    std::sort(reqs.begin(), reqs.end());
    running_requests_ = std::unique(reqs.begin(), reqs.end()) - reqs.begin();
    kv_bytes_ = batch_->cache.bytes();
    {
      std::lock_guard<std::mutex> lk(m_);
      busy_ = !rows_.empty();
      if (queue_.empty() && tasks_.empty() && !busy_) idle_cv_.notify_all();
    }
  }
  // Stopped: nothing may wait forever on a request the engine will not finish.
  for (auto& r : rows_) r->req->fail("the server stopped");
  std::lock_guard<std::mutex> lk(m_);
  busy_ = false;
  for (auto& r : queue_) r->fail("the server stopped");
  queue_.clear();
  tasks_.clear();  // (their futures report a broken promise)
  idle_cv_.notify_all();
}

void Engine::remove_row(size_t i) {
  batch_->cache.remove_row(i);
  if (i + 1 != rows_.size()) rows_[i] = std::move(rows_.back());
  rows_.pop_back();
}

void Engine::drop_cancelled() {
  for (size_t i = rows_.size(); i-- > 0;)
    if (rows_[i]->req->cancelled() || rows_[i]->req->done()) remove_row(i);
}

void Engine::fail_internal(Request& r, const char* where, const std::exception* e) {
  const std::string detail = std::string(where) + ": " + (e ? e->what() : "unknown exception");
  // The first line only: LibTorch's messages carry a C++ stack trace after it.
  std::fprintf(stderr, "[serve] request %s failed in the %s\n", r.id().empty() ? "-" : r.id().c_str(), detail.substr(0, detail.find('\n')).c_str());
  r.fail("internal error" + (r.id().empty() ? std::string() : " (request id " + r.id() + ")"), detail);
}

namespace {
// log p of every token from logits [V] (fp64 log-sum-exp), the chosen one's and the k largest.
TokenLogprob logprob_of(const float* logits, int64_t V, int64_t token, int k) {
  float mx = -INFINITY;
  for (int64_t i = 0; i < V; ++i) mx = std::max(mx, logits[i]);
  double sum = 0;
  for (int64_t i = 0; i < V; ++i) sum += std::exp(double(logits[i]) - mx);
  const double lse = mx + std::log(sum);
  TokenLogprob lp;
  lp.id = token;
  lp.logprob = float(logits[token] - lse);
  if (k > 0) {
    std::vector<int64_t> idx(V);
    std::iota(idx.begin(), idx.end(), 0);
    k = int(std::min<int64_t>(k, V));
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int64_t a, int64_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
    for (int i = 0; i < k; ++i) lp.top.emplace_back(idx[i], float(logits[idx[i]] - lse));
  }
  return lp;
}
}  // namespace

bool Engine::take_token(Row& row, const float* logits, int64_t V) {
  const ChoiceParams& p = row.req->choices()[row.choice];
  V = std::min(V, usable_vocab_);  // padded embedding rows no token maps to are never picked
  int64_t t = 0;
  if (row.sp.greedy()) {
    t = kernels::argmax(logits, V);  // the first largest logit, as generate() picks it
  } else {
    t = sample_token(at::from_blob(const_cast<float*>(logits), {V}, at::kFloat), row.sp, row.gen);
  }
  Update u;
  u.choice = row.choice;
  if (p.top_logprobs >= 0) u.tokens.push_back(logprob_of(logits, V, t, p.top_logprobs));
  else u.tokens.push_back(TokenLogprob{t, 0, {}});
  const bool eos = std::find(row.sp.eos_ids.begin(), row.sp.eos_ids.end(), t) != row.sp.eos_ids.end();
  if (!eos) u.text = row.text->push(t);
  ++row.generated;
  row.req->completion_tokens_ += 1;
  const bool stopped = eos || row.text->stopped();
  u.finished = stopped || row.generated >= p.max_tokens;
  if (u.finished) {
    if (!stopped) u.text += row.text->finish();
    u.finish_reason = stopped ? "stop" : "length";
  }
  const auto now = Clock::now();
  if (row.generated == 1) {
    bool first = false;
    {
      std::lock_guard<std::mutex> lk(row.req->m_);
      if (!row.req->got_first_) {
        row.req->got_first_ = first = true;
        row.req->first_token = now;
      }
    }
    if (first && observer_) observer_->on_first_token(*row.req, std::chrono::duration<double>(now - row.req->submitted).count());
  } else if (observer_) {
    observer_->on_token_gap(*row.req, std::chrono::duration<double>(now - row.last_token).count());
  }
  row.last_token = now;
  row.next_token = t;
  row.req->push(std::move(u));
  return row.req->done() ? true : (row.generated >= p.max_tokens || stopped);
}

bool Engine::take_token_isolated(Row& row, const float* logits, int64_t V) {
  try {
    return take_token(row, logits, V);
  } catch (const std::exception& e) {
    fail_internal(*row.req, "sampling or decoding of its token", &e);
    return true;  // the row leaves the batch; its request's other rows leave at the next step (drop_cancelled)
  }
}

void Engine::admit_and_prefill() {
  // ---- admit queued requests while rows and the KV budget allow (first come, first served) ----
  std::vector<std::shared_ptr<Request>> admitted;
  {
    std::lock_guard<std::mutex> lk(m_);
    // The batch cache holds rows_to_allocate(rows) × (the longest a row can become) positions at most: a request
    // joins while that stays within the budget (BatchCache's invariant).
    int64_t rows = rows_.size(), longest = longest_row_need();
    while (!queue_.empty()) {
      std::shared_ptr<Request> r = queue_.front();
      if (r->cancelled()) {
        queue_.pop_front();
        continue;
      }
      int64_t need = longest;
      for (const ChoiceParams& c : r->choices()) need = std::max(need, input_length(r->module().get(), c) + c.max_tokens);
      const int64_t after = rows + int64_t(r->choices().size());
      if (after > opt_.max_batch || BatchCache::rows_to_allocate(after, opt_.max_batch) * need > opt_.kv_budget_tokens) break;
      rows = after;
      longest = need;
      admitted.push_back(r);
      queue_.pop_front();
      busy_ = true;  // drain() waits for these, from now until their rows are gone
    }
  }
  if (!admitted.empty()) prefill(admitted);
}

// One request's rows for the batched prefill: its module's output for each distinct prompt (one apply per prompt),
// and the prompt's own logprobs when asked (echo). Throws when the module's forward fails: only this request fails.
void Engine::prepare_rows(const std::shared_ptr<Request>& r, std::vector<std::unique_ptr<Row>>* rows, std::vector<at::Tensor>* embeds,
                          std::vector<at::Tensor>* masks) {
  const TrainableModule* module = r->module() ? r->module()->lm_module() : nullptr;
  ModuleInput x;
  for (size_t c = 0; c < r->choices().size(); ++c) {
    const ChoiceParams& p = r->choices()[c];
    if (c == 0 || !same_prompt(p, r->choices()[c - 1])) {
      at::Tensor ids = at::tensor(p.prompt_ids, at::kLong).view({1, -1}).to(lm_.device());
      const auto ta = Clock::now();
      x = module ? module->apply(lm_, module_input(lm_, ids)) : module_input(lm_, ids);
      if (module && observer_) observer_->on_module_apply(module->kind(), std::chrono::duration<double>(Clock::now() - ta).count());
      if (p.prompt_logprobs) push_prompt_logprobs(*r, c, x);
    }
    if (p.max_tokens == 0) {  // scoring a prompt (echo + logprobs): nothing to generate
      Update u;
      u.choice = int(c);
      u.finished = true;
      u.finish_reason = "length";
      r->push(std::move(u));
      continue;
    }
    embeds->push_back(x.embeds[0]);
    masks->push_back(x.mask[0].to(at::kBool));
    auto row = std::make_unique<Row>();
    row->req = r;
    row->choice = int(c);
    row->sp.max_new_tokens = p.max_tokens;
    row->sp.temperature = p.temperature;
    row->sp.top_p = p.top_p;
    row->sp.top_k = p.top_k;
    row->sp.seed = p.seed;
    if (!p.ignore_eos) row->sp.eos_ids = eos_ids_for(lm_.config(), tok_);
    row->gen = at::make_generator<at::CPUGeneratorImpl>(p.seed);
    row->text = std::make_unique<CompletionText>(tok_, p.prompt_ids, p.stops);
    row->budget = input_length(r->module().get(), p) + p.max_tokens;
    rows->push_back(std::move(row));
  }
}

// The prompt's own tokens scored (echo with logprobs): logits at the input positions, after the module's prefix —
// the LM head run on blocks of kScoreRows positions of the final hidden states, so scoring holds [kScoreRows, V]
// fp32 logits at a time, not [T, V] (a 2,048-token prompt over a 128k vocabulary would be 1 GiB).
// Pushed to choice c and every later choice of the same prompt.
void Engine::push_prompt_logprobs(Request& r, size_t c, const ModuleInput& x) {
  constexpr int64_t kScoreRows = 64;
  const ChoiceParams& p = r.choices()[c];
  ForwardInput fi;
  fi.embeds = x.embeds;
  fi.mask = x.mask;
  ForwardOptions fo;
  fo.logits = false;
  fo.hidden = true;
  const int64_t T = p.prompt_ids.size(), off = x.embeds.size(1) - T;
  const at::Tensor h = lm_.forward(fi, nullptr, fo).hidden[0].narrow(0, off, T);  // [T, d], after the final norm
  Update u;
  u.choice = int(c);
  u.prompt.push_back(TokenLogprob{p.prompt_ids[0], NAN, {}});
  for (int64_t from = 0; from + 1 < T; from += kScoreRows) {  // position i's logits score token i + 1
    const int64_t n = std::min(kScoreRows, T - 1 - from);
    const at::Tensor lg = lm_.head(h.narrow(0, from, n)).to(at::kCPU, at::kFloat).contiguous();  // [n, V]
    const int64_t V = std::min(lg.size(1), usable_vocab_);
    for (int64_t i = 0; i < n; ++i)
      u.prompt.push_back(logprob_of(lg.data_ptr<float>() + i * lg.size(1), V, p.prompt_ids[from + i + 1], std::max(p.top_logprobs, 0)));
  }
  for (size_t cc = c; cc < r.choices().size() && same_prompt(r.choices()[cc], p); ++cc) {
    Update uc = u;
    uc.choice = int(cc);
    r.push(std::move(uc));
  }
}

void Engine::prefill(const std::vector<std::shared_ptr<Request>>& admitted) {
  // ---- each request's rows; a request whose module fails is failed alone ----
  const auto t0 = Clock::now();
  std::vector<std::unique_ptr<Row>> fresh;
  std::vector<at::Tensor> embeds, masks;
  for (const auto& r : admitted) {
    std::vector<std::unique_ptr<Row>> rows;
    std::vector<at::Tensor> e, m;
    try {
      prepare_rows(r, &rows, &e, &m);
    } catch (const std::exception& ex) {
      fail_internal(*r, "module's forward (prefill)", &ex);
      continue;
    }
    for (size_t i = 0; i < rows.size(); ++i) {
      fresh.push_back(std::move(rows[i]));
      embeds.push_back(e[i]);
      masks.push_back(m[i]);
    }
  }

  // ---- one prefill forward for all of them, left-padded, into a cache of their own (the running batch's rows are
  // untouched until add_row: a failure here fails only the requests being admitted) ----
  if (fresh.empty()) return;
  const int64_t N = fresh.size(), d = lm_.dim();
  int64_t T = 0, tokens = 0;
  for (auto& e : embeds) T = std::max(T, e.size(0));
  KVCache pc;
  at::Tensor logits;
  try {
    at::Tensor E = at::zeros({N, T, d}, embeds[0].options());
    at::Tensor M = at::zeros({N, T}, masks[0].options());
    for (int64_t i = 0; i < N; ++i) {
      const int64_t n = embeds[i].size(0);
      E[i].narrow(0, T - n, n).copy_(embeds[i]);
      M[i].narrow(0, T - n, n).copy_(masks[i]);
      tokens += n;
    }
    pc = lm_.new_cache(N, T);
    ForwardInput in;
    in.embeds = E;
    in.mask = M;
    ForwardOptions fo;
    fo.last_logits_only = true;
    logits = lm_.forward(in, &pc, fo).logits.squeeze(1).to(at::kCPU, at::kFloat).contiguous();  // [N, V]
  } catch (const std::exception& e) {
    for (auto& row : fresh) fail_internal(*row->req, "prefill forward", &e);
    return;
  }
  if (observer_) observer_->on_prefill(N, tokens, std::chrono::duration<double>(Clock::now() - t0).count());
  const int64_t V = logits.size(1);
  for (int64_t i = 0; i < N; ++i) {
    Row& row = *fresh[i];
    if (row.req->cancelled() || row.req->done()) continue;
    if (take_token_isolated(row, logits.data_ptr<float>() + i * V, V)) continue;
    batch_->cache.add_row(pc, i);
    rows_.push_back(std::move(fresh[i]));
  }
}

void Engine::decode_step() {
  const auto t0 = Clock::now();
  const int64_t B = rows_.size();
  batch_->cache.ensure_room(1);
  std::vector<int64_t> next(B);
  for (int64_t b = 0; b < B; ++b) next[b] = rows_[b]->next_token;
  ForwardInput in;
  in.ids = at::tensor(next, at::kLong).view({B, 1}).to(lm_.device());
  ForwardOptions fo;
  fo.last_logits_only = true;
  at::Tensor logits = lm_.forward(in, &batch_->cache.cache(), fo).logits.squeeze(1).to(at::kCPU, at::kFloat).contiguous();  // [B, V]
  batch_->cache.after_forward();
  ++steps_;
  const int64_t V = logits.size(1);
  std::vector<size_t> finished;
  for (int64_t b = 0; b < B; ++b)
    if (take_token_isolated(*rows_[b], logits.data_ptr<float>() + b * V, V)) finished.push_back(b);
  for (size_t i = finished.size(); i-- > 0;) remove_row(finished[i]);  // last first: remove_row moves the last row
  if (observer_) observer_->on_step(B, opt_.max_batch, std::chrono::duration<double>(Clock::now() - t0).count());
}

}  // namespace frozenlm::serve
