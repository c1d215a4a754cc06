// core/cuda/ops.h: the CUDA backend of the op set (folder-private to core/: core/ops.cpp calls it).
//
// core/ops.cpp has already checked shapes and that every tensor is on one CUDA device; these check
// dtypes (the float tensors of an op share one dtype T in {f32, bf16, f16}; LayerNorm's mean/rstd
// are f32; ids and targets i32), compute in f32 and enqueue on the current stream
// (core/cuda/stream.h). Semantics are those of core/ops.h, i.e. of the CPU backend.
// Implementations: elementwise.cu, nn.cu, blas.cpp (CUDA build), stub.cpp (CPU-only build: every
// function throws "built without CUDA").
//
// ---- Status of the CUDA backend (issue #5) -------------------------------------------------------
// Everything in core/cuda/ compiles warning-free for sm_90 with nvcc 13.0, and NONE of it has run
// on a GPU yet: no session so far was lent one. The tests that will check it exist and skip
// without a GPU (tests/gpu/test_cuda_{device,allocator,ops}.cpp); the first GPU session runs them.
//   exists   check.h      ZT_CUDA_CHECK(_WARN/_LAST), ZT_CUBLAS_CHECK, ZT_CUBLASLT_CHECK
//            stream.h     Stream, Event (RAII), StreamGuard, the per-thread current stream
//            caching_allocator.{h,cpp} + allocator.h + runtime.cpp: the caching allocator behind
//                         Tensor::empty(..., Device::cuda()) (logic unit-tested on the host)
//            device.{h,cu} device probe, f32 <-> 16-bit buffer casts
//            this file    fill, copy/cast (also host <-> device), add, add_acc, axpy, scale,
//                         sum_squares, all_finite, bias_add, bias_grad_acc, GELU fwd/bwd,
//                         matmul (cuBLASLt), LayerNorm fwd/bwd, softmax fwd/bwd, embedding fwd/bwd,
//                         softmax-cross-entropy fwd/bwd; f32/bf16/f16, f32 math
//            blas.cpp     matmul with 16-bit a, b and a 16-bit or f32 out (beta = 1: the f32
//                         weight gradient); the fused linear products (core/ops.h linear_*: BIAS,
//                         GELU_AUX_BIAS, DGELU, BGRADB epilogues, unfused where cuBLASLt refuses);
//                         plans cached per shape/dtype/epilogue/alignment (blas_lt.h counters);
//                         tests/gpu/test_cuda_blas.cpp
//            attention.{h,cpp} causal attention fwd/bwd through cuDNN's fused flash attention
//                         (backend graph API, plan cache; bf16/f16, f32 via bf16); its graphs pass
//                         cuDNN 9.19's sm_90 support checks offline; tests/gpu/test_cuda_attention
//            optim.{h,cu} fused multi-tensor Adam/AdamW (bits of the CPU Adam; f32/bf16/f16 grads,
//                         grad scale folded in, 16-bit weight copy in the same pass) and the fused
//                         overflow + sum-of-squares check, called by optim/ (step_tensors) and
//                         precision/ (GradChecker); tests/gpu/test_cuda_optim.cpp
//            core/nn      every layer and the GPT put activations, saved tensors and workspaces
//                         where their inputs/parameters live (ensure_like); tests/gpu/test_cuda_nn
//            nn.cu        ids out of range are skipped by the kernels and reported by check_ids()
//                         at the loss's own sync (no host copy of the ids per op)
//   elsewhere comm/nccl_communicator.cpp (NCCL), comm/mpi_communicator.cpp (GPU buffers staged
//            through pinned memory), zero/engine*.cpp (`device: cuda`, stages 0-2): also compiled,
//            never run.
//   missing  Lamb and the 1-bit optimizers on the device (the engine steps them on the host from
//            copied gradients), core/nn calling the fused linear ops with 16-bit activations (the
//            model computes in f32 today: no bf16 tensor cores), stage 3 and offload on the GPU,
//            copies between two GPUs, and every performance pass (see HOPPER.md) with the
//            benchmark against PyTorch (bench/gpu_session.sh runs it).
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace zt::cuda {

// elementwise.cu
void fill(Tensor& t, float value);
void copy(const Tensor& src, Tensor& dst);  // at least one on CUDA; casts between float dtypes
void add(const Tensor& a, const Tensor& b, Tensor& out);
void axpy(float alpha, const Tensor& x, Tensor& y);
void scale(Tensor& x, float s);
double sum_squares(const Tensor& x);  // synchronises the stream
bool all_finite(const Tensor& x);     // synchronises the stream
void bias_add(Tensor& x, const Tensor& bias, int64_t rows, int64_t cols);
void bias_grad_acc(const Tensor& dy, Tensor& dbias, int64_t rows, int64_t cols);
void gelu_forward(const Tensor& x, Tensor& out);
void gelu_backward(const Tensor& x, const Tensor& dout, Tensor& dx);

// blas.cpp (cuBLASLt): out[i] = alpha op(a[i]) op(b[i]) + beta out[i], row-major, b shared by every
// batch when b_shared. a, b one dtype; out that dtype or f32 (f32 sums either way).
void matmul(const Tensor& a, const Tensor& b, Tensor& out, int64_t batch, int64_t m, int64_t n,
            int64_t k, bool trans_a, bool trans_b, float alpha, float beta, bool b_shared);
// blas.cpp: the fused products behind core/ops.h's linear_* (x [rows, k], w [n, k], dout [rows, n];
// core/ops.cpp has checked shapes and dtypes). Each returns false having done nothing when it
// cannot fuse (fused epilogues off, an empty product, N % 8 for GELU's aux, or cuBLASLt has no
// algorithm for the case); core/ops.cpp then runs the unfused composition.
//   linear_forward_fused: out = x w^T + bias (BIAS), or pre = that and out = gelu(pre) (GELU_AUX[_BIAS]).
//   weight_grad_fused:    dw += dout^T x and dbias += column sums of dout (BGRADB into a scratch
//                         vector of dw's dtype, then added: the epilogue writes, never accumulates).
//   linear_dgelu_fused:   dpre = gelu'(pre) * (dout w) (DGELU), pre [rows, k].
bool linear_forward_fused(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& out,
                          Tensor* pre, int64_t rows, int64_t n, int64_t k);
bool weight_grad_fused(const Tensor& dout, const Tensor& x, Tensor& dw, Tensor& dbias,
                       int64_t rows, int64_t n, int64_t k);
bool linear_dgelu_fused(const Tensor& dout, const Tensor& w, const Tensor& pre, Tensor& dpre,
                        int64_t rows, int64_t n, int64_t k);

// nn.cu
void layernorm_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& out,
                       Tensor& mean, Tensor& rstd, int64_t rows, int64_t cols, float eps);
