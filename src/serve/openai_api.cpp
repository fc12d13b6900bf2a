#include "serve/openai_api.h"

#include <cmath>

namespace frozenlm::serve {

using json = nlohmann::json;

ApiError::ApiError(int status_, std::string message, std::string param_, std::string code_, std::string type_)
    : std::runtime_error(std::move(message)), status(status_), type(std::move(type_)), param(std::move(param_)), code(std::move(code_)) {
  if (type.empty()) {
    type = status == 401 ? "authentication_error" : status == 404 ? "not_found_error" : status == 429 ? "rate_limit_error"
         : status >= 500 ? "server_error" : "invalid_request_error";
  }
}

json ApiError::body() const {
  json e = {{"message", what()}, {"type", type}};
  e["param"] = param.empty() ? json(nullptr) : json(param);
  e["code"] = code.empty() ? json(nullptr) : json(code);
  return json{{"error", e}};
}

namespace {

[[noreturn]] void bad(const std::string& param, const std::string& message, const std::string& code = "invalid_value") {
  throw ApiError(400, message, param, code);
}

std::string type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    case json::value_t::number_float: return "a number";
    default: return "an integer";
  }
}

bool is_int(const json& v) { return v.is_number_integer() || v.is_number_unsigned(); }

int64_t get_int(const json& o, const char* key, int64_t lo, int64_t hi, int64_t dflt) {
  auto it = o.find(key);
  if (it == o.end() || it->is_null()) return dflt;
  if (!is_int(*it)) {
    // 3.0 is an integer to most clients; 3.5 is not.
    if (it->is_number_float() && std::isfinite(it->get<double>()) && std::floor(it->get<double>()) == it->get<double>() &&
        std::abs(it->get<double>()) < 9e15) {
      const int64_t v = int64_t(it->get<double>());
      if (v < lo || v > hi) bad(key, std::string("'") + key + "' must be between " + std::to_string(lo) + " and " + std::to_string(hi) + ", got " + std::to_string(v));
      return v;
    }
    bad(key, std::string("'") + key + "' must be an integer, got " + type_name(*it), "invalid_type");
  }
  if (it->is_number_unsigned() && it->get<uint64_t>() > uint64_t(INT64_MAX))
    bad(key, std::string("'") + key + "' must be between " + std::to_string(lo) + " and " + std::to_string(hi));
  const int64_t v = it->get<int64_t>();
  if (v < lo || v > hi) bad(key, std::string("'") + key + "' must be between " + std::to_string(lo) + " and " + std::to_string(hi) + ", got " + std::to_string(v));
  return v;
}

double get_number(const json& o, const char* key, double lo, double hi, double dflt) {
  auto it = o.find(key);
  if (it == o.end() || it->is_null()) return dflt;
  if (!it->is_number()) bad(key, std::string("'") + key + "' must be a number, got " + type_name(*it), "invalid_type");
  const double v = it->get<double>();
  if (!std::isfinite(v) || v < lo || v > hi) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "'%s' must be between %g and %g, got %g", key, lo, hi, v);
    bad(key, buf);
  }
  return v;
}

bool get_bool(const json& o, const char* key, bool dflt) {
  auto it = o.find(key);
  if (it == o.end() || it->is_null()) return dflt;
  if (!it->is_boolean()) bad(key, std::string("'") + key + "' must be a boolean, got " + type_name(*it), "invalid_type");
  return it->get<bool>();
}

std::vector<int64_t> token_array(const json& a, const char* param) {
  std::vector<int64_t> ids;
  for (const json& t : a) {
    if (!is_int(t) || (t.is_number_integer() && t.get<int64_t>() < 0))
      bad(param, std::string("'") + param + "' token arrays must hold non-negative integers", "invalid_type");
    ids.push_back(t.get<int64_t>());
  }
  if (ids.empty()) bad(param, std::string("'") + param + "' must not be an empty token array");
  return ids;
}

}  // namespace

bool valid_module_name(const std::string& name) {
  if (name.empty() || name.size() > 64 || name[0] == '.') return false;
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-')) return false;
  return true;
}

