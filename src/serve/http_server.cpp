#include "serve/http_server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <thread>

#include "core/torch_pch.h"
#include "serve/openai_api.h"
#include "serve/peer_socket.h"
#include "serve/playground.h"
#include "serve/server_impl.h"

namespace frozenlm::serve {

thread_local LogExtra t_log;

// JSON for a client: invalid UTF-8 (a token that is half a character) becomes U+FFFD instead of an exception.
std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

void send_json(httplib::Response& res, int status, const json& j) {
  res.status = status;
  res.set_content(dump(j), "application/json");
}

void send_error(httplib::Response& res, const ApiError& e) {
  if (e.status == 429) res.set_header("Retry-After", "1");
  send_json(res, e.status, e.body());
}

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string unique_id(const char* prefix) {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t salt = std::random_device{}();
  char buf[48];
  std::snprintf(buf, sizeof buf, "%s-%012llx%06llx", prefix, (unsigned long long)(salt & 0xffffffffffffULL), (unsigned long long)(++counter));
  return buf;
}

std::string internal_error_message(const std::string& request_id) { return "internal error (request id " + request_id + ")"; }

namespace {


// A client's own X-Request-Id is kept when it is a plain token (as vLLM and most proxies pass it on); else a new one.
std::string request_id_for(const httplib::Request& req) {
  const std::string v = req.get_header_value("X-Request-Id");
  bool plain = !v.empty() && v.size() <= 128;
  for (char c : v) plain = plain && (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' || c == ':');
  return plain ? v : unique_id("req");
}

// Compares the whole of both strings whatever their contents, so the time taken says nothing about where a guessed
// key first differs.
bool same_secret(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) diff |= static_cast<unsigned char>((i < a.size() ? a[i] : 0) ^ (i < b.size() ? b[i] : 0));
  return diff == 0;
}

bool is_chunked(const httplib::Request& req) {
  std::string te = req.get_header_value("Transfer-Encoding");
  for (char& c : te) c = char(std::tolower(static_cast<unsigned char>(c)));
  return te.find("chunked") != std::string::npos;
}

// A route's handler that gets the body read for it.
using BodyHandler = std::function<void(const httplib::Request&, const std::string& body, httplib::Response&)>;

// Reads a request's body whatever its framing — Content-Length, chunked, gzip/deflate/br content encoding (which
// cpp-httplib decompresses as it reads) — and never holds more than `limit` bytes of it: past that the answer is 413.
// (cpp-httplib's own payload limit only looks at Content-Length.) What follows the limit is read and dropped up to
// `drain` bytes in all, so that an ordinary client that sent a little too much reads its 413 (closing a socket with
// unread input resets the connection, and the client may lose the answer); a body longer than that is not read on:
// the connection closes after the answer. A request with neither Content-Length nor chunked framing has no body
// (RFC 9112 §6.3).
httplib::Server::HandlerWithContentReader bounded_body(size_t limit, size_t drain, BodyHandler handler) {
  return [limit, drain, handler = std::move(handler)](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& read) {
    std::string body;
    const bool has_length = req.has_header("Content-Length");
    if (has_length || is_chunked(req)) {
      bool too_large = false, read_on = true;
      if (has_length) {
        const std::string v = req.get_header_value("Content-Length");
        char* end = nullptr;
        const unsigned long long n = std::strtoull(v.c_str(), &end, 10);
        too_large = end == v.c_str() || *end != '\0' || n > limit;
        read_on = !too_large || (end != v.c_str() && *end == '\0' && n <= drain);  // else refused before reading any of it
      }
      size_t seen = 0;
      const bool ok = read_on && read([&](const char* data, size_t n) {
        seen += n;
        if (body.size() + n > limit) too_large = true;
        if (!too_large) body.append(data, n);
        return seen <= drain;
      });
      if (!ok || too_large) {
        const bool whole = ok;  // the body was read to its end: the connection can go on
        const int status = too_large || res.status == 413 ? 413 : res.status == 415 ? 415 : 400;
        if (!whole) {
          PeerSocket(req.remote_addr, req.remote_port, req.local_port).stop_reading();  // what is left stays unread
          res.set_header("Connection", "close");
        }
        const std::string msg =
            status == 413 ? "the request body is larger than the server's limit of " + std::to_string(limit) + " bytes (--max-body-bytes; decompressed bodies count their decompressed size)"
          : status == 415 ? "unsupported Content-Encoding '" + req.get_header_value("Content-Encoding") + "' (the server reads gzip, deflate and br)"
          : "the request body could not be read (malformed chunked framing or compressed data, or the client stopped sending)";
        t_log.error = msg;
        send_json(res, status, ApiError(status, msg, "", status == 413 ? "request_too_large" : "invalid_body").body());
        return;
      }
    }
    handler(req, body, res);
  };
}

}  // namespace




// Bodies over the limit are read and dropped up to this many bytes (see bounded_body).
static size_t drain_bytes(size_t limit) { return std::max<size_t>(limit, 4 << 20); }

Server::Server(const FrozenLM& lm, const Tokenizer& tok, Engine& engine, ModuleRegistry& modules, Metrics& metrics, ServerOptions opt)
    : p_(std::make_unique<Impl>(lm, tok, engine, modules, metrics)), opt_(std::move(opt)) {
  p_->weights_hash = lm.weights_hash();
  configure_transport();
  install_middleware();
  install_routes();
}

// Threads, sockets, timeouts.
void Server::configure_transport() {
  httplib::Server& h = p_->http;
  const int threads = opt_.http_threads > 0 ? opt_.http_threads
                                            : int(p_->engine.options().max_batch + p_->engine.options().max_queue + 8);
  h.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  h.set_tcp_nodelay(true);
  // httplib listens with a backlog of 5 (compiled into Debian's library): 64 clients connecting at once would see
  // refused or retransmitted SYNs (1 s each). Keep the listening socket and raise its backlog after bind().
  // SO_REUSEADDR only: httplib's default adds SO_REUSEPORT, with which a second server on a port in use binds
  // without error and silently takes half its connections.
  h.set_socket_options([this](int sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    p_->listen_fd = sock;
  });
  // Bodies are bounded by bounded_body() (below) whatever their framing; cpp-httplib's own check (Content-Length
  // only) is left at the most that bounded_body reads and drops.
  h.set_payload_max_length(drain_bytes(opt_.max_body_bytes));
  h.set_keep_alive_timeout(2);
  h.set_read_timeout(30, 0);
  h.set_write_timeout(30, 0);
}

// What every request goes through: its id, the API key, error bodies in the API's shape, the log line.
void Server::install_middleware() {
  httplib::Server& h = p_->http;
  // ---- API key on everything but /health ----
  h.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    t_log = LogExtra();
    t_log.start = std::chrono::steady_clock::now();
    t_log.request_id = request_id_for(req);
    res.set_header("X-Request-Id", t_log.request_id);
    // /health (load balancers) and the static playground page (a browser cannot send a Bearer header when it opens a
    // page; the page asks for the key and sends it with every API call) need no key.
    if (opt_.api_key.empty() || req.path == "/health" || (req.path == "/" && req.method == "GET"))
      return httplib::Server::HandlerResponse::Unhandled;
    const std::string auth = req.get_header_value("Authorization");
    if (!same_secret(auth, "Bearer " + opt_.api_key)) {
      send_error(res, ApiError(401, auth.empty() ? "missing API key: send the header 'Authorization: Bearer <key>'"
                                                 : "invalid API key", "", "invalid_api_key"));
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  // Every error status gets the API's error object (unknown routes, a body over the limit, ...).
  h.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    std::string msg = res.status == 404 ? "no route " + req.method + " " + req.path
                    : res.status == 413 ? "the request body is larger than the server's limit (--max-body-bytes)"
                    : res.status == 405 ? "method not allowed" : "request failed (HTTP " + std::to_string(res.status) + ")";
    send_json(res, res.status, ApiError(res.status, msg, "", res.status == 413 ? "request_too_large" : "").body());
    return httplib::Server::HandlerResponse::Handled;
  }));
  h.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "internal error: unknown exception";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = std::string("internal error: ") + e.what();
    } catch (...) {
    }
    t_log.error = what.substr(0, what.find('\n'));  // the log keeps the first line (LibTorch appends a stack trace)
    send_json(res, 500, ApiError(500, internal_error_message(t_log.request_id)).body());
  });
  h.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    const LogExtra& x = t_log;
    if (x.completion && !x.counted) p_->metrics.on_request(x.module, res.status);
    if (!opt_.log_requests) return;
    json j = {{"ts", unix_now()}, {"request_id", x.request_id}, {"method", req.method}, {"path", req.path}, {"status", res.status},
              {"ms", std::round(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - x.start).count() * 10) / 10},
              {"remote", req.remote_addr}};
    if (x.completion) {
      j["model"] = x.module.empty() ? opt_.model_name : x.module;
      j["stream"] = x.stream;
      if (x.prompt_tokens >= 0) j["prompt_tokens"] = x.prompt_tokens;
      if (x.completion_tokens >= 0) j["completion_tokens"] = x.completion_tokens;
      if (x.ttft_s >= 0) j["ttft_ms"] = std::round(x.ttft_s * 10000) / 10;
    }
    if (res.status >= 400) {
      json b = json::parse(res.body, nullptr, false);
      j["error"] = !x.error.empty() ? x.error : (b.is_object() && b.contains("error") ? b["error"].value("message", "") : "");
    }
    std::fprintf(stderr, "%s\n", dump(j).c_str());
  });
}

