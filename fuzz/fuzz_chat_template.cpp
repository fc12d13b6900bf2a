// libFuzzer target: the chat-template renderer (src/chat/jinja.cpp). The input is a template; it renders with a small
// conversation. Anything it cannot parse or render ends in jinja::TemplateError — never another exception, a crash, a
// hang (RenderOptions' step bound), or output past the bound.
#include <cstddef>
#include <cstdint>
#include <string>

#include "chat/jinja.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string source(reinterpret_cast<const char*>(data), size);
  static const nlohmann::ordered_json vars = nlohmann::ordered_json::parse(R"({"messages": [{"role": "system", "content": "Be brief."},
      {"role": "user", "content": "Hi «ü»"}, {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
      "function": {"name": "f", "arguments": {"x": 1.5, "y": [true, null]}}}]}, {"role": "tool", "tool_call_id": "c1", "content": "42"}],
      "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "number"}}}}}],
      "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>"})");
  frozenlm::jinja::RenderOptions opt;
  opt.max_steps = 20000;
  opt.max_output_bytes = 1 << 20;
  opt.strftime_now = [](const std::string& f) { return f; };
  try {
    const frozenlm::jinja::Template t(source);
    const std::string out = t.render(vars, opt);
    if (out.size() > opt.max_output_bytes + (1 << 22)) __builtin_trap();
  } catch (const frozenlm::jinja::TemplateError& e) {
    if (std::string(e.what()).empty()) __builtin_trap();
  }
  return 0;
}
