// core/ops.cpp: argument checks and backend dispatch for the op set (core/ops.h).
// Checks name the op and the offending shapes; a user who wires a layer wrong reads
// "matmul: inner dims differ: a f32[8, 3] cpu (K = 3) vs b f32[4, 5] cpu (K = 4)".
// Dispatch: each op asks `on_cuda` whether its tensors live on a GPU (all on one device, else an
// error naming both) and then calls core/cuda/ops.h (f32/bf16/f16, dtypes checked by
// `require_float_alike`) or core/cpu/kernels.h (f32); attention goes to core/cuda/attention.h
// (cuDNN). An op without a CUDA version throws saying so (no_cuda_op): nothing falls back to the
// CPU silently. The lines marked `// cuda` are the CUDA backend's.
#include "core/ops.h"

#include <omp.h>

#include <cstring>
#include <initializer_list>

#include "core/cpu/kernels.h"
#include "core/cuda/attention.h"
#include "core/cuda/ops.h"

namespace zt::ops {
namespace {

const float* cf(const Tensor& t) { return t.data<float>(); }
float* mf(const Tensor& t) { return t.data<float>(); }

// All tensors defined, on the CPU (the CUDA backend comes with its own dispatch), f32 unless
// listed otherwise by the caller.
void require_cpu(const char* op, std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts) {
    ZT_CHECK(t->defined(), op, ": undefined tensor argument");
    ZT_CHECK(t->device().is_cpu(), op, ": tensor ", t->str(),
             " is on a device this op has no backend for yet (CPU only)");
  }
}
void require_f32(const char* op, std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts)
    ZT_CHECK(t->dtype() == DType::f32, op, ": expected an f32 tensor, got ", t->str());
}
void require_same_numel(const char* op, const Tensor& a, const Tensor& b) {
  ZT_CHECK(a.numel() == b.numel(), op, ": element counts differ: ", a.str(), " vs ", b.str());
}
int64_t rows_of(const Tensor& t) { return t.numel() / t.size(-1); }
void require_rows_cols(const char* op, const Tensor& t, int64_t rows, int64_t cols,
                       const char* what) {
  ZT_CHECK(t.dim() >= 1 && t.size(-1) == cols && rows_of(t) == rows, op, ": ", what, " ",
           t.str(), " should hold ", rows, " rows of ", cols);
}
void require_ids(const char* op, const Tensor& ids, int64_t limit, bool allow_negative) {
  ZT_CHECK(ids.dtype() == DType::i32, op, ": ids must be i32, got ", ids.str());
  // cuda: ids on a GPU are not read here (a host copy would synchronise every op): the kernels
  // skip an out-of-range id and record it, and cuda::check_ids() reports it, which the loss's
  // read (cross_entropy_forward) does after its own sync (core/cuda/ops.h).
  if (ids.device().is_cuda()) return;
  const int32_t* p = ids.data<int32_t>();
  for (int64_t i = 0; i < ids.numel(); ++i) {
    bool ok = (p[i] >= 0 || allow_negative) && p[i] < limit;
    ZT_CHECK(ok, op, ": id ", p[i], " at position ", i, " is out of range [0, ", limit, ")");
  }
}

// cuda: true when the op's tensors are on a GPU. All must be defined and on one device.
bool on_cuda(const char* op, std::initializer_list<const Tensor*> ts) {
  const Tensor* first = nullptr;
  for (const Tensor* t : ts) {
    ZT_CHECK(t->defined(), op, ": undefined tensor argument");
    if (!first) first = t;
    ZT_CHECK(t->device() == first->device(), op, ": tensors on different devices: ", first->str(),
             " and ", t->str(), " (copy one over with ops::copy)");
  }
  return first && first->device().is_cuda();
}
// cuda: the float tensors of a CUDA op share one dtype, f32, bf16 or f16.
void require_float_alike(const char* op, std::initializer_list<const Tensor*> ts) {
  const Tensor* first = *ts.begin();
  for (const Tensor* t : ts) {
    ZT_CHECK(is_floating(t->dtype()), op, ": expected an f32, bf16 or f16 tensor, got ", t->str());
    ZT_CHECK(t->dtype() == first->dtype(), op, ": dtypes differ: ", first->str(), " vs ",
             t->str(), " (on CUDA the op's float tensors share one dtype)");
  }
}
// Every op has a CUDA version now; kept for the next op added CPU-first.
[[noreturn, maybe_unused]] void no_cuda_op(const char* op) {
  throw Error(detail::str_cat(op, ": not implemented on CUDA yet (core/cuda/ops.h lists the ops "
                              "that are); run it on the CPU or implement it"));
}

}  // namespace

