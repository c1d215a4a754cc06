// io/detail/config_sections.h: one reader per config block, called by config.cpp's top level.
// Each takes the block's node (nullptr when absent: it still declares its keys, which builds the
// "did you mean" index) and fills its struct. Private to io/.
#pragma once

#include "io/config.h"
#include "io/detail/config_reader.h"

namespace zt::io::detail {

// config_deepspeed.cpp
void read_zero(const Ctx& ctx, const Node* node, const ModelConfig& model, ZeroConfig& out);
void read_fp16(const Ctx& ctx, const Node* node, Fp16Config& out);
void read_bf16(const Ctx& ctx, const Node* node, const std::string& path, Bf16Config& out);
void read_file_monitor(const Ctx& ctx, const Node* node, const std::string& path,
                       FileMonitorConfig& out);
void read_wandb(const Ctx& ctx, const Node* node, WandbConfig& out);
void read_activation_checkpointing(const Ctx& ctx, const Node* node,
                                   ActivationCheckpointingConfig& out);
void read_comms_logger(const Ctx& ctx, const Node* node, CommsLoggerConfig& out);
void read_aio(const Ctx& ctx, const Node* node, AioConfig& out);
void read_nebula(const Ctx& ctx, const Node* node, const std::string& path, NebulaConfig& out);
void read_timers(const Ctx& ctx, const Node* node, TimersConfig& out);
void read_data_types(const Ctx& ctx, const Node* node, DataTypesConfig& out);
void read_checkpoint(const Ctx& ctx, const Node* node, CheckpointConfig& out);
// Blocks read only to validate them and say what they do here (a notice), nothing stored.
void read_flops_profiler(const Ctx& ctx, const Node* node);
void read_fp8(const Ctx& ctx, const Node* node);

// config_optim.cpp
void read_optimizer(const Ctx& ctx, const Node* node, OptimizerConfig& out);
void read_scheduler(const Ctx& ctx, const Node* node, const OptimizerConfig& optimizer,
                    const TrainingConfig& training, SchedulerConfig& out);

// Shared choice lists.
inline const std::vector<Choice> kDTypeChoices = {
    {"fp32", int(DTypeName::kFp32)}, {"float32", int(DTypeName::kFp32)},
    {"fp16", int(DTypeName::kFp16)}, {"float16", int(DTypeName::kFp16)},
    {"bf16", int(DTypeName::kBf16)}, {"bfloat16", int(DTypeName::kBf16)}};

}  // namespace zt::io::detail
