#include "train/trainer_state.h"

#include <cmath>

#include "core/error.h"

namespace frozenlm {

using nlohmann::json;

std::string trainer_state_json(const TrainerState& s) {
  json lc = json::array(), ec = json::array();
  for (auto& p : s.loss_curve) lc.push_back({p.first, p.second});
  for (auto& p : s.eval_curve) ec.push_back({p.first, p.second});
  json st = {{"step", s.step}, {"epoch", s.epoch}, {"batch_pos", s.batch_pos},
             {"best", std::isfinite(s.best) ? json(s.best) : json(nullptr)}, {"since_best", s.since_best},
             {"first_loss", s.first_loss}, {"last_loss", s.last_loss}, {"nan_steps", s.nan_steps},
             {"consecutive_nan", s.consecutive_nan}, {"stopped_early", s.stopped_early}, {"run", s.run},
             {"loss_curve", lc}, {"eval_curve", ec}};
  return st.dump();
}

TrainerState parse_trainer_state(const std::string& text, const std::string& path) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw Error(path + ": corrupt (not a JSON object): cannot resume from it");
  auto bad = [&](const std::string& k, const std::string& what) {
    return Error(path + ": field '" + k + "' " + what + ": cannot resume from it");
  };
  auto count = [&](const char* k, bool required) -> int64_t {  // a non-negative integer
    if (!j.contains(k)) {
      if (required) throw bad(k, "is missing");
      return 0;
    }
    if (!j[k].is_number_integer() || j[k].get<int64_t>() < 0) throw bad(k, "must be a non-negative integer, got " + j[k].dump().substr(0, 60));
    return j[k].get<int64_t>();
  };
  auto number = [&](const char* k, bool required) -> double {
    if (!j.contains(k)) {
      if (required) throw bad(k, "is missing");
      return 0.0;
    }
    if (!j[k].is_number()) throw bad(k, "must be a number, got " + j[k].dump().substr(0, 60));
    return j[k].get<double>();
  };
  auto curve = [&](const char* k) {
    std::vector<std::pair<double, double>> out;
    if (!j.contains(k)) throw bad(k, "is missing");
    if (!j[k].is_array()) throw bad(k, "must be a list of [step, value] pairs");
    for (const json& p : j[k]) {
      if (!p.is_array() || p.size() != 2 || !p[0].is_number() || !(p[1].is_number() || p[1].is_null()))
        throw bad(k, "must be a list of [step, value] pairs, got " + p.dump().substr(0, 60));
      out.push_back({p[0].get<double>(), p[1].is_null() ? NAN : p[1].get<double>()});
    }
    return out;
  };
  TrainerState s;
  s.step = count("step", true);
  s.epoch = count("epoch", true);
  s.batch_pos = count("batch_pos", true);
  s.since_best = count("since_best", true);
  if (!j.contains("best")) throw bad("best", "is missing");
  if (!j["best"].is_null() && !j["best"].is_number()) throw bad("best", "must be a number or null");
  s.best = j["best"].is_number() ? j["best"].get<double>() : -INFINITY;
  s.first_loss = number("first_loss", true);
  s.last_loss = number("last_loss", false);
  s.nan_steps = count("nan_steps", true);
  s.consecutive_nan = count("consecutive_nan", false);
  if (j.contains("stopped_early")) {
    if (!j["stopped_early"].is_boolean()) throw bad("stopped_early", "must be true or false");
    s.stopped_early = j["stopped_early"].get<bool>();
  }
  s.loss_curve = curve("loss_curve");
  s.eval_curve = curve("eval_curve");
  if (j.contains("run") && !j["run"].is_null()) {
    if (!j["run"].is_object()) throw bad("run", "must be an object of the run's options");
    s.run = j["run"];
  }
  return s;
}

}  // namespace frozenlm