int num_threads() { return omp_get_max_threads(); }
void set_num_threads(int n) {
  ZT_CHECK(n >= 1, "set_num_threads: need at least one thread, got ", n);
  omp_set_num_threads(n);
}

void fill(Tensor& t, float value) {
  if (on_cuda("fill", {&t})) return cuda::fill(t, value);  // cuda
  require_cpu("fill", {&t});
  if (t.dtype() == DType::f32) {
    cpu::fill(mf(t), t.numel(), value);
  } else {
    // Fill one f32 value, convert once, replicate the bits.
    Tensor one = Tensor::from_vector({value}, {1}).to(t.dtype());
    size_t es = dtype_size(t.dtype());
    char* dst = static_cast<char*>(t.raw());
    for (int64_t i = 0; i < t.numel(); ++i) std::memcpy(dst + i * es, one.raw(), es);
  }
}

void copy(const Tensor& src, Tensor& dst) {
  ZT_CHECK(src.defined() && dst.defined(), "copy: undefined tensor argument");
  require_same_numel("copy", src, dst);
  if (src.device().is_cuda() || dst.device().is_cuda()) return cuda::copy(src, dst);  // cuda
  require_cpu("copy", {&src, &dst});
  cpu::cast(src.raw(), src.dtype(), dst.raw(), dst.dtype(), src.numel());
}

void add(const Tensor& a, const Tensor& b, Tensor& out) {
  const bool gpu = on_cuda("add", {&a, &b, &out});
  require_same_numel("add", a, b);
  require_same_numel("add", a, out);
  if (gpu) {  // cuda
    require_float_alike("add", {&a, &b, &out});
    return cuda::add(a, b, out);
  }
  require_cpu("add", {&a, &b, &out});
  require_f32("add", {&a, &b, &out});
  cpu::add(cf(a), cf(b), mf(out), a.numel());
}

void add_acc(const Tensor& x, Tensor& y) {
  const bool gpu = on_cuda("add_acc", {&x, &y});
  require_same_numel("add_acc", x, y);
  if (gpu) {  // cuda
    require_float_alike("add_acc", {&x, &y});
    return cuda::axpy(1.f, x, y);
  }
  require_cpu("add_acc", {&x, &y});
  require_f32("add_acc", {&x, &y});
  cpu::axpy(1.f, cf(x), mf(y), x.numel());
}

void scale(Tensor& x, float s) {
  if (on_cuda("scale", {&x})) return cuda::scale(x, s);  // cuda
  require_cpu("scale", {&x});
  require_f32("scale", {&x});
  cpu::scale(mf(x), x.numel(), s);
}

void axpy(float alpha, const Tensor& x, Tensor& y) {
  const bool gpu = on_cuda("axpy", {&x, &y});
  require_same_numel("axpy", x, y);
  if (gpu) {  // cuda
    require_float_alike("axpy", {&x, &y});
    return cuda::axpy(alpha, x, y);
  }
  require_cpu("axpy", {&x, &y});
  require_f32("axpy", {&x, &y});
  cpu::axpy(alpha, cf(x), mf(y), x.numel());
}

double sum_squares(const Tensor& x) {
  if (on_cuda("sum_squares", {&x})) return cuda::sum_squares(x);  // cuda
  require_cpu("sum_squares", {&x});
  require_f32("sum_squares", {&x});
  return cpu::sum_squares(cf(x), x.numel());
}

bool all_finite(const Tensor& x) {
  if (on_cuda("all_finite", {&x})) return cuda::all_finite(x);  // cuda
  require_cpu("all_finite", {&x});
  require_f32("all_finite", {&x});
  return cpu::all_finite(cf(x), x.numel());
}

