// core/cuda/blas.cpp: matrix products on the GPU through cuBLASLt (core/cuda/ops.h: matmul).
//
// Row-major to column-major: cuBLASLt is column-major, and a row-major [r, c] matrix read
// column-major is its transpose. So out = op(a) op(b) (row-major, [m, n]) is computed as
// out^T = op(b)^T op(a)^T in column-major terms: cuBLASLt's A is our b, its B is our a, its
// (m, n) is our (n, m), and each operand's transpose flag is our own flag (no extra transposes).
//
// Types: a, b, out share one dtype; bf16 and f16 use tensor cores with f32 accumulation and f32
// alpha/beta (CUBLAS_COMPUTE_32F); f32 uses true f32 math (CUBLAS_COMPUTE_32F, no TF32), so GPU
// results match the CPU's to f32 rounding. (TF32, at 8x the f32 rate on an H100, is a choice for
// later, behind a config key.)
// Batches: strided batches; a 2-D b shared by every batch is folded into m when a is not
// transposed (one big GEMM), and otherwise run as one GEMM per batch.
// The algorithm comes from cuBLASLt's heuristic, cached per (shape, dtype, flags, alignment);
// the workspace (32 MiB) is one per (device, stream), allocated once from the caching allocator.
// Not done yet: bias and GELU epilogues (CUBLASLT_EPILOGUE_GELU_BIAS...), f32 out with bf16 in.
//
// Status: compiled, never run on a GPU (tests/gpu/test_cuda_ops.cpp checks it against the CPU).
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <tuple>
#include <utility>

#include "core/cuda/allocator.h"
#include "core/cuda/check.h"
#include "core/cuda/ops.h"
#include "core/cuda/stream.h"

