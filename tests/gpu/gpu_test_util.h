// tests/gpu/gpu_test_util.h: the host-side helpers the GPU suites share (test_cuda_ops,
// test_cuda_blas, test_cuda_attention): random host data, the 16-bit rounding a GPU op's input
// sees, and copies between host and device through ops::copy (which casts).
#pragma once

#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"
#include "core/ops.h"
#include "core/tensor.h"

namespace zt::gputest {

// Uniform in [lo, hi), f32 on the host, reproducible from `seed`.
inline Tensor rand_host(Shape shape, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(static_cast<size_t>(shape_numel(shape)));
  for (float& x : v) x = u(rng);
  return Tensor::from_vector(v, std::move(shape));
}
// The f32 host tensor rounded to `dt` and back: what the GPU op sees as input.
inline Tensor rounded(const Tensor& h, DType dt) {
  return dt == DType::f32 ? h.clone() : h.to(dt).to(DType::f32);
}
inline Tensor to_gpu(const Tensor& h, DType dt) {
  Tensor d = Tensor::empty(h.shape(), dt, Device::cuda());
  ops::copy(h, d);
  return d;
}
// A host copy: i32 stays i32, float dtypes are widened to f32.
inline Tensor to_host(const Tensor& d) {
  Tensor h = Tensor::empty(d.shape(), d.dtype() == DType::i32 ? DType::i32 : DType::f32);
  ops::copy(d, h);
  return h;
}

}  // namespace zt::gputest
