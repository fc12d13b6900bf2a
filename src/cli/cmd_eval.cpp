// frozenlm eval: score the frozen LM (optionally with a module, or one module per task) on a task split or on every
// task of a mixture; prints a JSON report (per-task scores, the mixture mean and its bootstrap 95% interval).
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli/cli_common.h"
#include "cli/reader_args.h"
#include "core/error.h"
#include "core/torch_pch.h"
#include "eval/evaluate.h"
#include "eval/metrics.h"
#include "methods/reader/reader_data.h"
#include "methods/reader/reader_eval.h"
#include "methods/reader/reader_pipeline.h"
#include "methods/recursive/gate.h"
#include "methods/recursive/textual_recursion.h"
#include "modules/trainable_module.h"
#include "tasks/mixture.h"
#include "tasks/task.h"
#include "tokenizer/tokenizer.h"

namespace frozenlm::cli {
namespace {
using nlohmann::json;

struct EvalArgs {
  ModelArgs model;
  std::string task_path, mixture_path, module_dir, split = "dev", report_path;
  std::vector<std::string> module_for;
  EvalOptions eo;
  bool skip_bad = false;
  // The frozen-reader pipeline (--reader DIR and/or --index IDX): open-domain QA over a passage index.
  std::string reader;
  ReaderOptions pipe;
  std::vector<CLI::Option*> pipe_opts;
  CLI::Option* max_new_opt = nullptr;
  bool retrieval_only = false;
  // The gate (methods/recursive/gate.h): --gate-thresholds on a recursive --module.
  std::string gate_thresholds, gate_module, gate_measure = "mean_logprob", gate_svg;
};

// The gate's accuracy–compute curve for a recursive module (textual: its own pass 1 answers in one pass; neural:
// --gate-module, a module that answers in one pass, e.g. the prompt-tuned baseline).
json eval_gate(const EvalArgs& a, const FrozenLM& lm, const Tokenizer& tok, const TextualRecursion* textual, const TrainableModule* neural) {
  if (!textual && (!neural || neural->kind() != "neural_recursion"))
    throw Error("--gate-thresholds: give the recursive system as --module (a textual or neural recursion)" +
                (neural ? std::string("; ") + a.module_dir + " is a " + neural->kind() + " module, which answers in one pass" : std::string()));
  std::unique_ptr<TrainableModule> gm;
  if (!a.gate_module.empty()) gm = load_module(a.gate_module, lm);
  if (!gm && !textual)
    throw Error("--gate-thresholds with a neural recursion: give --gate-module DIR, the module that answers in one pass (e.g. the "
                "prompt-tuned baseline); a textual recursion's own pass 1 is its default");
  const int64_t max_new = a.eo.max_new_tokens;
  OnePassFn one = [&](const Task& task, const std::string& input) {
    return generate_answer(lm, gm ? gm.get() : &textual->pass1(), tok, task, input, max_new);
  };
  RecursiveFn rec = [&](const Task& task, const std::string& input, const Answer& first) {
    if (!textual) return generate_answer(lm, neural, tok, task, input, max_new).text;
    if (gm) return textual->answer(lm, tok, task, input, max_new).text;  // its own pass 1, then pass 2
    const Proposal p = textual->propose(lm, tok, task, input, &first);     // pass 1's greedy answer is the one pass
    return textual->answer(lm, tok, task, input, max_new, &p).text;
  };
  GateOptions go;
  go.thresholds = parse_thresholds(a.gate_thresholds, "--gate-thresholds");
  go.measure = a.gate_measure;
  go.recursive_passes = textual && !gm ? 1 : 2;
  go.per_example = a.eo.per_example;
  std::vector<Task> tasks;
  if (!a.task_path.empty()) tasks.push_back(load_task(a.task_path));
  else tasks = load_mixture(a.mixture_path).tasks;
  std::vector<std::pair<const Task*, std::vector<Example>>> sets;
  for (const Task& t : tasks) {
    if (!t.splits.count(a.split)) continue;
    auto ex = t.examples(a.split, ReadOptions{a.skip_bad, 0, {}});
    if (a.eo.limit && ex.size() > a.eo.limit) ex.resize(a.eo.limit);
    sets.push_back({&t, std::move(ex)});
  }
  if (sets.empty()) throw Error("--gate-thresholds: no task has a '" + a.split + "' split");
  json r = evaluate_gate(sets, one, rec, go);
  r["recursive"] = textual ? "textual_recursion" : "neural_recursion";
  r["one_pass"] = gm ? a.gate_module : a.module_dir + "/pass1";
  if (!a.gate_svg.empty()) {
    write_gate_svg(a.gate_svg, "the gate: " + std::string(textual ? "textual" : "neural") + " recursion when pass 1 is unsure (" + go.measure + ")",
                   {{a.module_dir, r}});
    std::fprintf(stderr, "[gate] curve: %s\n", a.gate_svg.c_str());
  }
  return r;
}

// Open-domain QA through the frozen reader: retrieval recall, answer in the packed context, EM / F1.
json eval_reader(const EvalArgs& a, const FrozenLM& lm, const Tokenizer& tok) {
  ReaderOptions o = reader_options(a.reader, a.pipe, a.pipe_opts);
  if (a.max_new_opt && a.max_new_opt->count()) o.max_new_tokens = a.eo.max_new_tokens;
  std::unique_ptr<TrainableModule> reader;
  if (!a.reader.empty()) reader = load_module(a.reader, lm);
  ReaderPipeline pipe(lm, tok, o, reader.get());
  ReaderEvalOptions ro;
  ro.retrieval_only = a.retrieval_only;
  ro.per_example = a.eo.per_example;
  if (!a.task_path.empty()) {
    const Task task = load_task(a.task_path);
    json r = evaluate_reader(pipe, read_qa_items(task, a.split, a.eo.limit), ro);
    r["task"] = task.name;
    r["split"] = a.split;
    r["reader"] = a.reader;
    return r;
  }
  // A mixture: every generation task that has the split; the mean over tasks with a bootstrap interval of it.
  const Mixture m = load_mixture(a.mixture_path);
  ro.keep_scores = true;
  json per_task = json::array();
  std::vector<std::vector<double>> scores;
  double sum = 0;
  for (const Task& t : m.tasks) {
    if (t.type != TaskType::Generation || !t.splits.count(a.split)) continue;
    std::fprintf(stderr, "[eval] %s\n", t.name.c_str());
    json r = evaluate_reader(pipe, read_qa_items(t, a.split, a.eo.limit), ro);
    scores.push_back(r["example_scores"].get<std::vector<double>>());  // kept in the report: paired comparisons of
    r.erase("options");                                                 // two pipelines on the same questions
    r["task"] = t.name;
    const double s = a.retrieval_only ? r["answer_in_context"]["value"].get<double>() : r["score"].get<double>();
    sum += s;
    per_task.push_back(r);
  }
  if (scores.empty()) throw Error(a.mixture_path + ": no generation task with a '" + a.split + "' split");
  const auto [lo, hi] = bootstrap_ci_of_task_average(scores);
  return {{"mixture", m.name}, {"split", a.split}, {"reader", a.reader}, {"options", o.to_json()},
          {"metric", a.retrieval_only ? "answer_in_context" : "exact_match"}, {"score", sum / double(scores.size())},
          {"ci95", {lo, hi}}, {"tasks", per_task}};
}

int cmd_eval(const EvalArgs& a) {
  const std::string &task_path = a.task_path, &mixture_path = a.mixture_path, &eval_split = a.split;
  const bool skip_bad = a.skip_bad;
  const EvalOptions& eo = a.eo;
  auto lm = open_model(a.model);
  auto tok = open_tokenizer(a.model, *lm, false);

  if (task_path.empty() == mixture_path.empty()) throw Error("eval: give --task TASK or --mixture MIXTURE");
  std::unique_ptr<TrainableModule> module;
  std::unique_ptr<TextualRecursion> textual;  // two modules with text between them: pass 2 reads pass 1's candidates
  if (!a.module_dir.empty() && TextualRecursion::is_saved_in(a.module_dir)) textual = TextualRecursion::load(a.module_dir, *lm);
  else if (!a.module_dir.empty()) module = load_module(a.module_dir, *lm);
  EvalOptions eo_text = eo;
  if (textual) {
    if (!a.module_for.empty()) throw Error("--module-for cannot be combined with a textual recursion --module");
    eo_text.rewrite_input = [&](const Task& task, const std::string& input) { return textual->pass2_input(*lm, *tok, task, input); };
  }
  const TrainableModule* reads = textual ? &textual->pass2() : module.get();  // the module the LM runs with
  json r;
  if (!a.gate_thresholds.empty()) {
    r = eval_gate(a, *lm, *tok, textual.get(), module.get());
  } else if (!a.gate_module.empty() || !a.gate_svg.empty()) {
    throw Error("--gate-module and --gate-svg need --gate-thresholds");
  } else if (!a.reader.empty() || !a.pipe.index.empty()) {
    r = eval_reader(a, *lm, *tok);
  } else if (!task_path.empty()) {
    Task task = load_task(task_path);
    if (textual && task.type != TaskType::Generation) throw Error(task.file + ": a textual recursion answers generation tasks only");
    r = evaluate(*lm, reads, *tok, task, task.examples(eval_split, ReadOptions{skip_bad, 0, {}}), eo_text);
  } else {
    Mixture m = load_mixture(mixture_path);
    for (const std::string& mf : a.module_for) {
      const auto eq = mf.find('=');
      if (eq == std::string::npos) throw Error("--module-for '" + mf + "': expected TASK=DIR");
      if (std::none_of(m.tasks.begin(), m.tasks.end(), [&](const Task& t) { return t.name == mf.substr(0, eq); }))
        throw Error("--module-for '" + mf + "': mixture " + m.name + " has no task '" + mf.substr(0, eq) + "'");
    }
    json per_task = json::array();
    std::vector<std::vector<double>> task_scores;
    json fixed_tasks = json::array();
    double sum = 0;
    EvalOptions teo = eo_text;
    teo.keep_scores = true;
    for (const Task& t : m.tasks) {
      if (!t.splits.count(eval_split)) {
        std::fprintf(stderr, "[eval] %s has no '%s' split: skipped\n", t.name.c_str(), eval_split.c_str());
        continue;
      }
      std::unique_ptr<TrainableModule> own;
      for (const std::string& mf : a.module_for)
        if (mf.rfind(t.name + "=", 0) == 0) own = load_module(mf.substr(t.name.size() + 1), *lm);
      if (textual && t.type != TaskType::Generation) throw Error(t.file + ": a textual recursion answers generation tasks only ('" + t.name + "' is not)");
      per_task.push_back(evaluate(*lm, own ? own.get() : reads, *tok, t, t.examples(eval_split, ReadOptions{skip_bad, 0, {}}), teo));
      // A task without per-example scores (lm: perplexity is not a mean of them) enters the interval as a constant.
      auto ex_scores = per_task.back().value("example_scores", std::vector<double>{});
      per_task.back().erase("example_scores");
      if (ex_scores.empty()) {
        ex_scores = {per_task.back()["score"].get<double>()};
        fixed_tasks.push_back(t.name);
      }
      task_scores.push_back(ex_scores);
      sum += per_task.back()["score"].get<double>();
      std::fprintf(stderr, "[eval] %-14s %s %.4f\n", t.name.c_str(), per_task.back()["metric"].get<std::string>().c_str(),
                   per_task.back()["score"].get<double>());
    }
    if (per_task.empty()) throw Error(mixture_path + ": no task has a '" + eval_split + "' split");
    r = {{"mixture", m.name}, {"tasks", per_task}, {"metric", "mean_task_score"}, {"score", sum / per_task.size()}};
    auto [lo, hi] = bootstrap_ci_of_task_average(task_scores);
    r["ci95"] = {lo, hi};
    if (!fixed_tasks.empty()) r["ci95_fixed_tasks"] = fixed_tasks;  // held constant in the bootstrap
  }
  r["split"] = eval_split;
  r["model"] = a.model.model;
  r["module"] = a.module_dir;
  const std::string text = r.dump(2, ' ', false, json::error_handler_t::replace);
  std::printf("%s\n", text.c_str());
  if (!a.report_path.empty()) std::ofstream(a.report_path) << text << "\n";
  return 0;
}

}  // namespace

void add_eval_command(CLI::App& app, Commands& cmds) {
  auto a = std::make_shared<EvalArgs>();
  auto* ev = app.add_subcommand("eval", "Evaluate the frozen LM (optionally with a module) on a task split; prints a JSON report");
  add_model_args(ev, a->model);
  auto* ev_task = ev->add_option("--task", a->task_path, "task file (JSON)");
  auto* ev_mix = ev->add_option("--mixture", a->mixture_path, "evaluate every task of a mixture (per-task reports and their mean)");
  ev_task->excludes(ev_mix);
  ev_mix->excludes(ev_task);
  ev->add_option("--module-for", a->module_for, "with --mixture: TASK=DIR, a module for one task (repeatable; e.g. per-task prompts)");
  ev->add_option("--module", a->module_dir, "trained module directory");
  ev->add_option("--split", a->split, "task split")->capture_default_str();
  ev->add_option("--limit", a->eo.limit, "at most this many examples (0: all)")->capture_default_str();
  a->max_new_opt = ev->add_option("--max-new-tokens", a->eo.max_new_tokens, "generation tasks: tokens to generate")->capture_default_str();
  ev->add_option("--reader", a->reader, "a trained reader (`frozenlm train reader`): run the whole frozen-reader pipeline on --task");
  a->pipe_opts = add_reader_pipeline_args(ev, a->pipe, false);
  ev->add_flag("--retrieval-only", a->retrieval_only, "with --reader/--index: retrieval recall and packing only, no reading pass");
  ev->add_flag("--per-example", a->eo.per_example, "include every example's prediction in the report");
  ev->add_flag("--squad-v2-f1", a->eo.squad_v2_f1, "token F1 with SQuAD v2.0's rule: an empty prediction for an empty answer scores 1 "
                                                  "(default: SQuAD v1.1's official script, where it scores 0)");
  ev->add_option("--gate-thresholds", a->gate_thresholds, "with a recursive --module: the gate's accuracy and mean passes per question "
                                                          "for each threshold, e.g. -inf,-0.5,-0.1,inf (recurse when pass 1's confidence is below it)");
  ev->add_option("--gate-module", a->gate_module, "the gate's one-pass module (needed for a neural recursion; default for a textual one: its pass 1)");
  ev->add_option("--gate-measure", a->gate_measure, "the one-pass answer's confidence: mean_logprob | first_margin")
      ->capture_default_str()->check(CLI::IsMember({"mean_logprob", "first_margin"}));
  ev->add_option("--gate-svg", a->gate_svg, "write the gate's accuracy-compute curve (SVG) here");
  ev->add_option("--report", a->report_path, "also write the report to this file");
  ev->add_flag("--skip-bad", a->skip_bad, "skip (and count) malformed data lines");
  cmds.add(ev, [a] { return cmd_eval(*a); });
}

}  // namespace frozenlm::cli