void layernorm_backward(const Tensor& dout, const Tensor& x, const Tensor& w, const Tensor& mean,
                        const Tensor& rstd, Tensor& dx, Tensor& dw, Tensor& db, int64_t rows,
                        int64_t cols);
void softmax_forward(const Tensor& x, Tensor& out, int64_t rows, int64_t cols);
void softmax_backward(const Tensor& y, const Tensor& dy, Tensor& dx, int64_t rows, int64_t cols);
void embedding_forward(const Tensor& ids, const Tensor& table, Tensor& out);
void embedding_backward_acc(const Tensor& ids, const Tensor& dout, Tensor& dtable);
float cross_entropy_forward(const Tensor& logits, const Tensor& targets, Tensor& probs,
                            int64_t rows, int64_t vocab);  // synchronises the stream
void cross_entropy_backward(const Tensor& probs, const Tensor& targets, float dloss,
                            Tensor& dlogits, int64_t rows, int64_t vocab);
// Ids outside [0, limit) met by embedding_* or cross_entropy_forward since the last call: the ops
// skip them (no illegal address) and the first is reported here as an Error naming the op, the id
// and its position, then forgotten. Synchronises the device. cross_entropy_forward calls it after
// the sync it does to return the loss, so a training step checks its batch at no extra cost.
void check_ids();

}  // namespace zt::cuda
