// core/cuda/elementwise.cu: the CUDA backend's elementwise ops, casts and copies, reductions (sum of
// squares, all-finite), bias and GELU (core/cuda/ops.h; semantics in core/ops.h).
//
// One version of each kernel: a grid-stride loop, one element per thread per iteration, templated
// on the storage type (f32, bf16, f16: f32 math, one rounding on store). Not yet done, for the
// tuning session: 16-byte vector loads/stores (8 bf16 per access), multi-tensor launches.
// Reductions are deterministic (fixed grid, partials added in a fixed order, no atomics on values).
//
// Status: compiled (sm_90), never run on a GPU; tests/gpu/test_cuda_ops.cpp checks every op here
// against the CPU backend once a GPU is available.
#include <cmath>
#include <cstring>

#include "core/cuda/common.cuh"
#include "core/cuda/ops.h"

namespace zt::cuda {
namespace {
using namespace detail;  // NOLINT: the shared kernel helpers

#define ZT_GRID_STRIDE(i, n)                                                              \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

constexpr int kThreads = 256;

template <typename T> __global__ void fill_kernel(T* x, int64_t n, float v) {
  const T tv = from_f32<T>(v);
  ZT_GRID_STRIDE(i, n) x[i] = tv;
}
template <typename S, typename D> __global__ void cast_kernel(const S* s, D* d, int64_t n) {
  ZT_GRID_STRIDE(i, n) d[i] = from_f32<D>(to_f32(s[i]));
}
template <typename T> __global__ void add_kernel(const T* a, const T* b, T* out, int64_t n) {
  ZT_GRID_STRIDE(i, n) out[i] = from_f32<T>(to_f32(a[i]) + to_f32(b[i]));
}
template <typename T> __global__ void axpy_kernel(float alpha, const T* x, T* y, int64_t n) {
  ZT_GRID_STRIDE(i, n) y[i] = from_f32<T>(to_f32(y[i]) + alpha * to_f32(x[i]));
}
template <typename T> __global__ void scale_kernel(T* x, int64_t n, float s) {
  ZT_GRID_STRIDE(i, n) x[i] = from_f32<T>(to_f32(x[i]) * s);
}
template <typename T>
__global__ void bias_add_kernel(T* x, const T* bias, int64_t n, int64_t cols) {
  ZT_GRID_STRIDE(i, n) x[i] = from_f32<T>(to_f32(x[i]) + to_f32(bias[i % cols]));
}

// GELU, tanh form (core/cpu/elementwise.cpp has the same formula and its derivative).
constexpr float kGeluS = 0.7978845608028654f;  // sqrt(2/pi)
constexpr float kGeluC = 0.044715f;
template <typename T> __global__ void gelu_forward_kernel(const T* x, T* out, int64_t n) {
  ZT_GRID_STRIDE(i, n) {
    const float a = to_f32(x[i]);
    out[i] = from_f32<T>(0.5f * a * (1.f + tanhf(kGeluS * (a + kGeluC * a * a * a))));
  }
}
template <typename T>
__global__ void gelu_backward_kernel(const T* x, const T* dout, T* dx, int64_t n) {
  ZT_GRID_STRIDE(i, n) {
    const float a = to_f32(x[i]);
    const float t = tanhf(kGeluS * (a + kGeluC * a * a * a));
    const float d = 0.5f * (1.f + t) + 0.5f * a * (1.f - t * t) * kGeluS * (1.f + 3.f * kGeluC * a * a);
    dx[i] = from_f32<T>(to_f32(dout[i]) * d);
  }
}

// Sum of squares in double: per-thread double sums, a block sum per block into partial[], then one
// block adds the partials. The grid depends only on n and the device, so the bits are reproducible.
__device__ double warp_sum_d(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ double block_sum_d(double v) {
  __shared__ double sh[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = warp_sum_d(v);
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  v = lane < static_cast<int>(blockDim.x / 32) ? sh[lane] : 0.0;
  return warp_sum_d(v);
}
template <typename T>
__global__ void sum_squares_kernel(const T* x, int64_t n, double* partial) {
  double s = 0.0;
  ZT_GRID_STRIDE(i, n) {
    const double v = to_f32(x[i]);
    s += v * v;
  }
  s = block_sum_d(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}
__global__ void sum_partials_kernel(const double* partial, int64_t n, double* out) {
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += partial[i];
  s = block_sum_d(s);
  if (threadIdx.x == 0) *out = s;
}

template <typename T> __global__ void all_finite_kernel(const T* x, int64_t n, int* bad) {
  ZT_GRID_STRIDE(i, n) {
    if (!isfinite(to_f32(x[i]))) *bad = 1;  // every writer writes 1: no atomic needed
  }
}

struct BiasGrad {
  template <typename T> struct Fn {
    const T* dy;
    int64_t cols;
    __device__ float2 operator()(int64_t r, int64_t c) const {
      return make_float2(to_f32(dy[r * cols + c]), 0.f);
    }
  };
};

unsigned grid(int64_t n) { return grid_for(n, kThreads); }

// Host <-> device copies go through the current stream and wait for it (pageable host memory).
void memcpy_sync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  if (bytes == 0) return;
  ZT_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, stream()));
  ZT_CUDA_CHECK(cudaStreamSynchronize(stream()));
}

template <typename S> void cast_from(const S* s, DType dt, void* d, int64_t n) {
  ZT_CUDA_DISPATCH_FLOAT(dt, "copy", cast_kernel<S, T><<<grid(n), kThreads, 0, stream()>>>(
                                         s, static_cast<T*>(d), n));
  ZT_CUDA_CHECK_LAST();
}

// Same-device copy with conversion between float dtypes (or a plain copy for equal dtypes).
void device_cast(const Tensor& src, Tensor& dst) {
  const int64_t n = src.numel();
  if (n == 0) return;
  if (src.dtype() == dst.dtype()) {
    ZT_CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src.raw(), src.nbytes(), cudaMemcpyDeviceToDevice,
                                  stream()));
    return;
  }
  ZT_CUDA_DISPATCH_FLOAT(src.dtype(), "copy",
                         cast_from(static_cast<const T*>(src.raw()), dst.dtype(), dst.raw(), n));
}
}  // namespace

