#include "serve/metrics.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

namespace frozenlm::serve {

using namespace prometheus;

namespace {
const Histogram::BucketBoundaries kLatency = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
const Histogram::BucketBoundaries kRows = {1, 2, 4, 8, 16, 32, 64, 128, 256};
std::string label(const std::string& module) { return module.empty() ? "(base)" : module; }
}  // namespace

struct Metrics::Impl {
  std::shared_ptr<Registry> reg = std::make_shared<Registry>();
  Family<Counter>& requests = BuildCounter().Name("frozenlm_requests_total").Help("Completion requests by module and HTTP status").Register(*reg);
  Family<Counter>& prompt_tokens = BuildCounter().Name("frozenlm_prompt_tokens_total").Help("Prompt tokens by module").Register(*reg);
  Family<Counter>& gen_tokens = BuildCounter().Name("frozenlm_generation_tokens_total").Help("Generated tokens by module").Register(*reg);
  Family<Histogram>& ttft = BuildHistogram().Name("frozenlm_time_to_first_token_seconds").Help("From submission to the first token, by module").Register(*reg);
  Family<Histogram>& itl = BuildHistogram().Name("frozenlm_inter_token_latency_seconds").Help("Between consecutive tokens of one completion").Register(*reg);
  Family<Histogram>& e2e = BuildHistogram().Name("frozenlm_request_duration_seconds").Help("End-to-end completion request latency, by module").Register(*reg);
  Family<Histogram>& step = BuildHistogram().Name("frozenlm_decode_step_seconds").Help("One decode forward over the running batch").Register(*reg);
  Family<Histogram>& occupancy = BuildHistogram().Name("frozenlm_batch_rows").Help("Rows decoded together per step (batch occupancy)").Register(*reg);
  Family<Histogram>& prefill = BuildHistogram().Name("frozenlm_prefill_seconds").Help("One prefill forward of newly admitted rows").Register(*reg);
  Family<Histogram>& apply = BuildHistogram().Name("frozenlm_module_apply_seconds").Help("A module turning one prompt into the LM's input (ID-PT: its generator), by kind").Register(*reg);
  Family<Gauge>& state = BuildGauge().Name("frozenlm_engine").Help("Engine state: queue length, running requests and rows, batch capacity, KV-cache bytes, loaded modules").Register(*reg);
  Histogram& itl_all = itl.Add({}, kLatency);
  Histogram& step_all = step.Add({}, kLatency);
  Histogram& occ_all = occupancy.Add({}, kRows);
  Histogram& prefill_all = prefill.Add({}, kLatency);
  Gauge& queued = state.Add({{"state", "queued"}});
  Gauge& running_requests = state.Add({{"state", "running_requests"}});
  Gauge& running_rows = state.Add({{"state", "running_rows"}});
  Gauge& max_rows = state.Add({{"state", "max_rows"}});
  Gauge& kv_bytes = state.Add({{"state", "kv_cache_bytes"}});
  Gauge& modules = state.Add({{"state", "modules_loaded"}});
};

Metrics::Metrics() : p_(std::make_unique<Impl>()) {}
Metrics::~Metrics() = default;

void Metrics::on_request(const std::string& module, int status) {
  p_->requests.Add({{"module", label(module)}, {"status", std::to_string(status)}}).Increment();
}
void Metrics::on_tokens(const std::string& module, int64_t prompt, int64_t completion) {
  p_->prompt_tokens.Add({{"module", label(module)}}).Increment(double(prompt));
  p_->gen_tokens.Add({{"module", label(module)}}).Increment(double(completion));
}
void Metrics::on_end_to_end(const std::string& module, double s) { p_->e2e.Add({{"module", label(module)}}, kLatency).Observe(s); }
void Metrics::on_step(int64_t rows, int64_t, double s) {
  p_->step_all.Observe(s);
  p_->occ_all.Observe(double(rows));
}
void Metrics::on_prefill(int64_t, int64_t, double s) { p_->prefill_all.Observe(s); }
void Metrics::on_module_apply(const std::string& kind, double s) { p_->apply.Add({{"kind", kind}}, kLatency).Observe(s); }
void Metrics::on_first_token(const Request& r, double s) { p_->ttft.Add({{"module", label(r.module_name())}}, kLatency).Observe(s); }
void Metrics::on_token_gap(const Request&, double s) { p_->itl_all.Observe(s); }

void Metrics::set_engine_state(const EngineStats& s, int64_t modules_loaded) {
  p_->queued.Set(double(s.queued));
  p_->running_requests.Set(double(s.running_requests));
  p_->running_rows.Set(double(s.running_rows));
  p_->max_rows.Set(double(s.max_rows));
  p_->kv_bytes.Set(double(s.kv_cache_bytes));
  p_->modules.Set(double(modules_loaded));
}

std::string Metrics::render() const { return TextSerializer().Serialize(p_->reg->Collect()); }

}  // namespace frozenlm::serve
