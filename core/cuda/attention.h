// core/cuda/attention.h: causal self-attention on the GPU through cuDNN's fused flash attention
// (core/ops.h: attention_forward / attention_backward dispatch here for CUDA tensors).
//
// What cuDNN runs: FlashAttention-2 style fused kernels (Dao 2023): the T x T score matrix is
// never written to memory. Forward saves only O and, per query row, the softmax statistic
//   stats[b, h, t] = logsumexp_j( scale * q_t . k_j ), j <= t    (natural log, f32)
// and backward recomputes the probabilities from Q, K and stats. So on CUDA the tensor that the
// CPU backend fills with the full softmax matrix ("probs", [B, H, T, T]) holds these statistics
// instead ([B, H, T], f32), and backward needs the forward output O as well (for
// rowsum(dO * O), the softmax gradient's correction term).
//
// How it is reached: cuDNN's backend (graph) C API, no cudnn-frontend. The graphs are the
// "composite" SDPA pattern that cudnn-frontend 1.x emits and that cuDNN 9's fused-attention
// engines recognise (matmul, pointwise and reduction operations with virtual intermediates;
// core/cuda/attention_graph.h spells them out). cuDNN 9.13+ also has dedicated
// CUDNN_BACKEND_OPERATION_SDPA_FWD/BWD descriptors, but causal masking through them needs the
// score-modifier subgraph of cuDNN 9.21+, so the composite pattern is the one that works on every
// cuDNN 9. Each graph is built once per (device, B, H, T, head dim, dtype, direction) and its
// execution plan and workspace size cached; counters below expose the cache.
//
// Dtypes: bf16 and f16 run natively (f32 accumulation and softmax inside). cuDNN has no f32 flash
// attention: f32 tensors are cast to bf16 on the device, run, and cast back, so f32 attention on
// the GPU has bf16 precision (about 3 significant digits), not f32's. Train in bf16 on GPUs.
// Limits (checked before cuDNN is asked, with a clear error): head dim a multiple of 8 and at
// most 256; every tensor 16-byte aligned. Shapes cuDNN's engines still refuse get an error naming
// the shape and the cuDNN version. Any T (not only multiples of 64). Backward is not bitwise
// deterministic (cuDNN accumulates dQ with atomics).
//
// Implementations: attention.cpp + attention_graph.h (CUDA build; needs cuDNN >= 9.0 at run time;
// the first call per shape compiles cuDNN's kernels, about a second), stub_attention.cpp (CPU-only
// build: every function throws "built without CUDA"). No CUDA header here (public).
// Status: never executed on a GPU; cuDNN 9.19's sm_90 engines accept and compile both graphs
// offline (ctest SdpaGraph.Sm90EnginesOffline). tests/gpu/test_cuda_attention.cpp has the rest.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <utility>

#include "core/tensor.h"

namespace zt::cuda {

// qkv: [B, T, 3C] (bf16, f16 or f32), out: [B, T, C] same dtype, stats: [B, H, T] f32.
void attention_forward(const Tensor& qkv, int n_head, Tensor& out, Tensor& stats);
// dout, out: [B, T, C]; qkv: [B, T, 3C]; stats from attention_forward; dqkv: [B, T, 3C] is
// overwritten (not accumulated). All float tensors share one dtype.
void attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out,
                        const Tensor& stats, int n_head, Tensor& dqkv);

// The plan cache: `builds` graphs built and finalized (a new shape/dtype/direction), `hits`
// calls served from the cache, `plans` plans held. A second call with the same shape must only
// raise `hits`.
struct AttentionPlanStats {
  int64_t builds = 0;
  int64_t hits = 0;
  int64_t plans = 0;
};
AttentionPlanStats attention_plan_stats();
// The cuDNN library's version at run time (e.g. 91900 for 9.19.0); 0 in a CPU-only build.
int64_t cudnn_runtime_version();
// Self-check that needs no GPU: builds the forward or backward graph for this shape and finalizes
// every tensor, operation and the operation graph (cuDNN validates each descriptor: attribute
// types, dims and strides of matmul/reduction/pointwise operands, uids), throwing zt::CudaError
// naming the refused descriptor. Returns the number of operations; -1 in a CPU-only build. Which
// engine runs the graph (and whether one does) needs a GPU. dtype: bf16 or f16 (f32 runs as bf16).
int64_t attention_graph_self_check(int64_t B, int64_t T, int64_t C, int64_t H, DType dtype,
                                   bool backward);
