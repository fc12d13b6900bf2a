// frozenlm serve: one copy of the frozen LM, many modules chosen per request, over an OpenAI-compatible HTTP API.
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <pthread.h>
#include <thread>

#include "chat/chat_template.h"
#include "cli/cli_common.h"
#include "core/gguf_file.h"
#include "core/torch_pch.h"
#include "serve/http_server.h"
#include "serve/openai_api.h"
#include "tokenizer/prompt_tokens.h"
#include "tokenizer/tokenizer.h"

namespace frozenlm::cli {

namespace {

// The model's chat template: --chat-template FILE (a Jinja2 file, or a tokenizer_config.json), else the
// tokenizer_config.json beside the model or its tokenizer, else a GGUF file's tokenizer.chat_template. Null: none.
// bos_token / eos_token (where tokenizer_config.json names none): the texts of the model's own BOS and first EOS.
std::shared_ptr<const chat::ChatTemplate> find_chat_template(const ModelArgs& m, const std::string& file, const FrozenLM& lm, const Tokenizer& tok) {
  namespace fs = std::filesystem;
  const int64_t bos_id = bos_for(lm.config(), tok);
  const std::vector<int64_t> eos_ids = eos_ids_for(lm.config(), tok);
  const std::string bos = bos_id >= 0 ? tok.id_to_token(bos_id) : "", eos = eos_ids.empty() ? "" : tok.id_to_token(eos_ids[0]);
  try {
    if (!file.empty()) {
      if (fs::path(file).extension() == ".json") {
        auto t = chat::chat_template_from_tokenizer_config(file, bos, eos);
        if (!t) throw Error("--chat-template " + file + ": no \"chat_template\" in it");
        return std::make_shared<const chat::ChatTemplate>(std::move(*t));
      }
      std::ifstream f(file);
      if (!f) throw Error("--chat-template " + file + ": cannot read it");
      std::stringstream ss;
      ss << f.rdbuf();
      return std::make_shared<const chat::ChatTemplate>(std::map<std::string, std::string>{{"default", ss.str()}}, file, bos, eos);
    }
    for (const fs::path& dir : {fs::path(m.model), fs::path(m.tokenizer).parent_path()}) {
      if (dir.empty() || !fs::is_directory(dir)) continue;
      if (auto t = chat::chat_template_from_tokenizer_config((dir / "tokenizer_config.json").string(), bos, eos))
        return std::make_shared<const chat::ChatTemplate>(std::move(*t));
    }
    if (is_gguf_file(m.model)) {
      GgufFile g(m.model);
      if (const GgufValue* v = g.header().find("tokenizer.chat_template"); v && v->type == GgufValueType::STRING)
        return std::make_shared<const chat::ChatTemplate>(std::map<std::string, std::string>{{"default", v->str}}, m.model + " (tokenizer.chat_template)", bos, eos);
    }
  } catch (const jinja::TemplateError& e) {
    throw Error(std::string("chat template: ") + e.what());
  } catch (const std::runtime_error& e) {
    throw Error(e.what());
  }
  return nullptr;
}

}  // namespace

void add_serve_command(CLI::App& app, Commands& cmds) {
  struct Args {
    ModelArgs model;
    std::string modules_dir;
    std::vector<std::string> modules;
    serve::ServerOptions server;
    serve::EngineOptions engine;
    bool quiet = false;
    std::string chat_template;
  };
  auto a = std::make_shared<Args>();
  auto* s = app.add_subcommand("serve", "Serve the frozen LM and its modules over an OpenAI-compatible HTTP API");
  add_model_args(s, a->model);
  s->add_option("--modules-dir", a->modules_dir, "load every module directory in DIR at start (named after it); POST /v1/modules loads more from inside it");
  s->add_option("--module", a->modules, "NAME=DIR: also load the module in DIR as NAME (repeatable; any path)");
  s->add_option("--host", a->server.host, "address to listen on")->capture_default_str();
  s->add_option("--port", a->server.port, "port (0: any free one, printed at start)")->capture_default_str()->check(CLI::Range(0, 65535));
  s->add_option("--api-key", a->server.api_key, "require 'Authorization: Bearer KEY' on every endpoint but /health (default: $FROZENLM_API_KEY)");
  s->add_option("--chat-template", a->chat_template, "the chat template for /v1/chat/completions: a Jinja2 file or a tokenizer_config.json "
                 "(default: the model's own, from tokenizer_config.json or the GGUF file)");
  s->add_option("--model-name", a->server.model_name, "the base model's name in the API (default: the model directory's name, or the GGUF file's without .gguf)");
  s->add_option("--max-batch", a->engine.max_batch, "rows decoded together (continuous batching)")->capture_default_str()->check(CLI::Range(1, 4096));
  s->add_option("--max-queue", a->engine.max_queue, "requests that may wait; more get 429 with Retry-After")->capture_default_str()->check(CLI::Range(0, 1 << 20));
  s->add_option("--kv-budget-tokens", a->engine.kv_budget_tokens, "KV-cache positions the decode batch may hold — rows allocated (powers of two) × columns, its real memory; a request joins while rows × its longest row (input + max_tokens) fits; 0: max-batch × context")->capture_default_str();
  s->add_option("--max-body-bytes", a->server.max_body_bytes, "largest request body (413 beyond)")->capture_default_str();
  s->add_option("--http-threads", a->server.http_threads, "HTTP worker threads (0: max-batch + max-queue + 8)")->capture_default_str();
  s->add_flag("--quiet", a->quiet, "no request log lines on stderr");
  cmds.add(s, [a] {
    // SIGTERM/SIGINT go to one thread that drains the server: blocked here, before any thread starts.
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
    std::signal(SIGPIPE, SIG_IGN);

    auto lm = open_model(a->model);
    auto tok = open_tokenizer(a->model, *lm, true);
    serve::ServerOptions so = a->server;
    if (so.api_key.empty())
      if (const char* k = std::getenv("FROZENLM_API_KEY")) so.api_key = k;
    if (so.model_name.empty()) {
      std::filesystem::path p = std::filesystem::path(a->model.model);
      so.model_name = (p.has_filename() ? (p.extension() == ".gguf" ? p.stem() : p.filename()) : p.parent_path().filename()).string();
      if (!serve::valid_module_name(so.model_name)) so.model_name = "base";
    }
    so.log_requests = !a->quiet;
    so.chat_template = find_chat_template(a->model, a->chat_template, *lm, *tok);
    serve::EngineOptions eo = a->engine;
    eo.threads = a->model.threads;
    serve::ModuleRegistry registry(*lm, *tok, a->modules_dir);
    for (const std::string& kv : a->modules) {
      const size_t eq = kv.find('=');
      if (eq == std::string::npos || eq == 0) throw Error("--module " + kv + ": give NAME=DIR");
      registry.load(kv.substr(0, eq), kv.substr(eq + 1), /*confine=*/false);
    }
    for (const std::string& skipped : registry.load_root()) std::fprintf(stderr, "[serve] skipped %s\n", skipped.c_str());
    serve::Metrics metrics;
    serve::Engine engine(*lm, *tok, eo, &metrics);
    serve::Server server(*lm, *tok, engine, registry, metrics, so);
    const int port = server.bind();
    std::fprintf(stderr, "[serve] %s (%s, %lld parameters, context %lld) with %zu module(s) on http://%s:%d  (max batch %lld, queue %lld, KV budget %lld tokens%s)\n",
                 so.model_name.c_str(), a->model.weights.c_str(), (long long)lm->num_parameters(), (long long)engine.context_length(),
                 registry.list().size(), so.host.c_str(), port, (long long)engine.options().max_batch, (long long)engine.options().max_queue,
                 (long long)engine.options().kv_budget_tokens, so.api_key.empty() ? "" : ", API key required");
    for (const auto& m : registry.list()) std::fprintf(stderr, "[serve]   module %s (%s)\n", m->name.c_str(), m->kind.c_str());
    if (so.chat_template) std::fprintf(stderr, "[serve] chat template: %s\n", so.chat_template->origin().c_str());
    else std::fprintf(stderr, "[serve] no chat template: /v1/chat/completions answers 400 (give one with --chat-template FILE)\n");
    std::thread signals([&] {
      int sig = 0;
      sigwait(&sigs, &sig);
      std::fprintf(stderr, "[serve] %s: draining in-flight requests\n", sig == SIGTERM ? "SIGTERM" : "SIGINT");
      server.drain_and_stop();
    });
    server.serve();
    if (signals.joinable()) {
      // Stopped by a signal: the thread is done. (serve() returns only after stop.)
      signals.join();
    }
    std::fprintf(stderr, "[serve] stopped\n");
    return 0;
  });
}

}  // namespace frozenlm::cli