namespace {
// matmul's dtypes (core/ops.h): a and b share one float dtype; out has it or is f32.
void require_matmul_dtypes(const char* op, const Tensor& a, const Tensor& b, const Tensor& out) {
  ZT_CHECK(is_floating(a.dtype()) && a.dtype() == b.dtype(), op, ": a ", a.str(), " and b ",
           b.str(), " must share one dtype, f32, bf16 or f16 (cast one with ops::copy)");
  ZT_CHECK(out.dtype() == a.dtype() || out.dtype() == DType::f32, op, ": out ", out.str(),
           " must be ", dtype_name(a.dtype()), " like a and b, or f32");
}
Tensor widened(const Tensor& t) { return t.dtype() == DType::f32 ? t : t.to(DType::f32); }
}  // namespace

void matmul(const Tensor& a, const Tensor& b, Tensor& out, bool ta, bool tb, float alpha,
            float beta) {
  const bool gpu = on_cuda("matmul", {&a, &b, &out});
  ZT_CHECK(a.dim() >= 2 && b.dim() >= 2 && out.dim() >= 2, "matmul: operands must be at least 2-D: a ",
           a.str(), ", b ", b.str(), ", out ", out.str());
  int64_t m = ta ? a.size(-1) : a.size(-2);
  int64_t k = ta ? a.size(-2) : a.size(-1);
  int64_t kb = tb ? b.size(-1) : b.size(-2);
  int64_t n = tb ? b.size(-2) : b.size(-1);
  ZT_CHECK(k == kb, "matmul: inner dims differ: a ", a.str(), " (K = ", k, ") vs b ", b.str(),
           " (K = ", kb, ")", ta || tb ? " after transposes" : "");
  ZT_CHECK(out.size(-2) == m && out.size(-1) == n, "matmul: out ", out.str(), " should be [..., ",
           m, ", ", n, "]");
  // Batch counts from the leading dims (not numel / (m*k): an empty operand has m or k = 0).
  int64_t batch = 1, bb = 1;
  for (int d = 0; d + 2 < a.dim(); ++d) batch *= a.size(d);
  for (int d = 0; d + 2 < b.dim(); ++d) bb *= b.size(d);
  ZT_CHECK(out.numel() == batch * m * n, "matmul: out ", out.str(), " should hold ", batch,
           " products of [", m, ", ", n, "]");
  ZT_CHECK(bb == batch || b.dim() == 2, "matmul: b ", b.str(), " must be 2-D or have ", batch,
           " batches like a ", a.str());
  ZT_CHECK(!out.shares_storage(a) && !out.shares_storage(b), "matmul: out must not alias a or b");
  require_matmul_dtypes("matmul", a, b, out);
  if (out.numel() == 0) return;  // nothing to compute
  if (k == 0) {  // an empty sum: out = beta * out
    if (beta == 0.f) fill(out, 0.f);
    else scale(out, beta);
    return;
  }
  if (gpu)  // cuda
    return cuda::matmul(a, b, out, batch, m, n, k, ta, tb, alpha, beta, b.dim() == 2);
  require_cpu("matmul", {&a, &b, &out});
  // 16-bit operands: f32 copies, one rounding of the f32 result into a 16-bit out (core/ops.h).
  const Tensor a32 = widened(a), b32 = widened(b);
  Tensor o32 = out.dtype() == DType::f32 ? out
               : beta == 0.f              ? Tensor::empty(out.shape())
                                          : out.to(DType::f32);
  cpu::gemm(cf(a32), cf(b32), mf(o32), batch, m, n, k, ta, tb, alpha, beta, m * k,
            b.dim() == 2 ? 0 : k * n, m * n);
  if (out.dtype() != DType::f32) cpu::cast(o32.raw(), DType::f32, out.raw(), out.dtype(), out.numel());
}

// ---- linear layers (core/ops.h): checks, then the fused CUDA product or the composition ---------
namespace {
struct LinearDims {
  int64_t rows, n, k;
};
// x [..., K], w [N, K]; `what` names x's role in messages.
LinearDims linear_dims(const char* op, const Tensor& x, const Tensor& w, const char* what) {
  ZT_CHECK(w.dim() == 2, op, ": weight ", w.str(), " must be [N, K]");
  ZT_CHECK(x.dim() >= 1 && x.size(-1) == w.size(1), op, ": ", what, " ", x.str(),
           " should end in K = ", w.size(1), " to match weight ", w.str());
  return {rows_of(x), w.size(0), w.size(1)};
}
void require_same_dtype(const char* op, const Tensor& a, const Tensor& b) {
  ZT_CHECK(a.dtype() == b.dtype(), op, ": ", a.str(), " and ", b.str(), " must share one dtype");
}
}  // namespace

