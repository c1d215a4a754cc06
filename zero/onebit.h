// zero/onebit.h: the config side of the 1-bit optimizers (OneBitAdam, ZeroOneAdam, OneBitLamb;
// optim/onebit_adam.cpp and siblings): what zero/settings.cpp refuses, notes and fills for them.
// The engine side is two lines in zero/engine.cpp: the optimizer gets the communicator, and
// backward() skips its gradient all-reduce while Optimizer::reduces_own_gradients() is true.
#pragma once

#include <string>
#include <vector>

#include "io/config.h"
#include "io/safetensors.h"
#include "optim/optimizer.h"
#include "zero/engine.h"

namespace zt::zero {

// ConfigError for what the 1-bit family cannot do here: ZeRO stage > 0 (as in DeepSpeed, whose
// 1-bit optimizers run under its FP16_Optimizer, without ZeRO), 16-bit gradient accumulation
// (the skipped all-reduce leaves the 16-bit reduced buffer stale), eps_inside_sqrt for the Adams
// (DeepSpeed accepts and ignores it), freeze_step 0 (the frozen variance would be zero).
// Nothing for other optimizers.
void check_onebit_supported(const io::Config& cfg);
// Settings accepted with no effect here (cuda_aware on host memory, comm_backend_name nccl while
// the compressed all-reduce runs on the training communicator, the mpi backend).
void onebit_notices(const io::Config& cfg, std::vector<std::string>& out);
// optimizer_kind and onebit for the 1-bit types; nothing for others.
void onebit_settings(const io::Config& cfg, EngineSettings& s);

// Checkpoints of the per-rank optimizer state (optim::Optimizer::rank_state: the 1-bit family's
// error-feedback buffers, per-tensor scalars, ZeroOneAdam's local drift), two calls in
// zero/checkpoint.cpp. Each buffer goes whole into this rank's shard as f32 tensor
// "rank_state.<name>" (kRankStatePrefix), next to the range-wise state() buffers.
inline constexpr const char* kRankStatePrefix = "rank_state.";
// Save: adds this rank's buffers to its shard writer (borrowed: they live in the optimizer until
// the writer is done or snapshotted). `span` is the optimizer's span (Optimizer::step's params).
void add_rank_state(optim::Optimizer& opt, const float* span, io::SafetensorsWriter& w);
// Load, after state() buffers and set_step_count(): reads every buffer back from shard `rank`
// of dir/tag when saved_world == world and the shard has them all, then calls
// opt.rank_state_loaded(restored, span). Returns whether it restored them. Errors (a throwing
// optimizer) become CheckpointError naming dir/tag.
bool load_rank_state(optim::Optimizer& opt, float* span, const std::string& dir,
                     const std::string& tag, int rank, int saved_world, int world);

}  // namespace zt::zero