namespace zt::cuda {
namespace {

constexpr size_t kWorkspaceBytes = size_t{32} << 20;

// Process-wide cuBLASLt state: one handle per device, one workspace per (device, stream), the
// algorithm cache. Never destroyed (the driver reclaims it at exit; see runtime.cpp's allocator).
struct LtState {
  std::mutex mu;
  std::map<int, cublasLtHandle_t> handles;
  std::map<std::pair<int, const void*>, void*> workspaces;
  // (device, dtype, batch, m, n, k, trans_a, trans_b, alignments of cuBLASLt's A, B, C)
  using AlgoKey = std::tuple<int, int, int64_t, int64_t, int64_t, int64_t, int, int, uint32_t,
                             uint32_t, uint32_t>;
  std::map<AlgoKey, cublasLtMatmulAlgo_t> algos;
};
LtState& lt() {
  static LtState* s = new LtState();
  return *s;
}

// RAII for the per-call descriptors.
struct MatmulDesc {
  cublasLtMatmulDesc_t d = nullptr;
  MatmulDesc() { ZT_CUBLASLT_CHECK(cublasLtMatmulDescCreate(&d, CUBLAS_COMPUTE_32F, CUDA_R_32F)); }
  ~MatmulDesc() { (void)cublasLtMatmulDescDestroy(d); }  // cannot fail on a valid descriptor
  MatmulDesc(const MatmulDesc&) = delete;
  MatmulDesc& operator=(const MatmulDesc&) = delete;
};
struct Layout {
  cublasLtMatrixLayout_t l = nullptr;
  Layout(cudaDataType_t t, int64_t rows, int64_t cols, int64_t ld, int64_t batch, int64_t stride) {
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
  ~Layout() { (void)cublasLtMatrixLayoutDestroy(l); }
  Layout(const Layout&) = delete;
  Layout& operator=(const Layout&) = delete;
};
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

// One (possibly strided-batched) GEMM in our row-major terms; pointers are raw device pointers.
void gemm(DType dtype, const void* a, const void* b, void* out, int64_t batch, int64_t m,
          int64_t n, int64_t k, bool ta, bool tb, float alpha, float beta, int device) {
  const cudaDataType_t t = lt_type(dtype);
  cudaStream_t s = current_stream();
  LtState& st = lt();
  std::unique_lock<std::mutex> lock(st.mu);
  cublasLtHandle_t& h = st.handles[device];
  if (!h) ZT_CUBLASLT_CHECK(cublasLtCreate(&h));
  void*& ws = st.workspaces[{device, s}];
  if (!ws) ws = device_alloc(kWorkspaceBytes, device);

  MatmulDesc desc;
  const cublasOperation_t op_a = tb ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLASLt's A is our b
  const cublasOperation_t op_b = ta ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLASLt's B is our a
  ZT_CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_TRANSA, &op_a,
                                                   sizeof op_a));
  ZT_CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_TRANSB, &op_b,
                                                   sizeof op_b));
  const int64_t a_rows = tb ? k : n, a_cols = tb ? n : k;  // column-major layouts as stored
  const int64_t b_rows = ta ? m : k, b_cols = ta ? k : m;
  Layout la(t, a_rows, a_cols, a_rows, batch, k * n);
  Layout lb(t, b_rows, b_cols, b_rows, batch, m * k);
  Layout lc(t, n, m, n, batch, m * n);

  const uint32_t al_a = alignment(b), al_b = alignment(a), al_c = alignment(out);
  const LtState::AlgoKey key{device, static_cast<int>(dtype), batch, m, n, k, ta, tb, al_a, al_b,
                             al_c};
  auto it = st.algos.find(key);
  if (it == st.algos.end()) {
    Preference pref;
    const uint64_t ws_bytes = kWorkspaceBytes;
    pref.set(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes, sizeof ws_bytes);
    pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof al_a);
    pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof al_b);
    pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c, sizeof al_c);
    pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c, sizeof al_c);
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    ZT_CUBLASLT_CHECK(cublasLtMatmulAlgoGetHeuristic(h, desc.d, la.l, lb.l, lc.l, lc.l, pref.p, 1,
                                                     &result, &found));
    ZT_CHECK(found > 0, "matmul: cuBLASLt has no algorithm for ", dtype_name(dtype), " batch ",
             batch, " [", m, ", ", k, "] x [", k, ", ", n, "]", ta ? " trans_a" : "",
             tb ? " trans_b" : "", " (alignments ", al_b, "/", al_a, "/", al_c, " bytes)");
    it = st.algos.emplace(key, result.algo).first;
  }
  const cublasLtMatmulAlgo_t algo = it->second;
  lock.unlock();  // the descriptors are ours; the handle and workspace are safe to share per stream
  ZT_CUBLASLT_CHECK(cublasLtMatmul(h, desc.d, &alpha, b, la.l, a, lb.l, &beta, out, lc.l, out,
                                   lc.l, &algo, ws, kWorkspaceBytes, s));
}

}  // namespace

void matmul(const Tensor& a, const Tensor& b, Tensor& out, int64_t batch, int64_t m, int64_t n,
            int64_t k, bool trans_a, bool trans_b, float alpha, float beta, bool b_shared) {
  ZT_CHECK(a.dtype() == b.dtype() && a.dtype() == out.dtype(),
           "matmul: on CUDA a, b and out must share one dtype, got ", a.str(), ", ", b.str(),
           ", ", out.str());
  if (batch == 0 || m == 0 || n == 0) return;
  const int device = out.device().index;
  if (k == 0) {  // empty sum: out = beta * out (cuBLASLt rejects k = 0)
    if (beta == 0.f) fill(out, 0.f);
    else scale(out, beta);
    return;
  }
  if (!b_shared || batch == 1) {
    gemm(a.dtype(), a.raw(), b.raw(), out.raw(), batch, m, n, k, trans_a, trans_b, alpha, beta,
         device);
  } else if (!trans_a) {  // a is [batch * m, k] row-major: one GEMM against the shared b
    gemm(a.dtype(), a.raw(), b.raw(), out.raw(), 1, batch * m, n, k, false, trans_b, alpha, beta,
         device);
  } else {
    const size_t es = dtype_size(a.dtype());
    for (int64_t i = 0; i < batch; ++i)
      gemm(a.dtype(), static_cast<const char*>(a.raw()) + i * m * k * es, b.raw(),
           static_cast<char*>(out.raw()) + i * m * n * es, 1, m, n, k, true, trans_b, alpha, beta,
           device);
  }
}

}  // namespace zt::cuda
