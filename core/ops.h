// core/ops.h: the op set every backend implements.
//
// Each op checks its arguments here (shapes, dtypes, devices: a clear zt::Error naming the op and
// the offending shape) and then runs the backend of the tensors' device: core/cpu/*.cpp (Eigen,
// OpenMP loops) or core/cuda/*.cu. Compute is f32 unless an op says otherwise.
//
// Conventions, so that layers can chain them without surprises:
//  - outputs are written (=), never accumulated, unless the op's name ends in `_acc`;
//  - gradients of *parameters* (dweight, dbias, dtable) are accumulated (+=), as in PyTorch, so
//    that gradient accumulation over micro-batches and weight tying both just work;
//  - "rows" are the leading dims flattened: a [B, T, C] tensor is B*T rows of C.
#pragma once

#include "core/tensor.h"

namespace zt::ops {

// ---- elementwise and fills ----------------------------------------------------------------------
void fill(Tensor& t, float value);
void copy(const Tensor& src, Tensor& dst);  // same numel; converts dtype (this is the cast op)
void add(const Tensor& a, const Tensor& b, Tensor& out);  // out = a + b (out may alias a or b)
void add_acc(const Tensor& x, Tensor& y);                // y += x
void scale(Tensor& x, float s);                          // x *= s
void axpy(float alpha, const Tensor& x, Tensor& y);      // y += alpha * x
double sum_squares(const Tensor& x);                     // sum of x^2 in double (grad norm)
bool all_finite(const Tensor& x);

// ---- matrix products ----------------------------------------------------------------------------
// out = alpha * op(a) @ op(b) + beta * out, op = transpose when the flag is set. a: [..., M, K]
// (or [..., K, M] with trans_a), b: [..., K, N] (or [..., N, K]); leading (batch) dims of a, b and
// out must match, or b may be 2-D and is then shared by every batch.
// Dtypes: a and b share one of f32, bf16, f16; out has their dtype or is f32. Sums are f32 and the
// result is rounded once into out (CUDA: cuBLASLt, tensor cores for 16-bit, CUBLAS_COMPUTE_32F).
// f32 out with 16-bit a, b and beta = 1 is the mixed-precision weight gradient: dW += dY^T X in
// bf16 accumulated into an f32 gradient buffer. The CPU computes in f32 too: 16-bit a, b (and a
// 16-bit out, when beta != 0) are widened to f32 copies first, then the result rounded into out.
void matmul(const Tensor& a, const Tensor& b, Tensor& out, bool trans_a = false,
            bool trans_b = false, float alpha = 1.f, float beta = 0.f);

// ---- linear layers: the products of nn.Linear with their epilogues fused (issue #5) -------------
// Shapes: x [..., K] (rows = the leading dims flattened), w [N, K] (PyTorch's nn.Linear layout),
// bias [N] or an undefined Tensor (no bias), out/pre [..., N]. Dtypes: x, w and dout share one
// dtype; out, bias and pre (and dpre) share one dtype, x's or f32 (matmul's rule).
// CUDA: one cuBLASLt product whose epilogue adds the bias, applies GELU and stores the
// pre-activation (CUBLASLT_EPILOGUE_BIAS, GELU_AUX(_BIAS), DGELU, BGRADB), where cuBLASLt has an
// algorithm for the case (GELU's aux needs N % 8 == 0); otherwise, and on the CPU, the same
// composition of matmul, bias_add, gelu_forward/gelu_backward and bias_grad_acc, so results agree
// to rounding. cuBLASLt's GELU is the tanh form, the one gelu_forward computes.
//
// out = x w^T + bias. With gelu_pre: *gelu_pre = x w^T + bias (saved for the backward) and
// out = gelu(*gelu_pre).
void linear_forward(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& out,
                    Tensor* gelu_pre = nullptr);
// Backward of out = x w^T + bias from dout: *dx = dout w (written; skipped when dx is null),
// dw += dout^T x (accumulated: dw may be f32 while dout and x are 16-bit), *dbias += the column
// sums of dout (skipped when dbias is null; any float dtype).
void linear_backward(const Tensor& dout, const Tensor& x, const Tensor& w, Tensor* dx, Tensor& dw,
                     Tensor* dbias);
// The input gradient of a linear layer whose input was gelu(pre) (an MLP's projection after its
// GELU): dpre = gelu'(pre) * (dout w), written. dout [..., N], w [N, K], pre and dpre [..., K].
void linear_backward_dgelu(const Tensor& dout, const Tensor& w, const Tensor& pre, Tensor& dpre);
// An MLP (x -> fc -> GELU -> proj -> y) with them, saving pre and h:
//   forward   linear_forward(x, fc_w, fc_b, h, &pre);  linear_forward(h, proj_w, proj_b, y);
//   backward  linear_backward(dy, h, proj_w, nullptr, dproj_w, &dproj_b);  (dh: next line)
//             linear_backward_dgelu(dy, proj_w, pre, dpre);
//             linear_backward(dpre, x, fc_w, &dx, dfc_w, &dfc_b);

// ---- bias ---------------------------------------------------------------------------------------
void bias_add(Tensor& x, const Tensor& bias);             // x[r, :] += bias
void bias_grad_acc(const Tensor& dy, Tensor& dbias);      // dbias += sum over rows of dy

// ---- GELU, tanh form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) ---------------------------
void gelu_forward(const Tensor& x, Tensor& out);
void gelu_backward(const Tensor& x, const Tensor& dout, Tensor& dx);

// ---- LayerNorm over the last dim; mean and rstd ([rows]) are saved for backward -----------------
void layernorm_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& out,
                       Tensor& mean, Tensor& rstd, float eps = 1e-5f);
