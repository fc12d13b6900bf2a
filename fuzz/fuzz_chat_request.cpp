// libFuzzer target: the chat-completions and tokenizer request parsers (POST /v1/chat/completions, /tokenize,
// /detokenize bodies). Anything malformed ends in serve::ApiError with a 400 naming a field; an accepted request is
// within the limits and its messages are what a chat template may read (objects with a role and string/null content).
#include <cstddef>
#include <cstdint>
#include <string>

#include "serve/openai_api.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  const frozenlm::serve::ApiLimits lim;
  auto check_messages = [](const nlohmann::ordered_json& ms) {
    if (!ms.is_array() || ms.empty()) __builtin_trap();
    for (const auto& m : ms)
      if (!m.is_object() || !m["role"].is_string() || !(m["content"].is_string() || m["content"].is_null())) __builtin_trap();
  };
  try {
    const auto c = frozenlm::serve::parse_chat_request(body, lim);
    const auto& r = c.sampling;
    check_messages(c.messages);
    if (c.messages.size() > lim.max_messages || !(c.tools.is_null() || c.tools.is_array())) __builtin_trap();
    if (r.n < 1 || r.n > lim.max_n || r.max_tokens < 1 || r.max_tokens > lim.max_tokens) __builtin_trap();
    if (!(r.temperature >= 0 && r.temperature <= 2) || !(r.top_p > 0 && r.top_p <= 1)) __builtin_trap();
    if (r.logprobs < -1 || r.logprobs > lim.max_top_logprobs || r.stop.size() > lim.max_stops || !r.prompts.empty()) __builtin_trap();
  } catch (const frozenlm::serve::ApiError& e) {
    if (e.status != 400 || std::string(e.what()).empty()) __builtin_trap();
    (void)e.body().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  try {
    const auto t = frozenlm::serve::parse_tokenize_request(body);
    if (t.prompt.has_value() == !t.messages.is_null()) __builtin_trap();
    if (!t.prompt) check_messages(t.messages);
  } catch (const frozenlm::serve::ApiError& e) {
    if (e.status != 400) __builtin_trap();
  }
  try {
    for (int64_t id : frozenlm::serve::parse_detokenize_request(body))
      if (id < 0) __builtin_trap();
  } catch (const frozenlm::serve::ApiError& e) {
    if (e.status != 400) __builtin_trap();
  }
  return 0;
}
