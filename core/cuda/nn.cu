// core/cuda/nn.cu: the CUDA backend's row-wise layers: LayerNorm, softmax, fused softmax +
// cross-entropy, and the embedding lookup (core/cuda/ops.h; semantics in core/ops.h).
//
// Versions, one each, written for clarity first (llm.c's first kernels, not its last):
//  - LayerNorm forward/backward: one warp per row, f32 statistics; dweight/dbias through the
//    deterministic two-pass column sum (common.cuh), no atomics.
//  - softmax, cross-entropy: one block per row (rows of a vocabulary: 50k columns), block
//    reductions for max and sum; the row is read three times (L2 catches the re-reads).
//  - embedding backward: scatter-add without atomics and in row order (so an f32 table gets the
//    CPU's exact bits): block b owns the ids with id % 128 == b and walks all rows.
// Left for tuning on the H100: 16-byte vector accesses, a row kept in registers/shared memory for
// LayerNorm and softmax, online softmax (one pass), fusing the classifier with its matmul.
//
// Status: compiled (sm_90), never run on a GPU; tests/gpu/test_cuda_ops.cpp compares each op with
// the CPU backend once a GPU is available.
#include <vector>

#include "core/cuda/common.cuh"
#include "core/cuda/ops.h"

namespace zt::cuda {
namespace {
using namespace detail;  // NOLINT: the shared kernel helpers

constexpr int kRowsPerBlock = 8;  // LayerNorm: 8 warps, a row each
constexpr int kRowThreads = 512;  // softmax / cross-entropy: one block per row
constexpr int kEmbBuckets = 128;

// ---- LayerNorm ----------------------------------------------------------------------------------
template <typename T>
__global__ void layernorm_forward_kernel(const T* x, const T* w, const T* b, T* out, float* mean,
                                         float* rstd, int64_t rows, int64_t cols, float eps) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= rows) return;
  const T* xr = x + r * cols;
  float s = 0.f;
  for (int64_t c = lane; c < cols; c += 32) s += to_f32(xr[c]);
  const float m = warp_sum(s) / static_cast<float>(cols);
  float v = 0.f;
  for (int64_t c = lane; c < cols; c += 32) {
    const float d = to_f32(xr[c]) - m;
    v += d * d;
  }
  const float rs = rsqrtf(warp_sum(v) / static_cast<float>(cols) + eps);
  T* o = out + r * cols;
  for (int64_t c = lane; c < cols; c += 32)
    o[c] = from_f32<T>((to_f32(xr[c]) - m) * rs * to_f32(w[c]) + to_f32(b[c]));
  if (lane == 0) {
    mean[r] = m;
    rstd[r] = rs;
  }
}

// dx = rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm)), dnorm = dout * w
template <typename T>
__global__ void layernorm_backward_dx_kernel(const T* dout, const T* x, const T* w,
                                             const float* mean, const float* rstd, T* dx,
                                             int64_t rows, int64_t cols) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= rows) return;
  const T* xr = x + r * cols;
  const T* g = dout + r * cols;
  const float m = mean[r], rs = rstd[r];
  float s1 = 0.f, s2 = 0.f;
  for (int64_t c = lane; c < cols; c += 32) {
    const float n = (to_f32(xr[c]) - m) * rs;
    const float dn = to_f32(g[c]) * to_f32(w[c]);
    s1 += dn;
    s2 += dn * n;
  }
  s1 = warp_sum(s1) / static_cast<float>(cols);
  s2 = warp_sum(s2) / static_cast<float>(cols);
  T* d = dx + r * cols;
  for (int64_t c = lane; c < cols; c += 32) {
    const float n = (to_f32(xr[c]) - m) * rs;
    d[c] = from_f32<T>(rs * (to_f32(g[c]) * to_f32(w[c]) - s1 - n * s2));
  }
}

template <typename T> struct LayerNormParamGrad {  // (dweight, dbias) terms of one element
  const T* dout;
  const T* x;
  const float* mean;
  const float* rstd;
  int64_t cols;
  __device__ float2 operator()(int64_t r, int64_t c) const {
    const float g = to_f32(dout[r * cols + c]);
    const float n = (to_f32(x[r * cols + c]) - mean[r]) * rstd[r];
    return make_float2(g * n, g);
  }
};

// ---- softmax and cross-entropy: one block per row -----------------------------------------------
template <typename T>
__global__ void softmax_forward_kernel(const T* x, T* out, int64_t cols) {
  __shared__ float scratch_sh[32];
  const T* xr = x + static_cast<int64_t>(blockIdx.x) * cols;
  T* o = out + static_cast<int64_t>(blockIdx.x) * cols;
  float mx = -INFINITY;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) mx = fmaxf(mx, to_f32(xr[c]));
  mx = block_reduce<true>(mx, scratch_sh);
  float s = 0.f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) s += expf(to_f32(xr[c]) - mx);
  const float inv = 1.f / block_reduce<false>(s, scratch_sh);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
    o[c] = from_f32<T>(expf(to_f32(xr[c]) - mx) * inv);
}

