// core/cuda/blas.cpp: matrix products on the GPU through cuBLASLt: core/cuda/ops.h's matmul and the
// fused linear products (linear_forward_fused, weight_grad_fused, linear_dgelu_fused), with the
// plan cache of core/cuda/blas_lt.h.
//
// Row-major to column-major: cuBLASLt is column-major, and a row-major [r, c] matrix read
// column-major is its transpose. So out = op(a) op(b) (row-major, [m, n]) is computed as
// out^T = op(b)^T op(a)^T in column-major terms: cuBLASLt's A is our b, its B is our a, its
// (m, n) is our (n, m), and each operand's transpose flag is our own flag (no extra transposes).
// The epilogues read in these terms (cuBLASLt's "rows of D" are our columns):
//   BIAS          bias[j] added to out[:, j] (a vector of length n, D's rows);
//   GELU_AUX_BIAS pre = AB + bias stored to aux (our [m, n] row-major: leading dimension n, which
//                 cuBLASLt wants divisible by 8), out = gelu(pre);
//   DGELU         out = gelu'(aux) * AB, aux = pre as above;
//   BGRADB        bias = sums of cuBLASLt's op(B) = our op(a) over k: for dW = dY^T X (our a = dY,
//                 transposed) these are the column sums of dY, the bias gradient (length m, D's
//                 columns). Written, not accumulated.
// The layouts are TransformerEngine's: forward "TN" (A = w transposed, B = x), data gradient "NN"
// (A = w, B = dY), weight gradient "NT" (A = x, B = dY transposed), the forms its cuBLASLt GEMMs
// run these epilogues in.
//
// Types: a and b share one dtype; out has it or is f32 (CUBLAS_COMPUTE_32F with f32 alpha/beta:
// bf16/f16 on tensor cores with f32 accumulation; f32 in true f32 math, no TF32, so GPU results
// match the CPU's to f32 rounding; TF32 is a choice for later, behind a config key). The bias
// vector, the aux matrix and the bias gradient take cuBLASLt's default type, D's (out's), which is
// why core/ops.h asks bias and pre to have out's dtype.
// GELU: cuBLASLt documents its GELU epilogue without a formula; it is the tanh approximation, the
// one core/ops.h computes (PyTorch's own test of the fused epilogue, _test_addmm_addmv in
// test_linalg.py, compares CUDA's torch._addmm_activation(use_gelu=True) with
// gelu(approximate="tanh")). tests/gpu/test_cuda_blas.cpp checks it on exact inputs (an identity
// weight), so that an erf-form GELU would show rather than hide under bf16 rounding.
// Batches: strided batches; a 2-D b shared by every batch is folded into m when a is not
// transposed (one big GEMM), and otherwise run as one GEMM per batch. Epilogues: one GEMM only.
// Plans (descriptor, layouts, algorithm) are cached per (device, dtypes, batch, m, n, k,
// transposes, epilogue, alignment of each pointer): only a new shape asks the heuristic; a
// refused epilogue is cached too, and then runs unfused every time without asking again. The
// workspace (32 MiB, what cuBLAS documents for Hopper) is one per (device, stream), allocated once
// from the caching allocator.
//
// Status: compiled, never run on a GPU (tests/gpu/test_cuda_ops.cpp and test_cuda_blas.cpp check it
// against the CPU).
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <utility>

#include "core/cuda/allocator.h"
#include "core/cuda/blas_lt.h"
#include "core/cuda/check.h"
#include "core/cuda/ops.h"
#include "core/cuda/stream.h"

