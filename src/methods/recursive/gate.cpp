#include "methods/recursive/gate.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>

#include "core/atomic_file.h"
#include "core/error.h"
#include "eval/metrics.h"

namespace frozenlm {

using nlohmann::json;

double gate_confidence(const Answer& a, const std::string& measure) {
  if (measure == "mean_logprob") return a.mean_logprob();
  if (measure == "first_margin") return a.first_margin();
  throw Error("gate measure '" + measure + "': unknown (mean_logprob, first_margin)");
}

static json threshold_json(double t) { return std::isinf(t) ? json(t > 0 ? "inf" : "-inf") : json(t); }

json evaluate_gate(const std::vector<std::pair<const Task*, std::vector<Example>>>& tasks, const OnePassFn& one_pass,
                   const RecursiveFn& recursive, const GateOptions& opt) {
  gate_confidence(Answer{}, opt.measure);  // an unknown measure fails before any work
  if (opt.thresholds.empty()) throw Error("gate: no thresholds");
  struct Row { size_t task; double conf, em1, em2; };
  std::vector<Row> rows;
  json per = json::array();
  double t_one = 0, t_rec = 0;
  using clock = std::chrono::steady_clock;
  for (size_t t = 0; t < tasks.size(); ++t) {
    const Task& task = *tasks[t].first;
    if (task.type != TaskType::Generation) throw Error(task.file + ": task '" + task.name + "' is not a generation task: the gate compares answers");
    for (const Example& e : tasks[t].second) {
      auto t0 = clock::now();
      const Answer one = one_pass(task, e.input);
      auto t1 = clock::now();
      const std::string two = recursive(task, e.input, one);
      auto t2 = clock::now();
      t_one += std::chrono::duration<double>(t1 - t0).count();
      t_rec += std::chrono::duration<double>(t2 - t1).count();
      rows.push_back({t, gate_confidence(one, opt.measure), exact_match(one.text, e.targets), exact_match(two, e.targets)});
      if (opt.per_example)
        per.push_back({{"task", task.name}, {"input", e.input}, {"answers", e.targets}, {"one_pass", one.text}, {"recursive", two},
                       {"confidence", rows.back().conf}});
    }
    std::fprintf(stderr, "[gate] %s: %zu questions\n", task.name.c_str(), tasks[t].second.size());
  }
  const double n = std::max<size_t>(rows.size(), 1);
  json points = json::array();
  for (double th : opt.thresholds) {
    std::vector<std::vector<double>> scores(tasks.size());
    size_t escalated = 0;
    for (const Row& r : rows) {
      const bool up = r.conf < th;
      escalated += up;
      scores[r.task].push_back(up ? r.em2 : r.em1);
    }
    double mean = 0;
    size_t k = 0;
    for (auto& s : scores) {
      if (s.empty()) continue;
      double m = 0;
      for (double v : s) m += v;
      mean += m / s.size();
      ++k;
    }
    const auto [lo, hi] = bootstrap_ci_of_task_average(scores);
    const double share = escalated / n;
    points.push_back({{"threshold", threshold_json(th)}, {"score", k ? mean / k : 0.0}, {"ci95", {lo, hi}}, {"escalated", share},
                      {"mean_passes", 1 + share * opt.recursive_passes}, {"seconds_per_question", (t_one + share * t_rec) / n}});
  }
  json r = {{"measure", opt.measure}, {"recursive_passes", opt.recursive_passes}, {"n", rows.size()},
            {"one_pass_seconds", t_one / n}, {"recursive_seconds", t_rec / n}, {"points", points}};
  if (opt.per_example) r["examples"] = per;
  return r;
}

void write_gate_svg(const std::string& path, const std::string& title, const std::vector<std::pair<std::string, json>>& reports) {
  const double W = 640, H = 400, L = 60, R = 20, T = 50, B = 50;
  double xmax = 2, ylo = 1, yhi = 0;
  for (auto& [name, rep] : reports)
    for (auto& p : rep.at("points")) {
      xmax = std::max(xmax, p.at("mean_passes").get<double>());
      ylo = std::min(ylo, p.at("score").get<double>());
      yhi = std::max(yhi, p.at("score").get<double>());
    }
  xmax = std::ceil(xmax);
  ylo = std::floor(ylo * 20) / 20;
  yhi = std::max(ylo + 0.05, std::ceil(yhi * 20) / 20);
  auto X = [&](double x) { return L + (W - L - R) * (x - 1) / (xmax - 1); };
  auto Y = [&](double y) { return (H - B) - (H - T - B) * (y - ylo) / (yhi - ylo); };
  std::ostringstream s;
  s << "<svg xmlns='http://www.w3.org/2000/svg' width='" << W << "' height='" << H << "' font-family='sans-serif' font-size='12'>\n"
    << "<rect width='100%' height='100%' fill='white'/>\n<text x='" << L << "' y='20' font-size='14'>" << title << "</text>\n"
    << "<line x1='" << L << "' y1='" << H - B << "' x2='" << W - R << "' y2='" << H - B << "' stroke='black'/>\n"
    << "<line x1='" << L << "' y1='" << T << "' x2='" << L << "' y2='" << H - B << "' stroke='black'/>\n"
    << "<text x='" << (L + W - R) / 2 << "' y='" << H - 12 << "' text-anchor='middle'>mean passes of the frozen LM per question</text>\n"
    << "<text x='14' y='" << (T + H - B) / 2 << "' transform='rotate(-90 14 " << (T + H - B) / 2 << ")' text-anchor='middle'>exact match (%)</text>\n";
  for (double x = 1; x <= xmax + 1e-9; x += 0.5)
    s << "<text x='" << X(x) << "' y='" << H - B + 16 << "' text-anchor='middle'>" << x << "</text>\n";
  for (double y = ylo; y <= yhi + 1e-9; y += 0.05)
    s << "<text x='" << L - 6 << "' y='" << Y(y) + 4 << "' text-anchor='end'>" << std::lround(100 * y) << "</text>\n"
      << "<line x1='" << L << "' y1='" << Y(y) << "' x2='" << W - R << "' y2='" << Y(y) << "' stroke='#eee'/>\n";
  const char* colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd"};
  int k = 0;
  for (auto& [name, rep] : reports) {
    std::vector<std::pair<double, double>> pts;
    for (auto& p : rep.at("points")) pts.push_back({p.at("mean_passes").get<double>(), p.at("score").get<double>()});
    std::sort(pts.begin(), pts.end());
    s << "<polyline fill='none' stroke='" << colors[k % 4] << "' stroke-width='1.5' points='";
    for (auto& [x, y] : pts) s << X(x) << "," << Y(y) << " ";
    s << "'/>\n";
    for (auto& [x, y] : pts) s << "<circle cx='" << X(x) << "' cy='" << Y(y) << "' r='3' fill='" << colors[k % 4] << "'/>\n";
    s << "<text x='" << L + 10 << "' y='" << T + 14 + 16 * k << "' fill='" << colors[k % 4] << "'>" << name << "</text>\n";
    ++k;
  }
  s << "</svg>\n";
  write_file_atomically(path, s.str());
}

std::vector<double> parse_thresholds(const std::string& list, const std::string& option) {
  std::vector<double> out;
  std::stringstream ss(list);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t used = 0;
    double v = 0;
    try {
      v = std::stod(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (item.empty() || used != item.size() || std::isnan(v))
      throw Error(option + " '" + list + "': '" + item + "' is not a number (use -inf and inf for never / always)");
    out.push_back(v);
  }
  if (out.empty()) throw Error(option + ": give at least one threshold");
  return out;
}

}  // namespace frozenlm