// The endpoints (the generation, tokenizer and embedding ones in their own files; see server_impl.h).
void Server::install_routes() {
  httplib::Server& h = p_->http;
  const size_t limit = opt_.max_body_bytes, drain = drain_bytes(opt_.max_body_bytes);
  h.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    if (p_->draining) return send_json(res, 503, {{"status", "draining"}});
    send_json(res, 200, {{"status", "ok"}});
  });

  h.Get("/", [](const httplib::Request&, httplib::Response& res) { res.set_content(playground_html(), "text/html; charset=utf-8"); });

  h.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    p_->metrics.set_engine_state(p_->engine.stats(), p_->modules.list().size());
    res.set_content(p_->metrics.render(), "text/plain; version=0.0.4");
  });

  auto model_json = [this](const std::shared_ptr<const ServedModule>& m) {
    if (!m)
      return json{{"id", opt_.model_name}, {"object", "model"}, {"created", p_->created}, {"owned_by", "frozenlm"}, {"kind", "base"},
                  {"parameters", p_->lm.num_parameters()}, {"context_length", p_->engine.context_length()}, {"weights", p_->weights_hash}};
    return json{{"id", m->name}, {"object", "model"}, {"created", p_->created}, {"owned_by", "frozenlm"}, {"kind", m->kind},
                {"root", opt_.model_name}, {"parent", opt_.model_name}, {"parameters", m->lm_module()->num_parameters()},
                {"prefix_tokens", m->lm_module()->prefix_length()}};
  };
  h.Get("/v1/models", [this, model_json](const httplib::Request&, httplib::Response& res) {
    json data = json::array({model_json(nullptr)});
    for (const auto& m : p_->modules.list()) data.push_back(model_json(m));
    send_json(res, 200, {{"object", "list"}, {"data", data}});
  });
  h.Get(R"(/v1/models/([^/]+))", [this, model_json](const httplib::Request& req, httplib::Response& res) {
    const std::string name = req.matches[1];
    if (name == opt_.model_name) return send_json(res, 200, model_json(nullptr));
    auto m = p_->modules.find(name);
    if (!m) return send_error(res, ApiError(404, "model '" + name + "' not found", "model", "model_not_found"));
    send_json(res, 200, model_json(m));
  });

  h.Post("/v1/modules", bounded_body(limit, drain, [this](const httplib::Request&, const std::string& body, httplib::Response& res) {
    try {
      const ModuleLoadRequest r = parse_module_load_request(body);
      if (r.name == opt_.model_name) throw ApiError(409, "'" + r.name + "' is the base model's name", "name", "name_taken");
      std::shared_ptr<const ServedModule> m;
      try {
        m = p_->modules.load(r.name, r.path, /*confine=*/true);
      } catch (const ModuleRegistry::Conflict& e) {
        throw ApiError(409, e.what(), "name", "name_taken");
      } catch (const ModuleRegistry::NotFound& e) {
        throw ApiError(404, e.what(), "path", "module_not_found");
      } catch (const Error& e) {
        std::string msg = e.what();
        // Paths in messages are the server's own: show them relative to the modules root.
        const std::string& root = p_->modules.root();
        for (size_t at; !root.empty() && (at = msg.find(root + "/")) != std::string::npos;) msg.erase(at, root.size() + 1);
        throw ApiError(400, msg, "path", "invalid_module");
      }
      send_json(res, 200, {{"id", m->name}, {"object", "model"}, {"kind", m->kind}, {"parameters", m->lm_module()->num_parameters()},
                           {"prefix_tokens", m->lm_module()->prefix_length()}});
    } catch (const ApiError& e) {
      send_error(res, e);
    }
  }));

  auto unload = [this](const httplib::Request& req, httplib::Response& res) {
    const std::string name = req.matches[1];
    if (!p_->modules.unload(name))
      return send_error(res, ApiError(404, "no module named '" + name + "' is loaded", "name", "model_not_found"));
    send_json(res, 200, {{"id", name}, {"object", "model"}, {"deleted", true}});
  };
  h.Delete(R"(/v1/modules/([^/]+))", unload);  // without a body, and with one (read within the limit, ignored)
  h.Delete(R"(/v1/modules/([^/]+))", bounded_body(limit, drain, [unload](const httplib::Request& req, const std::string&, httplib::Response& res) { unload(req, res); }));

  h.Post("/v1/completions", bounded_body(limit, drain, [this](const httplib::Request& req, const std::string& body, httplib::Response& res) {
    handle_completions(*p_, opt_, req, body, res);
  }));
  h.Post("/v1/chat/completions", bounded_body(limit, drain, [this](const httplib::Request& req, const std::string& body, httplib::Response& res) {
    handle_chat_completions(*p_, opt_, req, body, res);
  }));

  h.Post("/v1/embeddings", bounded_body(limit, drain, [this](const httplib::Request&, const std::string& body, httplib::Response& res) {
    handle_embeddings(*p_, opt_, body, res);
  }));
  h.Post("/tokenize", bounded_body(limit, drain, [this](const httplib::Request&, const std::string& body, httplib::Response& res) {
    handle_tokenize(*p_, opt_, body, res);
  }));
  h.Post("/detokenize", bounded_body(limit, drain, [this](const httplib::Request&, const std::string& body, httplib::Response& res) {
    handle_detokenize(*p_, body, res);
  }));
  h.Get("/tokenizer_info", [this](const httplib::Request&, httplib::Response& res) { handle_tokenizer_info(*p_, opt_, res); });

  // Any other route that takes a body: read within the limit too (cpp-httplib would read it whole before its 404).
  auto no_route = bounded_body(limit, drain, [](const httplib::Request&, const std::string&, httplib::Response& res) { res.status = 404; });
  h.Post(".*", no_route);
  h.Put(".*", no_route);
  h.Patch(".*", no_route);
  h.Delete(".*", no_route);
}