template <typename T>
__global__ void softmax_backward_kernel(const T* y, const T* dy, T* dx, int64_t cols) {
  __shared__ float scratch_sh[32];
  const int64_t base = static_cast<int64_t>(blockIdx.x) * cols;
  float dot = 0.f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
    dot += to_f32(y[base + c]) * to_f32(dy[base + c]);
  dot = block_reduce<false>(dot, scratch_sh);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
    dx[base + c] = from_f32<T>(to_f32(y[base + c]) * (to_f32(dy[base + c]) - dot));
}

// ---- ids out of range --------------------------------------------------------------------------
// The kernels never index with an id outside [0, limit) (it would be an illegal address, which
// ends the CUDA context); they skip it (embedding rows of zeros, no loss) and record the first one
// here. check_ids() reports it as an error; cross_entropy_forward calls it after the sync it does
// anyway to return the loss, so a step costs no extra synchronisation for the check (the CPU
// backend checks before each op: core/ops.cpp require_ids).
struct BadId {
  int op;  // 0: none; 1 embedding_forward, 2 embedding_backward_acc, 3 cross_entropy_forward
  int id;
  long long pos, limit;
};
__device__ BadId g_bad_id;

__device__ void record_bad_id(int op, int id, long long pos, long long limit) {
  if (atomicCAS(&g_bad_id.op, 0, -1) == 0) {  // first one wins; fields before the op is visible
    g_bad_id.id = id;
    g_bad_id.pos = pos;
    g_bad_id.limit = limit;
    __threadfence();
    atomicExch(&g_bad_id.op, op);
  }
}
__device__ bool id_ok(int32_t id, int64_t limit) { return id >= 0 && id < limit; }

// probs = softmax(logits); loss[r] = log(sum exp(a - max)) - (a[t] - max), in double as the CPU.
template <typename T>
__global__ void cross_entropy_forward_kernel(const T* logits, const int32_t* targets, T* probs,
                                             double* loss, int64_t vocab) {
  __shared__ float scratch_sh[32];
  const int64_t r = blockIdx.x;
  const T* a = logits + r * vocab;
  T* p = probs + r * vocab;
  float mx = -INFINITY;
  for (int64_t c = threadIdx.x; c < vocab; c += blockDim.x) mx = fmaxf(mx, to_f32(a[c]));
  mx = block_reduce<true>(mx, scratch_sh);
  float s = 0.f;
  for (int64_t c = threadIdx.x; c < vocab; c += blockDim.x) s += expf(to_f32(a[c]) - mx);
  s = block_reduce<false>(s, scratch_sh);
  const float inv = 1.f / s;
  for (int64_t c = threadIdx.x; c < vocab; c += blockDim.x)
    p[c] = from_f32<T>(expf(to_f32(a[c]) - mx) * inv);
  if (threadIdx.x == 0) {
    const int32_t t = targets[r];
    if (t >= vocab) record_bad_id(3, t, r, vocab);
    loss[r] = t >= 0 && t < vocab
                  ? log(static_cast<double>(s)) - static_cast<double>(to_f32(a[t]) - mx)
                  : 0.0;
  }
}

__global__ void count_targets_kernel(const int32_t* targets, int64_t rows, int* count) {
  __shared__ float scratch_sh[32];
  float n = 0.f;  // exact in f32 up to 2^24 per thread; summed once more below
  int local = 0;
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) local += targets[r] >= 0;
  n = static_cast<float>(local);
  n = block_reduce<false>(n, scratch_sh);
  if (threadIdx.x == 0) *count = static_cast<int>(n);
}

// dlogits = dloss * (probs - onehot(target)) / count; rows with target < 0 get zeros. The count is
// read on the device (no host round trip).
template <typename T>
__global__ void cross_entropy_backward_kernel(const T* probs, const int32_t* targets,
                                              const int* count, float dloss, T* dlogits,
                                              int64_t vocab) {
  const int64_t r = blockIdx.x;
  const int32_t t = targets[r];
  const float s = *count > 0 ? dloss / static_cast<float>(*count) : 0.f;
  const T* p = probs + r * vocab;
  T* d = dlogits + r * vocab;
  for (int64_t c = threadIdx.x; c < vocab; c += blockDim.x)
    d[c] = from_f32<T>(t < 0 ? 0.f : to_f32(p[c]) * s - (c == t ? s : 0.f));
}

