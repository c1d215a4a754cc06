// core/cuda/optim.cu: the fused multi-tensor Adam/AdamW step and the fused gradient check
// (overflow flag + sum of squares) of core/cuda/optim.h, which has the contracts.
//
// Kernels, one version each:
//   adam_kernel<G, P16>   a persistent grid strides over the work list (chunks of <= kAdamChunk
//                         elements of one run); per chunk, a scalar head up to 16-byte alignment
//                         of params, then 4 elements per thread per iteration with 128-bit loads
//                         and stores of p, m, v (and of g in f32; 64-bit for a 16-bit g and for
//                         params16), then a scalar tail. When the buffers' misalignments differ
//                         (views at odd offsets) the whole chunk takes the scalar path: same math.
//   grad_stats_kernel<T>  per block, double sums and an inf/NaN flag over up to 64 tensors with
//                         16-byte loads (4 f32 or 8 16-bit elements), one partial per block;
//   grad_stats_fold       one block adds the partials in block order into the accumulator.
// Memory-bound both (Adam: 16 bytes read, 12 written per parameter with an f32 gradient); see
// HOPPER.md for the habits followed (16-byte accesses, grid sized to the SMs).
//
// Bits: every operation of the update is an explicitly rounded intrinsic (__fmul_rn, __fmaf_rn,
// __fsqrt_rn, __fdiv_rn ...), so nvcc's contraction (--fmad) and any -use_fast_math cannot change
// them, in the order of optim/adam.cpp's update_scalar. With the CPU's coefficients the GPU step is
// the CPU step bit for bit (denormals included: no FTZ on either side).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstring>
#include <type_traits>
#include <vector>

#include "core/cuda/common.cuh"
#include "core/cuda/optim.h"