void linear_forward(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& out,
                    Tensor* gelu_pre) {
  const char* op = "linear_forward";
  const bool has_bias = bias.defined();
  const bool gpu = on_cuda(op, {&x, &w, &out});
  const LinearDims d = linear_dims(op, x, w, "x");
  require_rows_cols(op, out, d.rows, d.n, "out");
  if (has_bias) {
    ZT_CHECK(bias.device() == out.device(), op, ": bias ", bias.str(), " is not on ",
             out.device().str());
    require_rows_cols(op, bias, 1, d.n, "bias");
    require_same_dtype(op, bias, out);
  }
  if (gelu_pre) {
    ZT_CHECK(gelu_pre->defined() && gelu_pre->device() == out.device(), op,
             ": gelu_pre must be a tensor on ", out.device().str());
    require_rows_cols(op, *gelu_pre, d.rows, d.n, "gelu_pre");
    require_same_dtype(op, *gelu_pre, out);
    ZT_CHECK(!gelu_pre->shares_storage(out), op, ": gelu_pre must not alias out");
  }
  require_matmul_dtypes(op, x, w, out);
  ZT_CHECK(!out.shares_storage(x) && !out.shares_storage(w) &&
               !(gelu_pre && (gelu_pre->shares_storage(x) || gelu_pre->shares_storage(w))),
           op, ": out and gelu_pre must not alias x or the weight");
  if (gpu && cuda::linear_forward_fused(x, w, has_bias ? &bias : nullptr, out, gelu_pre, d.rows,
                                        d.n, d.k))  // cuda
    return;
  // The composition (CPU, and CUDA where no fused algorithm exists).
  const Tensor x2 = x.view({d.rows, d.k});
  Tensor y2 = (gelu_pre ? *gelu_pre : out).view({d.rows, d.n});
  matmul(x2, w, y2, false, true);
  if (has_bias) bias_add(y2, bias);
  if (gelu_pre) gelu_forward(*gelu_pre, out);
}

void linear_backward(const Tensor& dout, const Tensor& x, const Tensor& w, Tensor* dx, Tensor& dw,
                     Tensor* dbias) {
  const char* op = "linear_backward";
  const bool gpu = on_cuda(op, {&dout, &x, &w, &dw});
  const LinearDims d = linear_dims(op, x, w, "x");
  require_rows_cols(op, dout, d.rows, d.n, "dout");
  ZT_CHECK(dw.dim() == 2 && dw.size(0) == d.n && dw.size(1) == d.k, op, ": dweight ", dw.str(),
           " must be [", d.n, ", ", d.k, "]");
  if (dx) {
    ZT_CHECK(dx->defined() && dx->device() == dout.device(), op, ": dx must be a tensor on ",
             dout.device().str());
    require_rows_cols(op, *dx, d.rows, d.k, "dx");
    require_matmul_dtypes(op, dout, w, *dx);
  }
  require_matmul_dtypes(op, dout, x, dw);
  for (const Tensor* o : {dx, &dw, dbias})
    ZT_CHECK(!o || (!o->shares_storage(dout) && !o->shares_storage(x) && !o->shares_storage(w)),
             op, ": dx, dweight and dbias must not alias dout, x or the weight");
  if (dbias) {
    ZT_CHECK(dbias->defined() && dbias->device() == dout.device(), op,
             ": dbias must be a tensor on ", dout.device().str());
    require_rows_cols(op, *dbias, 1, d.n, "dbias");
  }
  const Tensor dout2 = dout.view({d.rows, d.n}), x2 = x.view({d.rows, d.k});
  if (dx) {
    Tensor dx2 = dx->view({d.rows, d.k});
    matmul(dout2, w, dx2);
  }
  // dw += dout^T x, with dbias fused into the same product on CUDA where possible.
  if (dbias && gpu && cuda::weight_grad_fused(dout2, x2, dw, *dbias, d.rows, d.n, d.k))
    return;  // cuda
  matmul(dout2, x2, dw, true, false, 1.f, 1.f);
  if (!dbias) return;
  if (dbias->dtype() == dout.dtype() || !gpu) {
    bias_grad_acc(dout2, *dbias);
  } else {  // cuda: 16-bit dout into an f32 dbias: the column sums as a product, ones^T dout
    Tensor ones = Tensor::empty({1, d.rows}, dout.dtype(), dout.device());
    fill(ones, 1.f);
    Tensor db2 = dbias->view({1, d.n});
    matmul(ones, dout2, db2, false, false, 1.f, 1.f);
  }
}

