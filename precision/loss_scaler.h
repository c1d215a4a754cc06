// precision/loss_scaler.h: the loss scale of fp16 training, static or dynamic, with DeepSpeed's
// semantics (deepspeed/runtime/fp16/loss_scaler.py: LossScaler, DynamicLossScaler.update_scale;
// config keys from deepspeed/runtime/precision_config.py, DeepSpeedFP16Config).
//
// fp16 gradients underflow to zero for small values, so the loss is multiplied by a scale S before
// backward and the gradients divided by S before the optimizer. Too large an S makes gradients
// overflow (inf/NaN): that step is skipped and S lowered. The engine calls, every optimizer step:
//
//   loss * scaler.scale()  ->  backward  ->  overflow = agreed by all ranks (has_inf_or_nan)
//   auto u = scaler.update(overflow);      // may throw LossScaleError, see below
//   if (u.skipped) { if (u.log) print(u.message()); zero the grads; continue; }
//   unscale (x 1/S), clip, optimizer step, cast master -> model
//
// On a GPU (issue #5) the same, with the passes fused: GradChecker (overflow.h) gives the flag and
// the sum of squares with one host read; unscale_and_clip(...).multiplier goes to the optimizer as
// optim::StepExtras::grad_scale, and Adam's fused kernel unscales, clips, steps and writes the
// 16-bit weights in one pass (optim::Optimizer::step_tensors).
//
// Modes (fp16 section of the config):
//   loss_scale > 0   static: S = loss_scale forever. An overflow still skips the step (DeepSpeed's
//                    ZeRO optimizers check overflow whenever fp16 is on).
//   loss_scale == 0  dynamic: S starts at 2^initial_scale_power and follows update_scale:
//     overflow:   if hysteresis == 1 or the hysteresis counter is 1: S = max(S / 2, min_loss_scale)
//                 (an overflow with S already == min_loss_scale is fatal: LossScaleError);
//                 otherwise the counter drops by one and S stays (the "delayed shift").
//                 The iteration is remembered as the last overflow.
//     good step:  consecutive_hysteresis: the counter is refilled to `hysteresis` on every good
//     step.
//                 stable = iteration - last_overflow_iteration - 1; when stable > 0 and
//                 stable % loss_scale_window == 0: S *= 2 (and, without consecutive_hysteresis, the
//                 counter is refilled here).
//   bf16 / fp32      no scaling: LossScaler::none() (static S = 1, as DeepSpeed's CreateLossScaler
//                    for non-fp16 dtypes). Overflow checking for bf16 is optional in DeepSpeed
//                    (bf16.check_grad_overflow); when the engine checks, a hit skips the step and S
//                    stays 1.
//
// One default initial scale, 2^16, on every path. DeepSpeed has two: the config's
// initial_scale_power defaults to 16, but DynamicLossScaler's class default (and the fused
// optimizer's default when no dynamic args are given) is 2^32 (DeepSpeed PR #4986 / #6976 discuss
// the mismatch). zerotrain always builds the scaler from LossScalerOptions, whose default is the
// config's: kDefaultInitialScalePower = 16.
#pragma once

#include "core/error.h"
#include "precision/overflow.h"

#include <cstdint>
#include <string>

namespace zt::precision {

inline constexpr int kDefaultInitialScalePower = 16;

// Raised by update() on an overflow when the dynamic scale is already at min_loss_scale.
class LossScaleError : public Error {
  using Error::Error;
};

// Decides which skipped steps get a log line: the first `first_n`, then the 2^k-th ones (first_n =
// 10: skips 1..10, 16, 32, 64, ...). A long run of overflows then costs a handful of lines.
class LogLimiter {
 public:
  explicit LogLimiter(int64_t first_n = 10) : first_n_(first_n) {}
  bool tick() { return should_log(++count_, first_n_); }  // counts one event; print it?
  int64_t count() const { return count_; }
  void reset(int64_t count = 0) { count_ = count; }
  static bool should_log(int64_t nth, int64_t first_n);  // nth counts from 1

