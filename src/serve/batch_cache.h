// The KV cache of a running decode batch whose rows come and go (continuous batching). Rows live in buffers
// [rows allocated, Hkv, capacity, hd]; the FrozenLM sees a KVCache whose tensors are views of the first rows()
// rows (a narrow along dim 0 is still contiguous, so the lean decode step reads them in place).
//
// Memory is bounded by a budget of KV positions: rows allocated × columns ≤ budget, always. Rows are allocated in
// powers of two (up to max_rows) as the batch grows; columns double as they are needed, up to budget / rows
// allocated, and are compacted (below) when that is all there is. The caller admits rows so that this can hold:
// rows_to_allocate(rows) × (the longest any row can become: its input + max_tokens) ≤ budget.
//
// Rows do not have to be aligned: every row keeps its own real keys at whatever columns they were written to, and
// the cache's mask hides the rest (attention is masked, positions come from next_pos). So admitting a request copies
// only its own prefilled rows, and removing a finished one moves only the last row into its place. Columns only grow
// (one per decode step for every row); when they run out, compact() gathers each row's real keys to the front, which
// costs one copy of the cache per doubling of the columns used.
#pragma once
#include <ATen/Tensor.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/transformer.h"

namespace frozenlm::serve {

class BatchCache {
 public:
  // `budget`: KV positions the buffers may hold (0: max_rows × the model's context length).
  BatchCache(const FrozenLM& lm, int64_t max_rows, int64_t budget = 0);
  // Rows allocated for `rows` rows in use: the next power of two, at most max_rows.
  static int64_t rows_to_allocate(int64_t rows, int64_t max_rows);
  // The most columns the buffers may have for `rows` rows in use.
  int64_t column_limit(int64_t rows) const { return budget_ / rows_to_allocate(std::max<int64_t>(rows, 1), max_rows_); }
  int64_t budget() const { return budget_; }
  int64_t rows_allocated() const { return rows_alloc_; }

  int64_t rows() const { return rows_; }
  int64_t max_rows() const { return max_rows_; }
  int64_t columns() const { return len_; }           // columns in use (the cache length the model sees)
  int64_t capacity() const { return capacity_; }     // columns allocated
  // The KVCache for a forward over all rows (valid until the next call that changes rows or columns).
  KVCache& cache() { return view_; }

  // Appends row r of a prefilled cache (its columns [0, src.length()) and mask) as the last row; returns its index.
  int64_t add_row(const KVCache& src, int64_t r);
  // Removes row i; the last row moves into its place (callers move their per-row state the same way).
  void remove_row(int64_t i);
  // Makes room for `extra` more columns (a decode step needs 1): compacts when that frees half the columns, else
  // grows (doubling) within the budget, else compacts. Throws when even the compacted rows do not fit (the caller
  // admitted more than the budget holds).
  void ensure_room(int64_t extra);
  // Gathers every row's real keys to columns [0, real_length) and sets columns() to the longest row.
  void compact();
  // Call after every forward through cache(): takes over the length and positions the forward wrote.
  void after_forward();
  // Bytes held by the buffers.
  int64_t bytes() const;

 private:
  void allocate(int64_t rows, int64_t capacity);  // (re)allocates, keeping [0, len_) of every row in use
  int64_t longest_row() const;                     // real keys of the longest row
  void refresh_view();
  const FrozenLM& lm_;
  int64_t max_rows_, budget_, rows_ = 0, rows_alloc_ = 0, len_ = 0, capacity_ = 0;
  std::vector<at::Tensor> k_, v_;  // per layer [max_rows, Hkv, capacity, hd]
  at::Tensor mask_;                // [max_rows, capacity] bool; columns >= len_ and rows >= rows_ are all false
  at::Tensor next_pos_;            // [max_rows] int64
  KVCache view_;
};

}  // namespace frozenlm::serve