namespace zt::cuda {
namespace {

constexpr size_t kWorkspaceBytes = size_t{32} << 20;

enum class Epi : int { none, bias, gelu_aux, gelu_aux_bias, dgelu, bgradb };

cublasLtEpilogue_t lt_epilogue(Epi e) {
  switch (e) {
    case Epi::bias: return CUBLASLT_EPILOGUE_BIAS;
    case Epi::gelu_aux: return CUBLASLT_EPILOGUE_GELU_AUX;
    case Epi::gelu_aux_bias: return CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
    case Epi::dgelu: return CUBLASLT_EPILOGUE_DGELU;
    case Epi::bgradb: return CUBLASLT_EPILOGUE_BGRADB;
    case Epi::none: break;
  }
  return CUBLASLT_EPILOGUE_DEFAULT;
}
bool uses_bias(Epi e) { return e == Epi::bias || e == Epi::gelu_aux_bias || e == Epi::bgradb; }
bool uses_aux(Epi e) { return e == Epi::gelu_aux || e == Epi::gelu_aux_bias || e == Epi::dgelu; }
const char* epi_name(Epi e) {
  switch (e) {
    case Epi::bias: return "BIAS";
    case Epi::gelu_aux: return "GELU_AUX";
    case Epi::gelu_aux_bias: return "GELU_AUX_BIAS";
    case Epi::dgelu: return "DGELU";
    case Epi::bgradb: return "BGRADB";
    case Epi::none: break;
  }
  return "none";
}

// One (possibly strided-batched) GEMM in our row-major terms; raw device pointers.
struct Gemm {
  DType ab = DType::f32, od = DType::f32;  // a and b; out (and bias, aux)
  const void* a = nullptr;
  const void* b = nullptr;
  void* out = nullptr;
  int64_t batch = 1, m = 0, n = 0, k = 0;
  bool ta = false, tb = false;
  float alpha = 1.f, beta = 0.f;
  Epi epi = Epi::none;
  void* bias = nullptr;  // BIAS*: [n], read; BGRADB: [m], written
  void* aux = nullptr;   // GELU_AUX*: [m, n], written; DGELU: [m, n], read
};

// A cached plan. Its cuBLASLt objects live as long as the process (the cache is never emptied),
// except when building fails half-way: the destructor then releases what was made.
struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool supported = false;
  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  ~Plan() {
    if (la) (void)cublasLtMatrixLayoutDestroy(la);  // cannot fail on valid objects
    if (lb) (void)cublasLtMatrixLayoutDestroy(lb);
    if (lc) (void)cublasLtMatrixLayoutDestroy(lc);
    if (desc) (void)cublasLtMatmulDescDestroy(desc);
  }
};

// Process-wide cuBLASLt state: one handle per device, one workspace per (device, stream), the plan
// cache and its counters. Never destroyed (the driver reclaims it at exit; see runtime.cpp's
// allocator).
struct LtState {
  std::mutex mu;
  std::map<int, cublasLtHandle_t> handles;
  std::map<std::pair<int, const void*>, void*> workspaces;
  // (device, ab dtype, out dtype, batch, m, n, k, ta, tb, epilogue, alignments of cuBLASLt's A, B,
  // C/D, bias, aux)
  using Key = std::tuple<int, int, int, int64_t, int64_t, int64_t, int64_t, int, int, int, uint32_t,
                         uint32_t, uint32_t, uint32_t, uint32_t>;
  std::map<Key, std::unique_ptr<Plan>> plans;
  BlasStats stats;
};
LtState& lt() {
  static LtState* s = new LtState();
  return *s;
}
std::atomic<bool> g_fused{true};

struct Preference {
  cublasLtMatmulPreference_t p = nullptr;
  Preference() { ZT_CUBLASLT_CHECK(cublasLtMatmulPreferenceCreate(&p)); }
  ~Preference() { (void)cublasLtMatmulPreferenceDestroy(p); }
  Preference(const Preference&) = delete;
  Preference& operator=(const Preference&) = delete;
  void set(cublasLtMatmulPreferenceAttributes_t a, const void* v, size_t n) {
    ZT_CUBLASLT_CHECK(cublasLtMatmulPreferenceSetAttribute(p, a, v, n));
  }
};

void make_layout(cublasLtMatrixLayout_t& l, cudaDataType_t t, int64_t rows, int64_t cols,
                 int64_t ld, int64_t batch, int64_t stride) {
  ZT_CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&l, t, static_cast<uint64_t>(rows),
                                               static_cast<uint64_t>(cols), ld));
  if (batch > 1) {
    const int32_t count = static_cast<int32_t>(batch);
    ZT_CUBLASLT_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                                                       &count, sizeof count));
    ZT_CUBLASLT_CHECK(cublasLtMatrixLayoutSetAttribute(
        l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride));
  }
}

