// libFuzzer target: checkpoint/trainer_state.json. Malformed input ends in frozenlm::Error; an accepted state has
// non-negative positions and survives a write/read round trip unchanged.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "train/trainer_state.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto s = frozenlm::parse_trainer_state(std::string(reinterpret_cast<const char*>(data), size), "fuzz/trainer_state.json");
    if (s.step < 0 || s.epoch < 0 || s.batch_pos < 0 || s.nan_steps < 0 || s.consecutive_nan < 0) __builtin_trap();
    auto t = frozenlm::parse_trainer_state(frozenlm::trainer_state_json(s), "fuzz/round-trip");
    if (t.step != s.step || t.epoch != s.epoch || t.batch_pos != s.batch_pos || t.stopped_early != s.stopped_early ||
        t.loss_curve.size() != s.loss_curve.size() || t.run != s.run)
      __builtin_trap();
  } catch (const frozenlm::Error&) {
  }
  return 0;
}
