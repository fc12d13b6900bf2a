// The endpoints that run the engine: POST /v1/completions and POST /v1/chat/completions. Each reads its request shape
// (openai_api.h), turns it into prompts of token ids for a module, and writes its response shape; what lies between —
// submitting the choices, waiting for a non-streamed answer while watching the client, streaming server-sent events —
// is shared (the "plumbing" section).
#include <chrono>
#include <cmath>
#include <random>

#include "core/torch_pch.h"
#include "serve/peer_socket.h"
#include "serve/server_impl.h"
#include "tokenizer/prompt_tokens.h"

namespace frozenlm::serve {

namespace {

// ---------------------------------------------------------------------------------------------------------------
// Plumbing shared by the endpoints

struct InFlight {  // counts a generation request until its response is written (drain waits for it)
  explicit InFlight(std::atomic<int>& n) : n_(n) { ++n_; }
  ~InFlight() { --n_; }
  std::atomic<int>& n_;
};

// One choice as a non-streamed answer collects it.
struct ChoiceOut {
  std::string text;
  std::vector<TokenLogprob> tokens, prompt;
  std::string finish_reason;
};

// The base model (null) or a loaded module, by the request's `model`.
std::shared_ptr<const ServedModule> find_model(Server::Impl& P, const ServerOptions& opt, const std::string& name) {
  if (name == opt.model_name) return nullptr;
  auto module = P.modules.find(name);
  if (!module)
    throw ApiError(404, "model '" + name + "' not found: GET /v1/models lists the base model ('" + opt.model_name + "') and the loaded modules", "model", "model_not_found");
  return module;
}

// Queues prompt i's n choices (seed + i·n + j each: one prompt, n = 1 is exactly `frozenlm generate --seed`), with
// the sampling of `r`. The engine's refusals become the API's statuses.
std::shared_ptr<Request> submit(Server::Impl& P, const std::shared_ptr<const ServedModule>& module, const std::vector<std::vector<int64_t>>& prompts,
                                const CompletionRequest& r) {
  const uint64_t seed = r.seed ? *r.seed : std::random_device{}();
  std::vector<ChoiceParams> choices;
  for (size_t i = 0; i < prompts.size(); ++i)
    for (int j = 0; j < r.n; ++j) {
      ChoiceParams c;
      c.prompt_ids = prompts[i];
      c.prompt_index = int(i);
      c.max_tokens = r.max_tokens;
      c.temperature = r.temperature;
      c.top_p = r.top_p;
      c.top_k = r.top_k;
      c.seed = seed + i * r.n + j;
      c.stops = r.stop;
      c.top_logprobs = r.logprobs;
      c.prompt_logprobs = r.echo && r.logprobs >= 0;
      c.ignore_eos = r.ignore_eos;
      choices.push_back(std::move(c));
    }
  try {
    return P.engine.submit(module, std::move(choices), t_log.request_id);
  } catch (const QueueFull& e) {
    throw ApiError(429, e.what(), "", "queue_full");
  } catch (const Error& e) {
    if (P.draining) throw ApiError(503, "the server is shutting down", "", "server_shutting_down", "server_error");
    const std::string msg = e.what();
    const bool context = msg.find("context length") != std::string::npos;
    throw ApiError(400, msg, context ? "max_tokens" : "", context ? "context_length_exceeded" : "request_too_large");
  }
}

// The status of a request the engine failed: its own internal error (500), or the server stopping under it (503).
int job_error_status(const std::string& error) { return error.rfind("internal error", 0) == 0 ? 500 : 503; }
ApiError job_error(const std::string& error) {
  const int status = job_error_status(error);
  return ApiError(status, error, "", status == 503 ? "server_shutting_down" : "", "server_error");
}

// A request's metrics, recorded before its last bytes are written (a client that reads /metrics right after its
// answer sees it counted).
void count_request(Server::Impl& P, const std::shared_ptr<Request>& job, int status) {
  t_log.counted = true;
  t_log.completion_tokens = job->completion_tokens();
  if (job->completion_tokens() > 0) t_log.ttft_s = std::chrono::duration<double>(job->first_token - job->submitted).count();
  P.metrics.on_tokens(t_log.module, job->prompt_tokens(), job->completion_tokens());
  P.metrics.on_request(t_log.module, status);
  if (status == 200) P.metrics.on_end_to_end(t_log.module, std::chrono::duration<double>(std::chrono::steady_clock::now() - t_log.start).count());
}

json usage_of(const Request& job) {
  return json{{"prompt_tokens", job.prompt_tokens()}, {"completion_tokens", job.completion_tokens()},
              {"total_tokens", job.prompt_tokens() + job.completion_tokens()}};
}

// Waits for every choice of a non-streamed answer. Every 200 ms it checks the client is still there (its socket is
// looked up once the answer takes that long): one that left cancels the request (logged as 499). False when the
// response is settled here (the client left, or the engine failed the request: 500 / 503).
bool collect(Server::Impl& P, const httplib::Request& req, httplib::Response& res, const std::shared_ptr<Request>& job, std::vector<ChoiceOut>* out) {
  std::vector<Update> ups;
  std::unique_ptr<PeerSocket> peer;
  auto checked = std::chrono::steady_clock::now();
  while (job->next(&ups, std::chrono::milliseconds(200))) {
    if (const auto now = std::chrono::steady_clock::now(); now - checked >= std::chrono::milliseconds(200)) {
      checked = now;
      if (!peer) peer = std::make_unique<PeerSocket>(req.remote_addr, req.remote_port, req.local_port);
      if (peer->peer_closed()) {  // its rows leave the batch at the next step
        job->cancel();
        t_log.error = "the client closed the connection before the answer";
        count_request(P, job, 499);
        res.status = 499;
        return false;
      }
    }
    for (Update& u : ups) {
      ChoiceOut& c = (*out)[u.choice];
      c.text += u.text;
      c.tokens.insert(c.tokens.end(), u.tokens.begin(), u.tokens.end());
      if (!u.prompt.empty()) c.prompt = u.prompt;
      if (u.finished) c.finish_reason = u.finish_reason;
    }
    ups.clear();
  }
  if (const std::string error = job->error(); !error.empty()) {
    const ApiError e = job_error(error);
    count_request(P, job, e.status);
    t_log.error = job->error_detail();
    send_json(res, e.status, e.body());
    return false;
  }
  count_request(P, job, 200);
  return true;
}

// A streamed answer as server-sent events: `head` first, then `events(update)` for every update, then the usage chunk
// (`usage_chunk`, when asked) and "data: [DONE]". A client that stops reading cancels the request. Nothing thrown
// while streaming may escape (cpp-httplib does not catch in a content provider: the process would end): the stream
// then ends with an error event naming the request id.
using EventsFn = std::function<std::vector<json>(const Update&)>;
void stream(httplib::Response& res, Server::Impl& P, std::shared_ptr<Request> job, std::vector<json> head, EventsFn events,
            std::function<json()> usage_chunk, std::shared_ptr<InFlight> in_flight) {
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  auto run = [&P, job, head, events, usage_chunk](httplib::DataSink& sink) {
    auto write = [&](const std::string& s) {
      if (sink.write(s.data(), s.size())) return true;
      job->cancel();
      return false;
    };
    auto event = [](const json& j) { return "data: " + dump(j) + "\n\n"; };
    for (const json& h : head)
      if (!write(event(h))) return false;
    std::vector<Update> ups;
    while (job->next(&ups, std::chrono::milliseconds(100))) {
      for (Update& u : ups)
        for (const json& e : events(u))
          if (!write(event(e))) return false;
      ups.clear();
      if (!sink.is_writable()) {
        job->cancel();
        return false;
      }
    }
    count_request(P, job, 200);  // the status line went out as 200 whatever follows
    if (const std::string error = job->error(); !error.empty()) {
      t_log.error = job->error_detail();
      write(event(job_error(error).body()));
    } else if (usage_chunk) {
      if (!write(event(usage_chunk()))) return false;
    }
    write("data: [DONE]\n\n");
    sink.done();
    return true;
  };
  res.set_chunked_content_provider(
      "text/event-stream",
      [job, run, in_flight, request_id = t_log.request_id](size_t, httplib::DataSink& sink) {
        try {
          return run(sink);
        } catch (const std::exception& e) {
          job->cancel();
          const std::string what = e.what();
          t_log.error = "streaming the answer: " + what.substr(0, what.find('\n'));
          const std::string ev = "data: " + dump(ApiError(500, internal_error_message(request_id)).body()) + "\n\ndata: [DONE]\n\n";
          if (sink.write(ev.data(), ev.size())) sink.done();
          return true;
        }
      },
      [job](bool success) {
        if (!success) job->cancel();
      });
}

// The stream's last chunk when stream_options.include_usage: a chunk with no choices and the usage.
template <typename Chunk>
std::function<json()> usage_chunk(Chunk chunk, std::shared_ptr<Request> job) {
  return [chunk, job] {
    json u = chunk(json::array());
    u["usage"] = usage_of(*job);
    return u;
  };
}

// Token texts for logprobs: each read after the token before it (`prev`, advanced past `toks`).
std::vector<std::string> token_texts(const Server::Impl& P, const TokenLogprob& t, int64_t prev) {
  std::vector<std::string> out{P.token_text(prev, t.id)};
  for (auto& [tid, lp] : t.top) out.push_back(P.token_text(prev, tid));
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// POST /v1/completions

namespace {

// Logprobs as the completions API shows them: tokens, token_logprobs, top_logprobs, text_offset. `prev` and `offset`
// (the token before and where the next token's text starts) are advanced past `toks`.
json completion_logprobs(const Server::Impl& P, const std::vector<TokenLogprob>& toks, int top, int64_t& prev, size_t& offset) {
  LogprobsOut lo;
  for (const TokenLogprob& t : toks) {
    const std::vector<std::string> texts = token_texts(P, t, prev);
    lo.tokens.push_back(texts[0]);
    lo.token_logprobs.push_back(std::isnan(t.logprob) ? std::optional<float>() : std::optional<float>(t.logprob));
    std::vector<std::pair<std::string, float>> tops;
    for (size_t k = 0; k < t.top.size(); ++k) tops.emplace_back(texts[k + 1], t.top[k].second);
    lo.top_logprobs.push_back(std::move(tops));
    lo.text_offset.push_back(offset);
    offset += texts[0].size();
    prev = t.id;
  }
  return lo.to_json(top > 0);
}

}  // namespace

void handle_completions(Server::Impl& P, const ServerOptions& opt, const httplib::Request& req, const std::string& body, httplib::Response& res) {
  t_log.completion = true;
  auto in_flight = std::make_shared<InFlight>(P.in_flight);
  CompletionRequest r;
  std::vector<std::vector<int64_t>> prompts;
  std::vector<std::string> prompt_texts;
  std::shared_ptr<Request> job;
  try {
    if (P.draining) throw ApiError(503, "the server is shutting down", "", "server_shutting_down", "server_error");
    r = parse_completion_request(body);
    t_log.stream = r.stream;
    const std::shared_ptr<const ServedModule> module = find_model(P, opt, r.model);
    t_log.module = module ? module->name : "";
    if (module && module->rewrite && !r.prompt_ids.empty())
      throw ApiError(400, "module '" + module->name + "' (" + module->kind + ") reads text: give 'prompt' as a string", "prompt");
    for (auto& ids : r.prompt_ids) {
      for (int64_t id : ids)  // (ids past the tokenizer's vocabulary too: a padded embedding row decodes to nothing)
        if (id >= P.engine.usable_vocab())
          throw ApiError(400, "token id " + std::to_string(id) + " is outside the vocabulary (ids 0.." + std::to_string(P.engine.usable_vocab() - 1) + ")", "prompt");
      prompts.push_back(ids);
      prompt_texts.push_back(P.tok.decode(ids, true));
    }
    for (auto& t : r.prompts) {
      std::string text = t;
      if (module && module->rewrite) {  // a multi-pass module's earlier passes (see ServedModule)
        std::lock_guard<std::mutex> lk(*module->rewrite_m);
        try {
          text = module->rewrite(t);
        } catch (const Error& e) {
          throw ApiError(400, std::string("module '") + module->name + "': " + e.what(), "prompt");
        }
      }
      try {
        prompts.push_back(prompt_ids(P.lm.config(), P.tok, text));  // BOS first, as `generate`, training and eval encode
      } catch (const Error& e) {
        throw ApiError(400, e.what(), "prompt");
      }
      prompt_texts.push_back(text);
    }
    job = submit(P, module, prompts, r);
  } catch (const ApiError& e) {
    t_log.error = e.what();
    return send_error(res, e);
  }
  t_log.prompt_tokens = job->prompt_tokens();

  const std::string id = unique_id("cmpl");
  const int64_t created = unix_now();
  const size_t n_choices = prompts.size() * r.n;
  if (!r.stream) {
    std::vector<ChoiceOut> out(n_choices);
    if (!collect(P, req, res, job, &out)) return;
    json choices = json::array();
    for (size_t i = 0; i < n_choices; ++i) {
      const size_t pi = i / r.n;
      const ChoiceOut& c = out[i];
      json ch = {{"index", i}, {"text", (r.echo ? prompt_texts[pi] : std::string()) + c.text}, {"finish_reason", c.finish_reason}};
      if (r.logprobs >= 0) {
        std::vector<TokenLogprob> all = r.echo ? c.prompt : std::vector<TokenLogprob>();
        all.insert(all.end(), c.tokens.begin(), c.tokens.end());
        int64_t prev = r.echo ? -1 : prompts[pi].back();
        size_t offset = r.echo ? 0 : prompt_texts[pi].size();
        ch["logprobs"] = completion_logprobs(P, all, r.logprobs, prev, offset);
      } else {
        ch["logprobs"] = nullptr;
      }
      choices.push_back(ch);
    }
    return send_json(res, 200, {{"id", id}, {"object", "text_completion"}, {"created", created}, {"model", r.model},
                                {"system_fingerprint", P.weights_hash}, {"choices", choices}, {"usage", usage_of(*job)}});
  }

  // ---- streamed: one event per update; echo first; then (stream_options.include_usage) the usage ----
  auto chunk = [id, created, model = r.model](json choices) {
    return json{{"id", id}, {"object", "text_completion"}, {"created", created}, {"model", model}, {"choices", std::move(choices)}};
  };
  struct Position {  // per choice: the token before the next one and where its text starts (logprobs)
    std::vector<int64_t> prev;
    std::vector<size_t> offset;
  };
  auto pos = std::make_shared<Position>();
  std::vector<json> head;
  for (size_t i = 0; i < n_choices; ++i) {
    pos->prev.push_back(prompts[i / r.n].back());
    pos->offset.push_back(prompt_texts[i / r.n].size());
    if (r.echo) head.push_back(chunk(json::array({{{"index", i}, {"text", prompt_texts[i / r.n]}, {"logprobs", nullptr}, {"finish_reason", nullptr}}})));
  }
  auto events = [&P, chunk, pos, top = r.logprobs](const Update& u) {
    json ch = {{"index", u.choice}, {"text", u.text}};
    ch["logprobs"] = top >= 0 ? completion_logprobs(P, u.tokens, top, pos->prev[u.choice], pos->offset[u.choice]) : json(nullptr);
    ch["finish_reason"] = u.finished ? json(u.finish_reason) : json(nullptr);
    return std::vector<json>{chunk(json::array({ch}))};
  };
  stream(res, P, job, std::move(head), events, r.include_usage ? usage_chunk(chunk, job) : nullptr, in_flight);
}

// ---------------------------------------------------------------------------------------------------------------
// POST /v1/chat/completions

namespace {

// Logprobs as chat shows them: {"content": [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]}.
json chat_logprobs(const Server::Impl& P, const std::vector<TokenLogprob>& toks, int64_t& prev) {
  auto bytes = [](const std::string& s) {
    json b = json::array();
    for (unsigned char c : s) b.push_back(int(c));
    return b;
  };
  json content = json::array();
  for (const TokenLogprob& t : toks) {
    const std::vector<std::string> texts = token_texts(P, t, prev);
    json tops = json::array();
    for (size_t k = 0; k < t.top.size(); ++k) tops.push_back({{"token", texts[k + 1]}, {"logprob", t.top[k].second}, {"bytes", bytes(texts[k + 1])}});
    content.push_back({{"token", texts[0]}, {"logprob", t.logprob}, {"bytes", bytes(texts[0])}, {"top_logprobs", tops}});
    prev = t.id;
  }
  return json{{"content", content}};
}

}  // namespace

void handle_chat_completions(Server::Impl& P, const ServerOptions& opt, const httplib::Request& req, const std::string& body, httplib::Response& res) {
  t_log.completion = true;
  auto in_flight = std::make_shared<InFlight>(P.in_flight);
  ChatRequest c;
  std::vector<int64_t> ids;
  std::shared_ptr<Request> job;
  try {
    if (P.draining) throw ApiError(503, "the server is shutting down", "", "server_shutting_down", "server_error");
    c = parse_chat_request(body);
    t_log.stream = c.sampling.stream;
    const std::shared_ptr<const ServedModule> module = find_model(P, opt, c.sampling.model);
    t_log.module = module ? module->name : "";
    if (module && module->rewrite)
      throw ApiError(400, "module '" + module->name + "' (" + module->kind + ") reads one question, not a conversation: send it to /v1/completions as the prompt", "model");
    if (!opt.chat_template)
      throw ApiError(400, "the model '" + opt.model_name + "' has no chat template (none in its tokenizer_config.json or GGUF file): start the server with "
                     "--chat-template FILE, or send the text to /v1/completions", "messages", "no_chat_template");
    std::string text;
    try {
      text = opt.chat_template->render(c.messages, c.add_generation_prompt, c.tools);
    } catch (const jinja::TemplateError& e) {
      throw ApiError(400, std::string("the chat template cannot render these messages: ") + e.what(), "messages", "chat_template_error");
    }
    ids = P.tok.encode(text, /*add_special=*/false);  // the template writes BOS itself, as apply_chat_template tokenizes
    if (ids.empty()) throw ApiError(400, "the chat template rendered these messages to no tokens", "messages");
    job = submit(P, module, {ids}, c.sampling);
  } catch (const ApiError& e) {
    t_log.error = e.what();
    return send_error(res, e);
  }
  t_log.prompt_tokens = job->prompt_tokens();

  const CompletionRequest& r = c.sampling;
  const std::string id = unique_id("chatcmpl");
  const int64_t created = unix_now();
  const size_t n_choices = r.n;
  if (!r.stream) {
    std::vector<ChoiceOut> out(n_choices);
    if (!collect(P, req, res, job, &out)) return;
    json choices = json::array();
    for (size_t i = 0; i < n_choices; ++i) {
      json ch = {{"index", i}, {"message", {{"role", "assistant"}, {"content", out[i].text}}}, {"finish_reason", out[i].finish_reason}};
      int64_t prev = ids.back();
      ch["logprobs"] = r.logprobs >= 0 ? chat_logprobs(P, out[i].tokens, prev) : json(nullptr);
      choices.push_back(ch);
    }
    return send_json(res, 200, {{"id", id}, {"object", "chat.completion"}, {"created", created}, {"model", r.model},
                                {"system_fingerprint", P.weights_hash}, {"choices", choices}, {"usage", usage_of(*job)}});
  }

  // ---- streamed: a first chunk per choice with the role, then content deltas, the last with its finish_reason ----
  auto chunk = [id, created, model = r.model, fp = P.weights_hash](json choices) {
    return json{{"id", id}, {"object", "chat.completion.chunk"}, {"created", created}, {"model", model}, {"system_fingerprint", fp}, {"choices", std::move(choices)}};
  };
  auto prev = std::make_shared<std::vector<int64_t>>(n_choices, ids.back());
  std::vector<json> head;
  for (size_t i = 0; i < n_choices; ++i)
    head.push_back(chunk(json::array({{{"index", i}, {"delta", {{"role", "assistant"}, {"content", ""}}}, {"logprobs", nullptr}, {"finish_reason", nullptr}}})));
  auto events = [&P, chunk, prev, top = r.logprobs](const Update& u) {
    json ch = {{"index", u.choice}, {"delta", u.text.empty() && u.finished ? json::object() : json{{"content", u.text}}}};
    ch["logprobs"] = top >= 0 ? chat_logprobs(P, u.tokens, (*prev)[u.choice]) : json(nullptr);
    ch["finish_reason"] = u.finished ? json(u.finish_reason) : json(nullptr);
    return std::vector<json>{chunk(json::array({ch}))};
  };
  stream(res, P, job, std::move(head), events, r.include_usage ? usage_chunk(chunk, job) : nullptr, in_flight);
}

}  // namespace frozenlm::serve
