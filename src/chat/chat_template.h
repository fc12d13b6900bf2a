// A model's chat template and the prompt it makes of a conversation, as Hugging Face's apply_chat_template does:
// the Jinja2 source from tokenizer_config.json ("chat_template": a string, or a list of {"name", "template"} — "default",
// and "tool_use" for a conversation with tools when the model has one), GGUF's tokenizer.chat_template, or a file
// the user names; rendered with messages, add_generation_prompt, bos_token, eos_token (and tools).
#pragma once
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "chat/jinja.h"

namespace frozenlm::chat {

class ChatTemplate {
 public:
  // `templates`: name -> Jinja2 source ("default" at least). Throws jinja::TemplateError naming `origin` when one
  // does not parse.
  ChatTemplate(std::map<std::string, std::string> templates, std::string origin, std::string bos_token, std::string eos_token);

  // The prompt for `messages` (OpenAI's shape); `tools` (null: none) goes to the template as `tools`. Throws
  // jinja::TemplateError with the template's own message (raise_exception) or the renderer's.
  std::string render(const nlohmann::ordered_json& messages, bool add_generation_prompt, const nlohmann::ordered_json& tools = nullptr,
                     const jinja::RenderOptions& options = {}) const;

  const std::string& origin() const { return origin_; }  // where it came from (a file, "GGUF tokenizer.chat_template")
  const std::string& source(const std::string& name = "default") const;
  const std::string& bos_token() const { return bos_; }
  const std::string& eos_token() const { return eos_; }

 private:
  std::map<std::string, std::string> sources_;
  std::map<std::string, std::shared_ptr<const jinja::Template>> compiled_;
  std::string origin_, bos_, eos_;
};

// The template in a tokenizer_config.json (nullopt when it has none), with its bos_token / eos_token (a string or
// {"content": ...}; `bos_fallback` / `eos_fallback` where it names none). Throws Error-like std::runtime_error
// naming the file for a malformed one.
std::optional<ChatTemplate> chat_template_from_tokenizer_config(const std::string& path, const std::string& bos_fallback,
                                                                const std::string& eos_fallback);

}  // namespace frozenlm::chat
