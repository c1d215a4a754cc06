// zero/onebit.h: the config side of the 1-bit optimizers (OneBitAdam, ZeroOneAdam, OneBitLamb;
// optim/onebit_adam.cpp and siblings): what zero/settings.cpp refuses, notes and fills for them.
// The engine side is two lines in zero/engine.cpp: the optimizer gets the communicator, and
// backward() skips its gradient all-reduce while Optimizer::reduces_own_gradients() is true.
#pragma once

#include <string>
#include <vector>

#include "io/config.h"
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

}  // namespace zt::zero
