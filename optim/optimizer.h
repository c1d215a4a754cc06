// optim/optimizer.h: optimizers as math over flat fp32 spans.
//
// ZeRO hands each rank one contiguous range of the flat parameter buffer (its partition); the
// optimizer updates that range and owns the state for exactly that range (the 12 bytes/param of
// Adam's fp32 master copy + m + v live here, which is what stage 1 partitions). A span is cut into
// segments so that weight decay can apply to matrices but not to biases and norms, and so that
// optimizers with per-tensor statistics (Lamb) know where each model tensor starts and ends.
//
// Whole-tensor statistics under ZeRO (Lamb's trust ratio ||w|| / ||update|| per tensor):
// a partition boundary can cut a tensor in two, so no rank sees the whole tensor. The optimizer
// therefore works in three phases inside step():
//   1. local pass: update the moments and add this rank's part of each tensor's statistics
//      (sums of squares, in double) into a buffer indexed by the tensor's global id
//      (Segment::tensor), zeros for tensors this rank does not hold;
//   2. reduce: call the TensorStatsReducer once with the whole buffer; it sums the buffer
//      element-wise over the ranks (an all-reduce of a few KB). Every rank calls it exactly once
//      per step, with the same count, even a rank whose span is empty: it is a collective;
//   3. apply: each segment reads its tensor's whole-tensor statistics and updates its parameters.
// With one rank (or stage 0, where every rank holds every tensor) the default reducer, which does
// nothing, is right. Summing the per-rank partial sums gives the sums of the unsplit tensor up to
// the order of additions in double, far below fp32 resolution, so a tensor split over ranks gets
// the same trust ratio as an unsplit one (tests/optim/test_lamb.cpp checks it bit for bit).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace zt::comm {
class Communicator;
}

namespace zt::optim {

// A run of parameters inside the span that share a weight-decay choice and belong to one tensor.
struct Segment {
  int64_t offset = 0;  // into the span
  int64_t size = 0;
  bool decay = true;
  // The model tensor this run is (a piece of): its index in the model's canonical parameter
  // order, the same on every rank, so pieces of one tensor on different ranks share it. Required
  // (>= 0) by optimizers with per-tensor statistics (Lamb), which refuse -1; Adam ignores it, so
  // runs of several tensors may be merged into one segment (tensor = -1) for Adam.
  int64_t tensor = -1;
};

// Sums `count` doubles element-wise over the ranks, in place (MPI_Allreduce with MPI_SUM). Called
// by every rank at the same point of step() with the same count; see the file comment.
using TensorStatsReducer = std::function<void(double* values, int64_t count)>;

// What step_tensors folds into the update pass besides the step itself.
struct StepExtras {
  // The gradients are multiplied by this first: 1 / loss_scale times the clipping coefficient,
  // i.e. precision::unscale_and_clip(...).multiplier (DeepSpeed's unscale_and_clip_grads), so no
  // separate pass over the gradients unscales them.
  float grad_scale = 1.f;
  // When set (bf16 or f16, n elements, on the parameters' device): receives the updated weights
  // rounded to nearest even, the 16-bit model copy of mixed precision (elements outside the
  // segments are left alone, as the parameters are).
  Tensor* params16 = nullptr;
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  virtual std::string name() const = 0;
  // Allocate state for a span of n parameters (zeros). Called once before the first step.
  virtual void init(int64_t n) = 0;
  // One update of params[0, n) from grads[0, n) at learning rate lr.
  virtual void step(float* params, const float* grads, int64_t n,
                    const std::vector<Segment>& segments, float lr) = 0;
  // The same step on tensors, on the CPU or on a GPU: what a run with `device: cuda` calls (with
  // device pointers, step() above would read GPU memory on the host). params: f32, n elements (n
  // as in init()); grads: f32, bf16 or f16, n elements; both on one device; extras as above.
  //   CPU tensors: the gradient is widened to f32 and multiplied by grad_scale into a temporary
  //     (only when needed), step() runs, params16 is rounded after it: the bits of doing those
  //     passes one by one (optim/step_tensors.cpp).
  //   CUDA tensors: Adam/AdamW run ONE fused kernel over params, m, v and params16 (core/cuda/
  //     optim.h) that gives the CPU's bits; their state then lives on the GPU (state() copies it
  //     down). Every other optimizer throws "not implemented on CUDA yet": no silent CPU fallback.
  // Default: the CPU path, and the CUDA error.
  virtual void step_tensors(Tensor& params, const Tensor& grads,
                            const std::vector<Segment>& segments, float lr,
                            const StepExtras& extras);
  // Named state buffers (for checkpoints and memory accounting); each holds n floats. On the
  // host: an optimizer whose state lives on a GPU copies it down here (synchronising), and reads
  // the buffers back before its next device step, so a checkpoint load may write them.
  virtual std::vector<std::pair<std::string, std::vector<float>*>> state() = 0;
  // Bytes of that state wherever it lives, for memory accounting: unlike state(), never copies
  // GPU state down. Default: the sizes of the state() buffers.
  virtual int64_t state_bytes() {
    int64_t b = 0;
    for (auto& named : state()) b += static_cast<int64_t>(named.second->size() * sizeof(float));
    return b;
  }
  virtual int64_t step_count() const = 0;
  virtual void set_step_count(int64_t s) = 0;
  // Adam-family betas, for schedules that cycle momentum (OneCycle). Default: not supported.
  virtual bool set_betas(float /*beta1*/, float /*beta2*/) { return false; }