namespace {

json parse_object(const std::string& body) {
  json o = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (o.is_discarded()) throw ApiError(400, "the request body is not valid JSON", "", "invalid_json");
  if (!o.is_object()) throw ApiError(400, "the request body must be a JSON object, got " + type_name(o), "", "invalid_type");
  return o;
}

// The fields completions and chat completions share: the model, sampling, n, stop, seed, stream; the OpenAI fields
// accepted only at their neutral values.
void parse_common(const json& o, CompletionRequest& r, const ApiLimits& lim) {
  auto m = o.find("model");
  if (m == o.end() || m->is_null()) bad("model", "'model' is required (the base model's name or a loaded module's: GET /v1/models lists them)", "missing_required_parameter");
  if (!m->is_string()) bad("model", "'model' must be a string, got " + type_name(*m), "invalid_type");
  r.model = m->get<std::string>();
  r.max_tokens = get_int(o, "max_tokens", 0, lim.max_tokens, 16);
  r.temperature = get_number(o, "temperature", 0.0, 2.0, 1.0);
  r.top_p = get_number(o, "top_p", 0.0, 1.0, 1.0);
  if (o.contains("top_p") && !o["top_p"].is_null() && r.top_p <= 0) bad("top_p", "'top_p' must be greater than 0");
  r.top_k = get_int(o, "top_k", -1, 1 << 30, 0);
  if (r.top_k < 0) r.top_k = 0;  // -1: off (as vLLM takes it)
  r.n = int(get_int(o, "n", 1, lim.max_n, 1));
  r.ignore_eos = get_bool(o, "ignore_eos", false);
  r.stream = get_bool(o, "stream", false);
  if (auto s = o.find("seed"); s != o.end() && !s->is_null()) {
    if (!is_int(*s)) bad("seed", "'seed' must be an integer, got " + type_name(*s), "invalid_type");
    r.seed = s->is_number_unsigned() ? s->get<uint64_t>() : uint64_t(s->get<int64_t>());
  }
  if (auto s = o.find("stop"); s != o.end() && !s->is_null()) {
    if (s->is_string()) {
      r.stop.push_back(s->get<std::string>());
    } else if (s->is_array()) {
      if (s->size() > lim.max_stops) bad("stop", "at most " + std::to_string(lim.max_stops) + " stop sequences, got " + std::to_string(s->size()));
      for (const json& x : *s) {
        if (!x.is_string()) bad("stop", "'stop' must be a string or an array of strings", "invalid_type");
        r.stop.push_back(x.get<std::string>());
      }
    } else {
      bad("stop", "'stop' must be a string or an array of strings, got " + type_name(*s), "invalid_type");
    }
    for (const std::string& x : r.stop) {
      if (x.empty()) bad("stop", "stop sequences must not be empty");
      if (x.size() > lim.max_stop_bytes) bad("stop", "stop sequences must be at most " + std::to_string(lim.max_stop_bytes) + " bytes, got one of " + std::to_string(x.size()));
    }
  }
  if (auto so = o.find("stream_options"); so != o.end() && !so->is_null()) {
    if (!so->is_object()) bad("stream_options", "'stream_options' must be an object, got " + type_name(*so), "invalid_type");
    if (!r.stream) bad("stream_options", "'stream_options' is only allowed with \"stream\": true");
    r.include_usage = get_bool(*so, "include_usage", false);
  }
  // Accepted only at their neutral values: say so rather than silently ignore them.
  if (get_number(o, "frequency_penalty", -2.0, 2.0, 0.0) != 0.0) bad("frequency_penalty", "'frequency_penalty' is not supported (only 0)", "unsupported_parameter");
  if (get_number(o, "presence_penalty", -2.0, 2.0, 0.0) != 0.0) bad("presence_penalty", "'presence_penalty' is not supported (only 0)", "unsupported_parameter");
  if (auto lb = o.find("logit_bias"); lb != o.end() && !lb->is_null() && !(lb->is_object() && lb->empty()))
    bad("logit_bias", "'logit_bias' is not supported", "unsupported_parameter");
  if (auto u = o.find("user"); u != o.end() && !u->is_null() && !u->is_string()) bad("user", "'user' must be a string", "invalid_type");
}

}  // namespace

