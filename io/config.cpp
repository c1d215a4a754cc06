// io/config.cpp: the top level of a config: zerotrain's own sections, DeepSpeed's top-level keys,
// the DeepSpeed blocks outside zerotrain's scope, and DeepSpeed's batch-size rule.
//
// Top-level keys and what happens to them:
//   model, data, training, checkpoint, comm, device     zerotrain's sections (read first: the
//                                                       "auto" rules of other blocks use them)
//   train_batch_size, train_micro_batch_size_per_gpu,   DeepSpeed's batch triple, resolved later by
//   gradient_accumulation_steps                         resolve_batch_sizes (world size needed)
//   optimizer, scheduler, fp16, bf16 (bfloat16),        typed blocks (config_optim.cpp,
//   zero_optimization, activation_checkpointing, aio,   config_deepspeed.cpp)
//   comms_logger, tensorboard, csv_monitor, wandb,
//   nebula (nebula_config), timers, data_types
//   gradient_clipping, steps_per_print, ...             scalars, below
//   flops_profiler, fp8                                 measurement / precision blocks, below
//   sparse_attention, pipeline, autotuning, ...         foreign blocks: refused when enabled,
//                                                       a notice when disabled (kForeign)
//   anything else                                       "did you mean" when close to a known key;
//                                                       otherwise a notice: DeepSpeed ignores
//                                                       unknown top-level keys (comms_config...)
#include "io/config.h"

#include "core/error.h"
#include "io/detail/config_sections.h"

#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace zt::io {

const char* to_string(Device v) {
  switch (v) {
    case Device::kAuto:
      return "auto";
    case Device::kCpu:
      return "cpu";
    case Device::kCuda:
      return "cuda";
  }
  return "?";
}
const char* to_string(CommBackend v) {
  switch (v) {
    case CommBackend::kAuto:
      return "auto";
    case CommBackend::kMpi:
      return "mpi";
    case CommBackend::kNccl:
      return "nccl";
  }
  return "?";
}
const char* to_string(DataFormat v) {
  switch (v) {
    case DataFormat::kAuto:
      return "auto";
    case DataFormat::kText:
      return "text";
    case DataFormat::kTokensU16:
      return "tokens_u16";
    case DataFormat::kLlmc:
      return "llmc";
  }
  return "?";
}
const char* to_string(OffloadDevice v) {
  switch (v) {
    case OffloadDevice::kNone:
      return "none";
    case OffloadDevice::kCpu:
      return "cpu";
    case OffloadDevice::kNvme:
      return "nvme";
  }
  return "?";
}
const char* to_string(OptimizerType v) {
  switch (v) {
    case OptimizerType::kAdam:
      return "Adam";
    case OptimizerType::kAdamW:
      return "AdamW";
    case OptimizerType::kLamb:
      return "Lamb";
    case OptimizerType::kOneBitAdam:
      return "OneBitAdam";
    case OptimizerType::kZeroOneAdam:
      return "ZeroOneAdam";
    case OptimizerType::kOneBitLamb:
      return "OneBitLamb";
  }
  return "?";
}
const char* to_string(SchedulerType v) {
  switch (v) {
    case SchedulerType::kNone:
      return "none";
    case SchedulerType::kWarmupLR:
      return "WarmupLR";
    case SchedulerType::kWarmupDecayLR:
      return "WarmupDecayLR";
    case SchedulerType::kWarmupCosineLR:
      return "WarmupCosineLR";
    case SchedulerType::kOneCycle:
      return "OneCycle";
    case SchedulerType::kLRRangeTest:
      return "LRRangeTest";
  }
  return "?";
}
const char* to_string(WarmupType v) { return v == WarmupType::kLog ? "log" : "linear"; }
const char* to_string(TagValidation v) {
  switch (v) {
    case TagValidation::kIgnore:
      return "Ignore";
    case TagValidation::kWarn:
      return "Warn";
    case TagValidation::kFail:
      return "Fail";
  }
  return "?";
}
const char* to_string(ReduceOp v) { return v == ReduceOp::kMean ? "mean" : "sum"; }
const char* to_string(DTypeName v) {
  switch (v) {
    case DTypeName::kDefault:
      return "default";
    case DTypeName::kFp32:
      return "fp32";
    case DTypeName::kFp16:
      return "fp16";
    case DTypeName::kBf16:
      return "bf16";
  }
  return "?";
}

