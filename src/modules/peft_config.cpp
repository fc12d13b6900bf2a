#include "modules/peft_config.h"

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace frozenlm {

using nlohmann::json;

std::string peft_type_of(const std::string& text) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("peft_type") || !j["peft_type"].is_string()) return "";
  return j["peft_type"].get<std::string>();
}

PeftPromptConfig parse_peft_prompt_config(const std::string& text, const std::string& path) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw Error(path + ": not valid JSON (expected an object)");
  if (!j.contains("peft_type") || !j["peft_type"].is_string() || j["peft_type"].get<std::string>() != "PROMPT_TUNING")
    throw Error(path + ": peft_type is " + (j.contains("peft_type") ? j["peft_type"].dump() : std::string("missing")) +
                ", expected \"PROMPT_TUNING\"");
  PeftPromptConfig c;
  // An optional positive integer (null = not given).
  auto count = [&](const char* k, int64_t dflt) -> int64_t {
    if (!j.contains(k) || j[k].is_null()) return dflt;
    if (!j[k].is_number_integer() || j[k].get<int64_t>() <= 0 || j[k].get<int64_t>() > (int64_t(1) << 24))
      throw Error(path + ": " + k + " must be a positive integer, got " + j[k].dump().substr(0, 60));
    return j[k].get<int64_t>();
  };
  auto text_field = [&](const char* k) -> std::string {
    if (!j.contains(k) || j[k].is_null()) return "";
    if (!j[k].is_string()) throw Error(path + ": " + k + " must be a string or null, got " + j[k].dump().substr(0, 60));
    return j[k].get<std::string>();
  };
  c.num_virtual_tokens = count("num_virtual_tokens", -1);
  c.num_transformer_submodules = count("num_transformer_submodules", 1);
  c.token_dim = count("token_dim", -1);
  c.base_model = text_field("base_model_name_or_path");
  c.init_text = text_field("prompt_tuning_init_text");
  const std::string init = text_field("prompt_tuning_init");
  if (!init.empty()) {
    if (init != "TEXT" && init != "RANDOM" && init != "SAMPLE_VOCAB")
      throw Error(path + ": prompt_tuning_init '" + init + "' is not TEXT, RANDOM or SAMPLE_VOCAB");
    c.init = init;
  }
  return c;
}

}  // namespace frozenlm
