// io/config.h: the zerotrain configuration, read from YAML or from a DeepSpeed ds_config.json.
//
// One file configures a run. yaml-cpp reads both YAML and JSON, so a DeepSpeed config works
// unchanged: every key DeepSpeed documents (https://www.deepspeed.ai/docs/config-json/) is read
// into the typed structs below with DeepSpeed's defaults, deprecated aliases and "auto" values,
// next to zerotrain's own sections (model, data, training, checkpoint, comm, device).
//
// The rules, in the order a key meets them (see docs in io/config.cpp for the full tables):
//   - a key is read into a struct field (DeepSpeed's default when absent), or
//   - it names a DeepSpeed feature zerotrain has not built: accepted while it asks for nothing
//     (its default, "off" value), otherwise "`key` is not supported yet", or
//   - it is a DeepSpeed block outside zerotrain's scope (sparse_attention, pipeline...):
//     refused when enabled, accepted with a one-line notice when disabled, or
//   - it is unknown: an error naming the key path and the closest valid key; except at the top
//     level, where DeepSpeed ignores keys it does not read: there a key close to no known key
//     (LLaMA-Factory's `comms_config`, "_comment") is accepted with a notice.
// "auto" (HF Trainer / accelerate placeholders) may stand in any field; it means DeepSpeed's
// default, except where HF documents a rule (bucket sizes from model.n_embd, warmup_max_lr from
// the optimizer lr, total_num_steps from training.steps, gradient_clipping 1.0, batch sizes from
// resolve_batch_sizes). Every error is a zt::ConfigError naming the file, the key path and
// line:column. yaml-cpp stays out of this header.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace zt::io {

// ---- enumerations (to_string gives the spelling used in config files) ---------------------------
enum class Device { kAuto, kCpu, kCuda };
enum class CommBackend { kAuto, kMpi, kNccl };
// kAuto: by file (io/data.h: .bin with the llm.c magic is llmc, other .bin tokens_u16, else text).
enum class DataFormat { kAuto, kText, kTokensU16, kLlmc };
enum class OffloadDevice { kNone, kCpu, kNvme };
enum class OptimizerType { kAdam, kAdamW, kLamb, kOneBitAdam, kZeroOneAdam, kOneBitLamb };
enum class SchedulerType {
  kNone,
  kWarmupLR,
  kWarmupDecayLR,
  kWarmupCosineLR,
  kOneCycle,
  kLRRangeTest
};
enum class WarmupType { kLog, kLinear };
enum class TagValidation { kIgnore, kWarn, kFail };
enum class ReduceOp { kMean, kSum };
// A dtype named in the config; kDefault: decided by the precision mode (fp16/bf16/fp32).
enum class DTypeName { kDefault, kFp32, kFp16, kBf16 };

const char* to_string(Device v);
const char* to_string(CommBackend v);
const char* to_string(DataFormat v);
const char* to_string(OffloadDevice v);
const char* to_string(OptimizerType v);
const char* to_string(SchedulerType v);
const char* to_string(WarmupType v);
const char* to_string(TagValidation v);
const char* to_string(ReduceOp v);
const char* to_string(DTypeName v);

// ---- zerotrain's own sections -------------------------------------------------------------------
// model: the GPT. Defaults: the `tiny` byte-level model that trains in seconds on a CPU.
struct ModelConfig {
  int n_layer = 4;
  int n_head = 4;
  int n_embd = 128;
  int seq_len = 128;
  int vocab_size = 256;     // 256: bytes
  bool tie_weights = true;  // lm_head shares the token embedding
  double dropout = 0.0;
  double init_std = 0.02;  // GPT-2 initialisation
  // Recompute each block in backward (DeepSpeed's activation_checkpointing block tunes it).
  bool checkpoint_activations = false;
  bool operator==(const ModelConfig&) const = default;
};

// data: where the tokens come from.
struct DataConfig {
  std::string path;  // empty: the repository's own docs/sources corpus
  DataFormat format = DataFormat::kAuto;
  std::string val_path;  // empty: hold out val_fraction of `path`
  double val_fraction = 0.1;
  bool shuffle = true;
  bool drop_last = false;  // DeepSpeed's top-level `dataloader_drop_last` lands here
  bool operator==(const DataConfig&) const = default;
};