  // Optional, for optimizers with per-tensor statistics (default: false / ignored).
  // uses_tensor_stats: true when step() needs Segment::tensor on every segment and calls the
  // reducer. set_tensor_stats: num_tensors = the model's tensor count (ids are < num_tensors,
  // the buffer has a fixed size per tensor on every rank); reduce sums over the ranks that hold
  // pieces of the model (default, without a call: one rank, ids from this span's segments).
  virtual bool uses_tensor_stats() const { return false; }
  virtual void set_tensor_stats(int64_t /*num_tensors*/, TensorStatsReducer /*reduce*/) {}

  // Optional, for optimizers that communicate themselves: the 1-bit family (OneBitAdam,
  // ZeroOneAdam, OneBitLamb below), which average compressed momenta instead of gradients. The
  // contract with the engine (zero/engine.cpp, ZeRO stage 0 only):
  //   set_communicator(c)       the training communicator, once, after init() (nullptr or one
  //                             rank: nothing to communicate; default: ignored);
  //   reduces_own_gradients()   true when the NEXT step() wants this rank's LOCAL gradient (the
  //                             accumulation window's mean on this rank, not averaged over the
  //                             ranks): the engine then skips its gradient all-reduce for that
  //                             window and the optimizer communicates inside step(). It depends on
  //                             the optimizer's own state (step_count() and what it implies), the
  //                             same on every rank, so all ranks skip or reduce together. After a
  //                             skipped step (fp16 overflow) the answer is unchanged. Default false.
  virtual void set_communicator(comm::Communicator* /*comm*/) {}
  virtual bool reduces_own_gradients() const { return false; }

  // [1-bit] DeepSpeed's `exp_avg_mask` (a param-group entry that its BERT example sets by hand; no
  // config key): once compression has started, the momentum is multiplied by `mask` (n floats
  // over the span, normally 0 or 1) right after each compressed all-reduce. 1-bit compression
  // cannot send an exact zero, so entries whose gradient is always exactly zero (embedding rows
  // never used, positions beyond the trained length) would otherwise collect the compression
  // error in their momentum and drift. Empty: no mask. Not saved in checkpoints (as in DeepSpeed,
  // the training program sets it again). Default: throws: only OneBitAdam and OneBitLamb have it,
  // as in DeepSpeed (its ZeroOneAdam has no mask).
  virtual void set_exp_avg_mask(std::vector<float> mask);

