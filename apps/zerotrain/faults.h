// apps/zerotrain/faults.h: the trainer's fault handling that is not the engine's (issue #10):
//  - every rank checks at start-up that all ranks resolved the same configuration (a per-rank
//    config path or environment can make them differ, and ranks that disagree on shapes or
//    schedules would hang in mismatched collectives or train different models silently);
//  - ZT_FAULT, a TEST HOOK that injects one fault into a real run (tests/apps/test_faults.py):
//      ZT_FAULT=stall:rank=1:step=5       rank 1 sleeps forever at the start of step 5 (the
//                                          watchdog must report it and end the job)
//      ZT_FAULT=kill:rank=1:step=5        rank 1 SIGKILLs itself in the middle of step 5 (after
//                                          the first forward)
//      ZT_FAULT=nan_grad:rank=1:step=3:param=h.1.attn.qkv.weight
//                                          element 0 of that parameter's gradient becomes NaN
//                                          before the first backward of step 3 (stages 0-2)
//      ZT_FAULT=nan_weight:rank=0:step=3:param=wte.weight
//                                          element 0 of that weight becomes NaN at the start of
//                                          step 3 (the loss turns NaN in the forward)
//    rank defaults to every rank. Not for production use: it exists so that fault paths are
//    tested on the real binary.
#pragma once

#include <cstdint>
#include <string>

namespace zt::comm {
class Communicator;
}
namespace zt::zero {
class Engine;
}

namespace zt::app {

struct FaultHook {
  enum class Kind { none, stall, kill, nan_grad, nan_weight };
  Kind kind = Kind::none;
  int rank = -1;  // -1: every rank
  int64_t step = -1;
  std::string param;
  std::string text;  // the variable as given
};

// ZT_FAULT parsed (Kind::none when unset); throws ConfigError naming the variable when malformed.
FaultHook fault_from_env();

// Where the trainer calls the hook: at the start of `step`, and before a micro-batch's backward.
void fault_at_step_start(const FaultHook& f, zero::Engine& engine, int64_t step);
void fault_before_backward(const FaultHook& f, zero::Engine& engine, int64_t step,
                           int64_t micro_batch);

// Collective: the resolved configuration text (io::dump_config; comment lines are ignored) must be
// the same on every rank. Throws ConfigError naming the ranks that differ from rank 0 and the first
// differing key with both values.
void check_config_agreement(comm::Communicator& comm, const std::string& resolved_config);

}  // namespace zt::app
