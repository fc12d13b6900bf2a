// checkpoint/trainer_state.json: where a run stands (step, data position, best score, early-stop and NaN state, the
// curves) and the options that identify the run. Written last into a checkpoint, so its presence marks a complete
// one. Parsed without LibTorch (the fuzz target runs it alone).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace frozenlm {

struct TrainerState {
  int64_t step = 0, epoch = 0, batch_pos = 0, since_best = 0;
  double best = -1.0 / 0.0;  // no evaluation yet (stored as null: JSON has no -inf)
  double first_loss = 0, last_loss = 0;
  int64_t nan_steps = 0, consecutive_nan = 0;
  bool stopped_early = false;
  std::vector<std::pair<double, double>> loss_curve, eval_curve;
  nlohmann::json run;  // the options and data that identify the run (null: written by an older frozenlm)
};

std::string trainer_state_json(const TrainerState& s);
// Errors name `path` and the field: not JSON, a missing or mistyped field, negative positions, malformed curves.
TrainerState parse_trainer_state(const std::string& text, const std::string& path);

}  // namespace frozenlm
