// core/cuda/ops.h: the CUDA backend of the op set (folder-private to core/: core/ops.cpp calls it).
//
// core/ops.cpp has already checked shapes and that every tensor is on one CUDA device; these check
// dtypes (the float tensors of an op share one dtype T in {f32, bf16, f16}; LayerNorm's mean/rstd
// are f32; ids and targets i32), compute in f32 and enqueue on the current stream
// (core/cuda/stream.h). Semantics are those of core/ops.h, i.e. of the CPU backend.
// Implementations: elementwise.cu, nn.cu, blas.cpp (CUDA build), stub.cpp (CPU-only build: every
// function throws "built without CUDA").
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
// batch when b_shared.
void matmul(const Tensor& a, const Tensor& b, Tensor& out, int64_t batch, int64_t m, int64_t n,
            int64_t k, bool trans_a, bool trans_b, float alpha, float beta, bool b_shared);

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

}  // namespace zt::cuda