// The largest power of two (<= 256) dividing the address: views into flat buffers may start
// anywhere, and cuBLASLt must be told (its default assumption is 256-byte alignment).
uint32_t alignment(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && (a % al) != 0) al /= 2;
  return al;
}

cudaDataType_t lt_type(DType t) {
  switch (t) {
    case DType::f32: return CUDA_R_32F;
    case DType::bf16: return CUDA_R_16BF;
    case DType::f16: return CUDA_R_16F;
    default: break;
  }
  throw Error(::zt::detail::str_cat("matmul: dtype ", dtype_name(t),
                                    " is not supported on CUDA (f32, bf16, f16)"));
}

// The pointers a call brings to its (cached) descriptor: cuBLASLt reads them at launch, and the
// heuristic reads their alignment.
void set_pointers(const Plan& p, const Gemm& g) {
  if (uses_bias(g.epi))
    ZT_CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                     &g.bias, sizeof g.bias));
  if (uses_aux(g.epi))
    ZT_CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(
        p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &g.aux, sizeof g.aux));
}

// Builds the plan of `g` (descriptor, layouts, heuristic). A plain product with no algorithm is an
// error; an epilogue without one gives an unsupported plan (the caller then runs unfused).
std::unique_ptr<Plan> build_plan(const Gemm& g, cublasLtHandle_t h, uint32_t al_a, uint32_t al_b,
                                 uint32_t al_c) {
  auto p = std::make_unique<Plan>();
  ZT_CUBLASLT_CHECK(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t op_a = g.tb ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLASLt's A is our b
  const cublasOperation_t op_b = g.ta ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLASLt's B is our a
  ZT_CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a,
                                                   sizeof op_a));
  ZT_CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b,
                                                   sizeof op_b));
  if (g.epi != Epi::none) {
    const cublasLtEpilogue_t e = lt_epilogue(g.epi);
    ZT_CUBLASLT_CHECK(
        cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &e, sizeof e));
  }
  if (uses_aux(g.epi)) {
    const int64_t ld = g.n;  // our [m, n] row-major = cuBLASLt's [n, m] column-major
    ZT_CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(
        p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld, sizeof ld));
  }
  set_pointers(*p, g);
  const cudaDataType_t tab = lt_type(g.ab), tod = lt_type(g.od);
  const int64_t a_rows = g.tb ? g.k : g.n, a_cols = g.tb ? g.n : g.k;  // column-major, as stored
  const int64_t b_rows = g.ta ? g.m : g.k, b_cols = g.ta ? g.k : g.m;
  make_layout(p->la, tab, a_rows, a_cols, a_rows, g.batch, g.k * g.n);
  make_layout(p->lb, tab, b_rows, b_cols, b_rows, g.batch, g.m * g.k);
  make_layout(p->lc, tod, g.n, g.m, g.n, g.batch, g.m * g.n);

  Preference pref;
  const uint64_t ws_bytes = kWorkspaceBytes;
  pref.set(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes, sizeof ws_bytes);
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof al_a);
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof al_b);
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c, sizeof al_c);
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c, sizeof al_c);
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(h, p->desc, p->la, p->lb, p->lc, p->lc,
                                                           pref.p, 1, &result, &found);
  if (st == CUBLAS_STATUS_SUCCESS && found > 0) {
    p->algo = result.algo;
    p->supported = true;
    return p;
  }
  if (g.epi != Epi::none) return p;  // refused epilogue: cached as unsupported
  if (st != CUBLAS_STATUS_SUCCESS && st != CUBLAS_STATUS_NOT_SUPPORTED)
    detail::throw_cublas_error(st, "cuBLASLt", "cublasLtMatmulAlgoGetHeuristic", __FILE__,
                               __LINE__);
  throw Error(::zt::detail::str_cat(
      "matmul: cuBLASLt has no algorithm for ", dtype_name(g.ab), " -> ", dtype_name(g.od),
      " batch ", g.batch, " [", g.m, ", ", g.k, "] x [", g.k, ", ", g.n, "]",
      g.ta ? " trans_a" : "", g.tb ? " trans_b" : "", " (alignments ", al_b, "/", al_a, "/", al_c,
      " bytes)"));
}