// ---- embedding ----------------------------------------------------------------------------------
template <typename T>
__global__ void embedding_forward_kernel(const int32_t* ids, const T* table, T* out, int64_t n,
                                         int64_t cols, int64_t vocab) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i % cols;
    const int32_t id = ids[r];
    if (!id_ok(id, vocab)) {
      if (c == 0) record_bad_id(1, id, r, vocab);
      out[i] = from_f32<T>(0.f);
      continue;
    }
    out[i] = table[static_cast<int64_t>(id) * cols + c];
  }
}

// grid (kEmbBuckets, column chunks of blockDim.x): the block for bucket b adds, in row order, the
// rows whose id % kEmbBuckets == b. One writer per table element, additions in row order.
template <typename T>
__global__ void embedding_backward_kernel(const int32_t* ids, const T* dout, T* dtable,
                                          int64_t rows, int64_t cols, int64_t vocab) {
  const int64_t c = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t id = ids[r];
    if (!id_ok(ids[r], vocab)) {
      if (blockIdx.x == 0 && c == 0) record_bad_id(2, ids[r], r, vocab);
      continue;
    }
    if (id % kEmbBuckets != blockIdx.x) continue;
    T* t = dtable + id * cols + c;
    *t = from_f32<T>(to_f32(*t) + to_f32(dout[r * cols + c]));
  }
}

unsigned row_blocks(int64_t rows) {
  return static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock);
}
void require_row_grid(const char* op, int64_t rows) {
  ZT_CHECK(rows <= 2147483647, op, ": ", rows, " rows exceed the CUDA grid (2^31 - 1 blocks)");
}
template <typename T> const T* cp(const Tensor& t) { return static_cast<const T*>(t.raw()); }
template <typename T> T* mp(const Tensor& t) { return static_cast<T*>(t.raw()); }
void require_f32_stats(const char* op, const Tensor& mean, const Tensor& rstd) {
  ZT_CHECK(mean.dtype() == DType::f32 && rstd.dtype() == DType::f32, op,
           ": mean and rstd must be f32 on CUDA, got ", mean.str(), " and ", rstd.str());
}
}  // namespace

void layernorm_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& out,
                       Tensor& mean, Tensor& rstd, int64_t rows, int64_t cols, float eps) {
  require_f32_stats("layernorm_forward", mean, rstd);
  if (rows == 0) return;
  ZT_CUDA_DISPATCH_FLOAT(x.dtype(), "layernorm_forward",
                         layernorm_forward_kernel<T><<<row_blocks(rows), 32 * kRowsPerBlock, 0,
                                                       stream()>>>(
                             cp<T>(x), cp<T>(w), cp<T>(b), mp<T>(out), mp<float>(mean),
                             mp<float>(rstd), rows, cols, eps));
  ZT_CUDA_CHECK_LAST();
}

void layernorm_backward(const Tensor& dout, const Tensor& x, const Tensor& w, const Tensor& mean,
                        const Tensor& rstd, Tensor& dx, Tensor& dw, Tensor& db, int64_t rows,
                        int64_t cols) {
  require_f32_stats("layernorm_backward", mean, rstd);
  if (rows == 0) return;
  ZT_CUDA_DISPATCH_FLOAT(
      x.dtype(), "layernorm_backward",
      layernorm_backward_dx_kernel<T><<<row_blocks(rows), 32 * kRowsPerBlock, 0, stream()>>>(
          cp<T>(dout), cp<T>(x), cp<T>(w), cp<float>(mean), cp<float>(rstd), mp<T>(dx), rows,
          cols);
      ZT_CUDA_CHECK_LAST();
      colsum_acc<T>(LayerNormParamGrad<T>{cp<T>(dout), cp<T>(x), cp<float>(mean),
                                          cp<float>(rstd), cols},
                    rows, cols, mp<T>(dw), mp<T>(db), x.device().index));
}

void softmax_forward(const Tensor& x, Tensor& out, int64_t rows, int64_t cols) {
  require_row_grid("softmax_forward", rows);
  if (rows == 0) return;
  ZT_CUDA_DISPATCH_FLOAT(x.dtype(), "softmax_forward",
                         softmax_forward_kernel<T><<<static_cast<unsigned>(rows), kRowThreads, 0,
                                                     stream()>>>(cp<T>(x), mp<T>(out), cols));
  ZT_CUDA_CHECK_LAST();
}

void softmax_backward(const Tensor& y, const Tensor& dy, Tensor& dx, int64_t rows, int64_t cols) {
  require_row_grid("softmax_backward", rows);
  if (rows == 0) return;
  ZT_CUDA_DISPATCH_FLOAT(y.dtype(), "softmax_backward",
                         softmax_backward_kernel<T><<<static_cast<unsigned>(rows), kRowThreads, 0,
                                                      stream()>>>(cp<T>(y), cp<T>(dy), mp<T>(dx),
                                                                  cols));
  ZT_CUDA_CHECK_LAST();
}