void linear_backward_dgelu(const Tensor& dout, const Tensor& w, const Tensor& pre, Tensor& dpre) {
  const char* op = "linear_backward_dgelu";
  const bool gpu = on_cuda(op, {&dout, &w, &pre, &dpre});
  const LinearDims d = linear_dims(op, pre, w, "pre");
  require_rows_cols(op, dout, d.rows, d.n, "dout");
  require_rows_cols(op, dpre, d.rows, d.k, "dpre");
  require_matmul_dtypes(op, dout, w, dpre);
  require_same_dtype(op, pre, dpre);
  ZT_CHECK(!dpre.shares_storage(pre) && !dpre.shares_storage(dout) && !dpre.shares_storage(w), op,
           ": dpre must not alias pre, dout or the weight");
  if (gpu && cuda::linear_dgelu_fused(dout, w, pre, dpre, d.rows, d.n, d.k)) return;  // cuda
  Tensor dpre2 = dpre.view({d.rows, d.k});
  matmul(dout.view({d.rows, d.n}), w, dpre2);
  gelu_backward(pre, dpre, dpre);  // elementwise: in place is safe on both backends
}

void bias_add(Tensor& x, const Tensor& bias) {
  const bool gpu = on_cuda("bias_add", {&x, &bias});
  require_rows_cols("bias_add", bias, 1, x.size(-1), "bias");
  if (gpu) {  // cuda
    require_float_alike("bias_add", {&x, &bias});
    return cuda::bias_add(x, bias, rows_of(x), x.size(-1));
  }
  require_cpu("bias_add", {&x, &bias});
  require_f32("bias_add", {&x, &bias});
  cpu::bias_add(mf(x), cf(bias), rows_of(x), x.size(-1));
}

void bias_grad_acc(const Tensor& dy, Tensor& dbias) {
  const bool gpu = on_cuda("bias_grad_acc", {&dy, &dbias});
  require_rows_cols("bias_grad_acc", dbias, 1, dy.size(-1), "dbias");
  if (gpu) {  // cuda
    require_float_alike("bias_grad_acc", {&dy, &dbias});
    return cuda::bias_grad_acc(dy, dbias, rows_of(dy), dy.size(-1));
  }
  require_cpu("bias_grad_acc", {&dy, &dbias});
  require_f32("bias_grad_acc", {&dy, &dbias});
  cpu::bias_grad_acc(cf(dy), mf(dbias), rows_of(dy), dy.size(-1));
}

void gelu_forward(const Tensor& x, Tensor& out) {
  const bool gpu = on_cuda("gelu_forward", {&x, &out});
  require_same_numel("gelu_forward", x, out);
  if (gpu) {  // cuda
    require_float_alike("gelu_forward", {&x, &out});
    return cuda::gelu_forward(x, out);
  }
  require_cpu("gelu_forward", {&x, &out});
  require_f32("gelu_forward", {&x, &out});
  cpu::gelu_forward(cf(x), mf(out), x.numel());
}

void gelu_backward(const Tensor& x, const Tensor& dout, Tensor& dx) {
  const bool gpu = on_cuda("gelu_backward", {&x, &dout, &dx});
  require_same_numel("gelu_backward", x, dout);
  require_same_numel("gelu_backward", x, dx);
  if (gpu) {  // cuda
    require_float_alike("gelu_backward", {&x, &dout, &dx});
    return cuda::gelu_backward(x, dout, dx);
  }
  require_cpu("gelu_backward", {&x, &dout, &dx});
  require_f32("gelu_backward", {&x, &dout, &dx});
  cpu::gelu_backward(cf(x), cf(dout), mf(dx), x.numel());
}