// Runs `g` on the current stream. Returns false, having enqueued nothing, when `g` asks for an
// epilogue that cuBLASLt refuses for this case.
bool run(const Gemm& g, int device) {
  cudaStream_t s = current_stream();
  LtState& st = lt();
  // Held across the launch too: the cached descriptor gets this call's pointers, and
  // cublasLtMatmul only enqueues.
  std::lock_guard<std::mutex> lock(st.mu);
  cublasLtHandle_t& h = st.handles[device];
  if (!h) ZT_CUBLASLT_CHECK(cublasLtCreate(&h));
  void*& ws = st.workspaces[{device, s}];
  if (!ws) ws = device_alloc(kWorkspaceBytes, device);

  const uint32_t al_a = alignment(g.b), al_b = alignment(g.a), al_c = alignment(g.out);
  const uint32_t al_bias = uses_bias(g.epi) ? alignment(g.bias) : 0;
  const uint32_t al_aux = uses_aux(g.epi) ? alignment(g.aux) : 0;
  const LtState::Key key{device, static_cast<int>(g.ab), static_cast<int>(g.od), g.batch, g.m, g.n,
                         g.k, g.ta, g.tb, static_cast<int>(g.epi), al_a, al_b, al_c, al_bias,
                         al_aux};
  auto it = st.plans.find(key);
  if (it == st.plans.end()) {
    ++st.stats.heuristic_queries;
    it = st.plans.emplace(key, build_plan(g, h, al_a, al_b, al_c)).first;
  } else {
    ++st.stats.plan_hits;
    if (it->second->supported) set_pointers(*it->second, g);
  }
  Plan& p = *it->second;
  if (!p.supported) {
    ++st.stats.fused_unsupported;
    return false;
  }
  const cublasStatus_t rs = cublasLtMatmul(h, p.desc, &g.alpha, g.b, p.la, g.a, p.lb, &g.beta,
                                           g.out, p.lc, g.out, p.lc, &p.algo, ws, kWorkspaceBytes, s);
  if (rs == CUBLAS_STATUS_NOT_SUPPORTED && g.epi != Epi::none) {
    p.supported = false;  // the heuristic offered it, the launch refused it: unfused from now on
    ++st.stats.fused_unsupported;
    return false;
  }
  if (rs != CUBLAS_STATUS_SUCCESS)
    detail::throw_cublas_error(
        rs, "cuBLASLt",
        ::zt::detail::str_cat("cublasLtMatmul (", dtype_name(g.ab), " -> ", dtype_name(g.od), " [",
                              g.m, ", ", g.k, "] x [", g.k, ", ", g.n, "] epilogue ",
                              epi_name(g.epi), ")")
            .c_str(),
        __FILE__, __LINE__);
  if (g.epi != Epi::none) ++st.stats.fused_calls;
  return true;
}

}  // namespace

BlasStats blas_stats() {
  LtState& st = lt();
  std::lock_guard<std::mutex> lock(st.mu);
  return st.stats;
}
void set_fused_epilogues(bool on) { g_fused.store(on); }
bool fused_epilogues() { return g_fused.load(); }