namespace detail {
namespace {

// ---- zerotrain's sections -----------------------------------------------------------------------
void read_model(const Ctx& ctx, const Node* node, ModelConfig& m) {
  MapReader r(ctx, node, "model");
  r.read("n_layer", m.n_layer, kPositive);
  r.read("n_head", m.n_head, kPositive);
  const Given embd = r.read("n_embd", m.n_embd, kPositive);
  r.read("seq_len", m.seq_len, kPositive);
  r.read("vocab_size", m.vocab_size, kPositive);
  r.read("tie_weights", m.tie_weights);
  r.read("dropout", m.dropout, 0.0);
  r.read("init_std", m.init_std, 0.0);
  r.read("checkpoint_activations", m.checkpoint_activations);
  r.finish();
  if (m.dropout >= 1.0) fail(ctx, *r.node()->find("dropout"), "model.dropout", "must be below 1");
  if (m.n_embd % m.n_head != 0) {
    const Node* at = embd == Given::kValue ? r.node()->find("n_embd") : r.node();
    fail(ctx, *at, "model.n_embd",
         std::to_string(m.n_embd) + " is not divisible by model.n_head (" +
             std::to_string(m.n_head) + ")");
  }
}

Given read_data(const Ctx& ctx, const Node* node, DataConfig& d) {
  MapReader r(ctx, node, "data");
  r.read("path", d.path);
  r.read_choice("format", d.format,
                {{"auto", int(DataFormat::kAuto)},
                 {"text", int(DataFormat::kText)},
                 {"tokens_u16", int(DataFormat::kTokensU16)},
                 {"llmc", int(DataFormat::kLlmc)}});
  r.read("val_path", d.val_path);
  r.read("val_fraction", d.val_fraction, 0.0);
  r.read("shuffle", d.shuffle);
  const Given drop_last = r.read("drop_last", d.drop_last);
  r.finish();
  if (d.val_fraction >= 1.0)
    fail(ctx, *r.node()->find("val_fraction"), "data.val_fraction", "must be below 1");
  return drop_last;
}

void read_training(const Ctx& ctx, const Node* node, TrainingConfig& t) {
  MapReader r(ctx, node, "training");
  r.read("steps", t.steps, kPositive);
  r.read("seed", t.seed, kNonNegative);
  r.read("eval_interval", t.eval_interval, kNonNegative);
  r.read("eval_batches", t.eval_batches, kNonNegative);
  r.finish();
}

void read_comm(const Ctx& ctx, const Node* node, CommConfig& c) {
  MapReader r(ctx, node, "comm");
  r.read_choice("backend", c.backend,
                {{"auto", int(CommBackend::kAuto)},
                 {"mpi", int(CommBackend::kMpi)},
                 {"nccl", int(CommBackend::kNccl)}});
  r.read("timeout_s", c.timeout_s, 0.001);
  r.finish();
}

// ---- DeepSpeed blocks outside zerotrain's scope -------------------------------------------------
// When is a block "enabled"? kEnabledKey: by its `enabled` key (absent means off, as in
// DeepSpeed) or any nested `enabled: true` (compression_training's techniques); kPresent:
// DeepSpeed turns the feature on by the block's mere presence, so only `enabled: false` turns it
// off; kAutotp and kDeepcompile: by the key that switches the feature on.
enum class OnWhen { kEnabledKey, kPresent, kAutotp, kDeepcompile };
struct Foreign {
  std::string_view key;
  std::string_view what;
  OnWhen rule;
};
constexpr Foreign kForeign[] = {
    {"sparse_attention", "block-sparse attention kernels", OnWhen::kPresent},
    {"pipeline", "pipeline parallelism", OnWhen::kPresent},
    {"weight_quantization", "inference weight quantization", OnWhen::kPresent},
    {"autotuning", "autotuner", OnWhen::kEnabledKey},
    {"elasticity", "elastic training", OnWhen::kEnabledKey},
    {"amp", "NVIDIA Apex AMP mode", OnWhen::kEnabledKey},
    {"torch_autocast", "torch.autocast mode", OnWhen::kEnabledKey},
    {"compression_training", "compression training (quantization, pruning, layer reduction)",
     OnWhen::kEnabledKey},
    {"data_efficiency", "data efficiency library", OnWhen::kEnabledKey},
    {"curriculum_learning", "curriculum learning", OnWhen::kEnabledKey},
    {"progressive_layer_drop", "progressive layer drop", OnWhen::kEnabledKey},
    {"eigenvalue", "eigenvalue computation (MoQ's curvature-driven quantization schedule)",
     OnWhen::kEnabledKey},
    {"quantize_training", "MoQ quantized training", OnWhen::kEnabledKey},
    {"hybrid_engine", "RLHF hybrid engine", OnWhen::kEnabledKey},
    {"expert_parallel", "MoE expert parallelism", OnWhen::kEnabledKey},
    // Not read by DeepSpeed's engine but by HF accelerate / LLaMA-Factory for ALST (Ulysses).
    {"sequence_parallel", "Ulysses sequence parallelism (ALST)", OnWhen::kEnabledKey},
    {"comet", "Comet monitor", OnWhen::kEnabledKey},
    {"trackio", "Trackio monitor", OnWhen::kEnabledKey},
    {"datastates", "DataStates checkpoint engine", OnWhen::kEnabledKey},
    {"tensor_parallel", "AutoTP tensor parallelism", OnWhen::kAutotp},
    {"compile", "DeepCompile", OnWhen::kDeepcompile},
};

bool is_true(const Node* n) {
  return n != nullptr && n->is_scalar() && !n->quoted && (n->text == "true" || n->text == "True");
}

bool any_nested_enabled(const Node& n) {
  if (n.is_map())
    for (const Entry& e : n.entries)
      if ((e.key == "enabled" && is_true(&e.value)) || any_nested_enabled(e.value)) return true;
  if (n.is_sequence())
    for (const Node& item : n.items)
      if (any_nested_enabled(item)) return true;
  return false;
}

void read_foreign(const Ctx& ctx, MapReader& top, const Foreign& f) {
  const Node* n = top.take(f.key);
  if (n == nullptr || n->is_null()) return;
  const std::string key(f.key);
  bool on = false;
  const Node* enabled = n->is_map() ? n->find("enabled") : nullptr;
  if (n->is_scalar()) {  // `amp: false`
    on = !is_auto(*n) && to_bool(ctx, *n, key);
  } else if (!n->is_map()) {
    fail(ctx, *n, key, "expected a mapping, got " + describe(*n));
  } else if (enabled != nullptr && !enabled->is_null() && !is_auto(*enabled)) {
    on = to_bool(ctx, *enabled, key + ".enabled");
  } else if (enabled == nullptr) {
    switch (f.rule) {
      case OnWhen::kEnabledKey:
        on = any_nested_enabled(*n);
        break;
      case OnWhen::kPresent:
        on = !n->entries.empty();
        break;
      case OnWhen::kAutotp: {
        const Node* size = n->find("autotp_size");
        on = size != nullptr && !size->is_null() && !is_auto(*size) &&
             to_int(ctx, *size, key + ".autotp_size") > 1;
        break;
      }
      case OnWhen::kDeepcompile:
        on = is_true(n->find("deepcompile"));
        break;
    }
  }
  const std::string what = "`" + key + "` configures DeepSpeed's " + std::string(f.what) +
                           ", which is outside zerotrain's scope";
  if (on) fail_at(ctx, *n, what + "; remove the block or set `" + key + ".enabled: false`");
  ctx.notice(where(ctx.file, *n) + ": " + what + "; accepted because it is disabled");
}

// ---- the whole tree -----------------------------------------------------------------------------
void read_batch(MapReader& top, std::string_view key, std::optional<int64_t>& out) {
  int64_t v = 0;
  // "auto": inferred by resolve_batch_sizes. The 2^40 bound keeps the products it forms in range.
  if (top.read(key, v, IntRange{1, int64_t{1} << 40}) == Given::kValue) out = v;
}

void read_config(const Ctx& ctx, const Node& root, Config& cfg) {
  MapReader top(ctx, &root, "");

  // zerotrain's sections first: "auto" in the DeepSpeed blocks refers to them.
  read_model(ctx, top.take("model"), cfg.model);
  const Given drop_last = read_data(ctx, top.take("data"), cfg.data);
  read_training(ctx, top.take("training"), cfg.training);
  read_checkpoint(ctx, top.take("checkpoint"), cfg.checkpoint);
  read_comm(ctx, top.take("comm"), cfg.comm);
  top.read_choice(
      "device", cfg.device,
      {{"auto", int(Device::kAuto)}, {"cpu", int(Device::kCpu)}, {"cuda", int(Device::kCuda)}});

  // Batch sizes.
  read_batch(top, "train_batch_size", cfg.train_batch_size);
  read_batch(top, "train_micro_batch_size_per_gpu", cfg.train_micro_batch_size_per_gpu);
  read_batch(top, "gradient_accumulation_steps", cfg.gradient_accumulation_steps);

  // Typed blocks.
  read_optimizer(ctx, top.take("optimizer"), cfg.optimizer);
  read_scheduler(ctx, top.take("scheduler"), cfg.optimizer, cfg.training, cfg.scheduler);
  read_fp16(ctx, top.take("fp16"), cfg.fp16);
  read_bf16(ctx, top.take("bf16", {{"bfloat16", true}}), "bf16", cfg.bf16);

  const Node* zero = top.take("zero_optimization");
  const Node* allgather_size = top.take("allgather_size");
  if (zero != nullptr && zero->is_scalar()) {
    // DeepSpeed's first format, `"zero_optimization": true` (read_zero_config_deprecated).
    cfg.zero.stage = to_bool(ctx, *zero, "zero_optimization") ? 1 : 0;
    ctx.notice(where(ctx.file, *zero) + ": `zero_optimization: " + zero->text +
               "` is DeepSpeed's deprecated format; read as `zero_optimization: {stage: " +
               std::to_string(cfg.zero.stage) + "}`");
    if (allgather_size != nullptr && !allgather_size->is_null())
      cfg.zero.allgather_bucket_size = to_int(ctx, *allgather_size, "allgather_size", kNonNegative);
    read_zero(ctx, nullptr, cfg.model, cfg.zero);  // the other keys at their defaults
  } else {
    if (allgather_size != nullptr)
      fail(ctx, *allgather_size, "allgather_size",
           "applies only to DeepSpeed's deprecated `zero_optimization: true`; use "
           "`zero_optimization.allgather_bucket_size`");
    read_zero(ctx, zero, cfg.model, cfg.zero);
  }

  read_file_monitor(ctx, top.take("tensorboard"), "tensorboard", cfg.monitors.tensorboard);
  read_file_monitor(ctx, top.take("csv_monitor"), "csv_monitor", cfg.monitors.csv_monitor);
  read_wandb(ctx, top.take("wandb"), cfg.monitors.wandb);
  read_activation_checkpointing(ctx, top.take("activation_checkpointing"),
                                cfg.activation_checkpointing);
  read_comms_logger(ctx, top.take("comms_logger"), cfg.comms_logger);
  read_aio(ctx, top.take("aio"), cfg.aio);
  read_nebula(ctx, top.take("nebula", {{"nebula_config", false}}), "nebula", cfg.nebula);
  read_timers(ctx, top.take("timers"), cfg.timers);
  read_flops_profiler(ctx, top.take("flops_profiler"));
  read_fp8(ctx, top.take("fp8"));
  read_data_types(ctx, top.take("data_types"), cfg.data_types);

  // Top-level scalars.
  if (top.read("gradient_clipping", cfg.gradient_clipping, 0.0) == Given::kAuto)
    cfg.gradient_clipping = 1.0;
  top.read("steps_per_print", cfg.steps_per_print, kPositive);
  top.read("wall_clock_breakdown", cfg.wall_clock_breakdown);
  top.read("memory_breakdown", cfg.memory_breakdown);
  top.read("dump_state", cfg.dump_state);
  top.read("zero_allow_untested_optimizer", cfg.zero_allow_untested_optimizer);
  top.read("zero_force_ds_cpu_optimizer", cfg.zero_force_ds_cpu_optimizer);
  if (int64_t v = 0; top.read("vocabulary_size", v, kPositive) == Given::kValue) {
    cfg.vocabulary_size = v;
    if (v % 8 != 0)
      ctx.notice(
          ctx.file + ": `vocabulary_size` " + std::to_string(v) +
          " is not a multiple of 8, which may lower tensor core utilization (DeepSpeed's warning)");
  }
  top.read("prescale_gradients", cfg.comm.prescale_gradients);
  top.read("gradient_predivide_factor", cfg.comm.gradient_predivide_factor, 1e-300);
  Given comm_dtype = Given::kAbsent;
  if (const Node* n = top.take("communication_data_type");
      n != nullptr && !n->is_null() && !is_auto(*n)) {
    comm_dtype = Given::kValue;
    std::string text = n->is_scalar() ? n->text : std::string();
    for (char& ch : text) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    if (text == "bfp16") {  // DeepSpeed lower-cases the value first
      // DeepSpeed's first spelling of bf16 here (get_communication_data_type accepted "bfp16"
      // until it was renamed; Megatron-DeepSpeed's ds_zero2_config_bf16.json still writes it).
      cfg.comm.communication_data_type = DTypeName::kBf16;
      ctx.notice(where(ctx.file, *n) +
                 ": `communication_data_type: bfp16` is DeepSpeed's former spelling; read as bf16 "
                 "(current DeepSpeed accepts only fp32, fp16, bf16)");
    } else {
      cfg.comm.communication_data_type =
          static_cast<DTypeName>(to_choice(ctx, *n, "communication_data_type", kDTypeChoices));
    }
  }
  if (const Node* fp32 = top.take("fp32_allreduce");
      fp32 != nullptr && !fp32->is_null() && !is_auto(*fp32)) {
    if (comm_dtype == Given::kValue)
      fail(ctx, *fp32, "fp32_allreduce",
           "deprecated; cannot be given together with `communication_data_type`");
    ctx.notice(where(ctx.file, *fp32) +
               ": `fp32_allreduce` is deprecated in DeepSpeed; read as `communication_data_type`");
    if (to_bool(ctx, *fp32, "fp32_allreduce")) cfg.comm.communication_data_type = DTypeName::kFp32;
  }
  top.read_choice("gradient_allreduce_op", cfg.comm.gradient_allreduce_op,
                  {{"mean", int(ReduceOp::kMean)}, {"sum", int(ReduceOp::kSum)}});
  if (const Node* dl = top.take("dataloader_drop_last");
      dl != nullptr && !dl->is_null() && !is_auto(*dl)) {
    if (drop_last == Given::kValue)
      fail(ctx, *dl, "dataloader_drop_last", "given twice, here and as `data.drop_last`; keep one");
    cfg.data.drop_last = to_bool(ctx, *dl, "dataloader_drop_last");
  }

  // DeepSpeed top-level features not built yet: accepted while they ask for nothing.
  top.not_supported_unless("sparse_gradients", "false");
  top.not_supported_unless("disable_allgather", "false");
  top.not_supported_unless("graph_harvesting", "false");
  top.not_supported_unless("managed_gradient_accumulation", "true");
  top.not_supported_unless("seq_parallel_comm_data_type", "fp32");
  top.not_supported_unless("use_data_before_expert_parallelism", "false");
  top.no_effect("disable_python_gc", "there is no Python garbage collector");
  top.no_effect("log_level", "it sets DeepSpeed's Python logger");
  if (const Node* sp = top.take("sequence_parallel_size");
      sp != nullptr && !sp->is_null() && !is_auto(*sp))
    if (to_int(ctx, *sp, "sequence_parallel_size", kPositive) > 1)
      fail_at(ctx, *sp,
              "`sequence_parallel_size` (DeepSpeed's Ulysses sequence parallelism) is outside "
              "zerotrain's scope; use 1");

  for (const Foreign& f : kForeign) read_foreign(ctx, top, f);
  top.finish_top_level();

  // Cross-block checks.
  if (cfg.fp16.enabled && cfg.bf16.enabled)
    fail(ctx, root.find("bf16") ? *root.find("bf16") : root, "bf16.enabled",
         "fp16 and bf16 cannot both be enabled (as in DeepSpeed); enable one");
  // Bytes: text files, and the default corpus (the repository's own files) in auto mode.
  const bool bytes = cfg.data.format == DataFormat::kText ||
                     (cfg.data.format == DataFormat::kAuto && cfg.data.path.empty());
  if (bytes && cfg.model.vocab_size < 256)
    fail(
        ctx, "model.vocab_size",
        "byte-level text (data.format: text, or the default corpus) needs vocab_size >= 256, got " +
            std::to_string(cfg.model.vocab_size));
  if (cfg.data.format == DataFormat::kTokensU16 && cfg.model.vocab_size > 65536)
    fail(ctx, "model.vocab_size",
         "uint16 tokens (data.format: tokens_u16) allow vocab_size <= 65536, got " +
             std::to_string(cfg.model.vocab_size));
}

}  // namespace

const std::vector<std::string>& known_key_paths() {
  static const std::vector<std::string> paths = [] {
    std::vector<std::string> out;
    Node empty;
    empty.kind = Node::Kind::kMap;
    Config cfg;
    Ctx ctx{"<index>", nullptr, &out};
    read_config(ctx, empty, cfg);
    return out;
  }();
  return paths;
}

}  // namespace detail

