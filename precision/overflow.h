// precision/overflow.h: the checks of an fp16/bf16 optimizer step: does a gradient hold inf or NaN
// (the step is then skipped and the loss scale lowered), the sum of squares for the global
// gradient norm, and the clipping factor.
//
// Overflow is tested element by element on the bits (exponent all ones), not by summing the buffer
// as DeepSpeed's DynamicLossScaler._has_inf_or_nan does (deepspeed/runtime/fp16/loss_scaler.py:
// `float(x.float().sum())` is inf/NaN): a sum of large finite gradients can itself overflow and
// skip a good step. The bit test is also immune to -ffast-math and FTZ/DAZ modes.
//
// sum_squares is deterministic: the buffer is cut into fixed chunks (precision/detail/parallel.h),
// each chunk is summed in double with a fixed lane structure written out in the source (not left to
// the vectorizer), and the chunk sums are added in chunk order. A square of a float is exact in
// double, so contraction into FMAs cannot change a bit either: the result is the same for every
// thread count and every ISA the build targets, and sum_squares of a 16-bit buffer equals
// sum_squares of its f32 conversion exactly.
#pragma once

#include "core/dtype.h"
#include "core/tensor.h"

#include <cstdint>
#include <vector>

namespace zt::precision {

// True when any element is +-inf or NaN. Stops early (per chunk) once one is found.
bool has_inf_or_nan(const float* p, int64_t n);
bool has_inf_or_nan(const uint16_t* p, int64_t n, DType dtype);  // dtype: f16 or bf16
bool has_inf_or_nan(const Tensor& t);  // f32, f16 or bf16; CPU, or GPU (synchronises)

// Sum of x^2 in double (inf/NaN propagate). The global gradient norm is sqrt of the sum of these
// over every rank's partition (the engine all-reduces the local sums).
double sum_squares(const float* p, int64_t n);
double sum_squares(const uint16_t* p, int64_t n, DType dtype);  // dtype: f16 or bf16
double sum_squares(const Tensor& t);  // f32, f16 or bf16; CPU, or GPU (synchronises; see below)

// ---- one step's gradient check, on the CPU or the GPU ---------------------------------------------
// The overflow flag and the sum of squares of a step's gradients (this rank's partition), in one
// pass. On a GPU (core/cuda/optim.h) each add() enqueues one fused kernel that ORs the flag and
// adds the sum into a 16-byte device accumulator: both stay on the GPU until read(), the one host
// read of the step, however many tensors were added. On the CPU, add() runs has_inf_or_nan and
// sum_squares above. The GPU's sum is deterministic too, but adds in another order than the CPU's:
// the two agree to ~1e-15 relative, not bit for bit (the flag agrees exactly).
//
//   GradChecker check(dev);                 // once
//   check.add(grads);                       // per step, any number of tensors (async on a GPU)
//   GradCheck c = check.read();             // one host read; resets for the next step
//   overflow = any rank's c.overflow; norm = sqrt(sum over ranks of c.sum_squares)
struct GradCheck {
  bool overflow = false;     // some element is +-inf or NaN
  double sum_squares = 0.0;  // sum of x^2 in double; unspecified (inf or NaN) when overflow
};

class GradChecker {
 public:
  explicit GradChecker(Device device = Device::cpu());
  Device device() const { return device_; }
  void add(const Tensor& g);  // f32, f16 or bf16 on device()
  void add(const std::vector<Tensor>& gs);
  GradCheck read();  // the check of everything added since the last read(); then resets

 private:
  Device device_;
  Tensor acc_;      // GPU: the device accumulator (cuda::grad_stats_buffer)
  GradCheck host_;  // CPU: the running result
};

// One tensor, checked and read at once.
GradCheck check_gradients(const Tensor& g);

// The factor that clips gradients to a global norm of at most max_norm, as torch's
// clip_grad_norm_: coef = max_norm / (total_norm + 1e-6), applied only when coef < 1, so the
// result is min(coef, 1). A NaN total_norm gives NaN (as torch: the gradients become NaN instead
// of being silently kept); total_norm = inf gives 0. max_norm must be > 0 (DeepSpeed's
// gradient_clipping = 0 means "no clipping": do not call this then).
double clip_coefficient(double total_norm, double max_norm);

// DeepSpeed's ZeRO step folds unscaling and clipping into one multiply
// (deepspeed/runtime/zero/stage_1_and_2.py, unscale_and_clip_grads): with the norm of the *scaled*
// gradients,
//   clip = (scaled_norm / loss_scale + 1e-6) / max_norm;  combined = loss_scale * max(clip, 1)
//   grads *= 1 / combined.
// This returns both numbers; max_norm <= 0 means no clipping (combined = loss_scale).
struct UnscaleClip {
  double grad_norm;   // norm of the unscaled gradients: scaled_norm / loss_scale
  double multiplier;  // what to multiply the scaled gradients by: 1 / combined
};
UnscaleClip unscale_and_clip(double scaled_norm, double loss_scale, double max_norm);

}  // namespace zt::precision
