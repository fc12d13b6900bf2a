#include "chat/chat_template.h"

#include <fstream>
#include <sstream>
#include <stdexcept>

namespace frozenlm::chat {

using ojson = nlohmann::ordered_json;

ChatTemplate::ChatTemplate(std::map<std::string, std::string> templates, std::string origin, std::string bos, std::string eos)
    : sources_(std::move(templates)), origin_(std::move(origin)), bos_(std::move(bos)), eos_(std::move(eos)) {
  if (!sources_.count("default")) throw jinja::TemplateError(origin_ + ": no default chat template");
  for (const auto& [name, src] : sources_) {
    try {
      compiled_[name] = std::make_shared<const jinja::Template>(src);
    } catch (const jinja::TemplateError& e) {
      throw jinja::TemplateError(origin_ + (name == "default" ? "" : " (template '" + name + "')") + ": " + e.what());
    }
  }
}

const std::string& ChatTemplate::source(const std::string& name) const {
  auto it = sources_.find(name);
  return it == sources_.end() ? sources_.at("default") : it->second;
}

std::string ChatTemplate::render(const ojson& messages, bool add_generation_prompt, const ojson& tools, const jinja::RenderOptions& options) const {
  ojson vars = {{"messages", messages}, {"add_generation_prompt", add_generation_prompt}, {"bos_token", bos_}, {"eos_token", eos_}};
  const bool with_tools = !tools.is_null();
  if (with_tools) vars["tools"] = tools;
  auto it = with_tools && compiled_.count("tool_use") ? compiled_.find("tool_use") : compiled_.find("default");
  return it->second->render(vars, options);
}

namespace {
// A special token as tokenizer_config.json writes it: "<s>" or {"content": "<s>", ...}.
std::string token_text(const ojson& j, const std::string& fallback) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content") && j["content"].is_string()) return j["content"].get<std::string>();
  return fallback;
}
}  // namespace

std::optional<ChatTemplate> chat_template_from_tokenizer_config(const std::string& path, const std::string& bos_fallback,
                                                                const std::string& eos_fallback) {
  std::ifstream f(path);
  if (!f) return std::nullopt;
  std::stringstream ss;
  ss << f.rdbuf();
  const ojson j = ojson::parse(ss.str(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw std::runtime_error(path + ": not a JSON object");
  auto t = j.find("chat_template");
  if (t == j.end() || t->is_null()) return std::nullopt;
  std::map<std::string, std::string> templates;
  if (t->is_string()) {
    templates["default"] = t->get<std::string>();
  } else if (t->is_array()) {
    for (const auto& e : *t) {
      if (!e.is_object() || !e.contains("name") || !e.contains("template") || !e["name"].is_string() || !e["template"].is_string())
        throw std::runtime_error(path + ": \"chat_template\" as a list holds {\"name\", \"template\"} objects");
      templates[e["name"].get<std::string>()] = e["template"].get<std::string>();
    }
  } else {
    throw std::runtime_error(path + ": \"chat_template\" must be a string or a list of {\"name\", \"template\"}");
  }
  return ChatTemplate(std::move(templates), path, token_text(j.value("bos_token", ojson()), bos_fallback),
                      token_text(j.value("eos_token", ojson()), eos_fallback));
}

}  // namespace frozenlm::chat