Config parse_config_text(const std::string& text, const std::string& name_for_errors,
                         const std::vector<std::string>& overrides) {
  detail::Node root = detail::parse_tree(text, name_for_errors);
  for (const std::string& o : overrides) detail::apply_override(root, o, name_for_errors);
  Config cfg;
  detail::Ctx ctx{name_for_errors, &cfg.notices, nullptr};
  detail::read_config(ctx, root, cfg);
  cfg.source_path = name_for_errors;
  return cfg;
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(path + ": cannot open config file: " + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  return parse_config_text(text.str(), path, overrides);
}

// DeepSpeed's _set_batch_related_parameters + _batch_assertion, with errors that say how to fix.
void resolve_batch_sizes(Config& cfg, int world_size) {
  const std::string where = cfg.source_path.empty() ? std::string("config") : cfg.source_path;
  const std::string keys = where +
                           ": config keys `train_batch_size`, `train_micro_batch_size_per_gpu`, "
                           "`gradient_accumulation_steps`: ";
  if (world_size < 1)
    throw ConfigError(keys + "world size must be >= 1, got " + std::to_string(world_size));
  const int64_t w = world_size;
  auto& tb = cfg.train_batch_size;
  auto& mb = cfg.train_micro_batch_size_per_gpu;
  auto& ga = cfg.gradient_accumulation_steps;
  auto s = [](int64_t v) { return std::to_string(v); };
  // Products must fit in int64 (a micro-batch of 1e18 on 8 ranks would wrap around silently).
  auto mul = [&](int64_t a, int64_t b) {
    const __int128 r = static_cast<__int128>(a) * b;
    if (r > (int64_t{1} << 62))
      throw ConfigError(keys + "the batch size " + s(a) + " x " + s(b) + " is too large");
    return static_cast<int64_t>(r);
  };
  // The two multiples of `step` around `v`, as "a or b" (a only when v < step).
  auto near = [&](int64_t v, int64_t step) {
    const int64_t below = v / step * step;
    return below == 0 ? s(step) : s(below) + " or " + s(below + step);
  };

  if (tb && mb && ga) {
    const int64_t product = mul(mul(*mb, *ga), w);
    // Published configs often fix all three for their own cluster (256 = 1 x 8 x 32 GPUs): say
    // which world size they were written for.
    const int64_t per_rank = mul(*mb, *ga);
    const std::string written_for =
        *tb % per_rank == 0 ? " (the three agree on " + s(*tb / per_rank) + " ranks)" : "";
    if (*tb != product)
      throw ConfigError(
          keys + "train_batch_size (" + s(*tb) + ") must equal train_micro_batch_size_per_gpu (" +
          s(*mb) + ") x gradient_accumulation_steps (" + s(*ga) + ") x world size (" + s(w) +
          ") = " + s(product) + written_for + "; set train_batch_size to " + s(product) +
          ", or leave one of the three out (or \"auto\") to have it inferred");
  } else if (tb && mb) {
    const int64_t step = mul(*mb, w);
    if (*tb % step != 0)
      throw ConfigError(keys + "train_batch_size (" + s(*tb) +
                        ") is not a multiple of train_micro_batch_size_per_gpu (" + s(*mb) +
                        ") x world size (" + s(w) + ") = " + s(step) +
                        ", so no whole gradient_accumulation_steps fits; set train_batch_size to " +
                        near(*tb, step));
    ga = *tb / step;
  } else if (tb && ga) {
    const int64_t step = mul(*ga, w);
    if (*tb % step != 0)
      throw ConfigError(
          keys + "train_batch_size (" + s(*tb) +
          ") is not a multiple of gradient_accumulation_steps (" + s(*ga) + ") x world size (" +
          s(w) + ") = " + s(step) +
          ", so no whole train_micro_batch_size_per_gpu fits; set train_batch_size to " +
          near(*tb, step));
    mb = *tb / step;
  } else if (mb && ga) {
    tb = mul(mul(*mb, *ga), w);
  } else if (tb) {  // DeepSpeed: gradient_accumulation_steps = 1
    if (*tb % w != 0)
      throw ConfigError(
          keys + "train_batch_size (" + s(*tb) + ") is not a multiple of the world size (" + s(w) +
          ") with gradient_accumulation_steps = 1 and train_micro_batch_size_per_gpu not given; "
          "set train_batch_size to " +
          near(*tb, w) + ", or give train_micro_batch_size_per_gpu");
    ga = 1;
    mb = *tb / w;
  } else {
    // DeepSpeed refuses a config with neither batch size; zerotrain's default job uses
    // kDefaultMicroBatch.
    if (!mb) mb = kDefaultMicroBatch;
    if (!ga) ga = 1;
    tb = mul(mul(*mb, *ga), w);
  }
  cfg.world_size = world_size;
}

}  // namespace zt::io
