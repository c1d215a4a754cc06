// zero/settings.h: from the parsed config (io::Config) to what the engine runs (EngineSettings),
// and the one place that refuses config features this build does not implement yet: no key is
// silently ignored (DESIGN.md), so a config asking for ZeRO stage 2 or fp16 fails here, naming the
// key, until the code for it exists.
#pragma once

#include "io/config.h"
#include "core/nn/gpt.h"
#include "zero/engine.h"

#include <string>
#include <vector>

namespace zt::zero {

// Throws ConfigError "`key` ... is not supported yet" for the first feature asked for that the
// engine cannot do. Call after io::resolve_batch_sizes.
void check_supported(const io::Config& cfg);

// One line each for settings that are accepted but change nothing here, or less than their name
// says (activation_checkpointing's partition_activations without model parallelism, ...), for the
// trainer to print next to cfg.notices. Call after check_supported.
std::vector<std::string> config_notices(const io::Config& cfg);

EngineSettings engine_settings(const io::Config& cfg);  // device: cpu (see resolve_device)

// The `device` key for one rank: cpu; or cuda:(local_rank mod the visible GPUs) for `cuda`, and for
// `auto` when this build has CUDA, a GPU is visible and the config runs there (stages 0-2, no
// offload; else the CPU, with a notice from config_notices). Call after check_supported, which
// refuses `cuda` without a GPU or with what is not yet on CUDA. Set EngineSettings::device to it.
Device resolve_device(const io::Config& cfg, int local_rank);
// The config key of the first thing asked for that is not yet on CUDA, or nullptr.
const char* not_on_cuda(const io::Config& cfg);
nn::GPTConfig gpt_config(const io::Config& cfg);

}  // namespace zt::zero