// training: the loop.
struct TrainingConfig {
  int64_t steps = 1000;  // optimizer steps
  int64_t seed = 1234;
  int64_t eval_interval = 100;  // 0: never evaluate
  int64_t eval_batches = 10;
  bool operator==(const TrainingConfig&) const = default;
};

// checkpoint: zerotrain's checkpoint store, plus DeepSpeed's `checkpoint` keys (same block).
struct CheckpointConfig {
  std::string dir;       // where tags go; empty: no checkpoints (unless --resume names a folder)
  int64_t interval = 0;  // save every N steps; 0: only at the end and on a signal
  int keep = 2;          // versions kept
  bool async = false;    // background writer
  bool resume = true;    // resume from dir/latest when it exists
  // DeepSpeed keys.
  TagValidation tag_validation = TagValidation::kWarn;
  bool load_universal = false;
  bool use_node_local_storage = false;
  bool parallel_write_pipeline_stage = false;  // checkpoint.parallel_write.pipeline_stage
  bool operator==(const CheckpointConfig&) const = default;
};

// comm: the communicator, plus DeepSpeed's top-level gradient-communication keys.
struct CommConfig {
  CommBackend backend = CommBackend::kAuto;  // auto: nccl for CUDA tensors, mpi otherwise
  double timeout_s = 1800.0;
  // DeepSpeed top-level keys.
  DTypeName communication_data_type = DTypeName::kDefault;  // `fp32_allreduce: true` = fp32
  bool prescale_gradients = false;
  double gradient_predivide_factor = 1.0;
  ReduceOp gradient_allreduce_op = ReduceOp::kMean;
  bool operator==(const CommConfig&) const = default;
};

// ---- DeepSpeed sections -------------------------------------------------------------------------
// optimizer: {type, params}. One struct holds the params of every type; each type accepts only its
// own params (DeepSpeed's constructor signatures). Absent block: AdamW with these defaults.
struct OptimizerConfig {
  OptimizerType type = OptimizerType::kAdamW;
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999;  // params.betas
  double eps = 1e-8;
  double weight_decay = 0.0;
  bool bias_correction = true;
  bool adam_w_mode = true;       // Adam: decoupled weight decay (DeepSpeed default); AdamW: always
  bool torch_adam = false;       // accepted for compatibility; zerotrain has one Adam
  bool eps_inside_sqrt = false;  // Lamb and 1-bit family
  double max_coeff = 10.0, min_coeff = 0.01;           // Lamb, OneBitLamb
  int64_t freeze_step = 100000;                        // OneBitAdam, OneBitLamb
  bool cuda_aware = false;                             // 1-bit family
  CommBackend comm_backend_name = CommBackend::kNccl;  // 1-bit family
  double coeff_beta = 0.9, factor_max = 4.0, factor_min = 0.5,
         factor_threshold = 0.1;                               // OneBitLamb
  int64_t var_freeze_step = 100000, var_update_scaler = 16;    // ZeroOneAdam
  int64_t local_step_scaler = 32678, local_step_clipper = 16;  // ZeroOneAdam
  bool legacy_fusion = false;                                  // optimizer.legacy_fusion
  bool operator==(const OptimizerConfig&) const = default;
};

// scheduler: {type, params}; kNone: constant lr. Every type's params in one struct.
struct SchedulerConfig {
  SchedulerType type = SchedulerType::kNone;
  // WarmupLR, WarmupDecayLR, WarmupCosineLR
  double warmup_min_lr = 0.0;
  double warmup_max_lr = 1e-3;      // absent or "auto": the optimizer lr
  int64_t warmup_num_steps = 1000;  // "auto": 0 (HF's default warmup)
  WarmupType warmup_type = WarmupType::kLog;
  int64_t total_num_steps = 0;    // WarmupDecayLR, WarmupCosineLR; absent or "auto": training.steps
  double warmup_min_ratio = 0.0;  // WarmupCosineLR
  double cos_min_ratio = 1e-4;    // WarmupCosineLR
  // OneCycle
  double cycle_min_lr = 0.0, cycle_max_lr = 0.0;  // required for OneCycle
  double decay_lr_rate = 0.0;
  int64_t cycle_first_step_size = 2000;
  int64_t cycle_second_step_size = 2000;  // absent: cycle_first_step_size
  int64_t cycle_first_stair_count = 0;
  int64_t cycle_second_stair_count = 0;  // absent: cycle_first_stair_count
  int64_t decay_step_size = 0;
  bool cycle_momentum = true;
  double cycle_min_mom = 0.8, cycle_max_mom = 0.9, decay_mom_rate = 0.0;
  // LRRangeTest
  double lr_range_test_min_lr = 1e-3;
  int64_t lr_range_test_step_size = 2000;
  double lr_range_test_step_rate = 1.0;
  bool lr_range_test_staircase = false;
  int64_t last_batch_iteration = -1;  // every type
  bool operator==(const SchedulerConfig&) const = default;
};