CompletionRequest parse_completion_request(const std::string& body, const ApiLimits& lim) {
  const json o = parse_object(body);
  CompletionRequest r;
  parse_common(o, r, lim);

  auto p = o.find("prompt");
  if (p == o.end() || p->is_null()) bad("prompt", "'prompt' is required: a string, an array of strings, or token ids", "missing_required_parameter");
  if (p->is_string()) {
    r.prompts.push_back(p->get<std::string>());
  } else if (p->is_array()) {
    if (p->empty()) bad("prompt", "'prompt' must not be an empty array");
    if (p->size() > lim.max_prompts) bad("prompt", "at most " + std::to_string(lim.max_prompts) + " prompts per request, got " + std::to_string(p->size()));
    if ((*p)[0].is_string()) {
      for (const json& s : *p) {
        if (!s.is_string()) bad("prompt", "'prompt' arrays must hold only strings, or only token ids", "invalid_type");
        r.prompts.push_back(s.get<std::string>());
      }
    } else if ((*p)[0].is_array()) {
      for (const json& a : *p) {
        if (!a.is_array()) bad("prompt", "'prompt' arrays of token arrays must hold only arrays", "invalid_type");
        r.prompt_ids.push_back(token_array(a, "prompt"));
      }
    } else {
      r.prompt_ids.push_back(token_array(*p, "prompt"));
    }
  } else {
    bad("prompt", "'prompt' must be a string, an array of strings, or token ids, got " + type_name(*p), "invalid_type");
  }
  r.logprobs = int(get_int(o, "logprobs", 0, lim.max_logprobs, -1));
  r.echo = get_bool(o, "echo", false);
  if (get_int(o, "best_of", 1, 1 << 20, 1) != 1) bad("best_of", "'best_of' is not supported (only 1)", "unsupported_parameter");
  if (auto sf = o.find("suffix"); sf != o.end() && !sf->is_null() && !(sf->is_string() && sf->get<std::string>().empty()))
    bad("suffix", "'suffix' is not supported", "unsupported_parameter");
  if (r.max_tokens == 0 && !r.echo) bad("max_tokens", "'max_tokens' must be at least 1 (0 only with \"echo\": true, to score a prompt)");
  if (r.stream && r.echo && r.logprobs >= 0) bad("echo", "'echo' with 'logprobs' is not available with \"stream\": true");
  return r;
}