Server::~Server() = default;


int Server::bind() {
  const int port = opt_.port == 0 ? p_->http.bind_to_any_port(opt_.host) : (p_->http.bind_to_port(opt_.host, opt_.port) ? opt_.port : -1);
  if (port < 0) throw Error("serve: cannot listen on " + opt_.host + ":" + std::to_string(opt_.port) + " (in use, or not an address of this machine)");
  if (p_->listen_fd >= 0) ::listen(p_->listen_fd, 4096);  // Linux takes a second listen() as a new backlog (capped by somaxconn)
  return port;
}

void Server::serve() {
  {
    std::lock_guard<std::mutex> lk(p_->run_m);
    if (p_->stop_requested) return;
    p_->serving = true;
  }
  p_->http.listen_after_bind();
}

void Server::stop() {
  {
    std::lock_guard<std::mutex> lk(p_->run_m);
    p_->stop_requested = true;
    if (!p_->serving) return;  // serve() will not start
  }
  // serve() was entered: httplib's stop() only works once its loop runs (is_running), so wait for that.
  for (int i = 0; i < 5000 && !p_->http.is_running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  p_->http.stop();
}

void Server::drain_and_stop() {
  p_->draining = true;
  p_->engine.drain();
  // Every request has its last update; let the handlers write it before the server closes sockets (bounded: a
  // client that stopped reading cannot hold the shutdown for more than the write timeout).
  for (int i = 0; i < 1500 && p_->in_flight > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  stop();
}

}  // namespace frozenlm::serve
