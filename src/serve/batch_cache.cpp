#include "serve/batch_cache.h"

#include "core/error.h"
#include "core/torch_pch.h"

namespace frozenlm::serve {

BatchCache::BatchCache(const FrozenLM& lm, int64_t max_rows, int64_t budget)
    : lm_(lm), max_rows_(max_rows), budget_(budget > 0 ? budget : max_rows * lm.config().max_seq_len) {
  if (max_rows < 1) throw Error("BatchCache: max_rows must be >= 1");
  allocate(1, 0);
}

int64_t BatchCache::rows_to_allocate(int64_t rows, int64_t max_rows) {
  int64_t n = 1;
  while (n < rows) n *= 2;
  return std::min(n, max_rows);
}

void BatchCache::allocate(int64_t rows, int64_t capacity) {
  if (rows * capacity > budget_)
    throw Error("BatchCache: " + std::to_string(rows) + " rows × " + std::to_string(capacity) + " columns exceed the budget of " + std::to_string(budget_) + " positions");
  const ModelConfig& c = lm_.config();
  auto opt = at::TensorOptions().device(lm_.device());
  std::vector<at::Tensor> k, v;
  for (int64_t l = 0; l < c.n_layers; ++l) {
    k.push_back(at::zeros({rows, c.n_kv_heads, capacity, c.head_dim}, opt.dtype(lm_.compute_dtype())));
    v.push_back(at::zeros({rows, c.n_kv_heads, capacity, c.head_dim}, opt.dtype(lm_.compute_dtype())));
    if (len_ > 0 && rows_ > 0) {
      k[l].narrow(0, 0, rows_).narrow(2, 0, len_).copy_(k_[l].narrow(0, 0, rows_).narrow(2, 0, len_));
      v[l].narrow(0, 0, rows_).narrow(2, 0, len_).copy_(v_[l].narrow(0, 0, rows_).narrow(2, 0, len_));
    }
  }
  at::Tensor mask = at::zeros({rows, capacity}, opt.dtype(at::kBool));
  if (len_ > 0 && rows_ > 0) mask.narrow(0, 0, rows_).narrow(1, 0, len_).copy_(mask_.narrow(0, 0, rows_).narrow(1, 0, len_));
  at::Tensor next_pos = at::zeros({rows}, opt.dtype(at::kLong));
  if (rows_ > 0) next_pos.narrow(0, 0, rows_).copy_(next_pos_.narrow(0, 0, rows_));
  k_ = std::move(k);
  v_ = std::move(v);
  mask_ = mask;
  next_pos_ = next_pos;
  rows_alloc_ = rows;
  capacity_ = capacity;
  refresh_view();
}

int64_t BatchCache::longest_row() const {
  if (rows_ == 0 || len_ == 0) return 0;
  return mask_.narrow(0, 0, rows_).narrow(1, 0, len_).sum(1).max().item<int64_t>();
}

void BatchCache::refresh_view() {
  view_.k_buf.clear();
  view_.v_buf.clear();
  for (size_t l = 0; l < k_.size(); ++l) {
    view_.k_buf.push_back(k_[l].narrow(0, 0, rows_));
    view_.v_buf.push_back(v_[l].narrow(0, 0, rows_));
  }
  view_.mask_buf = mask_.narrow(0, 0, rows_);
  view_.next_pos = next_pos_.narrow(0, 0, rows_);
  view_.len = len_;
}

void BatchCache::after_forward() {
  if (view_.capacity() != capacity_ || (rows_ > 0 && view_.k_buf[0].data_ptr() != k_[0].data_ptr()))
    throw Error("BatchCache: a forward reallocated the cache (call ensure_room before it)");
  len_ = view_.len;
  if (view_.next_pos.data_ptr() != next_pos_.data_ptr()) next_pos_.narrow(0, 0, rows_).copy_(view_.next_pos);
  refresh_view();
}

int64_t BatchCache::add_row(const KVCache& src, int64_t r) {
  if (rows_ == max_rows_) throw Error("BatchCache: all " + std::to_string(max_rows_) + " rows are in use");
  const int64_t n = src.length();
  const int64_t rows = rows_to_allocate(rows_ + 1, max_rows_), limit = budget_ / rows;
  if (n > limit) throw Error("BatchCache: a row of " + std::to_string(n) + " positions does not fit the budget with " + std::to_string(rows_ + 1) + " rows");
  if (rows > rows_alloc_ || n > capacity_ || capacity_ > limit) {
    // More rows (a power of two more), or a longer row: within the budget, compacting first when the columns must shrink.
    if (capacity_ > limit && len_ > limit) compact();
    if (len_ > limit) throw Error("BatchCache: the rows' keys do not fit the budget with " + std::to_string(rows_ + 1) + " rows");
    const int64_t cap = std::min(limit, std::max({n, len_, n > capacity_ ? 2 * capacity_ : capacity_}));
    allocate(std::max(rows, rows_alloc_), cap);
  }
  const int64_t i = rows_;
  for (size_t l = 0; l < k_.size(); ++l) {
    k_[l][i].narrow(1, 0, n).copy_(src.k_buf[l][r].narrow(1, 0, n));
    v_[l][i].narrow(1, 0, n).copy_(src.v_buf[l][r].narrow(1, 0, n));
  }
  mask_[i].zero_();
  mask_[i].narrow(0, 0, n).copy_(src.mask_buf[r].narrow(0, 0, n));
  next_pos_[i].copy_(src.next_pos[r]);
  ++rows_;
  len_ = std::max(len_, n);
  refresh_view();
  return i;
}

void BatchCache::remove_row(int64_t i) {
  if (i < 0 || i >= rows_) throw Error("BatchCache: no row " + std::to_string(i));
  const int64_t last = rows_ - 1;
  if (i != last) {
    for (size_t l = 0; l < k_.size(); ++l) {
      k_[l][i].narrow(1, 0, len_).copy_(k_[l][last].narrow(1, 0, len_));
      v_[l][i].narrow(1, 0, len_).copy_(v_[l][last].narrow(1, 0, len_));
    }
    mask_[i].copy_(mask_[last]);
    next_pos_[i].copy_(next_pos_[last]);
  }
  mask_[last].zero_();
  --rows_;
  if (rows_ == 0) len_ = 0;  // an empty batch starts again from column 0
  refresh_view();
}

void BatchCache::compact() {
  if (rows_ == 0) {
    len_ = 0;
    refresh_view();
    return;
  }
  // Per row: the columns of its real keys, in order, moved to the front.
  at::Tensor m = mask_.narrow(1, 0, len_).to(at::kCPU);
  int64_t longest = 0;
  std::vector<at::Tensor> idx(rows_);
  for (int64_t i = 0; i < rows_; ++i) {
    idx[i] = m[i].nonzero().reshape({-1}).to(lm_.device());
    longest = std::max(longest, idx[i].size(0));
  }
  for (int64_t i = 0; i < rows_; ++i) {
    const int64_t n = idx[i].size(0);
    for (size_t l = 0; l < k_.size(); ++l) {
      at::Tensor k = k_[l][i].narrow(1, 0, len_).index_select(1, idx[i]);  // [Hkv, n, hd] (a copy)
      at::Tensor v = v_[l][i].narrow(1, 0, len_).index_select(1, idx[i]);
      k_[l][i].narrow(1, 0, n).copy_(k);
      v_[l][i].narrow(1, 0, n).copy_(v);
    }
    mask_[i].zero_();
    mask_[i].narrow(0, 0, n).fill_(true);
  }
  len_ = longest;
  refresh_view();
}

void BatchCache::ensure_room(int64_t extra) {
  if (len_ + extra <= capacity_) return;
  const int64_t longest = longest_row();
  // Compact when it frees at least half the columns; otherwise the rows really are that long: grow, within the budget.
  if (rows_ > 0 && 2 * (longest + extra) <= capacity_) {
    compact();
    return;
  }
  const int64_t limit = budget_ / rows_alloc_;
  if (len_ + extra <= limit) {
    allocate(rows_alloc_, std::min(limit, std::max(len_ + extra, 2 * capacity_)));
    return;
  }
  // At the budget's columns: the gaps between rows' keys must go.
  compact();
  if (len_ + extra > capacity_) {
    if (len_ + extra > limit)
      throw Error("BatchCache: " + std::to_string(rows_) + " rows of up to " + std::to_string(len_ + extra) + " positions exceed the budget of " +
                  std::to_string(budget_) + " (" + std::to_string(rows_alloc_) + " rows allocated)");
    allocate(rows_alloc_, std::min(limit, std::max(len_ + extra, 2 * capacity_)));
  }
}

int64_t BatchCache::bytes() const {
  int64_t b = mask_.nbytes() + next_pos_.nbytes();
  for (size_t l = 0; l < k_.size(); ++l) b += k_[l].nbytes() + v_[l].nbytes();
  return b;
}

}  // namespace frozenlm::serve
