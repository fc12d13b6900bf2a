#include "core/losses.h"

#include "core/torch_pch.h"

namespace frozenlm {

at::Tensor token_cross_entropy(const at::Tensor& logits, const at::Tensor& targets, int64_t ignore_index) {
  at::Tensor keep = targets != ignore_index;                         // [N]
  at::Tensor safe = at::where(keep, targets, at::zeros_like(targets)).unsqueeze(1);
  at::Tensor nll = at::logsumexp(logits, -1) - logits.gather(1, safe).squeeze(1);  // [N]
  at::Tensor n = keep.sum().clamp_min(1).to(logits.scalar_type());
  return (nll * keep.to(logits.scalar_type())).sum() / n;
}

}  // namespace frozenlm
