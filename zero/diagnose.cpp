// zero/diagnose.cpp: the first non-finite tensor, named (zero/diagnose.h).
#include "zero/diagnose.h"

#include "comm/communicator.h"
#include "core/error.h"
#include "core/nn/gpt.h"
#include "core/ops.h"
#include "zero/engine.h"

#include <cmath>
#include <cstdio>
#include <limits>
#include <vector>

namespace zt::zero {

int64_t first_nonfinite(const Tensor& t) {
  const int64_t n = t.numel();
  if (t.dtype() == DType::f32) {
    const float* p = t.data<float>();
    for (int64_t i = 0; i < n; ++i)
      if ((f32_bits(p[i]) & 0x7f800000u) == 0x7f800000u) return i;
    return -1;
  }
  ZT_CHECK(t.dtype() == DType::f16 || t.dtype() == DType::bf16, "first_nonfinite: ", t.str(),
           " is not a floating tensor");
  const auto* p = static_cast<const uint16_t*>(t.raw());
  const uint16_t mask = t.dtype() == DType::bf16 ? 0x7f80u : 0x7c00u;
  for (int64_t i = 0; i < n; ++i)
    if ((p[i] & mask) == mask) return i;
  return -1;
}

namespace {

float value_at(const Tensor& t, int64_t i) {
  if (t.dtype() == DType::f32) return t.data<float>()[i];
  const uint16_t h = static_cast<const uint16_t*>(t.raw())[i];
  return t.dtype() == DType::bf16 ? bf16_to_f32(h) : f16_to_f32(h);
}

std::string value_str(float v) { return std::isnan(v) ? "nan" : v > 0 ? "inf" : "-inf"; }

// The scans read host bytes: a GPU engine's buffer is copied down first (a failing run's last
// act, so the copy's cost does not matter).
Tensor on_host(const Tensor& t) {
  if (t.device().is_cpu()) return t;
  Tensor h = Tensor::empty(t.shape(), t.dtype());
  ops::copy(t, h);
  return h;
}

}  // namespace

std::string flat_element_name(nn::GPT& model, int64_t flat) {
  int64_t off = 0;
  for (nn::Parameter* p : model.parameters()) {
    const int64_t k = p->numel();  // (value is unbound while stage 3 has it released)
    if (flat < off + k) return detail::str_cat(p->name, "[", flat - off, "]");
    off += k;
  }
  return detail::str_cat("padding[", flat - off, "]");
}

std::string first_nonfinite_element(nn::GPT& model, const Tensor& grad, int64_t lo,
                                    comm::Communicator* comm) {
  const Tensor g = on_host(grad);
  const int64_t i = first_nonfinite(g);
  constexpr int64_t kNone = std::numeric_limits<int64_t>::max();
  // (flat index, value bits) of this rank's first; the lowest flat index over the ranks wins.
  int64_t flat = i < 0 ? kNone : lo + i;
  float v = i < 0 ? 0.f : value_at(g, i);
  if (comm != nullptr && comm->world() > 1) {
    const int w = comm->world();
    Tensor mine = Tensor::empty({2}, DType::i64), all = Tensor::empty({2 * w}, DType::i64);
    mine.data<int64_t>()[0] = flat;
    mine.data<int64_t>()[1] = f32_bits(v);
    comm->all_gather(mine, all)->wait();
    const int64_t* a = all.data<int64_t>();
    for (int r = 0; r < w; ++r)
      if (a[2 * r] <= flat && a[2 * r] != kNone) {
        flat = a[2 * r];
        v = f32_from_bits(static_cast<uint32_t>(a[2 * r + 1]));
      }
  }
  if (flat == kNone) return "";
  return detail::str_cat(flat_element_name(model, flat), " = ", value_str(v));
}

void check_loss(Engine& engine, double loss, int64_t step, int64_t micro_batch) {
  if (std::isfinite(loss)) return;
  const EngineSettings& s = engine.settings();
  if (s.model_dtype == DType::f16 || s.skip_nonfinite) return;  // the step will be skipped
  // The weights this rank holds: all of them at stages 0-2, its partition at stage 3.
  const Tensor w = on_host(engine.model_params());
  const int64_t lo = engine.partitioned_params() ? engine.partition().begin() : 0;
  const int64_t i = first_nonfinite(w);
  std::string cause =
      i >= 0 ? detail::str_cat("the first non-finite weight is ",
                               flat_element_name(engine.model(), lo + i), " = ",
                               value_str(value_at(w, i)))
             : std::string(engine.partitioned_params()
                               ? "this rank's partition of the weights is finite"
                               : "the weights are finite: the forward pass overflowed");
  throw Error(detail::str_cat("step ", step, ", micro-batch ", micro_batch, ": the loss is ",
                              value_str(static_cast<float>(loss)), " on rank ", engine.rank(), " (",
                              dtype_name(s.model_dtype), " training has no loss scale); ", cause,
                              ". Lower optimizer.params.lr, set gradient_clipping, or set ",
                              "bf16.check_grad_overflow to skip such steps"));
}

}  // namespace zt::zero