// fp16: mixed precision with loss scaling (loss_scale 0: dynamic, DeepSpeed's semantics).
struct Fp16Config {
  bool enabled = false;
  double loss_scale = 0.0;
  int initial_scale_power = 16;
  int64_t loss_scale_window = 1000;
  int hysteresis = 2;
  bool consecutive_hysteresis = false;
  double min_loss_scale = 1.0;
  bool operator==(const Fp16Config&) const = default;
};

// bf16 (alias: bfloat16): no loss scaling.
struct Bf16Config {
  bool enabled = false;
  bool immediate_grad_update = false;
  bool check_grad_overflow = false;
  bool operator==(const Bf16Config&) const = default;
};

// zero_optimization.offload_param / offload_optimizer.
struct OffloadConfig {
  OffloadDevice device = OffloadDevice::kNone;
  std::string nvme_path;
  bool pin_memory = false;
  int64_t buffer_count = 4;         // offload_param: 5, offload_optimizer: 4
  int64_t buffer_size = 100000000;  // offload_param only
  int64_t max_in_cpu = 1000000000;  // offload_param only
  bool pipeline_read = false;       // offload_optimizer only
  bool pipeline_write = false;      // offload_optimizer only
  bool fast_init = false;           // offload_optimizer only
  double ratio = 1.0;               // offload_optimizer only (stage 3)
  bool enabled() const { return device != OffloadDevice::kNone; }
  bool operator==(const OffloadConfig&) const = default;
};

// zero_optimization. Counts are elements. stage3_* keys are also accepted unprefixed.
struct ZeroConfig {
  int stage = 0;
  bool contiguous_gradients = true;
  bool reduce_scatter = true;
  int64_t reduce_bucket_size = 500000000;
  bool use_multi_rank_bucket_allreduce = true;
  bool allgather_partitions = true;
  int64_t allgather_bucket_size = 500000000;
  bool overlap_comm = false;  // absent: true for stage 3, false otherwise (DeepSpeed)
  bool load_from_fp32_weights = true;
  OffloadConfig offload_param{OffloadDevice::kNone, "", false, 5};
  OffloadConfig offload_optimizer{OffloadDevice::kNone, "", false, 4};
  int64_t sub_group_size = 1000000000;
  int64_t stage3_prefetch_bucket_size = 50000000;
  int64_t stage3_param_persistence_threshold = 100000;
  int64_t stage3_model_persistence_threshold = INT64_MAX;
  int64_t stage3_max_live_parameters = 1000000000;
  int64_t stage3_max_reuse_distance = 1000000000;
  bool stage3_gather_16bit_weights_on_model_save = false;
  int64_t stage3_module_granularity_threshold = 0;
  bool stage3_use_all_reduce_for_fetch_params = false;
  bool ignore_unused_parameters = true;
  bool round_robin_gradients = false;
  bool compute_grad_norm = true;
  bool parameter_alignment = false;
  bool log_trace_cache_warnings = false;
  bool operator==(const ZeroConfig&) const = default;
};

// tensorboard / csv_monitor / wandb.
struct FileMonitorConfig {
  bool enabled = false;
  std::string output_path;  // empty: the launch directory
  std::string job_name = "DeepSpeedJobName";
  bool operator==(const FileMonitorConfig&) const = default;
};
struct WandbConfig {  // typed for completeness; enabling it is refused (not built)
  bool enabled = false;
  std::string group, team;
  std::string project = "deepspeed";
  bool operator==(const WandbConfig&) const = default;
};
struct MonitorConfigs {
  FileMonitorConfig tensorboard;
  FileMonitorConfig csv_monitor;
  WandbConfig wandb;
  bool operator==(const MonitorConfigs&) const = default;
};

struct ActivationCheckpointingConfig {
  bool partition_activations = false;
  bool cpu_checkpointing = false;
  bool contiguous_memory_optimization = false;
  std::optional<int64_t> number_checkpoints;
  bool synchronize_checkpoint_boundary = false;
  bool profile = false;
  bool operator==(const ActivationCheckpointingConfig&) const = default;
};

