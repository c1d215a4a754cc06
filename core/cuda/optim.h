// core/cuda/optim.h: the fused device kernels of the optimizer step (issue #5): a multi-tensor
// Adam/AdamW over flat buffers and a fused "overflow + sum of squares" pass over the gradients.
// Public (no CUDA header): optim/ and precision/ call it when their tensors live on a GPU.
//
// Fused Adam (DeepSpeed's FusedAdam / apex multi_tensor_adam, over one flat span): ONE launch
// updates the f32 master partition, m and v; reads the gradient in f32, bf16 or f16 and multiplies
// it by `grad_scale` first (1/loss_scale and the clipping coefficient folded in: no separate
// unscale pass over the gradients); and, when asked, writes the updated weights rounded to the
// 16-bit model dtype (bf16/f16 params16) in the same pass. The formulas and their rounding are
// those of optim/adam.cpp (every operation an IEEE-rounded __f*_rn intrinsic in the same order), so
// with the same coefficients a GPU step gives the CPU's bits. The coefficients are computed by
// optim/adam.cpp, once, for both backends: this layer only applies them.
//
// The multi-tensor part: the span's segments (the decay / no-decay runs of optim::Segment) are cut
// into chunks of at most kAdamChunk elements (chunks start at multiples of kAdamChunk of the span,
// so all but a segment's first are 16-byte aligned when the buffers are); the chunk list depends
// only on the segments, so it is built once (adam_work_list) and kept on the device.
//
// Gradient check (DeepSpeed's overflow check + get_grad_norm, fused): one pass over any number of
// gradient tensors adds sum(x^2) (in double) and ORs "some element is inf/NaN" (exponent bits all
// ones) into a 16-byte device accumulator. Nothing is read back until grad_stats_read(): one host
// read per step, whatever the number of tensors. The sum is deterministic (fixed grid, partials
// added in a fixed order, no atomics) but in another order than the CPU's precision::sum_squares,
// so the two agree to ~1e-15 relative, not bit for bit; the flag agrees exactly.
//
// Everything enqueues on the current stream (core/cuda/stream.h) and does not synchronise, except
// grad_stats_read. Implementations: core/cuda/optim.cu (CUDA build), core/cuda/stub_optim.cpp
// (CPU-only build: every function throws "built without CUDA").
// Status: compiled for sm_90, never run on a GPU; tests/gpu/test_cuda_optim.cpp checks it against
// the CPU optimizer and precision/overflow.cpp.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace zt::cuda {

// ---- fused Adam / AdamW ---------------------------------------------------------------------------
inline constexpr int64_t kAdamChunk = 4096;  // elements per work item (one block's unit of work)

// One run of the span that shares a weight-decay choice (optim::Segment without the tensor id).
struct AdamRun {
  int64_t offset = 0;
  int64_t size = 0;
  bool decay = true;
};

// The per-step constants, in optim/adam.cpp's terms (its file comment has the formulas). Index
// [0] applies to runs without decay, [1] to runs with it.
struct AdamCoeffs {
  float b1 = 0.9f, b2 = 0.999f, one_minus_b1 = 0.1f, one_minus_b2 = 0.001f, eps = 1e-8f;
  float step_size = 0.f;     // lr / bc1
  float inv_sqrt_bc2 = 1.f;  // 1 / sqrt(bc2)
  float l2[2] = {0.f, 0.f};  // L2 decay folded into the gradient (adam_w_mode = false)
  float decoupled[2] = {1.f, 1.f};  // p *= decoupled first (adam_w_mode = true: 1 - lr * wd)
  float grad_scale = 1.f;           // g = grad * grad_scale before everything else
};

// The chunk list of a span of n elements cut by `runs` (each inside [0, n)): 16 bytes per chunk in
// device memory, and on the host the n it was built for (fused_adam checks it against the
// tensors, so a stale list is an error, never an out-of-bounds write). Build it once per segment
// layout (it waits for its upload) and reuse it every step.
struct AdamWorkList {
  Tensor items;       // i64 device tensor holding the chunks
  int64_t n = -1;     // span size it was built for
  int64_t count = 0;  // chunks
};
AdamWorkList adam_work_list(const std::vector<AdamRun>& runs, int64_t n, Device device);

// One Adam step over the span: params, exp_avg, exp_avg_sq f32; grads f32/bf16/f16; params16 (may
// be null) bf16 or f16; all with n elements on one CUDA device, each contiguous. Only elements
// inside the runs change (as on the CPU); params16 likewise.
void fused_adam(const AdamCoeffs& c, const AdamWorkList& work, Tensor& params, const Tensor& grads,
                Tensor& exp_avg, Tensor& exp_avg_sq, Tensor* params16);

// ---- gradient check: overflow flag + sum of squares ----------------------------------------------
struct GradStats {
  bool nonfinite = false;    // some element was +-inf or NaN
  double sum_squares = 0.0;  // sum of x^2 in double (inf/NaN when nonfinite)
};

// A zeroed accumulator on `device` (16 bytes of device memory, from the caching allocator).
Tensor grad_stats_buffer(Device device);
// Zeroes it again (async), for the next step.
void grad_stats_reset(Tensor& acc);
// Adds the tensors' sums of squares and overflow flags into acc (async; f32/bf16/f16 tensors,
// dtypes may differ, all on acc's device). One launch per dtype and up to 64 tensors, plus one
// single-block launch that folds the partials in.
void grad_stats_accumulate(const std::vector<Tensor>& grads, Tensor& acc);
// The one host read of a step: copies acc down on the current stream and waits for it.
GradStats grad_stats_read(const Tensor& acc);

}  // namespace zt::cuda
