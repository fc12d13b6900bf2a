// RoPE row layouts of Q and K: llama.cpp's GGUF files and llama2.c rotate interleaved pairs (a head's rows ordered
// [hd/2, 2]); Hugging Face and this runtime rotate halves ([2, hd/2]). Converting is an exact row permutation within
// each head, for any trailing shape (a weight [rows, in], a bias [rows], Q8_0 block scales [rows, in/32]).
#pragma once
#include <ATen/ATen.h>

#include <vector>

namespace frozenlm {

inline at::Tensor permute_rope_rows(const at::Tensor& w, int64_t heads, bool to_halves) {
  const int64_t rows = w.size(0), hd = rows / heads;
  const auto rest = w.sizes().slice(1).vec();
  std::vector<int64_t> v = to_halves ? std::vector<int64_t>{heads, hd / 2, 2} : std::vector<int64_t>{heads, 2, hd / 2};
  v.insert(v.end(), rest.begin(), rest.end());
  std::vector<int64_t> out{rows};
  out.insert(out.end(), rest.begin(), rest.end());
  return w.view(v).transpose(1, 2).reshape(out).contiguous();
}
// Interleaved (GGUF, llama2.c) -> halves (ours).
inline at::Tensor rope_rows_to_halves(const at::Tensor& w, int64_t heads) { return permute_rope_rows(w, heads, true); }
// Halves (ours) -> interleaved (GGUF).
inline at::Tensor rope_rows_to_interleaved(const at::Tensor& w, int64_t heads) { return permute_rope_rows(w, heads, false); }

}  // namespace frozenlm
