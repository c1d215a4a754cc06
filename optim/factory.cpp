// optim/factory.cpp: make_optimizer and make_scheduler, from plain params structs to the objects.
// optim does not read configs: zero/settings.cpp translates io's OptimizerConfig/SchedulerConfig
// into these structs, so this file is the one switch over the kinds that optim implements.
#include "core/error.h"
#include "optim/lr_scheduler.h"
#include "optim/optimizer.h"

namespace zt::optim {

void Optimizer::set_exp_avg_mask(std::vector<float> /*mask*/) {
  throw Error(name() + ": exp_avg_mask is an option of OneBitAdam and OneBitLamb only");
}

std::unique_ptr<Optimizer> make_optimizer(const OptimizerParams& p) {
  switch (p.kind) {
    case OptimizerKind::adam:
      return make_adam(p.adam);
    case OptimizerKind::lamb:
      return make_lamb(p.lamb);
    case OptimizerKind::onebit_adam:  // the 1-bit family: optim/onebit_adam.cpp and siblings
      return make_onebit_adam(p.onebit);
    case OptimizerKind::zero_one_adam:
      return make_zero_one_adam(p.onebit);
    case OptimizerKind::onebit_lamb:
      return make_onebit_lamb(p.onebit);
  }
  ZT_ASSERT(false, "make_optimizer: unknown kind ", static_cast<int>(p.kind));
}

const char* to_string(ScheduleType t) {
  switch (t) {
    case ScheduleType::constant:
      return "constant";
    case ScheduleType::warmup_lr:
      return "WarmupLR";
    case ScheduleType::warmup_decay_lr:
      return "WarmupDecayLR";
    case ScheduleType::warmup_cosine_lr:
      return "WarmupCosineLR";
    case ScheduleType::one_cycle:
      return "OneCycle";
    case ScheduleType::lr_range_test:
      return "LRRangeTest";
  }
  return "?";
}

std::unique_ptr<LRScheduler> make_scheduler(const SchedulerParams& p) {
  switch (p.type) {
    case ScheduleType::constant:
      return make_constant_lr(p.lr);
    case ScheduleType::warmup_lr:
      return make_warmup_lr(p.warmup);
    case ScheduleType::warmup_decay_lr:
      return make_warmup_decay_lr(p.warmup, p.total_num_steps);
    case ScheduleType::warmup_cosine_lr:
      return make_warmup_cosine_lr(p.lr, p.total_num_steps, p.cosine);
    case ScheduleType::one_cycle:
      return make_one_cycle(p.one_cycle);
    case ScheduleType::lr_range_test:
      return make_lr_range_test(p.range_test);
  }
  ZT_ASSERT(false, "make_scheduler: unknown type ", static_cast<int>(p.type));
}

}  // namespace zt::optim
