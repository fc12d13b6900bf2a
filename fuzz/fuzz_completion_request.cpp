// libFuzzer target: the server's request parsers (POST /v1/completions and POST /v1/modules bodies). Anything
// malformed ends in serve::ApiError with a 4xx status naming a field; an accepted request is within the limits.
#include <cstddef>
#include <cstdint>
#include <string>

#include "serve/openai_api.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  const frozenlm::serve::ApiLimits lim;
  try {
    auto r = frozenlm::serve::parse_completion_request(body, lim);
    if (r.num_prompts() == 0 || r.num_prompts() > lim.max_prompts) __builtin_trap();
    if (r.n < 1 || r.n > lim.max_n || r.max_tokens < 0 || r.max_tokens > lim.max_tokens) __builtin_trap();
    if (!(r.temperature >= 0 && r.temperature <= 2) || !(r.top_p > 0 && r.top_p <= 1)) __builtin_trap();
    if (r.logprobs < -1 || r.logprobs > lim.max_logprobs || r.stop.size() > lim.max_stops) __builtin_trap();
    for (auto& ids : r.prompt_ids)
      for (int64_t id : ids)
        if (id < 0 || ids.empty()) __builtin_trap();
    (void)frozenlm::serve::ApiError(400, "x").body().dump();
  } catch (const frozenlm::serve::ApiError& e) {
    if (e.status < 400 || e.status >= 500 || std::string(e.what()).empty()) __builtin_trap();
    (void)e.body().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  try {
    auto m = frozenlm::serve::parse_module_load_request(body);
    if (!frozenlm::serve::valid_module_name(m.name) || m.path.empty()) __builtin_trap();
  } catch (const frozenlm::serve::ApiError& e) {
    if (e.status != 400) __builtin_trap();
  }
  return 0;
}