 private:
  int64_t first_n_;
  int64_t count_ = 0;
};

// The fp16 config section in the scaler's own terms (zero/ maps io's Fp16Config onto this).
// Defaults are DeepSpeed's config defaults.
struct LossScalerOptions {
  double loss_scale = 0.0;  // > 0: static; 0: dynamic
  int initial_scale_power = kDefaultInitialScalePower;
  int64_t loss_scale_window = 1000;     // good steps between raises
  int hysteresis = 2;                   // overflows tolerated before lowering
  bool consecutive_hysteresis = false;  // refill the tolerance on every good step
  double min_loss_scale = 1.0;
  bool raise_error_at_min_scale = true;  // DynamicLossScaler(raise_error_at_min_scale)
  int64_t log_first_skips = 10;          // LogLimiter(first_n) for skipped steps
};

// What one update() did.
struct ScaleUpdate {
  enum class Event : uint8_t {
    kKept,        // no change (a good step inside the window; any step of a static scaler)
    kRaised,      // good step that completed a window: scale doubled
    kHysteresis,  // overflow absorbed by the hysteresis counter: scale kept
    kLowered,     // overflow: scale halved (or clamped at min_loss_scale)
  };
  int64_t iteration = 0;  // 0-based index of this update (DeepSpeed's cur_iter before it)
  bool overflow = false;
  bool skipped = false;  // == overflow: the optimizer step must be skipped
  Event event = Event::kKept;
  double scale_before = 1.0, scale_after = 1.0;
  int hysteresis_before = 0, hysteresis_after = 0;
  bool log = false;           // a skipped step the LogLimiter lets through: print message()
  int64_t skipped_total = 0;  // skipped steps so far, this one included

  // One line for the log (steps counted from 1: the update with iteration 0 is step 1), e.g.
  //   "step 12: gradient overflow, skipping it; loss scale 65536 -> 32768 (skipped 3 of 12 steps)"
  //   "step 12: gradient overflow, skipping it; loss scale stays 65536, hysteresis 2 -> 1 (...)"
  //   "step 2012: no overflow in the window; loss scale 32768 -> 65536"
  std::string message() const;
};

// Everything a checkpoint must hold for a resumed run to continue bit for bit.
// A state saved by a scaler of the other mode (static vs dynamic) restores the counters only: the
// scale and hysteresis then come from the current options. A dynamic scale is raised to the current
// min_loss_scale and the hysteresis counter capped at the current hysteresis if the config changed.
struct LossScalerState {
  bool dynamic = false;
  double scale = 1.0;
  int64_t iteration = 0;
  int64_t last_overflow_iteration = -1;
  int hysteresis = 0;
  int64_t skipped_steps = 0;
  bool operator==(const LossScalerState&) const = default;
};

class LossScaler {
 public:
  // Validates the options (ConfigError naming the fp16.* key).
  explicit LossScaler(const LossScalerOptions& options = {});
  static LossScaler fixed(double scale);  // static scale
  static LossScaler none();               // bf16 / fp32: static 1

  bool dynamic() const { return dynamic_; }
  double scale() const { return scale_; }
  const LossScalerOptions& options() const { return options_; }

  // Records one optimizer step's overflow verdict (the same on every rank) and moves the scale.
  // Throws LossScaleError when a dynamic scale at min_loss_scale overflows again (DeepSpeed:
  // "Current loss scale already at minimum - cannot decrease scale anymore. Exiting run.");
  // the state is left as it was before the call.
  ScaleUpdate update(bool overflow);
  // The same from a step's gradient check (precision/overflow.h: GradChecker::read(), on the CPU
  // or a GPU; the device path keeps the flag on the GPU until that one read per step). With
  // several ranks the verdict must be agreed first: pass a GradCheck whose overflow is the OR
  // over the ranks. The update rule itself is the host-side one above, identical for both paths.
  ScaleUpdate update(const GradCheck& check) { return update(check.overflow); }

  int64_t iteration() const { return iteration_; }          // update() calls so far
  int64_t skipped_steps() const { return skipped_steps_; }  // ... of which overflowed
  int64_t last_overflow_iteration() const { return last_overflow_iteration_; }  // -1: none yet
  int hysteresis() const { return hysteresis_; }  // overflows still tolerated

  LossScalerState state() const;
  void load_state(const LossScalerState& s);  // checks it fits these options (CheckpointError)

 private:
  LossScalerOptions options_;
  bool dynamic_ = false;
  double scale_ = 1.0;
  int64_t iteration_ = 0;
  int64_t last_overflow_iteration_ = -1;
  int hysteresis_ = 0;
  int64_t skipped_steps_ = 0;
  LogLimiter skip_log_;
};

}  // namespace zt::precision
