// precision/overflow.cpp: overflow tests, sums of squares and the clipping factor of overflow.h.
//
// The loops are written so that GCC/Clang vectorize them (max-reductions over the exponent bits;
// sums in an explicit array of lanes) instead of hand-written intrinsics: they are bound by memory
// bandwidth, and the explicit lanes are what make sum_squares identical on every ISA.
// Tensors on a GPU go to the fused check of core/cuda/optim.h (flag and sum in one pass, kept on
// the device until GradChecker::read()).
#include "precision/overflow.h"

#include "core/cuda/optim.h"
#include "core/error.h"
#include "precision/detail/parallel.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace zt::precision {
namespace {

// ---- overflow -----------------------------------------------------------------------------------
// An IEEE value is inf or NaN exactly when its exponent field is all ones, so the largest masked
// exponent over a block tells whether the block holds one.
constexpr uint32_t kF32Exp = 0x7f800000u;
constexpr uint16_t kF16Exp = 0x7c00u;
constexpr uint16_t kBf16Exp = 0x7f80u;

bool block_nonfinite(const float* p, int64_t n) {
  uint32_t m = 0;
#pragma omp simd reduction(max : m)
  for (int64_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, p + i, sizeof u);
    const uint32_t e = u & kF32Exp;
    m = e > m ? e : m;
  }
  return m == kF32Exp;
}

bool block_nonfinite(const uint16_t* p, int64_t n, uint16_t mask) {
  uint16_t m = 0;
#pragma omp simd reduction(max : m)
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t e = static_cast<uint16_t>(p[i] & mask);
    m = e > m ? e : m;
  }
  return m == mask;
}

// Chunks in parallel; inside a chunk, blocks of kBlock with a look at the shared flag in between,
// so that a hit anywhere stops the other threads soon after.
template <typename T, typename Block>
bool any_chunk(const T* p, int64_t n, Block&& block) {
  constexpr int64_t kBlock = 4096;
  std::atomic<bool> found{false};
  detail::for_each_chunk(n, [&](int64_t, int64_t lo, int64_t len) {
    for (int64_t b = lo; b < lo + len; b += kBlock) {
      if (found.load(std::memory_order_relaxed)) return;
      if (block(p + b, std::min(kBlock, lo + len - b))) {
        found.store(true, std::memory_order_relaxed);
        return;
      }
    }
  });
  return found.load();
}

uint16_t exponent_mask(DType dtype, const char* what) {
  ZT_CHECK(dtype == DType::f16 || dtype == DType::bf16, "precision::", what,
           ": 16-bit buffer dtype must be f16 or bf16, got ", dtype_name(dtype));
  return dtype == DType::f16 ? kF16Exp : kBf16Exp;
}

// ---- sums of squares
// ------------------------------------------------------------------------------ kLanes independent
// double accumulators: element i of a chunk goes to lane i % kLanes (the tail too), and the lanes
// are added by a fixed tree. 32 lanes = four 8-double vectors on AVX-512, enough independent add
// chains to hide the FMA latency.
constexpr int kLanes = 32;
constexpr int64_t kWidenBlock =
    1024;  // 16-bit sums: elements widened at a time (4 KiB on the stack)
static_assert(kWidenBlock % kLanes == 0 && detail::kChunk % kWidenBlock == 0);

struct Lanes {
  double acc[kLanes] = {};

  // Adds x[0..n) to the lanes; every call but the last of a chunk must pass n % kLanes == 0.
  void add(const float* x, int64_t n) {
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes) {
      for (int j = 0; j < kLanes; ++j) {
        const double d = x[i + j];
        acc[j] += d * d;  // d * d is exact in double: an FMA here gives the same bits
      }
    }
    for (int j = 0; i + j < n; ++j) {
      const double d = x[i + j];
      acc[j] += d * d;
    }
  }

  double total() const {
    double t[kLanes];
    std::copy(acc, acc + kLanes, t);
    for (int w = kLanes / 2; w >= 1; w /= 2)
      for (int j = 0; j < w; ++j) t[j] += t[j + w];
    return t[0];
  }
};

template <typename ChunkSum>
double chunked_sum(int64_t n, ChunkSum&& chunk_sum) {
  std::vector<double> part(static_cast<size_t>(detail::num_chunks(n)), 0.0);
  detail::for_each_chunk(n, [&](int64_t c, int64_t lo, int64_t len) {
    part[static_cast<size_t>(c)] = chunk_sum(lo, len);
  });
  double total = 0.0;
  for (double x : part) total += x;  // chunk order: independent of the thread count
  return total;
}

void check_tensor(const Tensor& t, const char* what) {
  ZT_CHECK(t.defined(), "precision::", what, ": undefined tensor");
  ZT_CHECK(t.dtype() == DType::f32 || t.dtype() == DType::f16 || t.dtype() == DType::bf16,
           "precision::", what, ": f32, f16 or bf16 tensor expected, got ", t.str());
}

cuda::GradStats device_stats(const Tensor& t) {
  Tensor acc = cuda::grad_stats_buffer(t.device());
  cuda::grad_stats_accumulate({t}, acc);
  return cuda::grad_stats_read(acc);
}

}  // namespace

bool has_inf_or_nan(const float* p, int64_t n) {
  ZT_CHECK(n >= 0, "precision::has_inf_or_nan: negative element count ", n);
  return any_chunk(p, n, [](const float* b, int64_t len) { return block_nonfinite(b, len); });
}

