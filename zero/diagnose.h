// zero/diagnose.h: naming numeric faults (issue #10, part 5). When fp32 or bf16 training (no loss
// scale) meets an inf or NaN, "the gradient holds inf or NaN" is not enough to debug it: these
// helpers name the FIRST non-finite tensor in the model's canonical parameter order (the order of
// the flat buffers, DESIGN.md), with the element and its value, e.g.
//   step 5: the gradient holds inf or NaN: first non-finite gradient h.1.attn.qkv.weight[12] = nan
// Partition-aware: from stage 1 on each rank holds only its range of the reduced gradient; every
// rank scans its range, the ranks agree on the lowest flat index (one small all-gather), and the
// index is mapped back to a parameter name through the parameters' flat offsets.
#pragma once

#include "core/tensor.h"

#include <cstdint>
#include <string>

namespace zt::comm {
class Communicator;
}
namespace zt::nn {
class GPT;
}

namespace zt::zero {

class Engine;

// Index of the first inf/NaN element of an f32, f16 or bf16 host tensor, or -1 (bit test, immune
// to -ffast-math like precision/overflow.h).
int64_t first_nonfinite(const Tensor& t);

// Flat element `flat` of the model's canonical layout as "name[index]" ("padding[k]" past the
// last parameter).
std::string flat_element_name(nn::GPT& model, int64_t flat);

// The first non-finite element over all ranks of the flat range each rank holds: this rank's `g`
// is flat elements [lo, lo + g.numel()). Collective over `comm` when it is non-null and has more
// than one rank (call it on every rank). Returns "" when every element is finite, else
// "h.1.attn.qkv.weight[12] = nan".
std::string first_nonfinite_element(nn::GPT& model, const Tensor& g, int64_t lo,
                                    comm::Communicator* comm);

// Local check of one micro-batch's loss (fp32/bf16 training that does not skip non-finite steps):
// throws zt::Error naming the step, the micro-batch, the rank and the first non-finite weight this
// rank holds (or saying the weights are finite: the forward overflowed). No-op when the loss is
// finite, or when the engine skips such steps (fp16 loss scaling, bf16.check_grad_overflow).
void check_loss(Engine& engine, double loss, int64_t step, int64_t micro_batch);

}  // namespace zt::zero