void layernorm_backward(const Tensor& dout, const Tensor& x, const Tensor& weight,
                        const Tensor& mean, const Tensor& rstd, Tensor& dx, Tensor& dweight,
                        Tensor& dbias);

// ---- softmax over the last dim ------------------------------------------------------------------
void softmax_forward(const Tensor& x, Tensor& out);
void softmax_backward(const Tensor& y, const Tensor& dy, Tensor& dx);

// ---- causal self-attention on a fused qkv projection --------------------------------------------
// qkv: [B, T, 3C] laid out as (q | k | v), each C = n_head * head_dim, head h in columns
// [h*hd, (h+1)*hd) of its part (the GPT-2 / nanoGPT layout). out: [B, T, C],
// softmax(Q K^T / sqrt(hd), causally masked) V per head.
// `saved` is what forward keeps for backward, and differs by backend (attention_saved_shape):
//   CPU   [B, H, T, T] f32: the softmax probabilities themselves (later keys get 0);
//   CUDA  [B, H, T]    f32: the softmax statistics of cuDNN's flash attention, per query row the
//         logsumexp of its scaled, masked scores (natural log): the T x T matrix never exists.
// On CUDA qkv/out/dout/dqkv are bf16 or f16 (f32 runs through bf16: core/cuda/attention.h), head
// dim a multiple of 8 up to 256, and backward needs the forward output `out` (cuDNN's backward
// uses rowsum(dout * out)); the CPU backend ignores `out` beyond checking its size.
Shape attention_saved_shape(const Tensor& qkv, int n_head);  // by qkv's device, see above
void attention_forward(const Tensor& qkv, int n_head, Tensor& out, Tensor& saved);
void attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out,
                        const Tensor& saved, int n_head, Tensor& dqkv);
// The CPU-only form (no `out`), kept for callers written before the CUDA backend; on CUDA tensors
// it throws, naming the form above.
void attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& probs, int n_head,
                        Tensor& dqkv);

// ---- embedding ----------------------------------------------------------------------------------
// ids: i32 [N] (any shape), table: [V, C], out: [N, C]. Backward scatter-adds into dtable.
void embedding_forward(const Tensor& ids, const Tensor& table, Tensor& out);
void embedding_backward_acc(const Tensor& ids, const Tensor& dout, Tensor& dtable);

// ---- cross-entropy fused with softmax -----------------------------------------------------------
// logits: [N, V], targets: i32 [N] (a target < 0 is ignored). Writes probs [N, V] and returns the
// mean loss over the counted targets (PyTorch's F.cross_entropy with reduction="mean").
float cross_entropy_forward(const Tensor& logits, const Tensor& targets, Tensor& probs);
// dlogits = dloss * (probs - onehot(target)) / count
void cross_entropy_backward(const Tensor& probs, const Tensor& targets, float dloss,
                            Tensor& dlogits);

// Number of threads the CPU backend uses (OpenMP); set once at start (`ZT_NUM_THREADS`).
int num_threads();
void set_num_threads(int n);

}  // namespace zt::ops