void layernorm_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& out,
                       Tensor& mean, Tensor& rstd, float eps) {
  const char* op = "layernorm_forward";
  const bool gpu = on_cuda(op, {&x, &w, &b, &out, &mean, &rstd});
  int64_t cols = x.size(-1), rows = rows_of(x);
  require_rows_cols(op, w, 1, cols, "weight");
  require_rows_cols(op, b, 1, cols, "bias");
  require_rows_cols(op, out, rows, cols, "out");
  ZT_CHECK(mean.numel() == rows && rstd.numel() == rows, op, ": mean/rstd must hold ", rows,
           " values, got ", mean.str(), " and ", rstd.str());
  if (gpu) {  // cuda
    require_float_alike(op, {&x, &w, &b, &out});
    return cuda::layernorm_forward(x, w, b, out, mean, rstd, rows, cols, eps);
  }
  require_cpu(op, {&x, &w, &b, &out, &mean, &rstd});
  require_f32(op, {&x, &w, &b, &out, &mean, &rstd});
  cpu::layernorm_forward(cf(x), cf(w), cf(b), mf(out), mf(mean), mf(rstd), rows, cols, eps);
}

void layernorm_backward(const Tensor& dout, const Tensor& x, const Tensor& w, const Tensor& mean,
                        const Tensor& rstd, Tensor& dx, Tensor& dw, Tensor& db) {
  const char* op = "layernorm_backward";
  const bool gpu = on_cuda(op, {&dout, &x, &w, &mean, &rstd, &dx, &dw, &db});
  int64_t cols = x.size(-1), rows = rows_of(x);
  require_rows_cols(op, dout, rows, cols, "dout");
  require_rows_cols(op, dx, rows, cols, "dx");
  require_rows_cols(op, w, 1, cols, "weight");
  require_rows_cols(op, dw, 1, cols, "dweight");
  require_rows_cols(op, db, 1, cols, "dbias");
  ZT_CHECK(mean.numel() == rows && rstd.numel() == rows, op, ": mean/rstd must hold ", rows,
           " values");
  if (gpu) {  // cuda
    require_float_alike(op, {&dout, &x, &w, &dx, &dw, &db});
    return cuda::layernorm_backward(dout, x, w, mean, rstd, dx, dw, db, rows, cols);
  }
  require_cpu(op, {&dout, &x, &w, &mean, &rstd, &dx, &dw, &db});
  require_f32(op, {&dout, &x, &w, &mean, &rstd, &dx, &dw, &db});
  cpu::layernorm_backward(cf(dout), cf(x), cf(w), cf(mean), cf(rstd), mf(dx), mf(dw), mf(db), rows,
                          cols);
}

void softmax_forward(const Tensor& x, Tensor& out) {
  const bool gpu = on_cuda("softmax_forward", {&x, &out});
  require_rows_cols("softmax_forward", out, rows_of(x), x.size(-1), "out");
  if (gpu) {  // cuda
    require_float_alike("softmax_forward", {&x, &out});
    return cuda::softmax_forward(x, out, rows_of(x), x.size(-1));
  }
  require_cpu("softmax_forward", {&x, &out});
  require_f32("softmax_forward", {&x, &out});
  cpu::softmax_forward(cf(x), mf(out), rows_of(x), x.size(-1));
}

void softmax_backward(const Tensor& y, const Tensor& dy, Tensor& dx) {
  const bool gpu = on_cuda("softmax_backward", {&y, &dy, &dx});
  require_rows_cols("softmax_backward", dy, rows_of(y), y.size(-1), "dy");
  require_rows_cols("softmax_backward", dx, rows_of(y), y.size(-1), "dx");
  if (gpu) {  // cuda
    require_float_alike("softmax_backward", {&y, &dy, &dx});
    return cuda::softmax_backward(y, dy, dx, rows_of(y), y.size(-1));
  }
  require_cpu("softmax_backward", {&y, &dy, &dx});
  require_f32("softmax_backward", {&y, &dy, &dx});
  cpu::softmax_backward(cf(y), cf(dy), mf(dx), rows_of(y), y.size(-1));
}