ChatRequest parse_chat_request(const std::string& body, const ApiLimits& lim) {
  const json o = parse_object(body);
  ChatRequest c;
  CompletionRequest& r = c.sampling;
  parse_common(o, r, lim);
  // max_completion_tokens is the newer name of max_tokens (OpenAI); either may be given, not both differently.
  if (o.contains("max_completion_tokens") && !o["max_completion_tokens"].is_null()) {
    const int64_t m = get_int(o, "max_completion_tokens", 1, lim.max_tokens, 16);
    if (o.contains("max_tokens") && !o["max_tokens"].is_null() && r.max_tokens != m)
      bad("max_completion_tokens", "'max_tokens' and 'max_completion_tokens' disagree: give one");
    r.max_tokens = m;
  }
  if (r.max_tokens == 0) bad("max_tokens", "'max_tokens' must be at least 1");

  auto ms = o.find("messages");
  if (ms == o.end() || ms->is_null()) bad("messages", "'messages' is required: an array of {\"role\", \"content\"}", "missing_required_parameter");
  if (!ms->is_array() || ms->empty()) bad("messages", "'messages' must be a non-empty array of {\"role\", \"content\"}", "invalid_type");
  if (ms->size() > lim.max_messages) bad("messages", "at most " + std::to_string(lim.max_messages) + " messages, got " + std::to_string(ms->size()));
  // Messages and tools keep their keys in the order sent (a template's tojson shows it, as Python's dicts keep it).
  const nlohmann::ordered_json ordered = nlohmann::ordered_json::parse(body, nullptr, false);
  c.messages = ordered["messages"];
  for (size_t k = 0; k < c.messages.size(); ++k) {
    auto& m = c.messages[k];
    const std::string at = "messages[" + std::to_string(k) + "]";
    if (!m.is_object()) bad("messages", at + " must be an object with \"role\" and \"content\"", "invalid_type");
    if (!m.contains("role") || !m["role"].is_string() || m["role"].get<std::string>().empty())
      bad("messages", at + ".role must be a non-empty string (system, user, assistant, tool, ...)", "invalid_type");
    if (!m.contains("content")) {
      if (!m.contains("tool_calls")) bad("messages", at + ".content is required (null only beside tool_calls)", "missing_required_parameter");
      m["content"] = nullptr;
    }
    auto& content = m["content"];
    if (content.is_array()) {  // content parts: the text parts joined, as vLLM reads text-only parts
      std::string text;
      for (const auto& part : content) {
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string())
          bad("messages", at + ".content parts must be {\"type\": \"text\", \"text\": ...} (this model reads text only)", "invalid_type");
        text += (text.empty() ? "" : "\n") + part["text"].get<std::string>();
      }
      content = text;
    } else if (!content.is_string() && !content.is_null()) {
      bad("messages", at + ".content must be a string, an array of text parts, or null", "invalid_type");
    }
  }
  if (auto t = o.find("tools"); t != o.end() && !t->is_null()) {
    if (!t->is_array()) bad("tools", "'tools' must be an array", "invalid_type");
    c.tools = ordered["tools"];
  }
  if (auto tc = o.find("tool_choice"); tc != o.end() && !tc->is_null() && !(tc->is_string() && (*tc == "none" || *tc == "auto")))
    bad("tool_choice", "'tool_choice' may be \"none\" or \"auto\" (the tools go to the chat template; calls come back as text)", "unsupported_parameter");
  if (auto rf = o.find("response_format"); rf != o.end() && !rf->is_null() && !(rf->is_object() && rf->value("type", "") == "text"))
    bad("response_format", "'response_format' is not supported (only {\"type\": \"text\"})", "unsupported_parameter");
  c.add_generation_prompt = get_bool(o, "add_generation_prompt", true);  // vLLM's extension
  const bool logprobs = get_bool(o, "logprobs", false);
  const int top = int(get_int(o, "top_logprobs", 0, lim.max_top_logprobs, -1));
  if (top >= 0 && !logprobs) bad("top_logprobs", "'top_logprobs' needs \"logprobs\": true");
  r.logprobs = logprobs ? std::max(top, 0) : -1;
  return c;
}

TokenizeRequest parse_tokenize_request(const std::string& body) {
  const json o = parse_object(body);
  const nlohmann::ordered_json ordered = nlohmann::ordered_json::parse(body, nullptr, false);
  TokenizeRequest t;
  const bool has_prompt = o.contains("prompt") && !o["prompt"].is_null(), has_messages = o.contains("messages") && !o["messages"].is_null();
  if (has_prompt == has_messages) bad(has_prompt ? "messages" : "prompt", "give either 'prompt' (a string) or 'messages' (a conversation)", "missing_required_parameter");
  if (has_prompt) {
    if (!o["prompt"].is_string()) bad("prompt", "'prompt' must be a string, got " + type_name(o["prompt"]), "invalid_type");
    t.prompt = o["prompt"].get<std::string>();
  } else {
    // The same checks and normalisation as chat completions (text parts joined, roles required).
    const ChatRequest c = parse_chat_request(nlohmann::ordered_json{{"model", "-"}, {"messages", ordered["messages"]}}.dump());
    t.messages = c.messages;
    if (o.contains("tools") && !o["tools"].is_null()) {
      if (!o["tools"].is_array()) bad("tools", "'tools' must be an array", "invalid_type");
      t.tools = ordered["tools"];
    }
  }
  t.add_special_tokens = get_bool(o, "add_special_tokens", has_prompt);
  t.add_generation_prompt = get_bool(o, "add_generation_prompt", true);
  return t;
}

std::vector<int64_t> parse_detokenize_request(const std::string& body) {
  const json o = parse_object(body);
  auto t = o.find("tokens");
  if (t == o.end() || t->is_null()) bad("tokens", "'tokens' is required: an array of token ids", "missing_required_parameter");
  if (!t->is_array()) bad("tokens", "'tokens' must be an array of token ids, got " + type_name(*t), "invalid_type");
  if (t->empty()) return {};
  return token_array(*t, "tokens");
}

