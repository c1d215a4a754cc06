// zero/settings.cpp: config -> engine settings, and the "not supported yet" gate.
#include "zero/settings.h"

#include "zero/onebit.h"

#include "core/cuda/device.h"
#include "core/error.h"

namespace zt::zero {
namespace {
[[noreturn]] void not_yet(const std::string& key, const std::string& what) {
  throw ConfigError("config key `" + key + "`: " + what + " is not supported yet");
}

DType dtype_of(io::DTypeName d, DType fallback) {
  switch (d) {
    case io::DTypeName::kFp32: return DType::f32;
    case io::DTypeName::kFp16: return DType::f16;
    case io::DTypeName::kBf16: return DType::bf16;
    case io::DTypeName::kDefault: break;
  }
  return fallback;
}
DType weights_dtype(const io::Config& c) {
  return c.fp16.enabled ? DType::f16 : c.bf16.enabled ? DType::bf16 : DType::f32;
}

// The dtype gradients are reduced (communicated) in, and stored in after the reduction: f32, or
// the weights' 16-bit type when data_types.grad_accum_dtype says so (the window's gradient still
// accumulates in f32 and is rounded once, at its reduction: zero/engine.cpp, launch_bucket).
// DeepSpeed's communication_data_type names that dtype: the same value changes nothing; the
// weights' 16-bit type with fp32 accumulation makes the reduction 16-bit (as DeepSpeed casts the
// gradients to it around its reduction; here the reduced partition then stays 16-bit, which holds
// the same values). Other combinations are refused by check_supported. `why`: set when refused.
DType gradient_dtype(const io::Config& c, std::string* why = nullptr) {
  const DType w = weights_dtype(c);
  const io::DTypeName g = c.data_types.grad_accum_dtype;
  const DType accum = (w != DType::f32 && (g == io::DTypeName::kFp16 || g == io::DTypeName::kBf16))
                          ? w : DType::f32;
  const DType comm = dtype_of(c.comm.communication_data_type, accum);
  if (comm == accum) return accum;
  if (accum == DType::f32 && comm == w) return w;
  if (why)
    *why = std::string(dtype_name(comm)) + " communication of " + dtype_name(accum) +
           " gradients with " + dtype_name(w) + " weights (zerotrain reduces gradients in fp32 or "
           "in the weights' 16-bit type)";
  return accum;
}
}  // namespace

// What device: auto / cuda cannot run yet (nullptr: nothing), named by its config key.
const char* not_on_cuda(const io::Config& c) {
  if (c.zero.stage == 3) return "zero_optimization.stage 3";
  if (c.zero.offload_optimizer.enabled()) return "zero_optimization.offload_optimizer";
  if (c.zero.offload_param.enabled()) return "zero_optimization.offload_param";
  return nullptr;
}

Device resolve_device(const io::Config& c, int local_rank) {
  const int n = cuda::device_count();
  if (c.device == io::Device::kCpu || n == 0 || (c.device == io::Device::kAuto && not_on_cuda(c)))
    return Device::cpu();  // (device: cuda without a GPU was refused by check_supported)
  // CUDA_VISIBLE_DEVICES is the runtime's: n counts the visible GPUs, numbered from 0.
  return Device::cuda(local_rank % n);
}

void check_supported(const io::Config& c) {
  ZT_ASSERT(c.world_size > 0, "check_supported before resolve_batch_sizes");
  if (c.zero.stage > 3)
    throw ConfigError("config key `zero_optimization.stage`: " + std::to_string(c.zero.stage) +
                      " is not a ZeRO stage (0, 1, 2 or 3)");
  if (c.zero.offload_param.enabled() && c.zero.stage < 3)
    throw ConfigError("config key `zero_optimization.offload_param`: parameter offload needs ZeRO "
                      "stage 3 (parameters are partitioned only there), but stage is " +
                      std::to_string(c.zero.stage) + "; set zero_optimization.stage: 3 or remove it");
  if (c.zero.stage >= 1 && c.zero.stage <= 2 && c.zero.reduce_bucket_size == 0)
    throw ConfigError("config key `zero_optimization.reduce_bucket_size`: 0 elements per bucket at "
                      "stage " + std::to_string(c.zero.stage) + "; set a positive size (DeepSpeed's "
                      "default is 5e8)");
  if (c.zero.stage == 3) {
    if (c.zero.stage3_use_all_reduce_for_fetch_params)
      not_yet("zero_optimization.stage3_use_all_reduce_for_fetch_params",
              "fetching parameters with an all-reduce");
    if (!c.zero.reduce_scatter)
      throw ConfigError("config key `zero_optimization.reduce_scatter`: false asks for all-reduced "
                        "gradients, but stage 3 always reduce-scatters them into the partitions; "
                        "remove the key or use stage 2");
  }
  if (c.fp16.enabled && c.bf16.enabled)
    throw ConfigError("config keys `fp16.enabled` and `bf16.enabled`: both are true; choose one");
  if (c.bf16.immediate_grad_update) not_yet("bf16.immediate_grad_update", "immediate gradient updates");
  if (c.zero.offload_optimizer.enabled()) {
    if (c.zero.stage == 0)
      throw ConfigError("config key `zero_optimization.offload_optimizer`: optimizer offload moves "
                        "this rank's partition of the optimizer state, which needs ZeRO stage 1, 2 "
                        "or 3; stage is 0");
    if (c.optimizer.type != io::OptimizerType::kAdam && c.optimizer.type != io::OptimizerType::kAdamW)
      throw ConfigError(std::string("config key `zero_optimization.offload_optimizer`: the offloaded "
                                    "step is Adam/AdamW (DeepSpeedCPUAdam), but optimizer.type is ") +
                        io::to_string(c.optimizer.type));
    (void)offload_options(c, 0);  // its own ConfigErrors (ratio, buffer_count, sub_group_size)
  }
  if (c.zero.offload_param.device == io::OffloadDevice::kNvme && c.zero.offload_param.nvme_path.empty())
    throw ConfigError("config key `zero_optimization.offload_param.nvme_path`: device nvme needs a "
                      "folder on the drive for the parameter swap files");
  // Every optimizer type is built; the 1-bit family has its own limits (zero/onebit.h).
  check_onebit_supported(c);
  // Every DeepSpeed schedule is built (optim::make_scheduler); the engine applies OneCycle's
  // momentum (LRScheduler::momentum_at) to the optimizer's beta1 before each step.
  if (c.scheduler.last_batch_iteration != -1)
    not_yet("scheduler.params.last_batch_iteration", "starting a schedule mid-way");
  if (c.comms_logger.debug) not_yet("comms_logger.debug", "the comms logger's debug mode");
  // nebula_config: asynchronous persistence to persistent_storage_path (apps/zerotrain/train.cpp,
  // zero/checkpoint.cpp). checkpoint.dir is then only where enable_nebula_load: false resumes from.
  if (c.nebula.enabled && c.nebula.enable_nebula_load && !c.checkpoint.dir.empty() &&
      c.checkpoint.dir != c.nebula.persistent_storage_path)
    throw ConfigError("config key `checkpoint.dir`: with nebula_config.enabled, checkpoints are "
                      "saved to nebula_config.persistent_storage_path and resumed from its "
                      "load_path; leave checkpoint.dir empty, or set "
                      "nebula_config.enable_nebula_load: false to resume from checkpoint.dir");
  // Activation checkpointing (nn::GPTConfig::checkpoint_activations): model.checkpoint_activations
  // turns it on, the activation_checkpointing block tunes it (as in DeepSpeed, where the block
  // configures the checkpointing library and the model decides to call it).
  if (c.model.checkpoint_activations) {
    const io::ActivationCheckpointingConfig& a = c.activation_checkpointing;
    if (a.number_checkpoints && *a.number_checkpoints > c.model.n_layer)
      throw ConfigError("config key `activation_checkpointing.number_checkpoints`: " +
                        std::to_string(*a.number_checkpoints) + " checkpoints for " +
                        std::to_string(c.model.n_layer) +
                        " blocks (model.n_layer); set at most n_layer (one block per checkpoint)");
    if (a.profile) not_yet("activation_checkpointing.profile", "timing the checkpointed blocks");
  }
  if (c.model.dropout != 0.0) not_yet("model.dropout", "dropout");
  if (c.device == io::Device::kCuda) {
    // The first thing a GPU run needs: a GPU. A CPU-only build or a machine without one gets this
    // line, not a CUDA error from deep inside the first allocation.
    if (cuda::device_count() == 0)
      throw ConfigError("config key `device`: cuda, but " +
                        (cuda::device_summary() == "built without CUDA"
                             ? std::string("this zerotrain was built without CUDA (rebuild with "
                                           "-DZT_CUDA=ON)")
                             : cuda::device_summary()) +
                        "; set device: cpu (or auto, which picks the CPU when there is no GPU)");
    if (const char* why = not_on_cuda(c))
      throw ConfigError(std::string("config key `device`: cuda with ") + why +
                        " is not yet on CUDA (ZeRO stages 0, 1 and 2 are); set device: cpu");
  }
  if (c.checkpoint.load_universal) not_yet("checkpoint.load_universal", "universal checkpoints");
  if (c.checkpoint.use_node_local_storage)
    not_yet("checkpoint.use_node_local_storage", "node-local checkpoint storage");
  if (c.checkpoint.parallel_write_pipeline_stage)
    not_yet("checkpoint.parallel_write.pipeline_stage", "pipeline-parallel checkpoint writing");
  {
    std::string why;
    (void)gradient_dtype(c, &why);
    if (!why.empty()) not_yet("communication_data_type", why);
    if (c.zero.stage == 2 && !c.zero.reduce_scatter && gradient_dtype(c) != DType::f32 &&
        c.data_types.grad_accum_dtype != io::DTypeName::kFp16 &&
        c.data_types.grad_accum_dtype != io::DTypeName::kBf16)
      not_yet("zero_optimization.reduce_scatter",
              "reduce_scatter: false with 16-bit communication_data_type");
  }
  {
    io::DTypeName g = c.data_types.grad_accum_dtype;
    bool f16_ok = g == io::DTypeName::kFp16 && c.fp16.enabled;
    bool bf16_ok = g == io::DTypeName::kBf16 && c.bf16.enabled;
    if (g != io::DTypeName::kDefault && g != io::DTypeName::kFp32 && !f16_ok && !bf16_ok)
      not_yet("data_types.grad_accum_dtype",
              std::string("gradients in ") + io::to_string(g) + " with weights in " +
                  (c.fp16.enabled ? "fp16" : c.bf16.enabled ? "bf16" : "fp32"));
    if ((f16_ok || bf16_ok) && c.zero.stage == 2 && !c.zero.reduce_scatter)
      not_yet("zero_optimization.reduce_scatter", "reduce_scatter: false with 16-bit gradients");
  }
}

std::vector<std::string> config_notices(const io::Config& c) {
  std::vector<std::string> out;
  if (c.device == io::Device::kAuto && cuda::device_count() > 0)
    if (const char* why = not_on_cuda(c))
      out.push_back(std::string("device: auto runs on the CPU although a GPU is visible: ") + why +
                    " is not yet on CUDA");
  onebit_notices(c, out);  // 1-bit optimizers: cuda_aware, comm_backend_name (zero/onebit.h)
  if (c.zero.offload_param.device == io::OffloadDevice::kNvme) {
    const io::OffloadConfig d{io::OffloadDevice::kNone, "", false, 5};
    const io::OffloadConfig& p = c.zero.offload_param;
    if (p.buffer_count != d.buffer_count || p.buffer_size != d.buffer_size ||
        p.max_in_cpu != d.max_in_cpu || p.pin_memory)
      out.push_back(
          "zero_optimization.offload_param.buffer_count / buffer_size / max_in_cpu / pin_memory: "
          "no effect: each unit's piece is read from the swap file into the stage-3 pool, whose "
          "size stage3_prefetch_bucket_size and stage3_max_live_parameters bound");
  }
  if (c.zero.offload_param.enabled() && c.zero.offload_param.device == io::OffloadDevice::kCpu)
    out.push_back(
        "zero_optimization.offload_param: device cpu: on the CPU backend the stage-3 parameter "
        "partitions are in host memory already (each unit is gathered from them for use)");
  if (c.zero.stage == 3) {
    const io::ZeroConfig d;
    if (c.zero.allgather_bucket_size != d.allgather_bucket_size ||
        c.zero.allgather_partitions != d.allgather_partitions)
      out.push_back(
          "zero_optimization.allgather_bucket_size / allgather_partitions: no effect at stage 3, "
          "which gathers each unit's parameters before use (stage3_prefetch_bucket_size sets how "
          "much is gathered ahead)");
    if (c.zero.stage3_gather_16bit_weights_on_model_save)
      out.push_back(
          "zero_optimization.stage3_gather_16bit_weights_on_model_save: the checkpoint shards hold "
          "every weight at any stage; `zerotrain ckpt consolidate DIR --dtype bf16|f16 --out "
          "model.safetensors` gathers them into one 16-bit file (DeepSpeed's save_16bit_model)");
    if (c.zero.reduce_bucket_size != d.reduce_bucket_size)
      out.push_back(
          "zero_optimization.reduce_bucket_size: no effect at stage 3: each unit's gradient is "
          "reduce-scattered as one collective right after the unit's backward");
    if (c.zero.stage3_module_granularity_threshold != d.stage3_module_granularity_threshold)
      out.push_back(
          "zero_optimization.stage3_module_granularity_threshold: no effect: zerotrain already "
          "fetches whole units (embeddings, each block, the head), one collective each");
  } else {
    const io::ZeroConfig d;
    if (c.zero.stage3_prefetch_bucket_size != d.stage3_prefetch_bucket_size ||
        c.zero.stage3_param_persistence_threshold != d.stage3_param_persistence_threshold ||
        c.zero.stage3_max_live_parameters != d.stage3_max_live_parameters ||
        c.zero.stage3_max_reuse_distance != d.stage3_max_reuse_distance)
      out.push_back("zero_optimization.stage3_*: no effect at stage " + std::to_string(c.zero.stage) +
                    " (they tune stage 3's parameter gathering)");
  }
  const io::ActivationCheckpointingConfig& a = c.activation_checkpointing;
  if (!c.model.checkpoint_activations) {
    if (a != io::ActivationCheckpointingConfig{})
      out.push_back(
          "activation_checkpointing: no effect while model.checkpoint_activations is false (set it "
          "to true to recompute the blocks in backward)");
    return out;
  }
  if (a.partition_activations)
    out.push_back(
        "activation_checkpointing.partition_activations: no effect: it splits the saved "
        "activations across model-parallel ranks, and zerotrain has no model parallelism");
  if (a.cpu_checkpointing)
    out.push_back(
        "activation_checkpointing.cpu_checkpointing: no effect on the CPU backend: the saved block "
        "inputs are in host memory already (on CUDA it will keep them in host memory)");
  if (a.contiguous_memory_optimization)
    out.push_back(
        "activation_checkpointing.contiguous_memory_optimization: always on: the saved block "
        "inputs share one contiguous buffer");
  if (a.synchronize_checkpoint_boundary)
    out.push_back(
        "activation_checkpointing.synchronize_checkpoint_boundary: no effect on the CPU backend "
        "(nothing runs asynchronously to wait for)");
  return out;
}

EngineSettings engine_settings(const io::Config& c) {
  EngineSettings s;
  s.micro_batch = c.train_micro_batch_size_per_gpu.value();
  s.gradient_accumulation_steps = c.gradient_accumulation_steps.value();
  s.gradient_clipping = c.gradient_clipping;
  s.zero_stage = c.zero.stage;
  if (c.fp16.enabled) s.model_dtype = DType::f16;
  if (c.bf16.enabled) s.model_dtype = DType::bf16;
  s.loss_scaler.loss_scale = c.fp16.loss_scale;
  s.loss_scaler.initial_scale_power = c.fp16.initial_scale_power;
  s.loss_scaler.loss_scale_window = c.fp16.loss_scale_window;
  s.loss_scaler.hysteresis = c.fp16.hysteresis;
  s.loss_scaler.consecutive_hysteresis = c.fp16.consecutive_hysteresis;
  s.loss_scaler.min_loss_scale = c.fp16.min_loss_scale;
  s.skip_nonfinite = c.bf16.enabled && c.bf16.check_grad_overflow;
  s.grad_dtype = gradient_dtype(c);  // data_types.grad_accum_dtype, communication_data_type
  s.reduce_bucket_size = c.zero.reduce_bucket_size;
  s.overlap_comm = c.zero.overlap_comm;
  s.reduce_scatter = c.zero.reduce_scatter;
  s.allgather_partitions = c.zero.allgather_partitions;
  s.allgather_bucket_size = c.zero.allgather_bucket_size;
  if (c.zero.offload_optimizer.enabled()) s.offload_optimizer = offload_options(c, 0);  // rank: engine
  if (c.zero.offload_param.device == io::OffloadDevice::kNvme) {
    s.offload_param_nvme_path = c.zero.offload_param.nvme_path;
    s.param_aio = c.aio;
  }
  s.stage3_prefetch_bucket_size = c.zero.stage3_prefetch_bucket_size;
  s.stage3_max_live_parameters = c.zero.stage3_max_live_parameters;
  s.stage3_max_reuse_distance = c.zero.stage3_max_reuse_distance;
  s.stage3_param_persistence_threshold = c.zero.stage3_param_persistence_threshold;
  s.stage3_model_persistence_threshold = c.zero.stage3_model_persistence_threshold;
  const io::OptimizerConfig& o = c.optimizer;
  s.adam.beta1 = static_cast<float>(o.beta1);
  s.adam.beta2 = static_cast<float>(o.beta2);
  s.adam.eps = static_cast<float>(o.eps);
  s.adam.weight_decay = static_cast<float>(o.weight_decay);
  s.adam.bias_correction = o.bias_correction;
  // DeepSpeed: type AdamW always decouples; type Adam decouples unless adam_w_mode is false.
  s.adam.adam_w_mode = o.type == io::OptimizerType::kAdamW ? true : o.adam_w_mode;
  if (o.type == io::OptimizerType::kLamb) {
    s.optimizer_kind = optim::OptimizerKind::lamb;
    s.lamb.beta1 = static_cast<float>(o.beta1);
    s.lamb.beta2 = static_cast<float>(o.beta2);
    s.lamb.eps = static_cast<float>(o.eps);
    s.lamb.weight_decay = static_cast<float>(o.weight_decay);
    s.lamb.bias_correction = o.bias_correction;
    s.lamb.max_coeff = static_cast<float>(o.max_coeff);
    s.lamb.min_coeff = static_cast<float>(o.min_coeff);
    s.lamb.eps_inside_sqrt = o.eps_inside_sqrt;
  }
  onebit_settings(c, s);  // OneBitAdam, ZeroOneAdam, OneBitLamb (zero/onebit.h)
  // The schedule: io's SchedulerConfig -> optim's SchedulerParams -> optim::make_scheduler.
  const io::SchedulerConfig& sc = c.scheduler;
  const optim::WarmupType warmup_type =
      sc.warmup_type == io::WarmupType::kLog ? optim::WarmupType::log : optim::WarmupType::linear;
  optim::SchedulerParams sp;
  sp.lr = o.lr;
  sp.warmup = {.warmup_min_lr = sc.warmup_min_lr,
               .warmup_max_lr = sc.warmup_max_lr,
               .warmup_num_steps = sc.warmup_num_steps,
               .warmup_type = warmup_type};
  sp.total_num_steps = sc.total_num_steps > 0 ? sc.total_num_steps : c.training.steps;
  sp.cosine = {.warmup_min_ratio = sc.warmup_min_ratio,
               .warmup_num_steps = sc.warmup_num_steps,
               .cos_min_ratio = sc.cos_min_ratio,
               .warmup_type = warmup_type};
  sp.range_test = {.lr_range_test_min_lr = sc.lr_range_test_min_lr,
                   .lr_range_test_step_size = sc.lr_range_test_step_size,
                   .lr_range_test_step_rate = sc.lr_range_test_step_rate,
                   .lr_range_test_staircase = sc.lr_range_test_staircase};
  sp.one_cycle = {.cycle_min_lr = sc.cycle_min_lr,
                  .cycle_max_lr = sc.cycle_max_lr,
                  .decay_lr_rate = sc.decay_lr_rate,
                  .cycle_first_step_size = sc.cycle_first_step_size,
                  .cycle_second_step_size = sc.cycle_second_step_size,
                  .cycle_first_stair_count = sc.cycle_first_stair_count,
                  .cycle_second_stair_count = sc.cycle_second_stair_count,
                  .decay_step_size = sc.decay_step_size,
                  .cycle_momentum = sc.cycle_momentum,
                  .cycle_min_mom = sc.cycle_min_mom,
                  .cycle_max_mom = sc.cycle_max_mom,
                  .decay_mom_rate = sc.decay_mom_rate};
  switch (sc.type) {
    case io::SchedulerType::kNone: sp.type = optim::ScheduleType::constant; break;
    case io::SchedulerType::kWarmupLR: sp.type = optim::ScheduleType::warmup_lr; break;
    case io::SchedulerType::kWarmupDecayLR: sp.type = optim::ScheduleType::warmup_decay_lr; break;
    case io::SchedulerType::kWarmupCosineLR: sp.type = optim::ScheduleType::warmup_cosine_lr; break;
    case io::SchedulerType::kOneCycle: sp.type = optim::ScheduleType::one_cycle; break;
    case io::SchedulerType::kLRRangeTest: sp.type = optim::ScheduleType::lr_range_test; break;
  }
  s.scheduler = optim::make_scheduler(sp);
  return s;
}

nn::GPTConfig gpt_config(const io::Config& c) {
  nn::GPTConfig g;
  g.n_layer = c.model.n_layer;
  g.n_embd = c.model.n_embd;
  g.n_head = c.model.n_head;
  g.seq_len = c.model.seq_len;
  g.vocab_size = c.model.vocab_size;
  g.tie_weights = c.model.tie_weights;
  g.init_std = c.model.init_std;
  g.checkpoint_activations = c.model.checkpoint_activations;
  if (c.model.checkpoint_activations)  // 0: one checkpoint per block
    g.number_checkpoints =
        static_cast<int>(c.activation_checkpointing.number_checkpoints.value_or(0));
  return g;
}

}  // namespace zt::zero