struct CommsLoggerConfig {
  bool enabled = false;
  bool verbose = false;
  bool prof_all = true;
  bool debug = false;
  std::vector<std::string> prof_ops;
  bool operator==(const CommsLoggerConfig&) const = default;
};

// aio: libaio settings for NVMe offload.
struct AioConfig {
  int64_t block_size = 1048576;
  int64_t queue_depth = 8;
  int64_t thread_count = 1;  // alias: intra_op_parallelism
  bool single_submit = false;
  bool overlap_events = true;
  bool operator==(const AioConfig&) const = default;
};

// nebula (the seeds call it nebula_config): periodic, versioned, resumable persistence.
struct NebulaConfig {
  bool enabled = false;
  std::string persistent_storage_path;
  int64_t persistent_time_interval = 100;  // seconds
  int64_t num_of_version_in_retention = 2;
  bool enable_nebula_load = true;
  std::string load_path;  // alias: nebula_load_path
  bool operator==(const NebulaConfig&) const = default;
};

// timers.throughput
struct TimersConfig {
  bool throughput_enabled = true;
  bool throughput_synchronized = true;
  bool operator==(const TimersConfig&) const = default;
};

// data_types
struct DataTypesConfig {
  DTypeName grad_accum_dtype = DTypeName::kDefault;
  bool operator==(const DataTypesConfig&) const = default;
};

// ---- the whole configuration --------------------------------------------------------------------
struct Config {
  // DeepSpeed's batch triple. nullopt: not given (or "auto"); resolve_batch_sizes fills all three.
  std::optional<int64_t> train_batch_size;
  std::optional<int64_t> train_micro_batch_size_per_gpu;
  std::optional<int64_t> gradient_accumulation_steps;
  int world_size = 0;  // set by resolve_batch_sizes; 0: not resolved yet

  OptimizerConfig optimizer;
  SchedulerConfig scheduler;
  Fp16Config fp16;
  Bf16Config bf16;
  ZeroConfig zero;                 // zero_optimization
  double gradient_clipping = 0.0;  // 0: off ("auto": 1.0, HF's max_grad_norm)
  int64_t steps_per_print = 10;
  bool wall_clock_breakdown = false;
  bool memory_breakdown = false;
  bool dump_state = false;
  bool zero_allow_untested_optimizer = false;
  bool zero_force_ds_cpu_optimizer = true;
  std::optional<int64_t> vocabulary_size;  // DeepSpeed's informational key
  MonitorConfigs monitors;                 // tensorboard, csv_monitor, wandb (top-level keys)
  ActivationCheckpointingConfig activation_checkpointing;
  CommsLoggerConfig comms_logger;
  AioConfig aio;
  NebulaConfig nebula;
  TimersConfig timers;
  DataTypesConfig data_types;

  ModelConfig model;
  DataConfig data;
  TrainingConfig training;
  CheckpointConfig checkpoint;
  CommConfig comm;
  Device device = Device::kAuto;

  std::string source_path;           // the file, or the name given to parse_config_text
  std::vector<std::string> notices;  // one line each: deprecated aliases, disabled foreign blocks

  bool operator==(const Config&) const = default;
};

// Reads a YAML or JSON file, applies `overrides` ("a.b.c=value", what --set passes; value is YAML:
// 5e8, true, "x", [0.9, 0.95]) and validates. Batch sizes stay unresolved (see
// resolve_batch_sizes).
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});

// The same from text; `name_for_errors` stands for the file name in messages.
Config parse_config_text(const std::string& text, const std::string& name_for_errors,
                         const std::vector<std::string>& overrides = {});

// DeepSpeed's rule: train_batch_size = train_micro_batch_size_per_gpu x gradient_accumulation_steps
// x world_size; any two determine the third, one alone sets gradient_accumulation_steps = 1.
// zerotrain default when neither batch size is given: a micro-batch of kDefaultMicroBatch.
// Inconsistent values fail naming all three and the value that would make them consistent.
inline constexpr int64_t kDefaultMicroBatch = 8;
void resolve_batch_sizes(Config& cfg, int world_size);

// The resolved configuration as YAML (canonical key names, every field; notices as comments).
// parse_config_text(dump_config(c), ...) gives back c.
std::string dump_config(const Config& cfg);

}  // namespace zt::io