void matmul(const Tensor& a, const Tensor& b, Tensor& out, int64_t batch, int64_t m, int64_t n,
            int64_t k, bool trans_a, bool trans_b, float alpha, float beta, bool b_shared) {
  ZT_CHECK(a.dtype() == b.dtype() && (out.dtype() == a.dtype() || out.dtype() == DType::f32),
           "matmul: on CUDA a and b share one dtype and out has it or is f32, got ", a.str(),
           ", ", b.str(), ", ", out.str());
  if (batch == 0 || m == 0 || n == 0) return;
  const int device = out.device().index;
  if (k == 0) {  // empty sum: out = beta * out (cuBLASLt rejects k = 0)
    if (beta == 0.f) fill(out, 0.f);
    else scale(out, beta);
    return;
  }
  Gemm g;
  g.ab = a.dtype();
  g.od = out.dtype();
  g.a = a.raw();
  g.b = b.raw();
  g.out = out.raw();
  g.batch = batch;
  g.m = m;
  g.n = n;
  g.k = k;
  g.ta = trans_a;
  g.tb = trans_b;
  g.alpha = alpha;
  g.beta = beta;
  if (!b_shared || batch == 1) {
    run(g, device);
  } else if (!trans_a) {  // a is [batch * m, k] row-major: one GEMM against the shared b
    g.batch = 1;
    g.m = batch * m;
    run(g, device);
  } else {
    const size_t es_a = dtype_size(a.dtype()), es_o = dtype_size(out.dtype());
    g.batch = 1;
    for (int64_t i = 0; i < batch; ++i) {
      g.a = static_cast<const char*>(a.raw()) + i * m * k * es_a;
      g.out = static_cast<char*>(out.raw()) + i * m * n * es_o;
      run(g, device);
    }
  }
}

bool linear_forward_fused(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& out,
                          Tensor* pre, int64_t rows, int64_t n, int64_t k) {
  if (!fused_epilogues() || (!bias && !pre)) return false;  // nothing to fuse: a plain matmul
  if (rows == 0 || n == 0 || k == 0) return false;          // the composition's edge cases
  if (pre && n % 8 != 0) return false;  // GELU's aux leading dimension must divide by 8
  Gemm g;
  g.ab = x.dtype();
  g.od = out.dtype();
  g.a = x.raw();
  g.b = w.raw();
  g.out = out.raw();
  g.m = rows;
  g.n = n;
  g.k = k;
  g.tb = true;
  g.epi = pre ? (bias ? Epi::gelu_aux_bias : Epi::gelu_aux) : Epi::bias;
  g.bias = bias ? bias->raw() : nullptr;
  g.aux = pre ? pre->raw() : nullptr;
  return run(g, out.device().index);
}

bool weight_grad_fused(const Tensor& dout, const Tensor& x, Tensor& dw, Tensor& dbias,
                       int64_t rows, int64_t n, int64_t k) {
  if (!fused_epilogues() || rows == 0 || n == 0 || k == 0) return false;
  if (dbias.dtype() != dw.dtype()) return false;  // the epilogue writes dw's dtype
  Tensor db = Tensor::empty({n}, dw.dtype(), dw.device());  // stream-ordered scratch
  Gemm g;  // dw [n, k] += dout^T [n, rows] x [rows, k]
  g.ab = dout.dtype();
  g.od = dw.dtype();
  g.a = dout.raw();
  g.b = x.raw();
  g.out = dw.raw();
  g.m = n;
  g.n = k;
  g.k = rows;
  g.ta = true;
  g.beta = 1.f;
  g.epi = Epi::bgradb;
  g.bias = db.raw();
  if (!run(g, dw.device().index)) return false;
  axpy(1.f, db, dbias);
  return true;
}

bool linear_dgelu_fused(const Tensor& dout, const Tensor& w, const Tensor& pre, Tensor& dpre,
                        int64_t rows, int64_t n, int64_t k) {
  if (!fused_epilogues() || rows == 0 || n == 0 || k == 0) return false;
  if (k % 8 != 0) return false;  // aux (pre, [rows, k]) leading dimension must divide by 8
  Gemm g;  // dpre [rows, k] = gelu'(pre) * (dout [rows, n] w [n, k])
  g.ab = dout.dtype();
  g.od = dpre.dtype();
  g.a = dout.raw();
  g.b = w.raw();
  g.out = dpre.raw();
  g.m = rows;
  g.n = k;
  g.k = n;
  g.epi = Epi::dgelu;
  g.aux = pre.raw();  // read by DGELU
  return run(g, dpre.device().index);
}

}  // namespace zt::cuda