  // [1-bit checkpoints] Optional: state that is not "n floats, the same on every rank", saved
  // per rank by zero/checkpoint.cpp (zero/onebit.h: save_rank_state / load_rank_state). state()
  // buffers are written range by range (rank r writes range r), which loses values that differ
  // between ranks (error-feedback buffers, ZeroOneAdam's local drift) and cannot hold per-tensor
  // scalars or counters. rank_state(params) names float vectors of any size (0 included), each
  // stored whole in this rank's shard; `params` is the span step() updates (an optimizer may copy
  // it when the ranks' weights differ). A load at the SAME world size reads every name back
  // (vectors resized to the stored size) and calls rank_state_loaded(true, params), where the
  // optimizer may write the span; otherwise (another world size, or a checkpoint without them)
  // rank_state_loaded(false, params): the optimizer resets what it must (DeepSpeed resets the
  // error buffers on load) or throws a CheckpointError-worthy message when it cannot go on.
  // Called after state() buffers and set_step_count(). Defaults: nothing to save; ignored.
  virtual std::vector<std::pair<std::string, std::vector<float>*>> rank_state(
      const float* /*params*/) {
    return {};
  }
  virtual void rank_state_loaded(bool /*restored*/, float* /*params*/) {}
};

struct AdamParams {
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.f;
  // DeepSpeed's `adam_w_mode`: true = decoupled weight decay (AdamW, Loshchilov & Hutter):
  // p -= lr * wd * p; false = L2: the decay is added to the gradient before the moments.
  bool adam_w_mode = true;
  bool bias_correction = true;
};

std::unique_ptr<Optimizer> make_adam(const AdamParams& p);

// One Adam/AdamW update of params[0, n) with state kept by the caller: exp_avg and exp_avg_sq
// (m, v) run parallel to params, `step` is the 1-based step number (bias correction), segments
// index params as in Optimizer::step (only their ranges change). The same kernels and threads as
// make_adam's step(), which calls it: updating a span piece by piece (zero/offload.h: ZeRO-Offload
// sub-groups swapped in from NVMe) gives the same bits as one call over the whole span.
void adam_update(const AdamParams& p, int64_t step, float lr, float* params, const float* grads,
                 float* exp_avg, float* exp_avg_sq, const std::vector<Segment>& segments);

// Lamb (You et al. 2020, "Large Batch Optimization for Deep Learning: Training BERT in 76
// minutes") with DeepSpeed FusedLamb's parameters and semantics (optim/lamb.cpp has the formulas).
struct LambParams {
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.f;  // added to the update (w * wd), on segments with decay only
  bool bias_correction = true;
  float max_coeff = 10.f;  // the trust ratio is clamped to [min_coeff, max_coeff]
  float min_coeff = 0.01f;
  bool eps_inside_sqrt = false;  // sqrt(v_hat + eps) instead of sqrt(v_hat) + eps
};

std::unique_ptr<Optimizer> make_lamb(const LambParams& p);

// The 1-bit family (error-compensated 1-bit compressed communication, comm/compressed.h), with
// DeepSpeed's parameters (deepspeed/runtime/fp16/onebit/{adam,zoadam,lamb}.py); the formulas,
// and where zerotrain differs from DeepSpeed, are at the top of optim/onebit_adam.cpp,
// optim/zero_one_adam.cpp and optim/onebit_lamb.cpp. Weight decay is decoupled (added to the
// update, as DeepSpeed does). bias_correction is honoured (DeepSpeed's 1-bit optimizers ignore
// it and never correct: set it false for DeepSpeed's exact updates).
struct OneBitParams {
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.f;
  bool bias_correction = true;
  bool eps_inside_sqrt = false;  // OneBitLamb only (sqrt(v_hat + eps)); the Adams refuse it
  int64_t freeze_step = 100000;  // OneBitAdam, OneBitLamb: uncompressed steps before compression
  // ZeroOneAdam (Lu et al. 2022): the last step that updates the variance; kappa, the doubling
  // period of the variance-update interval; the doubling period and the cap (H) of the local-step
  // interval once the variance is frozen.
  int64_t var_freeze_step = 100000, var_update_scaler = 16;
  int64_t local_step_scaler = 32678, local_step_clipper = 16;
  // OneBitLamb (Li et al. 2021): trust-ratio clamp, EMA of the warm-up trust ratio, and the
  // bounds of the compression stage's scaling factor and of its change per step.
  float max_coeff = 10.f, min_coeff = 0.01f, coeff_beta = 0.9f;
  float factor_max = 4.f, factor_min = 0.5f, factor_threshold = 0.1f;
};

std::unique_ptr<Optimizer> make_onebit_adam(const OneBitParams& p);
std::unique_ptr<Optimizer> make_zero_one_adam(const OneBitParams& p);
std::unique_ptr<Optimizer> make_onebit_lamb(const OneBitParams& p);

// One factory for the optimizers; zero/settings.cpp fills OptimizerParams from the config.
enum class OptimizerKind { adam, lamb, onebit_adam, zero_one_adam, onebit_lamb };
struct OptimizerParams {
  OptimizerKind kind = OptimizerKind::adam;
  AdamParams adam;      // kind adam (Adam and AdamW: adam.adam_w_mode)
  LambParams lamb;      // kind lamb
  OneBitParams onebit;  // kinds onebit_adam, zero_one_adam, onebit_lamb
};
// Whether the kind needs one Segment per model tensor (Segment::tensor set): Lamb and OneBitLamb
// (per-tensor trust ratios), and [1-bit scale granularity] OneBitAdam and ZeroOneAdam, which
// compress each tensor with its own scales as DeepSpeed does (comm/compressed.h).
inline bool per_tensor_segments(OptimizerKind k) {
  return k == OptimizerKind::lamb || k == OptimizerKind::onebit_lamb ||
         k == OptimizerKind::onebit_adam || k == OptimizerKind::zero_one_adam;
}
inline bool is_onebit(OptimizerKind k) {
  return k == OptimizerKind::onebit_adam || k == OptimizerKind::zero_one_adam ||
         k == OptimizerKind::onebit_lamb;
}
std::unique_ptr<Optimizer> make_optimizer(const OptimizerParams& p);

}  // namespace zt::optim
