// A tokenizer as GGUF metadata holds it (tokenizer.ggml.*), read and written as llama.cpp does:
//   model "llama": a SentencePiece-style vocabulary with scores — encoded by llama.cpp's SPM algorithm (UTF-8
//     characters, then repeatedly merge the adjacent pair whose union is the highest-scoring token, leftmost first;
//     pieces that are no token fall back to <0xXX> byte tokens), with a space prefix and ' ' -> '▁';
//   model "gpt2": byte-level BPE with merges and a pre-tokenizer regex named by tokenizer.ggml.pre (gpt-2,
//     llama-bpe, qwen2) — encoded by the Hugging Face tokenizer pipeline we already have (tokenizer/hf_tokenizer.h),
//     built from the GGUF vocabulary.
// Control, user-defined and unknown tokens are matched in text as whole tokens (llama.cpp's parse_special).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace frozenlm {

struct GgufHeader;
class GgufWriter;
class Tokenizer;

// llama.cpp's token types (tokenizer.ggml.token_type).
enum GgufTokenType : int32_t { kTokNormal = 1, kTokUnknown = 2, kTokControl = 3, kTokUserDefined = 4, kTokUnused = 5, kTokByte = 6 };

struct GgufVocab {
  std::string model;                 // "llama" | "gpt2"
  std::string pre;                   // gpt2: pre-tokenizer name ("" = not written)
  std::vector<std::string> tokens;
  std::vector<float> scores;         // llama (empty: not written)
  std::vector<int32_t> types;        // one per token
  std::vector<std::string> merges;   // gpt2: "left right", by rank
  int64_t unk = -1, bos = -1, eos = -1, pad = -1;  // -1: absent
  int add_bos = -1, add_eos = -1, add_space_prefix = -1;  // -1: absent (llama.cpp's defaults), 0/1: written
};

// Reads tokenizer.ggml.* (errors name `path` and the key: missing arrays, lengths that disagree, ids out of range).
GgufVocab read_gguf_vocab(const GgufHeader& h, const std::string& path);
// Writes it; the token list is padded with unused "[PAD<i>]" tokens up to `model_vocab` (the embedding's rows).
void write_gguf_vocab(GgufWriter& w, const GgufVocab& v, int64_t model_vocab);
std::unique_ptr<Tokenizer> make_gguf_tokenizer(const GgufVocab& v, const std::string& path);
// The GGUF form of one of our tokenizers (HF tokenizer.json: byte-level BPE -> gpt2, SentencePiece-style BPE ->
// llama with score = -id; llama2.c tokenizer.bin -> llama with its scores; a GGUF tokenizer -> itself).
GgufVocab gguf_vocab_of(const Tokenizer& tok);

}  // namespace frozenlm