EmbeddingRequest parse_embedding_request(const std::string& body, size_t max_inputs) {
  const json o = parse_object(body);
  EmbeddingRequest e;
  auto m = o.find("model");
  if (m == o.end() || m->is_null()) bad("model", "'model' is required (the base model's name)", "missing_required_parameter");
  if (!m->is_string()) bad("model", "'model' must be a string, got " + type_name(*m), "invalid_type");
  e.model = m->get<std::string>();
  auto in = o.find("input");
  if (in == o.end() || in->is_null()) bad("input", "'input' is required: a string, an array of strings, or token ids", "missing_required_parameter");
  if (in->is_string()) {
    e.texts.push_back(in->get<std::string>());
  } else if (in->is_array() && !in->empty()) {
    if (in->size() > max_inputs) bad("input", "at most " + std::to_string(max_inputs) + " inputs per request, got " + std::to_string(in->size()));
    if ((*in)[0].is_string()) {
      for (const json& x : *in) {
        if (!x.is_string()) bad("input", "'input' arrays must hold only strings, or only token ids", "invalid_type");
        e.texts.push_back(x.get<std::string>());
      }
    } else if ((*in)[0].is_array()) {
      for (const json& x : *in) {
        if (!x.is_array()) bad("input", "'input' arrays of token arrays must hold only arrays", "invalid_type");
        e.ids.push_back(token_array(x, "input"));
      }
    } else {
      e.ids.push_back(token_array(*in, "input"));
    }
  } else {
    bad("input", "'input' must be a non-empty string, array of strings, or token ids", "invalid_type");
  }
  for (const std::string& t : e.texts)
    if (t.empty()) bad("input", "'input' strings must not be empty");
  if (auto f = o.find("encoding_format"); f != o.end() && !f->is_null()) {
    if (!f->is_string() || (*f != "float" && *f != "base64")) bad("encoding_format", "'encoding_format' must be \"float\" or \"base64\"");
    e.base64 = *f == "base64";
  }
  e.layer = get_int(o, "layer", -1, 1 << 20, -1);
  if (o.contains("dimensions") && !o["dimensions"].is_null()) e.dimensions = get_int(o, "dimensions", 1, 1 << 20, 0);
  if (auto u = o.find("user"); u != o.end() && !u->is_null() && !u->is_string()) bad("user", "'user' must be a string", "invalid_type");
  return e;
}

ModuleLoadRequest parse_module_load_request(const std::string& body) {
  json o = json::parse(body, nullptr, false);
  if (o.is_discarded()) throw ApiError(400, "the request body is not valid JSON", "", "invalid_json");
  if (!o.is_object()) throw ApiError(400, "the request body must be a JSON object", "", "invalid_type");
  ModuleLoadRequest r;
  for (const char* key : {"name", "path"}) {
    auto it = o.find(key);
    if (it == o.end() || it->is_null()) bad(key, std::string("'") + key + "' is required", "missing_required_parameter");
    if (!it->is_string()) bad(key, std::string("'") + key + "' must be a string, got " + type_name(*it), "invalid_type");
  }
  r.name = o["name"].get<std::string>();
  r.path = o["path"].get<std::string>();
  if (!valid_module_name(r.name)) bad("name", "'name' must be 1-64 characters of A-Z a-z 0-9 . _ - (not starting with '.')");
  if (r.path.empty()) bad("path", "'path' must not be empty");
  return r;
}

json LogprobsOut::to_json(bool with_top) const {
  json j;
  j["tokens"] = tokens;
  json lp = json::array();
  for (const auto& v : token_logprobs) lp.push_back(v ? json(*v) : json(nullptr));
  j["token_logprobs"] = lp;
  json top = json::array();
  for (const auto& t : top_logprobs) {
    if (!with_top) {
      top.push_back(nullptr);
      continue;
    }
    json m = json::object();
    for (const auto& [s, v] : t) m[s] = v;
    top.push_back(m.empty() ? json(nullptr) : m);
  }
  j["top_logprobs"] = top;
  j["text_offset"] = text_offset;
  return j;
}

}  // namespace frozenlm::serve