void embedding_forward(const Tensor& ids, const Tensor& table, Tensor& out) {
  const int64_t cols = table.size(1), n = ids.numel() * cols;
  if (n == 0) return;
  ZT_CUDA_DISPATCH_FLOAT(table.dtype(), "embedding_forward",
                         embedding_forward_kernel<T><<<grid_for(n, 256), 256, 0, stream()>>>(
                             cp<int32_t>(ids), cp<T>(table), mp<T>(out), n, cols,
                             table.size(0)));
  ZT_CUDA_CHECK_LAST();
}

void embedding_backward_acc(const Tensor& ids, const Tensor& dout, Tensor& dtable) {
  const int64_t rows = ids.numel(), cols = dtable.size(1);
  if (rows == 0 || cols == 0) return;
  const dim3 grid(kEmbBuckets, static_cast<unsigned>((cols + 255) / 256));
  ZT_CUDA_DISPATCH_FLOAT(dtable.dtype(), "embedding_backward_acc",
                         embedding_backward_kernel<T><<<grid, 256, 0, stream()>>>(
                             cp<int32_t>(ids), cp<T>(dout), mp<T>(dtable), rows, cols,
                             dtable.size(0)));
  ZT_CUDA_CHECK_LAST();
}

void check_ids() {
  BadId h{};
  ZT_CUDA_CHECK(cudaMemcpyFromSymbol(&h, g_bad_id, sizeof(h)));
  if (h.op == 0) return;
  const BadId none{};
  ZT_CUDA_CHECK(cudaMemcpyToSymbol(g_bad_id, &none, sizeof(none)));
  static const char* const names[] = {"?", "embedding_forward", "embedding_backward_acc",
                                      "cross_entropy_forward"};
  throw Error(::zt::detail::str_cat(names[h.op >= 1 && h.op <= 3 ? h.op : 0], ": id ", h.id,
                              " at position ", h.pos, " is out of range [0, ", h.limit,
                              ") (found on the GPU; the op skipped it)"));
}

float cross_entropy_forward(const Tensor& logits, const Tensor& targets, Tensor& probs,
                            int64_t rows, int64_t vocab) {
  require_row_grid("cross_entropy_forward", rows);
  if (rows == 0) return 0.f;
  Tensor loss_buf = scratch(rows * 8, logits.device().index);
  auto* loss = static_cast<double*>(loss_buf.raw());
  ZT_CUDA_DISPATCH_FLOAT(logits.dtype(), "cross_entropy_forward",
                         cross_entropy_forward_kernel<T><<<static_cast<unsigned>(rows), kRowThreads,
                                                           0, stream()>>>(
                             cp<T>(logits), cp<int32_t>(targets), mp<T>(probs), loss, vocab));
  ZT_CUDA_CHECK_LAST();
  // The mean over counted rows, added on the host in row order as the CPU backend does (rows is
  // the batch's token count: a few hundred KB at most).
  std::vector<double> h_loss(static_cast<size_t>(rows));
  std::vector<int32_t> h_t(static_cast<size_t>(rows));
  ZT_CUDA_CHECK(cudaMemcpyAsync(h_loss.data(), loss, rows * sizeof(double),
                                cudaMemcpyDeviceToHost, stream()));
  ZT_CUDA_CHECK(cudaMemcpyAsync(h_t.data(), targets.raw(), rows * sizeof(int32_t),
                                cudaMemcpyDeviceToHost, stream()));
  ZT_CUDA_CHECK(cudaStreamSynchronize(stream()));
  check_ids();  // this batch's embedding lookups and targets (no further sync)
  double total = 0.0;
  int64_t count = 0;
  for (int64_t r = 0; r < rows; ++r) {
    if (h_t[static_cast<size_t>(r)] >= 0) {
      total += h_loss[static_cast<size_t>(r)];
      ++count;
    }
  }
  return count ? static_cast<float>(total / static_cast<double>(count)) : 0.f;
}

void cross_entropy_backward(const Tensor& probs, const Tensor& targets, float dloss,
                            Tensor& dlogits, int64_t rows, int64_t vocab) {
  require_row_grid("cross_entropy_backward", rows);
  if (rows == 0) return;
  Tensor count_buf = scratch(sizeof(int), probs.device().index);
  int* count = static_cast<int*>(count_buf.raw());
  count_targets_kernel<<<1, 1024, 0, stream()>>>(cp<int32_t>(targets), rows, count);
  ZT_CUDA_CHECK_LAST();
  ZT_CUDA_DISPATCH_FLOAT(probs.dtype(), "cross_entropy_backward",
                         cross_entropy_backward_kernel<T><<<static_cast<unsigned>(rows),
                                                            kRowThreads, 0, stream()>>>(
                             cp<T>(probs), cp<int32_t>(targets), count, dloss, mp<T>(dlogits),
                             vocab));
  ZT_CUDA_CHECK_LAST();
}

}  // namespace zt::cuda