namespace {
void check_attention(const char* op, const Tensor& qkv, int n_head, int64_t& B, int64_t& T,
                     int64_t& C) {
  ZT_CHECK(qkv.dim() == 3 && qkv.size(2) % 3 == 0, op, ": qkv must be [B, T, 3C], got ",
           qkv.str());
  B = qkv.size(0);
  T = qkv.size(1);
  C = qkv.size(2) / 3;
  ZT_CHECK(n_head > 0 && C % n_head == 0, op, ": width ", C, " is not divisible by n_head ",
           n_head);
}
// `saved` holds what attention_saved_shape says for qkv's device: probabilities on the CPU,
// softmax statistics (f32) on CUDA.
void check_attention_saved(const char* op, const Tensor& saved, bool gpu, int64_t B, int64_t T,
                           int64_t H) {
  if (gpu) {  // cuda
    ZT_CHECK(saved.dtype() == DType::f32 && saved.numel() == B * H * T, op, ": saved ",
             saved.str(), " should be the softmax statistics, f32 [", B, ", ", H, ", ", T,
             "] (on CUDA it is not the [B, H, T, T] probabilities: attention_saved_shape)");
  } else {
    ZT_CHECK(saved.numel() == B * H * T * T, op, ": probs ", saved.str(), " should be [", B, ", ",
             H, ", ", T, ", ", T, "]");
  }
}
}  // namespace

Shape attention_saved_shape(const Tensor& qkv, int n_head) {
  int64_t B, T, C;
  check_attention("attention_saved_shape", qkv, n_head, B, T, C);
  if (qkv.device().is_cuda()) return {B, n_head, T};  // cuda: softmax statistics
  return {B, n_head, T, T};
}

void attention_forward(const Tensor& qkv, int n_head, Tensor& out, Tensor& saved) {
  const char* op = "attention_forward";
  const bool gpu = on_cuda(op, {&qkv, &out, &saved});
  int64_t B, T, C;
  check_attention(op, qkv, n_head, B, T, C);
  ZT_CHECK(out.numel() == B * T * C, op, ": out ", out.str(), " should be [", B, ", ", T, ", ", C,
           "]");
  check_attention_saved(op, saved, gpu, B, T, n_head);
  if (gpu) {  // cuda: cuDNN fused flash attention
    require_float_alike(op, {&qkv, &out});
    return cuda::attention_forward(qkv, n_head, out, saved);
  }
  require_cpu(op, {&qkv, &out, &saved});
  require_f32(op, {&qkv, &out, &saved});
  cpu::attention_forward(cf(qkv), mf(out), mf(saved), B, T, C, n_head);
}

void attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out,
                        const Tensor& saved, int n_head, Tensor& dqkv) {
  const char* op = "attention_backward";
  const bool gpu = on_cuda(op, {&dout, &qkv, &out, &saved, &dqkv});
  int64_t B, T, C;
  check_attention(op, qkv, n_head, B, T, C);
  ZT_CHECK(dout.numel() == B * T * C, op, ": dout ", dout.str(), " should be [", B, ", ", T, ", ",
           C, "]");
  ZT_CHECK(out.numel() == B * T * C, op, ": out ", out.str(), " should be [", B, ", ", T, ", ",
           C, "] (the forward's output)");
  check_attention_saved(op, saved, gpu, B, T, n_head);
  require_same_numel(op, qkv, dqkv);
  if (gpu) {  // cuda: cuDNN fused flash attention
    require_float_alike(op, {&dout, &qkv, &out, &dqkv});
    return cuda::attention_backward(dout, qkv, out, saved, n_head, dqkv);
  }
  require_cpu(op, {&dout, &qkv, &out, &saved, &dqkv});
  require_f32(op, {&dout, &qkv, &saved, &dqkv});
  cpu::attention_backward(cf(dout), cf(qkv), cf(saved), mf(dqkv), B, T, C, n_head);
}

void attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& probs, int n_head,
                        Tensor& dqkv) {
  const char* op = "attention_backward";
  if (on_cuda(op, {&dout, &qkv, &probs, &dqkv}))  // cuda
    throw Error(detail::str_cat(op, ": on CUDA, backward needs the forward output: call "
                                    "attention_backward(dout, qkv, out, saved, n_head, dqkv)"));
  require_cpu(op, {&dout, &qkv, &probs, &dqkv});
  require_f32(op, {&dout, &qkv, &probs, &dqkv});
  int64_t B, T, C;
  check_attention(op, qkv, n_head, B, T, C);
  ZT_CHECK(dout.numel() == B * T * C, op, ": dout ", dout.str(), " should be [", B, ", ", T, ", ",
           C, "]");
  ZT_CHECK(probs.numel() == B * n_head * T * T, op, ": probs ", probs.str(), " has the wrong size");
  require_same_numel(op, qkv, dqkv);
  cpu::attention_backward(cf(dout), cf(qkv), cf(probs), mf(dqkv), B, T, C, n_head);
}

void embedding_forward(const Tensor& ids, const Tensor& table, Tensor& out) {
  const char* op = "embedding_forward";
  const bool gpu = on_cuda(op, {&ids, &table, &out});
  ZT_CHECK(table.dim() == 2, op, ": table must be [V, C], got ", table.str());
  require_ids(op, ids, table.size(0), false);
  require_rows_cols(op, out, ids.numel(), table.size(1), "out");
  if (gpu) {  // cuda
    require_float_alike(op, {&table, &out});
    return cuda::embedding_forward(ids, table, out);
  }
  require_cpu(op, {&ids, &table, &out});
  require_f32(op, {&table, &out});
  cpu::embedding_forward(ids.data<int32_t>(), cf(table), mf(out), ids.numel(), table.size(1));
}

void embedding_backward_acc(const Tensor& ids, const Tensor& dout, Tensor& dtable) {
  const char* op = "embedding_backward_acc";
  const bool gpu = on_cuda(op, {&ids, &dout, &dtable});
  ZT_CHECK(dtable.dim() == 2, op, ": dtable must be [V, C], got ", dtable.str());
  require_ids(op, ids, dtable.size(0), false);
  require_rows_cols(op, dout, ids.numel(), dtable.size(1), "dout");
  if (gpu) {  // cuda
    require_float_alike(op, {&dout, &dtable});
    return cuda::embedding_backward_acc(ids, dout, dtable);
  }
  require_cpu(op, {&ids, &dout, &dtable});
  require_f32(op, {&dout, &dtable});
  cpu::embedding_backward_acc(ids.data<int32_t>(), cf(dout), mf(dtable), ids.numel(),
                              dtable.size(1));
}

float cross_entropy_forward(const Tensor& logits, const Tensor& targets, Tensor& probs) {
  const char* op = "cross_entropy_forward";
  const bool gpu = on_cuda(op, {&logits, &targets, &probs});
  int64_t V = logits.size(-1), N = rows_of(logits);
  ZT_CHECK(targets.numel() == N, op, ": ", targets.numel(), " targets for ", N, " rows of logits ",
           logits.str());
  require_ids(op, targets, V, true);
  require_rows_cols(op, probs, N, V, "probs");
  if (gpu) {  // cuda
    require_float_alike(op, {&logits, &probs});
    return cuda::cross_entropy_forward(logits, targets, probs, N, V);
  }
  require_cpu(op, {&logits, &targets, &probs});
  require_f32(op, {&logits, &probs});
  return cpu::cross_entropy_forward(cf(logits), targets.data<int32_t>(), mf(probs), N, V);
}

void cross_entropy_backward(const Tensor& probs, const Tensor& targets, float dloss,
                            Tensor& dlogits) {
  const char* op = "cross_entropy_backward";
  const bool gpu = on_cuda(op, {&probs, &targets, &dlogits});
  int64_t V = probs.size(-1), N = rows_of(probs);
  ZT_CHECK(targets.numel() == N && targets.dtype() == DType::i32, op, ": targets ", targets.str(),
           " should be i32 with ", N, " elements");
  require_rows_cols(op, dlogits, N, V, "dlogits");
  if (gpu) {  // cuda
    require_float_alike(op, {&probs, &dlogits});
    return cuda::cross_entropy_backward(probs, targets, dloss, dlogits, N, V);
  }
  require_cpu(op, {&probs, &targets, &dlogits});
  require_f32(op, {&probs, &dlogits});
  cpu::cross_entropy_backward(cf(probs), targets.data<int32_t>(), dloss, mf(dlogits), N, V);
}

}  // namespace zt::ops