void fill(Tensor& t, float value) {
  const int64_t n = t.numel();
  if (n == 0) return;
  if (value == 0.f && !std::signbit(value)) {  // all-zero bits: any dtype (Tensor::zeros of ids)
    ZT_CUDA_CHECK(cudaMemsetAsync(t.raw(), 0, t.nbytes(), stream()));
    return;
  }
  ZT_CUDA_DISPATCH_FLOAT(t.dtype(), "fill", fill_kernel<T><<<grid(n), kThreads, 0, stream()>>>(
                                                static_cast<T*>(t.raw()), n, value));
  ZT_CUDA_CHECK_LAST();
}

void copy(const Tensor& src, Tensor& dst) {
  const Device sd = src.device(), dd = dst.device();
  if (sd.is_cuda() && dd.is_cuda()) {
    ZT_CHECK(sd == dd, "copy: from ", src.str(), " to ", dst.str(),
             ": copies between two GPUs are not supported yet");
    device_cast(src, dst);
  } else if (dd.is_cuda()) {  // host -> device: convert on the host, then upload
    const Tensor h = src.dtype() == dst.dtype() ? src : src.to(dst.dtype());
    memcpy_sync(dst.raw(), h.raw(), h.nbytes(), cudaMemcpyHostToDevice);
  } else {  // device -> host: convert on the device, then download
    Tensor d = src;
    if (src.dtype() != dst.dtype()) {
      d = Tensor::empty(src.shape(), dst.dtype(), sd);
      device_cast(src, d);
    }
    memcpy_sync(dst.raw(), d.raw(), d.nbytes(), cudaMemcpyDeviceToHost);
  }
}

void add(const Tensor& a, const Tensor& b, Tensor& out) {
  const int64_t n = a.numel();
  if (n == 0) return;
  ZT_CUDA_DISPATCH_FLOAT(a.dtype(), "add", add_kernel<T><<<grid(n), kThreads, 0, stream()>>>(
      static_cast<const T*>(a.raw()), static_cast<const T*>(b.raw()), static_cast<T*>(out.raw()),
      n));
  ZT_CUDA_CHECK_LAST();
}

