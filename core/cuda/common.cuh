// core/cuda/common.cuh: what the CUDA kernels of core/cuda/*.cu share (folder-private, .cu only):
// f32 <-> storage-type conversions, the dtype dispatch, grid sizing, warp and block reductions.
//
// Storage types are float, __nv_bfloat16 and __half; every kernel loads them to f32, computes in
// f32 and rounds once on store (round to nearest even, as core/dtype.h), so bf16/f16 results differ
// from the CPU's f32 results only by that final rounding (and by f32 summation order).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "core/cuda/check.h"
#include "core/cuda/stream.h"
#include "core/tensor.h"

namespace zt::cuda::detail {

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }

template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <> __device__ __forceinline__ __half from_f32<__half>(float x) {
  return __float2half_rn(x);
}

inline cudaStream_t stream() { return current_stream(); }

// Blocks for a grid-stride loop over n items: enough to fill the GPU a few times over, no more
// (a grid of millions of blocks costs launch and scheduling time for nothing).
inline unsigned grid_for(int64_t n, int threads) {
  static thread_local int sms = 0;
  if (sms == 0) {
    int dev = 0;
    ZT_CUDA_CHECK(cudaGetDevice(&dev));
    ZT_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  }
  const int64_t wanted = (n + threads - 1) / threads;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(wanted, int64_t{32} * sms)));
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
// Block-wide sum/max for blockDim.x a multiple of 32 (<= 1024); every thread gets the result.
// `scratch` holds 32 floats of shared memory; it may be reused after the call returns.
template <bool kMax>
__device__ __forceinline__ float block_reduce(float v, float* scratch) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  v = kMax ? warp_max(v) : warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : (kMax ? -INFINITY : 0.f);
  return kMax ? warp_max(v) : warp_sum(v);
}

// A scratch device buffer from the caching allocator (a Tensor, so it is freed back to the cache
// when it goes out of scope; on the current stream, so reuse is ordered after this op's kernels).
inline Tensor scratch(int64_t bytes, int device) {
  return Tensor::empty({(bytes + 7) / 8}, DType::i64, Device::cuda(device));
}

// ---- deterministic column sums: out[c] += sum over rows r of fn(r, c) ---------------------------
// Two passes with a fixed order, no atomics (the CPU backend's rule: same bits on every run).
// Pass 1: block (cx, ry) sums columns [32 cx, 32 cx + 32) over rows [R ry, R ry + R), eight row
// lanes each taking every eighth row, then lane 0 adds the eight in order -> partial[ry][c].
// Pass 2: one thread per column adds the partials in ry order and accumulates into out (type T).
// fn returns two sums at once (LayerNorm's dweight and dbias); .y is ignored when out_y is null.
constexpr int kColsumRowsPerBlock = 128;

template <typename Fn>
__global__ void colsum_partial_kernel(Fn fn, float2* partial, int64_t rows, int64_t cols,
                                      int64_t rows_per_block) {
  __shared__ float2 sh[8][33];
  const int64_t c = static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * rows_per_block;
  const int64_t r1 = r0 + rows_per_block < rows ? r0 + rows_per_block : rows;
  float2 acc = make_float2(0.f, 0.f);
  if (c < cols) {
    for (int64_t r = r0 + threadIdx.y; r < r1; r += 8) {
      const float2 v = fn(r, c);
      acc.x += v.x;
      acc.y += v.y;
    }
  }
  sh[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    float2 s = sh[0][threadIdx.x];
    for (int y = 1; y < 8; ++y) {
      s.x += sh[y][threadIdx.x].x;
      s.y += sh[y][threadIdx.x].y;
    }
    partial[static_cast<int64_t>(blockIdx.y) * cols + c] = s;
  }
}

template <typename T>
__global__ void colsum_finish_kernel(const float2* partial, int64_t nblocks, int64_t cols,
                                     T* out_x, T* out_y) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < cols;
       c += stride) {
    float sx = 0.f, sy = 0.f;
    for (int64_t b = 0; b < nblocks; ++b) {
      sx += partial[b * cols + c].x;
      sy += partial[b * cols + c].y;
    }
    out_x[c] = from_f32<T>(to_f32(out_x[c]) + sx);
    if (out_y) out_y[c] = from_f32<T>(to_f32(out_y[c]) + sy);
  }
}

template <typename T, typename Fn>
void colsum_acc(Fn fn, int64_t rows, int64_t cols, T* out_x, T* out_y, int device) {
  if (rows == 0 || cols == 0) return;
  int64_t per = kColsumRowsPerBlock;
  if ((rows + per - 1) / per > 65535) per = (rows + 65534) / 65535;  // grid.y limit
  const int64_t nblocks = (rows + per - 1) / per;
  Tensor buf = scratch(nblocks * cols * static_cast<int64_t>(sizeof(float2)), device);
  auto* partial = static_cast<float2*>(buf.raw());
  const dim3 grid(static_cast<unsigned>((cols + 31) / 32), static_cast<unsigned>(nblocks));
  colsum_partial_kernel<<<grid, dim3(32, 8), 0, stream()>>>(fn, partial, rows, cols, per);
  ZT_CUDA_CHECK_LAST();
  colsum_finish_kernel<T><<<grid_for(cols, 256), 256, 0, stream()>>>(partial, nblocks, cols, out_x,
                                                                      out_y);
  ZT_CUDA_CHECK_LAST();
}

}  // namespace zt::cuda::detail

// Runs the statements with `T` bound to the storage type of a float dtype (f32, bf16, f16); any
// other dtype throws naming the op.
#define ZT_CUDA_DISPATCH_FLOAT(dtype, op, ...)                                              \
  do {                                                                                      \
    switch (dtype) {                                                                        \
      case ::zt::DType::f32: { using T = float; __VA_ARGS__; break; }                       \
      case ::zt::DType::bf16: { using T = __nv_bfloat16; __VA_ARGS__; break; }              \
      case ::zt::DType::f16: { using T = __half; __VA_ARGS__; break; }                      \
      default:                                                                              \
        throw ::zt::Error(::zt::detail::str_cat(op, ": dtype ", ::zt::dtype_name(dtype),    \
                                                " is not supported on CUDA (f32/bf16/f16)")); \
    }                                                                                       \
  } while (0)
