// OpenAI's completions API as frozenlm serves it: parsing and validating a request body (every mistake a 4xx naming
// the field) and writing the response objects, non-streamed and as server-sent-event chunks. No LibTorch here: the
// parser is what the fuzz target exercises.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace frozenlm::serve {

// An error as the API returns it: {"error": {"message", "type", "param", "code"}} with an HTTP status.
struct ApiError : std::runtime_error {
  ApiError(int status, std::string message, std::string param = "", std::string code = "", std::string type = "");
  int status;
  std::string type, param, code;
  nlohmann::json body() const;
};

struct CompletionRequest {
  std::string model;
  std::vector<std::string> prompts;               // text prompts, or
  std::vector<std::vector<int64_t>> prompt_ids;   // token-id prompts (the API's "array of integers" forms)
  int64_t max_tokens = 16;
  double temperature = 1.0;
  double top_p = 1.0;
  int64_t top_k = 0;                              // extensions (as vLLM's and llama.cpp's servers take them):
  bool ignore_eos = false;                        // keep generating past the end-of-sequence token (benchmarks)
  int n = 1;
  std::vector<std::string> stop;
  std::optional<uint64_t> seed;
  int logprobs = -1;                              // -1: none; 0..5
  bool echo = false;
  bool stream = false;
  bool include_usage = false;                     // stream_options.include_usage
  size_t num_prompts() const { return prompt_ids.empty() ? prompts.size() : prompt_ids.size(); }
};

// A POST /v1/chat/completions body: the sampling fields as completions have them (`sampling.prompts` stays empty:
// the prompt is the chat template's rendering of `messages`), logprobs as chat shows them (`sampling.logprobs`:
// -1 none, else top_logprobs).
struct ChatRequest {
  CompletionRequest sampling;
  nlohmann::ordered_json messages;       // [{role, content (string or null; text parts joined), ...}] in the order sent
  nlohmann::ordered_json tools;          // null: none
  bool add_generation_prompt = true;
};

// Limits a request must stay within (checked while parsing).
struct ApiLimits {
  int max_n = 16;
  int64_t max_tokens = 1 << 20;
  size_t max_prompts = 64;
  size_t max_stops = 256;        // OpenAI's 4 is their choice; lm-eval sends a task's `until` list plus EOS
  size_t max_stop_bytes = 1024;  // each stop string
  int max_logprobs = 5;
  int max_top_logprobs = 20;     // chat's top_logprobs (OpenAI's bound)
  size_t max_messages = 4096;
};

// Parses a POST /v1/completions body. Throws ApiError (400) naming the field for anything malformed.
CompletionRequest parse_completion_request(const std::string& body, const ApiLimits& limits = {});

// Parses a POST /v1/chat/completions body. Throws ApiError (400) naming the field.
ChatRequest parse_chat_request(const std::string& body, const ApiLimits& limits = {});

// POST /tokenize (as vLLM's): a text `prompt` or chat `messages` (rendered by the chat template).
struct TokenizeRequest {
  std::optional<std::string> prompt;
  nlohmann::ordered_json messages;      // null unless given
  nlohmann::ordered_json tools;         // null: none
  bool add_special_tokens = true;       // default: true for a prompt (BOS as completions add it), false for messages
  bool add_generation_prompt = true;    // messages
};
TokenizeRequest parse_tokenize_request(const std::string& body);
// POST /detokenize: {"tokens": [ids]}.
std::vector<int64_t> parse_detokenize_request(const std::string& body);

// POST /v1/embeddings: OpenAI's shape (`input`: a string, strings, token ids, or lists of token ids; `encoding_format`
// float or base64; `dimensions` only the model's own), and the dense retriever's layer option.
struct EmbeddingRequest {
  std::string model;
  std::vector<std::string> texts;               // text inputs, or
  std::vector<std::vector<int64_t>> ids;        // token-id inputs
  bool base64 = false;
  int64_t layer = -1;                           // hidden states after this many layers (-1: all, before the final norm)
  std::optional<int64_t> dimensions;
};
EmbeddingRequest parse_embedding_request(const std::string& body, size_t max_inputs = 2048);

// A loaded module's registration request: POST /v1/modules {"name", "path"}.
struct ModuleLoadRequest {
  std::string name, path;
};
ModuleLoadRequest parse_module_load_request(const std::string& body);
// Module and model names: 1–64 of [A-Za-z0-9._-], not starting with '.'.
bool valid_module_name(const std::string& name);

// One choice's logprobs as the completions API shows them.
struct LogprobsOut {
  std::vector<std::string> tokens;
  std::vector<std::optional<float>> token_logprobs;
  std::vector<std::vector<std::pair<std::string, float>>> top_logprobs;  // empty per token when none were asked
  std::vector<size_t> text_offset;
  nlohmann::json to_json(bool with_top) const;
};

}  // namespace frozenlm::serve