void axpy(float alpha, const Tensor& x, Tensor& y) {
  const int64_t n = x.numel();
  if (n == 0) return;
  ZT_CUDA_DISPATCH_FLOAT(x.dtype(), "axpy", axpy_kernel<T><<<grid(n), kThreads, 0, stream()>>>(
      alpha, static_cast<const T*>(x.raw()), static_cast<T*>(y.raw()), n));
  ZT_CUDA_CHECK_LAST();
}

void scale(Tensor& x, float s) {
  const int64_t n = x.numel();
  if (n == 0) return;
  ZT_CUDA_DISPATCH_FLOAT(x.dtype(), "scale", scale_kernel<T><<<grid(n), kThreads, 0, stream()>>>(
      static_cast<T*>(x.raw()), n, s));
  ZT_CUDA_CHECK_LAST();
}

double sum_squares(const Tensor& x) {
  const int64_t n = x.numel();
  if (n == 0) return 0.0;
  const unsigned blocks = grid(n);
  Tensor buf = scratch((blocks + 1) * 8, x.device().index);
  auto* partial = static_cast<double*>(buf.raw());
  ZT_CUDA_DISPATCH_FLOAT(x.dtype(), "sum_squares",
                         sum_squares_kernel<T><<<blocks, kThreads, 0, stream()>>>(
                             static_cast<const T*>(x.raw()), n, partial));
  ZT_CUDA_CHECK_LAST();
  sum_partials_kernel<<<1, 1024, 0, stream()>>>(partial, blocks, partial + blocks);
  ZT_CUDA_CHECK_LAST();
  double result = 0.0;
  memcpy_sync(&result, partial + blocks, sizeof result, cudaMemcpyDeviceToHost);
  return result;
}

bool all_finite(const Tensor& x) {
  const int64_t n = x.numel();
  if (n == 0) return true;
  Tensor buf = scratch(sizeof(int), x.device().index);
  int* bad = static_cast<int*>(buf.raw());
  ZT_CUDA_CHECK(cudaMemsetAsync(bad, 0, sizeof(int), stream()));
  ZT_CUDA_DISPATCH_FLOAT(x.dtype(), "all_finite",
                         all_finite_kernel<T><<<grid(n), kThreads, 0, stream()>>>(
                             static_cast<const T*>(x.raw()), n, bad));
  ZT_CUDA_CHECK_LAST();
  int host = 0;
  memcpy_sync(&host, bad, sizeof host, cudaMemcpyDeviceToHost);
  return host == 0;
}

void bias_add(Tensor& x, const Tensor& bias, int64_t rows, int64_t cols) {
  const int64_t n = rows * cols;
  if (n == 0) return;
  ZT_CUDA_DISPATCH_FLOAT(x.dtype(), "bias_add",
                         bias_add_kernel<T><<<grid(n), kThreads, 0, stream()>>>(
                             static_cast<T*>(x.raw()), static_cast<const T*>(bias.raw()), n, cols));
  ZT_CUDA_CHECK_LAST();
}

void bias_grad_acc(const Tensor& dy, Tensor& dbias, int64_t rows, int64_t cols) {
  ZT_CUDA_DISPATCH_FLOAT(dy.dtype(), "bias_grad_acc",
                         colsum_acc<T>(BiasGrad::Fn<T>{static_cast<const T*>(dy.raw()), cols},
                                       rows, cols, static_cast<T*>(dbias.raw()),
                                       static_cast<T*>(nullptr), dy.device().index));
}

void gelu_forward(const Tensor& x, Tensor& out) {
  const int64_t n = x.numel();
  if (n == 0) return;
  ZT_CUDA_DISPATCH_FLOAT(x.dtype(), "gelu_forward",
                         gelu_forward_kernel<T><<<grid(n), kThreads, 0, stream()>>>(
                             static_cast<const T*>(x.raw()), static_cast<T*>(out.raw()), n));
  ZT_CUDA_CHECK_LAST();
}

void gelu_backward(const Tensor& x, const Tensor& dout, Tensor& dx) {
  const int64_t n = x.numel();
  if (n == 0) return;
  ZT_CUDA_DISPATCH_FLOAT(x.dtype(), "gelu_backward",
                         gelu_backward_kernel<T><<<grid(n), kThreads, 0, stream()>>>(
                             static_cast<const T*>(x.raw()), static_cast<const T*>(dout.raw()),
                             static_cast<T*>(dx.raw()), n));
  ZT_CUDA_CHECK_LAST();
}

}  // namespace zt::cuda
