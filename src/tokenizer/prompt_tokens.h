// The special tokens around a model's prompts and generations, one rule for every caller (the CLI, the server): a
// prompt starts with the model's BOS (as training and evaluation encode it), and generation stops at the checkpoint's
// EOS ids, else the tokenizer's.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace frozenlm {

struct ModelConfig;
class Tokenizer;

// A generation prompt's ids, BOS first when the model has one (BOS alone for an empty prompt), whether or not the
// tokenizer adds it. Throws Error when the text encodes to nothing and there is no BOS.
std::vector<int64_t> prompt_ids(const ModelConfig& model, const Tokenizer& tok, const std::string& text);
// The ids that end a generation: the checkpoint's eos_token_id(s), else the tokenizer's EOS (may be empty).
std::vector<int64_t> eos_ids_for(const ModelConfig& model, const Tokenizer& tok);

}  // namespace frozenlm
