// frozenlm info: a model's architecture, size and identity, or a trained module's size and measured overhead.
#include <chrono>
#include <cstdio>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/cli_common.h"
#include "core/loader.h"
#include "core/torch_pch.h"
#include "modules/prompt_tuning.h"
#include "modules/trainable_module.h"

namespace frozenlm::cli {
namespace {
using nlohmann::json;

// A module's size and its measured inference-time overhead: the frozen LM's forward on a batch of 4 × 128 random
// tokens alone vs with the module (the module's own work plus the longer sequence), best of 5 after a warm-up.
json module_info(const FrozenLM& lm, const std::string& dir) {
  auto module = load_module(dir, lm);
  at::NoGradGuard ng;
  const int64_t B = 4, T = std::min<int64_t>(128, lm.config().max_seq_len - module->prefix_length());
  at::Tensor ids = at::randint(0, lm.vocab_size(), {B, T}, at::kLong);
  auto best_of = [](const std::function<void()>& f) {
    f();
    double best = 1e30;
    for (int r = 0; r < 5; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      f();
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return best;
  };
  ForwardInput plain;
  plain.ids = ids;
  const double t_lm = best_of([&] { lm.forward(plain); });
  const double t_apply = best_of([&] { module->apply(lm, module_input(lm, ids)); });
  const double t_total = best_of([&] { module_forward_logits(lm, *module, module_input(lm, ids)); });
  const int64_t n = module->num_parameters();
  return {{"module", dir}, {"kind", module->kind()}, {"trainable_parameters", n},
          {"percent_of_lm", 100.0 * n / lm.num_parameters()}, {"prefix_positions", module->prefix_length()},
          {"timing_batch", {B, T}}, {"lm_forward_s", t_lm}, {"module_apply_s", t_apply}, {"lm_with_module_s", t_total},
          {"module_overhead_percent", 100.0 * t_apply / t_lm}, {"total_overhead_percent", 100.0 * (t_total - t_lm) / t_lm}};
}

int cmd_info(const ModelArgs& a, bool as_json, const std::string& module_dir) {
  auto lm = open_model(a);
  if (!module_dir.empty()) {
    json m = module_info(*lm, module_dir);
    if (as_json) {
      std::cout << m.dump(2) << "\n";
    } else {
      std::printf("module       %s (%s), %d prefix positions\n", module_dir.c_str(), m["kind"].get<std::string>().c_str(), m["prefix_positions"].get<int>());
      std::printf("parameters   %lld trainable = %.4f%% of the frozen LM's %lld\n", m["trainable_parameters"].get<long long>(),
                  m["percent_of_lm"].get<double>(), (long long)lm->num_parameters());
      std::printf("time         batch 4 x %d: LM forward %.2f ms; module %.2f ms (%.1f%%); LM + module %.2f ms (+%.1f%%)\n",
                  m["timing_batch"][1].get<int>(), 1e3 * m["lm_forward_s"].get<double>(), 1e3 * m["module_apply_s"].get<double>(),
                  m["module_overhead_percent"].get<double>(), 1e3 * m["lm_with_module_s"].get<double>(), m["total_overhead_percent"].get<double>());
    }
    return 0;
  }
  const ModelConfig& c = lm->config();
  const int64_t params = lm->num_parameters();
  json j = {{"model", a.model},
            {"family", c.family},
            {"model_type", c.model_type},
            {"vocab_size", c.vocab_size},
            {"dim", c.dim},
            {"n_layers", c.n_layers},
            {"n_heads", c.n_heads},
            {"n_kv_heads", c.n_kv_heads},
            {"head_dim", c.head_dim},
            {"ffn_dim", c.ffn_dim},
            {"max_seq_len", c.max_seq_len},
            {"norm", c.norm == NormKind::RMSNorm ? "rmsnorm" : "layernorm"},
            {"positions", c.rope ? "rope" : "learned"},
            {"rope_theta", c.rope_theta},
            {"rope_scaling", c.rope_scaling.type.empty() ? "none" : c.rope_scaling.type},
            {"tied_embeddings", c.tied_embeddings},
            {"parameters", params},
            {"weights", weight_format_name(lm->weight_format())},
            {"weight_bytes", lm->weight_bytes()},
            {"compute_dtype", "f32"},
            {"device", lm->device().str()},
            {"bos_id", c.bos_id},
            {"eos_ids", c.eos_ids},
            {"weights_hash", lm->weights_hash()},
            {"checkpoint_id", lm->checkpoint_id()},
            {"default_prompt_lr", default_prompt_lr(*lm)}};
  if (as_json) {
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  std::printf("model        %s\n", a.model.c_str());
  std::printf("architecture %s (%s): %lld layers, d=%lld, %lld heads / %lld KV heads (head_dim %lld), FFN %lld\n",
              c.family.c_str(), c.model_type.c_str(), (long long)c.n_layers, (long long)c.dim, (long long)c.n_heads,
              (long long)c.n_kv_heads, (long long)c.head_dim, (long long)c.ffn_dim);
  std::printf("             %s, %s positions%s, %s embeddings, vocab %lld, context %lld\n",
              c.norm == NormKind::RMSNorm ? "RMSNorm" : "LayerNorm", c.rope ? "rotary" : "learned",
              c.rope ? (" (theta " + std::to_string((long long)c.rope_theta) + (c.rope_scaling.type.empty() ? "" : ", " + c.rope_scaling.type + " scaling") + ")").c_str() : "",
              c.tied_embeddings ? "tied" : "untied", (long long)c.vocab_size, (long long)c.max_seq_len);
  std::printf("parameters   %lld (%.3f M)\n", (long long)params, params / 1e6);
  std::printf("weights      %s storage, fp32 compute, %s in memory, on %s\n", weight_format_name(lm->weight_format()),
              human_bytes(lm->weight_bytes()).c_str(), lm->device().str().c_str());
  std::printf("identity     checkpoint %s, stored weights hash %s\n", lm->checkpoint_id().c_str(), lm->weights_hash().c_str());
  std::printf("prompt lr    %g by default for prompt tuning and ID-PT (0.6 × the token embeddings' RMS)\n", default_prompt_lr(*lm));
  return 0;
}

}  // namespace

void add_info_command(CLI::App& app, Commands& cmds) {
  struct Args {
    ModelArgs model;
    bool json = false;
    std::string module_dir;
  };
  auto a = std::make_shared<Args>();
  auto* info = app.add_subcommand("info", "Architecture, parameter count, storage and memory of a model");
  add_model_args(info, a->model, false);
  info->add_flag("--json", a->json, "print JSON");
  info->add_option("--module", a->module_dir, "report a trained module instead: trainable parameters (and % of the LM), measured time overhead");
  cmds.add(info, [a] { return cmd_info(a->model, a->json, a->module_dir); });
}

}  // namespace frozenlm::cli