bool has_inf_or_nan(const uint16_t* p, int64_t n, DType dtype) {
  ZT_CHECK(n >= 0, "precision::has_inf_or_nan: negative element count ", n);
  const uint16_t mask = exponent_mask(dtype, "has_inf_or_nan");
  return any_chunk(
      p, n, [mask](const uint16_t* b, int64_t len) { return block_nonfinite(b, len, mask); });
}

bool has_inf_or_nan(const Tensor& t) {
  check_tensor(t, "has_inf_or_nan");
  if (t.device().is_cuda()) return device_stats(t).nonfinite;
  if (t.dtype() == DType::f32) return has_inf_or_nan(t.data<float>(), t.numel());
  return has_inf_or_nan(t.data_u16(), t.numel(), t.dtype());
}

double sum_squares(const float* p, int64_t n) {
  ZT_CHECK(n >= 0, "precision::sum_squares: negative element count ", n);
  return chunked_sum(n, [p](int64_t lo, int64_t len) {
    Lanes l;
    l.add(p + lo, len);
    return l.total();
  });
}

double sum_squares(const uint16_t* p, int64_t n, DType dtype) {
  ZT_CHECK(n >= 0, "precision::sum_squares: negative element count ", n);
  exponent_mask(dtype, "sum_squares");  // validates dtype
  // Widen blocks (a multiple of kLanes) into a stack buffer and feed the same lanes as the f32
  // path: the result is bit for bit sum_squares of the converted buffer.
  return chunked_sum(n, [p, dtype](int64_t lo, int64_t len) {
    float buf[kWidenBlock];
    Lanes l;
    for (int64_t b = lo; b < lo + len; b += kWidenBlock) {
      const int64_t m = std::min(kWidenBlock, lo + len - b);
      detail::widen_block_serial(p + b, dtype == DType::bf16, buf, m);
      l.add(buf, m);
    }
    return l.total();
  });
}

double sum_squares(const Tensor& t) {
  check_tensor(t, "sum_squares");
  if (t.device().is_cuda()) return device_stats(t).sum_squares;
  if (t.dtype() == DType::f32) return sum_squares(t.data<float>(), t.numel());
  return sum_squares(t.data_u16(), t.numel(), t.dtype());
}

// ---- GradChecker ----------------------------------------------------------------------------------
GradChecker::GradChecker(Device device) : device_(device) {
  if (device_.is_cuda()) acc_ = cuda::grad_stats_buffer(device_);
}

void GradChecker::add(const Tensor& g) {
  check_tensor(g, "GradChecker::add");
  ZT_CHECK(g.device() == device_, "precision::GradChecker::add: gradient ", g.str(),
           " is not on the checker's device ", device_.str());
  if (device_.is_cuda()) {
    cuda::grad_stats_accumulate({g}, acc_);
    return;
  }
  if (host_.overflow) return;  // the sum is not needed any more
  host_.overflow = has_inf_or_nan(g);
  if (!host_.overflow) host_.sum_squares += sum_squares(g);
}

void GradChecker::add(const std::vector<Tensor>& gs) {
  if (!device_.is_cuda()) {
    for (const Tensor& g : gs) add(g);
    return;
  }
  for (const Tensor& g : gs) {
    check_tensor(g, "GradChecker::add");
    ZT_CHECK(g.device() == device_, "precision::GradChecker::add: gradient ", g.str(),
             " is not on the checker's device ", device_.str());
  }
  cuda::grad_stats_accumulate(gs, acc_);  // one launch for up to 64 tensors of a dtype
}

GradCheck GradChecker::read() {
  GradCheck r;
  if (device_.is_cuda()) {
    const cuda::GradStats s = cuda::grad_stats_read(acc_);
    cuda::grad_stats_reset(acc_);
    r = {s.nonfinite, s.sum_squares};
  } else {
    r = host_;
    if (r.overflow) r.sum_squares = std::numeric_limits<double>::quiet_NaN();
    host_ = {};
  }
  return r;
}

GradCheck check_gradients(const Tensor& g) {
  ZT_CHECK(g.defined(), "precision::check_gradients: undefined tensor");
  GradChecker c(g.device());
  c.add(g);
  return c.read();
}

double clip_coefficient(double total_norm, double max_norm) {
  ZT_CHECK(max_norm > 0.0, "precision::clip_coefficient: max_norm must be > 0, got ", max_norm,
           " (gradient_clipping 0 disables clipping: skip the call)");
  const double coef = max_norm / (total_norm + 1e-6);
  if (std::isnan(coef)) return coef;
  return coef < 1.0 ? coef : 1.0;
}

UnscaleClip unscale_and_clip(double scaled_norm, double loss_scale, double max_norm) {
  ZT_CHECK(loss_scale > 0.0, "precision::unscale_and_clip: loss_scale must be > 0, got ",
           loss_scale);
  double combined = loss_scale;
  if (max_norm > 0.0) {
    const double clip =
        (scaled_norm / loss_scale + 1e-6) / max_norm;  // "norm is in fact norm*scale"
    if (clip > 1.0) combined = clip * loss_scale;
  }
  return {scaled_norm / loss_scale, 1.0 / combined};
}

}  // namespace zt::precision
