// io/config_deepspeed.cpp: DeepSpeed's blocks other than optimizer/scheduler.
//
// Keys, defaults and aliases follow DeepSpeed's own models (deepspeed/runtime/zero/config.py,
// zero/offload_config.py, precision_config.py, monitor/config.py, comm/config.py,
// activation_checkpointing/config.py, swap_tensor/aio_config.py, nebula/constants.py,
// runtime/constants.py) and the config-json reference. Where DeepSpeed drops an "auto" value and
// falls back to its default (DeepSpeedConfigModel in non-strict mode), so do we; the HF Trainer's
// rules for the three hidden-size based ZeRO keys are applied from model.n_embd.
#include "io/detail/config_sections.h"

#include <cctype>

namespace zt::io::detail {
namespace {

const std::vector<Choice> kOffloadDevices = {{"none", int(OffloadDevice::kNone)},
                                             {"cpu", int(OffloadDevice::kCpu)},
                                             {"nvme", int(OffloadDevice::kNvme)}};

// offload_param and offload_optimizer share a struct but not their keys.
void read_offload(const Ctx& ctx, const Node* node, const std::string& path, bool is_param,
                  OffloadConfig& o) {
  MapReader r(ctx, node, path);
  const Node* device = r.take("device");
  if (device != nullptr && !device->is_null() && !is_auto(*device)) {
    if (device->is_scalar() && !device->quoted && (device->text == "hpu" || device->text == "HPU"))
      fail_at(ctx, *device,
              "`" + r.child("device") +
                  ": hpu` is not supported yet (zerotrain offloads to cpu or nvme)");
    o.device =
        static_cast<OffloadDevice>(to_choice(ctx, *device, r.child("device"), kOffloadDevices));
  }
  r.read("nvme_path", o.nvme_path);
  r.read("pin_memory", o.pin_memory);
  r.read("buffer_count", o.buffer_count, kNonNegative);
  if (is_param) {
    r.read("buffer_size", o.buffer_size, kNonNegative);
    r.read("max_in_cpu", o.max_in_cpu, kNonNegative);
  } else {
    r.read("pipeline_read", o.pipeline_read);
    r.read("pipeline_write", o.pipeline_write);
    r.read("fast_init", o.fast_init);
    const Node* ratio = r.take("ratio");
    if (ratio != nullptr && !ratio->is_null() && !is_auto(*ratio)) {
      o.ratio = to_double(ctx, *ratio, r.child("ratio"), 0.0);
      if (o.ratio > 1.0)
        fail(ctx, *ratio, r.child("ratio"), "must be between 0 and 1, got " + ratio->text);
    }
  }
  r.finish();
  if (r.present() && device == nullptr && !r.node()->entries.empty())
    ctx.notice(where(ctx.file, *r.node()) + ": `" + path +
               "` has no `device`: DeepSpeed's default is none, so nothing is offloaded");
  if (o.device == OffloadDevice::kNvme && o.nvme_path.empty())
    fail(ctx, *r.node(), r.child("nvme_path"),
         "offloading to nvme needs `nvme_path` (a directory on the NVMe drive)");
}

}  // namespace

void read_zero(const Ctx& ctx, const Node* node, const ModelConfig& model, ZeroConfig& z) {
  MapReader r(ctx, node, "zero_optimization");
  r.read("stage", z.stage, IntRange{0, 3});
  r.read("contiguous_gradients", z.contiguous_gradients);
  r.read("reduce_scatter", z.reduce_scatter);
  const Given reduce_bucket = r.read("reduce_bucket_size", z.reduce_bucket_size, kNonNegative);
  r.read("use_multi_rank_bucket_allreduce", z.use_multi_rank_bucket_allreduce);
  r.read("allgather_partitions", z.allgather_partitions);
  r.read("allgather_bucket_size", z.allgather_bucket_size, kNonNegative);
  bool overlap = false;
  const Given overlap_given = r.read("overlap_comm", overlap);
  r.read("load_from_fp32_weights", z.load_from_fp32_weights);
  r.not_supported_unless("elastic_checkpoint", "false");

  const Node* offload_param = r.take("offload_param");
  const Node* offload_optimizer = r.take("offload_optimizer");
  read_offload(ctx, offload_param, r.child("offload_param"), true, z.offload_param);
  read_offload(ctx, offload_optimizer, r.child("offload_optimizer"), false, z.offload_optimizer);

  // Deprecated booleans that DeepSpeed turns into offload blocks (new_param_fn in zero/config.py).
  auto deprecated_offload = [&](std::string_view key, const Node* replacement,
                                std::string_view replacement_key, OffloadConfig& target) {
    const Node* n = r.take(key);
    if (n == nullptr || n->is_null() || is_auto(*n)) return false;
    const bool on = to_bool(ctx, *n, r.child(key));
    if (replacement != nullptr)
      fail(ctx, *n, r.child(key),
           "deprecated; cannot be given together with `" + r.child(replacement_key) +
               "` (keep the latter)");
    ctx.notice(where(ctx.file, *n) + ": `" + r.child(key) +
               "` is deprecated in DeepSpeed; read as `" + r.child(replacement_key) +
               ": {device: cpu}`");
    if (on) target.device = OffloadDevice::kCpu;
    return on;
  };
  const bool cpu_offload = deprecated_offload("cpu_offload", offload_optimizer, "offload_optimizer",
                                              z.offload_optimizer);
  const bool cpu_offload_param =
      deprecated_offload("cpu_offload_param", offload_param, "offload_param", z.offload_param);
  if (const Node* pin = r.take("cpu_offload_use_pin_memory");
      pin != nullptr && !pin->is_null() && !is_auto(*pin)) {
    const bool on = to_bool(ctx, *pin, r.child("cpu_offload_use_pin_memory"));
    ctx.notice(where(ctx.file, *pin) + ": `" + r.child("cpu_offload_use_pin_memory") +
               "` is deprecated in DeepSpeed; read as `pin_memory` of the offload that "
               "cpu_offload/cpu_offload_param set");
    if (cpu_offload) z.offload_optimizer.pin_memory = on;
    if (cpu_offload_param) z.offload_param.pin_memory = on;
  }

  r.read("sub_group_size", z.sub_group_size, kNonNegative);
  const Given prefetch = r.read("stage3_prefetch_bucket_size", z.stage3_prefetch_bucket_size,
                                kNonNegative, {{"prefetch_bucket_size", false}});
  const Given persistence =
      r.read("stage3_param_persistence_threshold", z.stage3_param_persistence_threshold,
             kNonNegative, {{"param_persistence_threshold", false}});
  r.read("stage3_model_persistence_threshold", z.stage3_model_persistence_threshold, kNonNegative,
         {{"model_persistence_threshold", false}});
  r.read("stage3_max_live_parameters", z.stage3_max_live_parameters, kNonNegative,
         {{"max_live_parameters", false}});
  r.read("stage3_max_reuse_distance", z.stage3_max_reuse_distance, kNonNegative,
         {{"max_reuse_distance", false}});
  r.read("stage3_gather_16bit_weights_on_model_save", z.stage3_gather_16bit_weights_on_model_save,
         {{"gather_16bit_weights_on_model_save", false},
          {"stage3_gather_fp16_weights_on_model_save", true}});
  r.read("stage3_module_granularity_threshold", z.stage3_module_granularity_threshold, kNonNegative,
         {{"module_granularity_threshold", false}});
  r.read("stage3_use_all_reduce_for_fetch_params", z.stage3_use_all_reduce_for_fetch_params,
         {{"use_all_reduce_for_fetch_params", false}});
  r.read("ignore_unused_parameters", z.ignore_unused_parameters);
  r.read("round_robin_gradients", z.round_robin_gradients);
  r.read("compute_grad_norm", z.compute_grad_norm);
  r.read("parameter_alignment", z.parameter_alignment);
  r.read("log_trace_cache_warnings", z.log_trace_cache_warnings);

  // DeepSpeed features not built in zerotrain yet (ZeRO++, MiCS, ZenFlow, ...).
  r.not_supported_unless("legacy_stage1", "false");
  r.not_supported_unless("zero_hpz_partition_size", "1");
  r.not_supported_unless("zero_quantized_weights", "false");
  r.not_supported_unless("zero_quantized_nontrainable_weights", "false");
  r.not_supported_unless("zero_quantized_gradients", "false");
  r.not_supported_unless("zeropp_loco_param", "null");
  r.not_supported_unless("mics_shard_size", "-1");
  r.not_supported_unless("mics_hierarchical_params_gather", "false");
  r.not_supported_unless("pipeline_loading_checkpoint", "false");
  r.not_supported_unless("save_muon_momentum_buffer_in_memory", "false");
  r.not_supported_unless("zenflow", "null");
  r.no_effect("memory_efficient_linear", "it swaps PyTorch's autograd for nn.Linear");
  r.no_effect("override_module_apply", "it patches PyTorch's nn.Module.apply");
  // DeepSpeed's ZeRO-3 all-gather through AMD MI300 SDMA copy engines (mori), falling back to
  // RCCL/NCCL: a transport choice with the same result (examples/sdma_allgather).
  r.no_effect("sdma_allgather",
              "it routes ZeRO-3's parameter all-gather through AMD SDMA engines; zerotrain "
              "all-gathers through its communicator, with the same result");
  r.no_effect("sdma_allgather_max_numel", "it sizes the SDMA all-gather's transit buffer");
  r.finish();

  // "auto" and absent values that depend on other keys.
  const int64_t hidden = model.n_embd;
  if (reduce_bucket == Given::kAuto) z.reduce_bucket_size = hidden * hidden;  // HF Trainer's rule
  if (z.stage == 3) {
    if (prefetch == Given::kAuto)
      z.stage3_prefetch_bucket_size = static_cast<int64_t>(0.9 * double(hidden * hidden));
    if (persistence == Given::kAuto) z.stage3_param_persistence_threshold = 10 * hidden;
  }
  z.overlap_comm =
      (overlap_given == Given::kValue) ? overlap : (z.stage == 3);  // DeepSpeed's dynamic default

  // Offload needs the stages DeepSpeed documents for it.
  const std::string base = "zero_optimization";
  if (z.offload_param.enabled() && z.stage != 3)
    ctx.notice(where(ctx.file, offload_param ? *offload_param : *r.node()) + ": `" + base +
               ".offload_param` has no effect below ZeRO stage 3 (stage is " +
               std::to_string(z.stage) + ")");
  if (z.offload_optimizer.enabled() && z.stage == 0)
    ctx.notice(where(ctx.file, offload_optimizer ? *offload_optimizer : *r.node()) + ": `" + base +
               ".offload_optimizer` has no effect at ZeRO stage 0");
  if (z.offload_optimizer.device == OffloadDevice::kNvme && z.stage != 3)
    fail(ctx, *offload_optimizer, base + ".offload_optimizer.device",
         "nvme offload of the optimizer needs ZeRO stage 3 (stage is " + std::to_string(z.stage) +
             "); use cpu");
  if (z.offload_optimizer.ratio < 1.0 && z.stage != 3)
    fail(ctx, *offload_optimizer, base + ".offload_optimizer.ratio",
         "partial offload (ratio < 1) needs ZeRO stage 3");
}

void read_fp16(const Ctx& ctx, const Node* node, Fp16Config& f) {
  MapReader r(ctx, node, "fp16");
  r.read("enabled", f.enabled);
  r.not_supported_unless("auto_cast", "false");
  r.read("loss_scale", f.loss_scale, 0.0);
  r.read("initial_scale_power", f.initial_scale_power, IntRange{0, 127});
  r.read("loss_scale_window", f.loss_scale_window, kPositive);
  r.read("hysteresis", f.hysteresis, kPositive);
  r.read("consecutive_hysteresis", f.consecutive_hysteresis);
  r.read("min_loss_scale", f.min_loss_scale, 0.0);
  r.not_supported_unless("fp16_master_weights_and_grads", "false");
  // Apex AMP's level written into the fp16 block (BELLE's run_config): DeepSpeed reads opt_level
  // only from `amp`, so its fp16 mode ignored it here (current DeepSpeed rejects it).
  r.no_effect(
      "opt_level",
      "NVIDIA Apex AMP's setting, which DeepSpeed reads only from the `amp` block; its fp16 "
      "mode, which zerotrain follows, ignores it");
  r.finish();
}

void read_bf16(const Ctx& ctx, const Node* node, const std::string& path, Bf16Config& b) {
  MapReader r(ctx, node, path);
  r.read("enabled", b.enabled);
  r.read("immediate_grad_update", b.immediate_grad_update);
  r.read("check_grad_overflow", b.check_grad_overflow);
  r.not_supported_unless("bf16_master_weights_and_grads", "false");
  r.not_supported_unless("bf16_optimizer_states", "false");
  // Configs often copy the fp16 block into bf16 (LLaMA-Factory's ALST config). DeepSpeed before
  // its pydantic bf16 model read only `enabled` and ignored them; bf16 has no loss scaling, so
  // they are checked for their type and said to have no effect.
  r.not_supported_unless("auto_cast", "false");
  Fp16Config unused;
  std::string given;
  auto scaling = [&](std::string_view key, auto& field, auto range) {
    if (r.read(key, field, range) != Given::kAbsent)
      given += (given.empty() ? "" : ", ") + std::string(key);
  };
  scaling("loss_scale", unused.loss_scale, 0.0);
  scaling("initial_scale_power", unused.initial_scale_power, IntRange{0, 127});
  scaling("loss_scale_window", unused.loss_scale_window, kPositive);
  scaling("hysteresis", unused.hysteresis, kPositive);
  scaling("min_loss_scale", unused.min_loss_scale, 0.0);
  if (r.read("consecutive_hysteresis", unused.consecutive_hysteresis) != Given::kAbsent)
    given += (given.empty() ? "" : ", ") + std::string("consecutive_hysteresis");
  r.finish();
  if (!given.empty())
    ctx.notice(where(ctx.file, *r.node()) + ": `" + path + "` " + given +
               ": no effect: these tune fp16's loss scaling, and bf16 trains without one (older "
               "DeepSpeed ignored them here; current DeepSpeed rejects them in bf16)");
}

void read_flops_profiler(const Ctx& ctx, const Node* node) {
  // DeepSpeed's profiling/config.py keys. Profiling does not change training, so an enabled
  // profiler is accepted with a notice rather than refused.
  MapReader r(ctx, node, "flops_profiler");
  bool enabled = false, detailed = true;
  double recompute_fwd_factor = 0.0;
  int64_t profile_step = 1, module_depth = -1, top_modules = 1;
  std::string output_file;
  r.read("enabled", enabled);
  r.read("recompute_fwd_factor", recompute_fwd_factor, 0.0);
  // Any integer, as DeepSpeed reads it (get_scalar_param, no check): the profiler runs at the
  // step equal to it, so a value no step reaches (Megatron-DeepSpeed's -1) never profiles.
  r.read("profile_step", profile_step);
  r.read("module_depth", module_depth, IntRange{-1});
  r.read("top_modules", top_modules, kNonNegative);
  r.read("detailed", detailed);
  r.read("output_file", output_file);
  r.finish();
  if (enabled)
    ctx.notice(where(ctx.file, *r.node()) +
               ": `flops_profiler` has no effect in zerotrain (it has no FLOPs profiler; the step "
               "log reports tokens/s, and `--trace FILE` or `wall_clock_breakdown` time the step)");
}

void read_fp8(const Ctx& ctx, const Node* node) {
  // Not a DeepSpeed key (DeepSpeed ignores it): HF accelerate reads it for Transformer Engine
  // FP8 training (LLaMA-Factory's ds_z3_fp8_config.json). Enabled, it asks for FP8 matmuls.
  if (node == nullptr || node->is_null()) return;
  if (!node->is_map()) fail(ctx, *node, "fp8", "expected a mapping, got " + describe(*node));
  const Node* enabled = node->find("enabled");
  if (enabled != nullptr && !enabled->is_null() && !is_auto(*enabled) &&
      to_bool(ctx, *enabled, "fp8.enabled"))
    fail_at(ctx, *enabled,
            "`fp8` is not supported yet (FP8 training; zerotrain trains in fp32, fp16 or bf16): "
            "remove the block or set `fp8.enabled: false`");
  ctx.notice(where(ctx.file, *node) +
             ": `fp8` (HF accelerate's FP8 settings, which DeepSpeed ignores) is disabled; "
             "ignored");
}

void read_file_monitor(const Ctx& ctx, const Node* node, const std::string& path,
                       FileMonitorConfig& m) {
  MapReader r(ctx, node, path);
  r.read("enabled", m.enabled);
  r.read("output_path", m.output_path);
  r.read("job_name", m.job_name);
  r.finish();
}

void read_wandb(const Ctx& ctx, const Node* node, WandbConfig& w) {
  MapReader r(ctx, node, "wandb");
  const Node* enabled = r.take("enabled");
  if (enabled != nullptr && !enabled->is_null() && !is_auto(*enabled))
    w.enabled = to_bool(ctx, *enabled, "wandb.enabled");
  r.read("group", w.group);
  r.read("team", w.team);
  r.read("project", w.project);
  r.finish();
  if (w.enabled)
    fail_at(ctx, *enabled,
            "`wandb` is not supported yet (zerotrain logs to csv_monitor and tensorboard)");
}

void read_activation_checkpointing(const Ctx& ctx, const Node* node,
                                   ActivationCheckpointingConfig& a) {
  MapReader r(ctx, node, "activation_checkpointing");
  r.read("partition_activations", a.partition_activations);
  r.read("cpu_checkpointing", a.cpu_checkpointing);
  r.read("contiguous_memory_optimization", a.contiguous_memory_optimization);
  int64_t n = 0;
  if (r.read("number_checkpoints", n, kPositive) == Given::kValue) a.number_checkpoints = n;
  r.read("synchronize_checkpoint_boundary", a.synchronize_checkpoint_boundary);
  r.read("profile", a.profile);
  r.finish();
}

void read_comms_logger(const Ctx& ctx, const Node* node, CommsLoggerConfig& c) {
  MapReader r(ctx, node, "comms_logger");
  r.read("enabled", c.enabled);
  r.read("verbose", c.verbose);
  r.read("prof_all", c.prof_all);
  r.read("debug", c.debug);
  if (const Node* ops = r.take("prof_ops"); ops != nullptr && !ops->is_null()) {
    if (!ops->is_sequence())
      fail(ctx, *ops, "comms_logger.prof_ops",
           "expected a list of operation names, got " + describe(*ops));
    c.prof_ops.clear();
    for (size_t i = 0; i < ops->items.size(); ++i)
      c.prof_ops.push_back(
          to_string_value(ctx, ops->items[i], "comms_logger.prof_ops[" + std::to_string(i) + "]"));
  }
  r.finish();
}

void read_aio(const Ctx& ctx, const Node* node, AioConfig& a) {
  MapReader r(ctx, node, "aio");
  r.read("block_size", a.block_size, kPositive);
  r.read("queue_depth", a.queue_depth, kPositive);
  r.read("thread_count", a.thread_count, kPositive, {{"intra_op_parallelism", false}});
  r.read("single_submit", a.single_submit);
  r.read("overlap_events", a.overlap_events);
  r.not_supported_unless("use_gds", "false");
  r.finish();
}

void read_nebula(const Ctx& ctx, const Node* node, const std::string& path, NebulaConfig& n) {
  MapReader r(ctx, node, path);
  r.read("enabled", n.enabled);
  r.read("persistent_storage_path", n.persistent_storage_path);
  // 0: persist every save (DeepSpeed reads any integer; negative makes no sense).
  r.read("persistent_time_interval", n.persistent_time_interval, kNonNegative);
  r.read("num_of_version_in_retention", n.num_of_version_in_retention, kPositive);
  r.read("enable_nebula_load", n.enable_nebula_load);
  r.read("load_path", n.load_path, {{"nebula_load_path", false}});
  r.finish();
  if (n.enabled && n.persistent_storage_path.empty())
    fail(ctx, *r.node(), r.child("persistent_storage_path"),
         "an enabled nebula needs a persistent_storage_path");
}

void read_timers(const Ctx& ctx, const Node* node, TimersConfig& t) {
  MapReader r(ctx, node, "timers");
  MapReader throughput(ctx, r.take("throughput"), "timers.throughput");
  throughput.read("enabled", t.throughput_enabled);
  throughput.read("synchronized", t.throughput_synchronized);
  throughput.finish();
  r.finish();
}

void read_data_types(const Ctx& ctx, const Node* node, DataTypesConfig& d) {
  MapReader r(ctx, node, "data_types");
  r.read_choice("grad_accum_dtype", d.grad_accum_dtype, kDTypeChoices);
  r.not_supported_unless("param_dtype", "null");
  r.not_supported_unless("buffer_dtype", "null");
  r.finish();
}

void read_checkpoint(const Ctx& ctx, const Node* node, CheckpointConfig& c) {
  MapReader r(ctx, node, "checkpoint");
  // zerotrain's checkpoint store
  r.read("dir", c.dir);
  r.read("interval", c.interval, kNonNegative);
  r.read("keep", c.keep, kPositive);
  r.read("async", c.async);
  r.read("resume", c.resume);
  // DeepSpeed's keys (runtime/constants.py, model_checkpointing/config.py)
  r.read_choice("tag_validation", c.tag_validation,
                {{"Ignore", int(TagValidation::kIgnore)},
                 {"Warn", int(TagValidation::kWarn)},
                 {"Fail", int(TagValidation::kFail)}});
  r.read("load_universal", c.load_universal);
  r.read("use_node_local_storage", c.use_node_local_storage);
  MapReader parallel_write(ctx, r.take("parallel_write"), "checkpoint.parallel_write");
  parallel_write.read("pipeline_stage", c.parallel_write_pipeline_stage);
  parallel_write.finish();
  r.not_supported_unless("serialization", "true");
  r.not_supported_unless("writer", "null");
  r.finish();
  // An empty dir means "no checkpoints" (the default).
}

}  // namespace zt::io::detail