// Offline engine check (cuDNN >= 9.8, no GPU needed): asks cuDNN's heuristics (mode A) for engines
// for the graph on the device described by `device_properties_json` (a cuDNN device-properties
// descriptor in its JSON form; tests/gpu/test_cuda_attention.cpp has an H100's) and finalizes a
// plan for each, which compiles its kernels. Loading them needs a driver: with the CUDA toolkit's
// stub libcuda.so.1 first on the library path, a plan that got that far reports
// CUDA_ERROR_STUB_LIBRARY, which counts as accepted. Throws if cuDNN refuses the JSON.
struct AttentionEngineCheck {
  int64_t configs = 0;         // engine configurations the heuristics proposed
  int64_t accepted = 0;        // plans cuDNN built (or compiled and only failed to load)
  int64_t missing_driver = 0;  // refused only because no libcuda.so.1 could be loaded
  std::string last_refusal;    // cuDNN's words for the last refusal
};
AttentionEngineCheck attention_engine_check(int64_t B, int64_t T, int64_t C, int64_t H,
                                            DType dtype, bool backward,
                                            const std::string& device_properties_json);

// ---- the tensors of the graphs (pure host arithmetic, unit-tested without a GPU) -------------
// cuDNN sees every tensor as 4-D [batch, head, row, col] with explicit strides (in elements), so
// Q, K, V are read straight out of the fused qkv activation and dQ, dK, dV written straight into
// dqkv: no permute, no copy. For qkv [B, T, 3C] with C = H * D, head h of Q occupies columns
// [h*D, (h+1)*D) of the first C, K the next C (offset C), V the last (offset 2C).
struct SdpaTensor {
  std::array<int64_t, 4> dims{};
  std::array<int64_t, 4> strides{};
  int64_t offset = 0;  // elements from the start of the buffer the tensor lives in
};
struct SdpaLayout {
  int64_t B = 0, H = 0, T = 0, D = 0;
  SdpaTensor q, k, v;   // [B, H, T, D] in qkv (and dQ, dK, dV in dqkv)
  SdpaTensor kt, vt;    // [B, H, D, T]: K and V transposed (dims and strides 2, 3 swapped)
  SdpaTensor o;         // [B, H, T, D] in out / dout ([B, T, C])
  SdpaTensor stats;     // [B, H, T, 1] f32, packed: the [B, H, T] stats tensor
  SdpaTensor scores;    // [B, H, T, T] packed: virtual score/probability tensors
  SdpaTensor scores_t;  // [B, H, T, T] the transpose of `scores` (same memory, strides swapped)
  SdpaTensor bhtd;      // [B, H, T, D] packed (cuDNN's f32 dQ accumulator in the workspace)
};

inline SdpaTensor sdpa_tensor(std::array<int64_t, 4> dims, std::array<int64_t, 4> strides,
                              int64_t offset = 0) {
  SdpaTensor t;
  t.dims = dims;
  t.strides = strides;
  t.offset = offset;
  return t;
}
inline SdpaTensor sdpa_transposed(SdpaTensor t) {  // swap the last two dims
  std::swap(t.dims[2], t.dims[3]);
  std::swap(t.strides[2], t.strides[3]);
  return t;
}

// B batches, T tokens, C = H * head_dim channels, H heads (the caller has checked C % H == 0).
inline SdpaLayout sdpa_layout(int64_t B, int64_t T, int64_t C, int64_t H) {
  SdpaLayout l;
  l.B = B;
  l.H = H;
  l.T = T;
  l.D = C / H;
  const int64_t D = l.D, row = 3 * C;  // one token's row in qkv
  const std::array<int64_t, 4> bhtd{B, H, T, D};
  const std::array<int64_t, 4> in_qkv{T * row, D, row, 1};
  l.q = sdpa_tensor(bhtd, in_qkv, 0);
  l.k = sdpa_tensor(bhtd, in_qkv, C);
  l.v = sdpa_tensor(bhtd, in_qkv, 2 * C);
  l.kt = sdpa_transposed(l.k);
  l.vt = sdpa_transposed(l.v);
  l.o = sdpa_tensor(bhtd, {T * C, D, C, 1});
  l.stats = sdpa_tensor({B, H, T, 1}, {H * T, T, 1, 1});
  l.scores = sdpa_tensor({B, H, T, T}, {H * T * T, T * T, T, 1});
  l.scores_t = sdpa_transposed(l.scores);
  l.bhtd = sdpa_tensor(bhtd, {H * T * D, T * D, D, 1});
  return l;
}

}  // namespace zt::cuda