namespace zt::cuda {
namespace {
using namespace detail;  // NOLINT: the shared kernel helpers

constexpr int kThreads = 256;

// ---- Adam ----------------------------------------------------------------------------------------
// One work item: [begin, begin + len) of the span, inside one run. 16 bytes.
struct WorkItem {
  int64_t begin;
  int32_t len;
  int32_t decay;
};
static_assert(sizeof(WorkItem) == 16, "work items are uploaded as raw bytes");

struct AdamK {
  float b1, b2, omb1, omb2, eps, step_size, isb2, l2, dec, gs;
};

// optim/adam.cpp update_scalar, operation by operation (see the file comment).
__device__ __forceinline__ void adam_elem(const AdamK& k, float& p, float g, float& m, float& v) {
  g = __fmul_rn(g, k.gs);
  const float gi = __fmaf_rn(k.l2, p, g);
  m = __fmaf_rn(k.b1, m, __fmul_rn(k.omb1, gi));
  v = __fmaf_rn(k.b2, v, __fmul_rn(__fmul_rn(k.omb2, gi), gi));
  const float denom = __fmaf_rn(__fsqrt_rn(v), k.isb2, k.eps);
  p = __fsub_rn(__fmul_rn(p, k.dec), __fdiv_rn(__fmul_rn(k.step_size, m), denom));
}

// Four consecutive elements of a storage type as f32 (the caller guarantees alignment: 16 bytes
// for f32, 8 for 16-bit types).
__device__ __forceinline__ void load4(const float* p, float (&x)[4]) {
  const float4 q = *reinterpret_cast<const float4*>(p);
  x[0] = q.x, x[1] = q.y, x[2] = q.z, x[3] = q.w;
}
template <typename T>  // __nv_bfloat16 or __half
__device__ __forceinline__ void load4(const T* p, float (&x)[4]) {
  const uint2 q = *reinterpret_cast<const uint2*>(p);
  T e[4];
  memcpy(e, &q, sizeof q);
  for (int j = 0; j < 4; ++j) x[j] = to_f32(e[j]);
}
__device__ __forceinline__ void store4(float* p, const float (&x)[4]) {
  *reinterpret_cast<float4*>(p) = make_float4(x[0], x[1], x[2], x[3]);
}
template <typename T>
__device__ __forceinline__ void store4(T* p, const float (&x)[4]) {
  T e[4];
  for (int j = 0; j < 4; ++j) e[j] = from_f32<T>(x[j]);
  uint2 q;
  memcpy(&q, e, sizeof q);
  *reinterpret_cast<uint2*>(p) = q;
}

__device__ __forceinline__ bool aligned(const void* p, unsigned bytes) {
  return (reinterpret_cast<uintptr_t>(p) & (bytes - 1)) == 0;
}

struct NoCopy {};  // P16 when no 16-bit copy is written

template <typename G, typename P16>
__global__ void __launch_bounds__(kThreads) adam_kernel(const WorkItem* __restrict__ items,
                                                        int64_t n_items, AdamCoeffs c,
                                                        float* __restrict__ params,
                                                        const G* __restrict__ grads,
                                                        float* __restrict__ m,
                                                        float* __restrict__ v,
                                                        P16* __restrict__ p16) {
  constexpr bool kCopy = !std::is_same_v<P16, NoCopy>;
  for (int64_t w = blockIdx.x; w < n_items; w += gridDim.x) {
    const WorkItem it = items[w];
    // Selects, not c.l2[it.decay]: a run-time index into a kernel parameter array would copy
    // the whole struct to local memory.
    const bool d = it.decay != 0;
    const AdamK k{c.b1,
                  c.b2,
                  c.one_minus_b1,
                  c.one_minus_b2,
                  c.eps,
                  c.step_size,
                  c.inv_sqrt_bc2,
                  d ? c.l2[1] : c.l2[0],
                  d ? c.decoupled[1] : c.decoupled[0],
                  c.grad_scale};
    float* p = params + it.begin;
    const G* g = grads + it.begin;
    float* mm = m + it.begin;
    float* vv = v + it.begin;
    P16* q = nullptr;
    if constexpr (kCopy) q = p16 + it.begin;
    const int len = it.len;

    // Head: elements before p is 16-byte aligned (p is 4-byte aligned: 0..3 of them).
    int head = static_cast<int>(((16u - (reinterpret_cast<uintptr_t>(p) & 15u)) & 15u) / 4u);
    if (head > len) head = len;
    bool vec = aligned(mm + head, 16) && aligned(vv + head, 16) &&
               aligned(g + head, 4 * sizeof(G));
    if constexpr (kCopy) vec = vec && aligned(q + head, 4 * sizeof(P16));
    const int nvec = vec ? (len - head) / 4 : 0;
    const int tail = vec ? head + 4 * nvec : 0;  // scalar: [0, head) and [tail, len)
    if (!vec) head = 0;

    auto scalar = [&](int i) {
      float pi = p[i], mi = mm[i], vi = vv[i];
      adam_elem(k, pi, to_f32(g[i]), mi, vi);
      mm[i] = mi;
      vv[i] = vi;
      p[i] = pi;
      if constexpr (kCopy) q[i] = from_f32<P16>(pi);
    };
    for (int i = threadIdx.x; i < head; i += blockDim.x) scalar(i);
    for (int j = threadIdx.x; j < nvec; j += blockDim.x) {
      const int i = head + 4 * j;
      float pi[4], gi[4], mi[4], vi[4];
      load4(p + i, pi);
      load4(g + i, gi);
      load4(mm + i, mi);
      load4(vv + i, vi);
#pragma unroll
      for (int e = 0; e < 4; ++e) adam_elem(k, pi[e], gi[e], mi[e], vi[e]);
      store4(mm + i, mi);
      store4(vv + i, vi);
      store4(p + i, pi);
      if constexpr (kCopy) store4(q + i, pi);
    }
    for (int i = tail + static_cast<int>(threadIdx.x); i < len; i += blockDim.x) scalar(i);
  }
}

int sm_count() {
  static thread_local int sms = 0;
  if (sms == 0) {
    int dev = 0;
    ZT_CUDA_CHECK(cudaGetDevice(&dev));
    ZT_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  }
  return sms;
}

template <typename G, typename P16>
void launch_adam(const WorkItem* items, int64_t n_items, const AdamCoeffs& c, float* p,
                 const G* g, float* m, float* v, P16* q) {
  // A persistent grid: 8 blocks of 256 threads per SM keep the memory system busy (2048 threads,
  // the SM's maximum), more would only queue.
  const int64_t blocks = std::min<int64_t>(n_items, int64_t{8} * sm_count());
  adam_kernel<G, P16><<<static_cast<unsigned>(blocks), kThreads, 0, stream()>>>(items, n_items, c,
                                                                               p, g, m, v, q);
  ZT_CUDA_CHECK_LAST();
}

template <typename G>
void adam_with_grad(const WorkItem* items, int64_t n_items, const AdamCoeffs& c, float* p,
                    const G* g, float* m, float* v, Tensor* params16) {
  if (params16 == nullptr) {
    launch_adam<G, NoCopy>(items, n_items, c, p, g, m, v, nullptr);
  } else if (params16->dtype() == DType::bf16) {
    launch_adam(items, n_items, c, p, g, m, v, static_cast<__nv_bfloat16*>(params16->raw()));
  } else {
    launch_adam(items, n_items, c, p, g, m, v, static_cast<__half*>(params16->raw()));
  }
}

void check_span(const Tensor& t, const char* name, int64_t n, Device dev) {
  ZT_CHECK(t.defined(), "cuda::fused_adam: ", name, " is undefined");
  ZT_CHECK(t.device() == dev, "cuda::fused_adam: ", name, " ", t.str(), " is not on ", dev.str(),
           " with the parameters");
  ZT_CHECK(t.numel() == n, "cuda::fused_adam: ", name, " ", t.str(), " has ", t.numel(),
           " elements, the parameters ", n);
}

// ---- gradient check ------------------------------------------------------------------------------
constexpr int kMaxTensors = 64;
struct TensorList {  // kernel argument: 1 KB + 4 bytes, well inside the 4 KB limit
  const void* ptr[kMaxTensors];
  int64_t n[kMaxTensors];
  int count;
};
struct StatsAcc {  // the device accumulator's layout
  double sum;
  int32_t nonfinite;
  int32_t pad;
};
static_assert(sizeof(StatsAcc) == 16, "the accumulator is a 2-element i64 tensor");

__device__ __forceinline__ bool nonfinite(float x) {
  return (__float_as_uint(x) & 0x7f800000u) == 0x7f800000u;  // exponent all ones: inf or NaN
}

__device__ double warp_sum_d(double s) {
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  return s;
}
// Block sum for blockDim.x == kThreads; thread 0 gets the result.
__device__ double block_sum_d(double s) {
  __shared__ double sh[kThreads / 32];
  s = warp_sum_d(s);
  if (threadIdx.x % 32 == 0) sh[threadIdx.x / 32] = s;
  __syncthreads();
  s = threadIdx.x < kThreads / 32 ? sh[threadIdx.x] : 0.0;
  if (threadIdx.x < 32) s = warp_sum_d(s);
  return s;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    grad_stats_kernel(TensorList list, double* partial_sum, int* partial_flag) {
  constexpr int kVec = 16 / sizeof(T);  // elements per 16-byte load
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  double s = 0.0;
  bool bad = false;
  auto add = [&](T raw) {
    const float x = to_f32(raw);
    bad |= nonfinite(x);
    const double d = x;
    s += d * d;
  };
  for (int t = 0; t < list.count; ++t) {
    const T* x = static_cast<const T*>(list.ptr[t]);
    const int64_t n = list.n[t];
    int64_t head = static_cast<int64_t>(((16u - (reinterpret_cast<uintptr_t>(x) & 15u)) & 15u) /
                                        sizeof(T));
    if (head > n) head = n;
    const int64_t nvec = (n - head) / kVec;
    for (int64_t i = tid; i < head; i += stride) add(x[i]);
    const uint4* xv = reinterpret_cast<const uint4*>(x + head);
    for (int64_t j = tid; j < nvec; j += stride) {
      const uint4 q = xv[j];
      T e[kVec];
      memcpy(e, &q, sizeof q);
#pragma unroll
      for (int k = 0; k < kVec; ++k) add(e[k]);
    }
    for (int64_t i = head + nvec * kVec + tid; i < n; i += stride) add(x[i]);
  }
  const int any_bad = __syncthreads_or(bad ? 1 : 0);
  s = block_sum_d(s);
  if (threadIdx.x == 0) {
    partial_sum[blockIdx.x] = s;
    partial_flag[blockIdx.x] = any_bad;
  }
}

// One block: acc += the partials, in block order (per thread a fixed stride, then a fixed tree).
__global__ void __launch_bounds__(kThreads)
    grad_stats_fold(const double* partial_sum, const int* partial_flag, int n, StatsAcc* acc) {
  double s = 0.0;
  int bad = 0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    s += partial_sum[i];
    bad |= partial_flag[i];
  }
  bad = __syncthreads_or(bad);
  s = block_sum_d(s);
  if (threadIdx.x == 0) {
    acc->sum += s;
    if (bad) acc->nonfinite = 1;
  }
}

template <typename T>
void launch_stats(const TensorList& list, int64_t total, StatsAcc* acc, int device) {
  if (list.count == 0) return;
  const int64_t blocks64 =
      std::max<int64_t>(1, std::min<int64_t>((total / (16 / sizeof(T)) + kThreads - 1) / kThreads,
                                             int64_t{4} * sm_count()));
  const int blocks = static_cast<int>(blocks64);
  Tensor buf = scratch(blocks * static_cast<int64_t>(sizeof(double) + sizeof(int)), device);
  auto* psum = static_cast<double*>(buf.raw());
  auto* pflag = reinterpret_cast<int*>(psum + blocks);
  grad_stats_kernel<T><<<blocks, kThreads, 0, stream()>>>(list, psum, pflag);
  ZT_CUDA_CHECK_LAST();
  grad_stats_fold<<<1, kThreads, 0, stream()>>>(psum, pflag, blocks, acc);
  ZT_CUDA_CHECK_LAST();
}

void check_acc(const Tensor& acc, const char* what) {
  ZT_CHECK(acc.defined() && acc.device().is_cuda() && acc.dtype() == DType::i64 &&
               acc.numel() == 2,
           "cuda::", what, ": not a grad_stats_buffer: ", acc.str());
}

}  // namespace

AdamWorkList adam_work_list(const std::vector<AdamRun>& runs, int64_t n, Device device) {
  ZT_CHECK(device.is_cuda(), "cuda::adam_work_list: device ", device.str(), " is not a GPU");
  ZT_CHECK(n >= 0, "cuda::adam_work_list: bad span size ", n);
  std::vector<WorkItem> items;
  for (const AdamRun& r : runs) {
    ZT_CHECK(r.offset >= 0 && r.size >= 0 && r.offset + r.size <= n, "cuda::adam_work_list: run [",
             r.offset, ", ", r.offset + r.size, ") is outside the span of ", n, " elements");
    const int64_t end = r.offset + r.size;
    for (int64_t b = r.offset; b < end;) {
      const int64_t next = std::min(end, (b / kAdamChunk + 1) * kAdamChunk);
      items.push_back({b, static_cast<int32_t>(next - b), r.decay ? 1 : 0});
      b = next;
    }
  }
  AdamWorkList w;
  w.n = n;
  w.count = static_cast<int64_t>(items.size());
  if (items.empty()) return w;
  w.items = Tensor::empty({2 * w.count}, DType::i64, device);
  ZT_CUDA_CHECK(cudaMemcpyAsync(w.items.raw(), items.data(), items.size() * sizeof(WorkItem),
                                cudaMemcpyHostToDevice, stream()));
  // The host vector dies here: wait until the copy (from pageable memory) has read it.
  ZT_CUDA_CHECK(cudaStreamSynchronize(stream()));
  return w;
}

void fused_adam(const AdamCoeffs& c, const AdamWorkList& work, Tensor& params, const Tensor& grads,
                Tensor& exp_avg, Tensor& exp_avg_sq, Tensor* params16) {
  ZT_CHECK(params.defined() && params.device().is_cuda() && params.dtype() == DType::f32,
           "cuda::fused_adam: parameters must be an f32 tensor on a GPU, got ", params.str());
  const Device dev = params.device();
  const int64_t n = params.numel();
  check_span(grads, "gradient", n, dev);
  check_span(exp_avg, "exp_avg", n, dev);
  check_span(exp_avg_sq, "exp_avg_sq", n, dev);
  ZT_CHECK(exp_avg.dtype() == DType::f32 && exp_avg_sq.dtype() == DType::f32,
           "cuda::fused_adam: the moments must be f32, got ", exp_avg.str(), " and ",
           exp_avg_sq.str());
  if (params16) {
    check_span(*params16, "params16", n, dev);
    ZT_CHECK(params16->dtype() == DType::bf16 || params16->dtype() == DType::f16,
             "cuda::fused_adam: params16 must be bf16 or f16, got ", params16->str());
  }
  ZT_CHECK(work.n == n, "cuda::fused_adam: the work list was built for a span of ", work.n,
           " elements, the parameters have ", n, " (rebuild it with cuda::adam_work_list)");
  if (work.count == 0) return;
  ZT_CHECK(work.items.defined() && work.items.device() == dev &&
               work.items.numel() == 2 * work.count,
           "cuda::fused_adam: work list ", work.items.str(), " is not on ", dev.str(),
           " or not from cuda::adam_work_list");
  const auto* items = static_cast<const WorkItem*>(work.items.raw());
  const int64_t n_items = work.count;
  float* p = params.data<float>();
  float* m = exp_avg.data<float>();
  float* v = exp_avg_sq.data<float>();
  switch (grads.dtype()) {
    case DType::f32:
      adam_with_grad(items, n_items, c, p, static_cast<const float*>(grads.raw()), m, v, params16);
      break;
    case DType::bf16:
      adam_with_grad(items, n_items, c, p, static_cast<const __nv_bfloat16*>(grads.raw()), m, v,
                     params16);
      break;
    case DType::f16:
      adam_with_grad(items, n_items, c, p, static_cast<const __half*>(grads.raw()), m, v,
                     params16);
      break;
    default:
      throw Error(::zt::detail::str_cat("cuda::fused_adam: gradient dtype ",
                                        dtype_name(grads.dtype()), " (want f32, bf16 or f16)"));
  }
}

Tensor grad_stats_buffer(Device device) {
  ZT_CHECK(device.is_cuda(), "cuda::grad_stats_buffer: device ", device.str(), " is not a GPU");
  Tensor acc = Tensor::empty({2}, DType::i64, device);
  grad_stats_reset(acc);
  return acc;
}

void grad_stats_reset(Tensor& acc) {
  check_acc(acc, "grad_stats_reset");
  ZT_CUDA_CHECK(cudaMemsetAsync(acc.raw(), 0, sizeof(StatsAcc), stream()));
}

void grad_stats_accumulate(const std::vector<Tensor>& grads, Tensor& acc) {
  check_acc(acc, "grad_stats_accumulate");
  auto* a = static_cast<StatsAcc*>(acc.raw());
  const int device = acc.device().index;
  for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
    TensorList list{};
    int64_t total = 0;
    auto flush = [&] {
      ZT_CUDA_DISPATCH_FLOAT(dt, "cuda::grad_stats_accumulate",
                             launch_stats<T>(list, total, a, device));
      list.count = 0;
      total = 0;
    };
    for (const Tensor& g : grads) {
      ZT_CHECK(g.defined() && g.device() == acc.device(), "cuda::grad_stats_accumulate: tensor ",
               g.str(), " is not on ", acc.device().str());
      ZT_CHECK(g.dtype() == DType::f32 || g.dtype() == DType::bf16 || g.dtype() == DType::f16,
               "cuda::grad_stats_accumulate: dtype of ", g.str(), " (want f32, bf16 or f16)");
      if (g.dtype() != dt || g.numel() == 0) continue;
      list.ptr[list.count] = g.raw();
      list.n[list.count] = g.numel();
      total += g.numel();
      if (++list.count == kMaxTensors) flush();
    }
    flush();
  }
}

GradStats grad_stats_read(const Tensor& acc) {
  check_acc(acc, "grad_stats_read");
  StatsAcc h{};
  ZT_CUDA_CHECK(cudaMemcpyAsync(&h, acc.raw(), sizeof h, cudaMemcpyDeviceToHost, stream()));
  ZT_CUDA_CHECK(cudaStreamSynchronize(stream()));
  return {h.nonfinite != 0, h.sum};
}

}  // namespace zt::cuda
