// core/cuda/attention.cpp: causal self-attention through cuDNN's fused flash attention, built with
// cuDNN's backend (graph) C API (what the API is and why, in core/cuda/attention.h).
//
// The graphs are the composite SDPA pattern that cudnn-frontend 1.x lowers its sdpa() and
// sdpa_backward() nodes to for cuDNN 9 (before 9.21's unified operations), and that the backend
// matches to its fused kernels. Tensors in capitals are bound in the variant pack, the rest are
// virtual (they live in registers and shared memory inside the fused kernel):
//
//   forward   S = Q @ K^T  (f32)             backward  sum = rowsum(dO * O) * 1   -> SOFTMAX_SUM
//             S = S * SCALE                            S = Q @ K^T * SCALE - STATS
//             S = select(row >= col, S, -inf)          S = select(row >= col, S, -inf)
//             m = rowmax(S)                            P = exp(S)
//             e = exp(S - m)                           dV = reshape(P)^T @ dO
//             l = rowsum(e)                            dP = dO @ V^T
//             STATS = m + log(l)                       dS = (dP - sum) * P * SCALE
//             P = e / l  (bf16/f16)                    dK = reshape(dS)^T @ Q
//             O = P @ V                                DQ_ACCUM = dS @ reshape(K^T)   (f32)
//                                                      dQ = identity(DQ_ACCUM)
// row/col come from GEN_INDEX on the score tensor (the causal mask, top-left aligned). SOFTMAX_SUM
// ([B, H, T, 1] f32) and DQ_ACCUM ([B, H, T, D] f32, zeroed first: cuDNN < 9.6 does not zero it)
// are scratch tensors that cudnn-frontend places in its own workspace; here they sit after the
// plan's workspace in one block from the caching allocator. The mask value is -inf from cuDNN 9.10
// on and the lowest float before (cudnn-frontend's choice: older engines prefer a finite value).
//
// Q, K, V, O, dO, dQ, dK, dV are strided views of qkv/out/dqkv (sdpa_layout in attention.h): no
// copies. One graph + execution plan per (device, direction, dtype, B, H, T, D), cached forever
// (plans are small; a training run sees a handful of shapes). cuDNN handles: one per device, set
// to the current stream before each execution, all under one mutex.
//
// Status: compiles and links against cuDNN 9.19; NEVER RUN ON A GPU (no GPU was lent to the session
// that wrote it). tests/gpu/test_cuda_attention.cpp checks it against the CPU backend.
#include "core/cuda/attention.h"

#include <cuda_runtime.h>
#include <cudnn.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "core/cuda/allocator.h"
#include "core/cuda/check.h"
#include "core/cuda/cudnn_check.h"
#include "core/cuda/ops.h"
#include "core/cuda/stream.h"
#include "core/dtype.h"
#include "core/error.h"

namespace zt::cuda {
namespace {

using ::zt::detail::str_cat;

// Sets one attribute; a macro so that a failure names this file's line and the attribute.
#define ZT_CUDNN_SET(desc, attr, type, count, value) \
  ZT_CUDNN_CHECK(cudnnBackendSetAttribute((desc), (attr), (type), (count), (value)))

// ---- descriptors --------------------------------------------------------------------------------
// Owns one backend descriptor (move-only).
class Desc {
 public:
  Desc() = default;
  explicit Desc(cudnnBackendDescriptorType_t type) {
    ZT_CUDNN_CHECK(cudnnBackendCreateDescriptor(type, &d_));
  }
  ~Desc() { reset(); }
  Desc(Desc&& o) noexcept : d_(std::exchange(o.d_, nullptr)) {}
  Desc& operator=(Desc&& o) noexcept {
    if (this != &o) {
      reset();
      d_ = std::exchange(o.d_, nullptr);
    }
    return *this;
  }
  Desc(const Desc&) = delete;
  Desc& operator=(const Desc&) = delete;
  cudnnBackendDescriptor_t get() const { return d_; }

 private:
  void reset() {
    if (d_) ZT_CUDNN_CHECK_WARN(cudnnBackendDestroyDescriptor(d_));
    d_ = nullptr;
  }
  cudnnBackendDescriptor_t d_ = nullptr;
};

using Ref = cudnnBackendDescriptor_t;  // a descriptor owned by a Graph
constexpr cudnnDataType_t kF32 = CUDNN_DATA_FLOAT;

// The variant-pack ids of the bound tensors; virtual tensors are numbered from kFirstVirtual.
enum Uid : int64_t {
  kQ = 1, kK, kV, kO, kStats, kScale, kNegInf,       // forward and backward
  kDO, kDQ, kDK, kDV, kOne, kSoftmaxSum, kDQAccum,   // backward only
  kFirstVirtual = 100,
};

// An operation graph under construction: every descriptor it creates stays alive as long as the
// Graph (the execution plan built from it is cached with it).
class Graph {
 public:
  // A bound tensor (its data pointer comes with each execution).
  Ref tensor(int64_t uid, cudnnDataType_t type, const SdpaTensor& t) {
    return make_tensor(uid, type, t, false, false);
  }
  // A scalar f32 passed by value (a host pointer in the variant pack).
  Ref scalar(int64_t uid) {
    return make_tensor(uid, kF32, sdpa_tensor({1, 1, 1, 1}, {1, 1, 1, 1}), false, true);
  }
  Ref virt(cudnnDataType_t type, const SdpaTensor& t) {
    return make_tensor(next_uid_++, type, t, true, false);
  }

  // y = mode(x[, b][, t]) computed in `math`; writes into `y`, returns it.
  Ref pointwise_into(Ref y, cudnnPointwiseMode_t mode, Ref x, Ref b = nullptr, Ref t = nullptr,
                     cudnnDataType_t math = kF32, int64_t axis = -1) {
    Desc pw(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
    ZT_CUDNN_SET(pw.get(), CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode);
    ZT_CUDNN_SET(pw.get(), CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &math);
    if (axis >= 0) ZT_CUDNN_SET(pw.get(), CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis);
    ZT_CUDNN_CHECK(cudnnBackendFinalize(pw.get()));
    Desc op(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
    Ref pwd = pw.get();
    ZT_CUDNN_SET(op.get(), CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR,
                 CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &pwd);
    ZT_CUDNN_SET(op.get(), CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                 &x);
    if (b)
      ZT_CUDNN_SET(op.get(), CUDNN_ATTR_OPERATION_POINTWISE_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                   1, &b);
    ZT_CUDNN_SET(op.get(), CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                 &y);
    if (t)
      ZT_CUDNN_SET(op.get(), CUDNN_ATTR_OPERATION_POINTWISE_TDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                   1, &t);
    ZT_CUDNN_CHECK(cudnnBackendFinalize(op.get()));
    add_op(std::move(pw), std::move(op));
    return y;
  }
  // The same into a new virtual tensor of layout `shape` and dtype `type`.
  Ref pointwise(const SdpaTensor& shape, cudnnDataType_t type, cudnnPointwiseMode_t mode, Ref x,
                Ref b = nullptr, Ref t = nullptr, cudnnDataType_t math = kF32,
                int64_t axis = -1) {
    return pointwise_into(virt(type, shape), mode, x, b, t, math, axis);
  }

  void matmul(Ref a, Ref b, Ref c) {  // c = a @ b, batched over the first two dims, f32 math
    Desc mm(CUDNN_BACKEND_MATMUL_DESCRIPTOR);
    ZT_CUDNN_SET(mm.get(), CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &kF32);
    ZT_CUDNN_CHECK(cudnnBackendFinalize(mm.get()));
    Desc op(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR);
    Ref mmd = mm.get();
    ZT_CUDNN_SET(op.get(), CUDNN_ATTR_OPERATION_MATMUL_ADESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &a);
    ZT_CUDNN_SET(op.get(), CUDNN_ATTR_OPERATION_MATMUL_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b);
    ZT_CUDNN_SET(op.get(), CUDNN_ATTR_OPERATION_MATMUL_CDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &c);
    ZT_CUDNN_SET(op.get(), CUDNN_ATTR_OPERATION_MATMUL_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                 &mmd);
    ZT_CUDNN_CHECK(cudnnBackendFinalize(op.get()));
    add_op(std::move(mm), std::move(op));
  }

  // y = reduce(x) over the dims where y has size 1, f32 math.
  void reduction(cudnnReduceTensorOp_t mode, Ref x, Ref y) {
    Desc rd(CUDNN_BACKEND_REDUCTION_DESCRIPTOR);
    ZT_CUDNN_SET(rd.get(), CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1,
                 &mode);
    ZT_CUDNN_SET(rd.get(), CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &kF32);
    ZT_CUDNN_CHECK(cudnnBackendFinalize(rd.get()));
    Desc op(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR);
    Ref rdd = rd.get();
    ZT_CUDNN_SET(op.get(), CUDNN_ATTR_OPERATION_REDUCTION_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                 &x);
    ZT_CUDNN_SET(op.get(), CUDNN_ATTR_OPERATION_REDUCTION_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                 &y);
    ZT_CUDNN_SET(op.get(), CUDNN_ATTR_OPERATION_REDUCTION_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                 &rdd);
    ZT_CUDNN_CHECK(cudnnBackendFinalize(op.get()));
    add_op(std::move(rd), std::move(op));
  }

  // y = x seen with y's dims and strides (here: transposes of the last two dims).
  void reshape(Ref x, Ref y) {
    Desc op(CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR);
    ZT_CUDNN_SET(op.get(), CUDNN_ATTR_OPERATION_RESHAPE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                 &x);
    ZT_CUDNN_SET(op.get(), CUDNN_ATTR_OPERATION_RESHAPE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                 &y);
    ZT_CUDNN_CHECK(cudnnBackendFinalize(op.get()));
    add_op(Desc(), std::move(op));
  }

  int64_t num_ops() const { return static_cast<int64_t>(ops_.size()); }

  // The handle is how cuDNN < 9.? learns the device; newer cuDNN also finalizes a graph without
  // one (attention_graph_self_check does, on machines with no GPU).
  Ref finalize(cudnnHandle_t h) {
    graph_ = Desc(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
    ZT_CUDNN_SET(graph_.get(), CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                 static_cast<int64_t>(ops_.size()), ops_.data());
    if (h) ZT_CUDNN_SET(graph_.get(), CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &h);
    ZT_CUDNN_CHECK(cudnnBackendFinalize(graph_.get()));
    return graph_.get();
  }

 private:
  Ref make_tensor(int64_t uid, cudnnDataType_t type, const SdpaTensor& t, bool is_virtual,
                  bool by_value) {
    Desc d(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    const int64_t alignment = 16;  // every bound pointer is checked against it before execution
    ZT_CUDNN_SET(d.get(), CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type);
    ZT_CUDNN_SET(d.get(), CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, t.dims.data());
    ZT_CUDNN_SET(d.get(), CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, t.strides.data());
    ZT_CUDNN_SET(d.get(), CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid);
    ZT_CUDNN_SET(d.get(), CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment);
    ZT_CUDNN_SET(d.get(), CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &is_virtual);
    if (by_value)
      ZT_CUDNN_SET(d.get(), CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &by_value);
    ZT_CUDNN_CHECK(cudnnBackendFinalize(d.get()));
    owned_.push_back(std::move(d));
    return owned_.back().get();
  }
  void add_op(Desc config, Desc op) {
    ops_.push_back(op.get());
    if (config.get()) owned_.push_back(std::move(config));
    owned_.push_back(std::move(op));
  }

  std::vector<Desc> owned_;
  std::vector<Ref> ops_;
  Desc graph_;
  int64_t next_uid_ = kFirstVirtual;
};

// ---- the two graphs -----------------------------------------------------------------------------
constexpr cudnnPointwiseMode_t kMul = CUDNN_POINTWISE_MUL, kSub = CUDNN_POINTWISE_SUB;

// select(row >= col, s, neg_inf): future keys get the mask value (top-left causal diagonal).
Ref causal_mask(Graph& g, const SdpaLayout& l, Ref s, Ref neg_inf) {
  Ref row = g.pointwise(l.scores, CUDNN_DATA_INT32, CUDNN_POINTWISE_GEN_INDEX, s, nullptr, nullptr,
                        kF32, /*axis=*/2);
  Ref col = g.pointwise(l.scores, CUDNN_DATA_INT32, CUDNN_POINTWISE_GEN_INDEX, s, nullptr, nullptr,
                        kF32, /*axis=*/3);
  Ref keep = g.pointwise(l.scores, CUDNN_DATA_BOOLEAN, CUDNN_POINTWISE_CMP_GE, row, col, nullptr,
                         CUDNN_DATA_BOOLEAN);
  return g.pointwise(l.scores, kF32, CUDNN_POINTWISE_BINARY_SELECT, s, neg_inf, keep);
}

void build_forward(Graph& g, const SdpaLayout& l, cudnnDataType_t io) {
  Ref q = g.tensor(kQ, io, l.q), kt = g.tensor(kK, io, l.kt), v = g.tensor(kV, io, l.v);
  Ref o = g.tensor(kO, io, l.o), stats = g.tensor(kStats, kF32, l.stats);
  Ref scale = g.scalar(kScale), neg_inf = g.scalar(kNegInf);

  Ref s = g.virt(kF32, l.scores);
  g.matmul(q, kt, s);
  s = g.pointwise(l.scores, kF32, kMul, s, scale);
  s = causal_mask(g, l, s, neg_inf);
  Ref m = g.virt(kF32, l.stats);
  g.reduction(CUDNN_REDUCE_TENSOR_MAX, s, m);
  Ref e = g.pointwise(l.scores, kF32, CUDNN_POINTWISE_EXP,
                      g.pointwise(l.scores, kF32, kSub, s, m));
  Ref sum = g.virt(kF32, l.stats);
  g.reduction(CUDNN_REDUCE_TENSOR_ADD, e, sum);
  g.pointwise_into(stats, CUDNN_POINTWISE_ADD, m,
                   g.pointwise(l.stats, kF32, CUDNN_POINTWISE_LOG, sum));
  Ref p = g.pointwise(l.scores, io, CUDNN_POINTWISE_DIV, e, sum);  // bf16/f16: bmm2's A type
  g.matmul(p, v, o);
}

void build_backward(Graph& g, const SdpaLayout& l, cudnnDataType_t io) {
  Ref q = g.tensor(kQ, io, l.q), kt = g.tensor(kK, io, l.kt), vt = g.tensor(kV, io, l.vt);
  Ref o = g.tensor(kO, io, l.o), d_o = g.tensor(kDO, io, l.o);
  Ref stats = g.tensor(kStats, kF32, l.stats);
  Ref dq = g.tensor(kDQ, io, l.q), dk = g.tensor(kDK, io, l.k), dv = g.tensor(kDV, io, l.v);
  Ref scale = g.scalar(kScale), neg_inf = g.scalar(kNegInf), one = g.scalar(kOne);
  Ref softmax_sum = g.tensor(kSoftmaxSum, kF32, l.stats);
  Ref dq_accum = g.tensor(kDQAccum, kF32, l.bhtd);

  // softmax_sum = rowsum(dO * O): sum_j P_ij dP_ij, the correction term of the softmax gradient.
  Ref doo = g.pointwise(l.bhtd, kF32, kMul, d_o, o);
  Ref rs = g.virt(kF32, l.stats);
  g.reduction(CUDNN_REDUCE_TENSOR_ADD, doo, rs);
  g.pointwise_into(softmax_sum, kMul, rs, one);  // (times the dropout keep rate, 1 here)

  // P = exp(Q K^T * scale - stats), masked: the forward's probabilities, recomputed.
  Ref s = g.virt(kF32, l.scores);
  g.matmul(q, kt, s);
  s = g.pointwise(l.scores, kF32, kMul, s, scale);
  s = g.pointwise(l.scores, kF32, kSub, s, stats);
  s = causal_mask(g, l, s, neg_inf);
  Ref p = g.pointwise(l.scores, kF32, CUDNN_POINTWISE_EXP, s);

  // dV = P^T dO
  Ref pt = g.virt(io, l.scores_t);
  g.reshape(p, pt);
  g.matmul(pt, d_o, dv);

  // dS = P * (dO V^T - softmax_sum) * scale
  Ref dp = g.virt(kF32, l.scores);
  g.matmul(d_o, vt, dp);
  Ref ds = g.pointwise(l.scores, kF32, kSub, dp, softmax_sum);
  ds = g.pointwise(l.scores, kF32, kMul, ds, p);
  ds = g.pointwise(l.scores, kF32, kMul, ds, scale);

  // dK = dS^T Q
  Ref dst = g.virt(io, l.scores_t);
  g.reshape(ds, dst);
  g.matmul(dst, q, dk);

  // dQ = dS K, accumulated in f32 and converted on the way out.
  Ref k = g.virt(io, l.k);
  g.reshape(kt, k);
  g.matmul(ds, k, dq_accum);
  g.pointwise_into(dq, CUDNN_POINTWISE_IDENTITY, dq_accum);
}

// ---- plans and their cache ----------------------------------------------------------------------
struct Plan {
  Graph graph;       // keeps every descriptor of the graph alive
  Desc engine_cfg;   // the engine configuration the plan was built from
  Desc plan;
  int64_t workspace = 0;  // bytes cuDNN asks for
};

// Tries the heuristics' engine configurations in order (mode A, then the fallback list) and
// keeps the first that finalizes into an execution plan.
void choose_plan(cudnnHandle_t h, Ref graph, Plan& p, const std::string& what) {
  std::string why = "the heuristics returned no engine configuration";
  for (cudnnBackendHeurMode_t mode : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK}) {
    Desc heur(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
    ZT_CUDNN_SET(heur.get(), CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                 1, &graph);
    ZT_CUDNN_SET(heur.get(), CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode);
    cudnnStatus_t st = cudnnBackendFinalize(heur.get());
    if (st != CUDNN_STATUS_SUCCESS) {  // this mode cannot handle the graph: try the next one
      why = detail::cudnn_error_message(st, "cudnnBackendFinalize(heuristics)", __FILE__, __LINE__);
      continue;
    }
    int64_t count = 0;
    ZT_CUDNN_CHECK(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                            CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count, nullptr));
    if (count == 0) continue;
    std::vector<Desc> cfgs;
    std::vector<Ref> raw;
    for (int64_t i = 0; i < count; ++i) {
      cfgs.emplace_back(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
      raw.push_back(cfgs.back().get());
    }
    int64_t got = 0;
    ZT_CUDNN_CHECK(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                            CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &got,
                                            raw.data()));
    for (int64_t i = 0; i < got; ++i) {
      Desc plan(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
      ZT_CUDNN_SET(plan.get(), CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &h);
      ZT_CUDNN_SET(plan.get(), CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG,
                   CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &raw[i]);
      st = cudnnBackendFinalize(plan.get());
      if (st != CUDNN_STATUS_SUCCESS) {  // this engine refuses the graph: try the next one
        why = detail::cudnn_error_message(st, "cudnnBackendFinalize(plan)", __FILE__, __LINE__);
        continue;
      }
      int64_t n = 0;
      ZT_CUDNN_CHECK(cudnnBackendGetAttribute(plan.get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                              CUDNN_TYPE_INT64, 1, &n, &p.workspace));
      p.engine_cfg = std::move(cfgs[static_cast<size_t>(i)]);
      p.plan = std::move(plan);
      return;
    }
  }
  throw CudaError(str_cat(what, ": cuDNN ", cudnnGetVersion(),
                          " has no engine for this fused-attention graph; last refusal: ", why));
}

enum class Dir { forward, backward };
// (device, direction, dtype, B, H, T, D)
using PlanKey = std::tuple<int, int, int, int64_t, int64_t, int64_t, int64_t>;

struct State {
  std::mutex mu;
  std::map<int, cudnnHandle_t> handles;  // per device; never destroyed (as blas.cpp's)
  std::map<PlanKey, std::unique_ptr<Plan>> plans;
  int64_t builds = 0, hits = 0;
};
State& state() {
  static State* s = new State();
  return *s;
}

cudnnHandle_t handle_for(State& st, int device) {
  cudnnHandle_t& h = st.handles[device];
  if (!h) {
    int prev = 0;
    ZT_CUDA_CHECK(cudaGetDevice(&prev));
    if (prev != device) ZT_CUDA_CHECK(cudaSetDevice(device));
    const cudnnStatus_t s = cudnnCreate(&h);  // binds the handle to the current device
    if (prev != device) ZT_CUDA_CHECK_WARN(cudaSetDevice(prev));
    if (s != CUDNN_STATUS_SUCCESS) {
      h = nullptr;
      detail::throw_cudnn_error(s, "cudnnCreate(&h)", __FILE__, __LINE__);
    }
  }
  return h;
}

const Plan& plan_for(State& st, cudnnHandle_t h, Dir dir, DType dtype, const SdpaLayout& l,
                     int device, const char* what) {
  const PlanKey key{device, static_cast<int>(dir), static_cast<int>(dtype), l.B, l.H, l.T, l.D};
  auto it = st.plans.find(key);
  if (it != st.plans.end()) {
    ++st.hits;
    return *it->second;
  }
  auto p = std::make_unique<Plan>();
  const cudnnDataType_t io = dtype == DType::bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_HALF;
  if (dir == Dir::forward) build_forward(p->graph, l, io);
  else build_backward(p->graph, l, io);
  const Ref graph = p->graph.finalize(h);
  choose_plan(h, graph, *p, str_cat(what, " (", dtype_name(dtype), ", B ", l.B, ", H ", l.H,
                                    ", T ", l.T, ", head dim ", l.D, ")"));
  ++st.builds;
  return *st.plans.emplace(key, std::move(p)).first->second;
}

// One block of device memory for the duration of a call, from the caching allocator (freed
// straight after the launch: the block goes back to this stream's list, and the stream runs in
// order, so its next user starts after cuDNN is done with it).
class Scratch {
 public:
  Scratch(size_t bytes, int device) : p_(bytes ? device_alloc(bytes, device) : nullptr) {}
  ~Scratch() {
    if (p_) device_free(p_);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  char* get() const { return static_cast<char*>(p_); }

 private:
  void* p_;
};

void execute(cudnnHandle_t h, const Plan& p, const std::vector<int64_t>& uids,
             const std::vector<void*>& ptrs, void* workspace) {
  Desc pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
  ZT_CUDNN_SET(pack.get(), CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64,
               static_cast<int64_t>(uids.size()), uids.data());
  ZT_CUDNN_SET(pack.get(), CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR,
               static_cast<int64_t>(ptrs.size()), ptrs.data());
  ZT_CUDNN_SET(pack.get(), CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace);
  ZT_CUDNN_CHECK(cudnnBackendFinalize(pack.get()));
  ZT_CUDNN_CHECK(cudnnSetStream(h, current_stream()));
  ZT_CUDNN_CHECK(cudnnBackendExecute(h, p.plan.get(), pack.get()));
}

// ---- argument checks ----------------------------------------------------------------------------
SdpaLayout checked_layout(const char* op, const Tensor& qkv, int n_head) {
  ZT_CHECK(qkv.dim() == 3 && qkv.size(2) % 3 == 0 && n_head > 0 &&
               (qkv.size(2) / 3) % n_head == 0,
           op, ": qkv ", qkv.str(), " is not [B, T, 3C] with C divisible by n_head ", n_head);
  const SdpaLayout l = sdpa_layout(qkv.size(0), qkv.size(1), qkv.size(2) / 3, n_head);
  ZT_CHECK(l.D % 8 == 0 && l.D <= 256, op, ": head dim ", l.D,
           " is not supported on CUDA (cuDNN's fused attention needs a multiple of 8, at most "
           "256); choose n_head so that width / n_head fits");
  return l;
}
void require_io(const char* op, const Tensor& ref, std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts)
    ZT_CHECK(t->dtype() == ref.dtype(), op, ": dtypes differ: ", ref.str(), " vs ", t->str());
}
void require_aligned(const char* op, std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts)
    ZT_CHECK(reinterpret_cast<uintptr_t>(t->raw()) % 16 == 0, op, ": ", t->str(),
             " does not start on a 16-byte boundary (cuDNN's fused attention needs it); ",
             "allocate it separately or at an aligned offset of its flat buffer");
}
void require_stats(const char* op, const Tensor& stats, const SdpaLayout& l) {
  ZT_CHECK(stats.dtype() == DType::f32 && stats.numel() == l.B * l.H * l.T, op, ": stats ",
           stats.str(), " should be f32 [", l.B, ", ", l.H, ", ", l.T, "]");
}

float mask_value() {  // cudnn-frontend's choice (attn_score_modifiers.h)
  return cudnnGetVersion() < 91000 ? std::numeric_limits<float>::lowest()
                                   : -std::numeric_limits<float>::infinity();
}

char* at(const Tensor& t, int64_t elements) {
  return static_cast<char*>(t.raw()) + elements * static_cast<int64_t>(dtype_size(t.dtype()));
}

// bf16/f16 only.
void forward_native(const Tensor& qkv, int n_head, Tensor& out, Tensor& stats) {
  const char* op = "attention_forward";
  const SdpaLayout l = checked_layout(op, qkv, n_head);
  ZT_CHECK(qkv.dtype() == DType::bf16 || qkv.dtype() == DType::f16, op, ": dtype ",
           dtype_name(qkv.dtype()), " is not supported by cuDNN's fused attention");
  require_io(op, qkv, {&out});
  ZT_CHECK(out.numel() == l.B * l.T * l.H * l.D, op, ": out ", out.str(), " should be [", l.B,
           ", ", l.T, ", ", l.H * l.D, "]");
  require_stats(op, stats, l);
  if (l.B == 0 || l.T == 0) return;
  require_aligned(op, {&qkv, &out, &stats});

  const int device = qkv.device().index;
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  const cudnnHandle_t h = handle_for(st, device);
  const Plan& p = plan_for(st, h, Dir::forward, qkv.dtype(), l, device, op);
  float scale = 1.f / std::sqrt(static_cast<float>(l.D)), neg_inf = mask_value();
  Scratch ws(static_cast<size_t>(p.workspace), device);
  execute(h, p, {kQ, kK, kV, kO, kStats, kScale, kNegInf},
          {at(qkv, l.q.offset), at(qkv, l.k.offset), at(qkv, l.v.offset), out.raw(), stats.raw(),
           &scale, &neg_inf},
          ws.get());
}

size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

void backward_native(const Tensor& dout, const Tensor& qkv, const Tensor& out,
                     const Tensor& stats, int n_head, Tensor& dqkv) {
  const char* op = "attention_backward";
  const SdpaLayout l = checked_layout(op, qkv, n_head);
  ZT_CHECK(qkv.dtype() == DType::bf16 || qkv.dtype() == DType::f16, op, ": dtype ",
           dtype_name(qkv.dtype()), " is not supported by cuDNN's fused attention");
  require_io(op, qkv, {&dout, &out, &dqkv});
  const int64_t btc = l.B * l.T * l.H * l.D;
  ZT_CHECK(dout.numel() == btc && out.numel() == btc && dqkv.numel() == 3 * btc, op,
           ": dout ", dout.str(), " / out ", out.str(), " / dqkv ", dqkv.str(),
           " do not match qkv ", qkv.str());
  require_stats(op, stats, l);
  if (l.B == 0 || l.T == 0) return;
  require_aligned(op, {&dout, &qkv, &out, &stats, &dqkv});

  const int device = qkv.device().index;
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  const cudnnHandle_t h = handle_for(st, device);
  const Plan& p = plan_for(st, h, Dir::backward, qkv.dtype(), l, device, op);

  // One block: [cuDNN's workspace | dQ accumulator (f32, zeroed) | softmax_sum (f32)].
  const size_t ws_bytes = round_up(static_cast<size_t>(p.workspace), 256);
  const size_t acc_bytes = round_up(static_cast<size_t>(l.B * l.H * l.T * l.D) * 4, 256);
  const size_t sum_bytes = static_cast<size_t>(l.B * l.H * l.T) * 4;
  Scratch block(ws_bytes + acc_bytes + sum_bytes, device);
  char* acc = block.get() + ws_bytes;
  ZT_CUDA_CHECK(cudaMemsetAsync(acc, 0, acc_bytes, current_stream()));

  float scale = 1.f / std::sqrt(static_cast<float>(l.D)), neg_inf = mask_value(), one = 1.f;
  execute(h, p,
          {kQ, kK, kV, kO, kDO, kStats, kDQ, kDK, kDV, kScale, kNegInf, kOne, kSoftmaxSum,
           kDQAccum},
          {at(qkv, l.q.offset), at(qkv, l.k.offset), at(qkv, l.v.offset), out.raw(), dout.raw(),
           stats.raw(), at(dqkv, l.q.offset), at(dqkv, l.k.offset), at(dqkv, l.v.offset), &scale,
           &neg_inf, &one, acc + acc_bytes, acc},
          p.workspace ? block.get() : nullptr);
}

Tensor as_bf16(const Tensor& t) {
  Tensor r = Tensor::empty(t.shape(), DType::bf16, t.device());
  copy(t, r);
  return r;
}

}  // namespace

// ---- entry points -------------------------------------------------------------------------------
void attention_forward(const Tensor& qkv, int n_head, Tensor& out, Tensor& stats) {
  if (qkv.dtype() != DType::f32) return forward_native(qkv, n_head, out, stats);
  // f32: no f32 flash attention in cuDNN; run in bf16 (attention.h).
  ZT_CHECK(out.dtype() == DType::f32, "attention_forward: dtypes differ: ", qkv.str(), " vs ",
           out.str());
  Tensor out16 = Tensor::empty(out.shape(), DType::bf16, out.device());
  forward_native(as_bf16(qkv), n_head, out16, stats);
  copy(out16, out);
}

void attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out,
                        const Tensor& stats, int n_head, Tensor& dqkv) {
  if (qkv.dtype() != DType::f32) return backward_native(dout, qkv, out, stats, n_head, dqkv);
  for (const Tensor* t : std::initializer_list<const Tensor*>{&dout, &out, &dqkv})
    ZT_CHECK(t->dtype() == DType::f32, "attention_backward: dtypes differ: ", qkv.str(), " vs ",
             t->str());
  Tensor dqkv16 = Tensor::empty(dqkv.shape(), DType::bf16, dqkv.device());
  backward_native(as_bf16(dout), as_bf16(qkv), as_bf16(out), stats, n_head, dqkv16);
  copy(dqkv16, dqkv);
}

AttentionPlanStats attention_plan_stats() {
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  AttentionPlanStats s;
  s.builds = st.builds;
  s.hits = st.hits;
  s.plans = static_cast<int64_t>(st.plans.size());
  return s;
}

int64_t cudnn_runtime_version() { return static_cast<int64_t>(cudnnGetVersion()); }

int64_t attention_graph_self_check(int64_t B, int64_t T, int64_t C, int64_t H, DType dtype,
                                   bool backward) {
  const SdpaLayout l = sdpa_layout(B, T, C, H);
  const cudnnDataType_t io = dtype == DType::f16 ? CUDNN_DATA_HALF : CUDNN_DATA_BFLOAT16;
  Graph g;
  if (backward) build_backward(g, l, io);
  else build_forward(g, l, io);
  g.finalize(nullptr);
  return g.num_ops();
}

AttentionEngineCheck attention_engine_check(int64_t B, int64_t T, int64_t C, int64_t H,
                                            DType dtype, bool backward,
                                            const std::string& device_properties_json) {
#if CUDNN_VERSION >= 90800
  Desc device_props(CUDNN_BACKEND_DEVICEPROP_DESCRIPTOR);
  ZT_CUDNN_SET(device_props.get(), CUDNN_ATTR_DEVICEPROP_JSON_REPRESENTATION, CUDNN_TYPE_CHAR,
               static_cast<int64_t>(device_properties_json.size() + 1),
               device_properties_json.c_str());
  ZT_CUDNN_CHECK(cudnnBackendFinalize(device_props.get()));
  const Ref props = device_props.get();

  const SdpaLayout l = sdpa_layout(B, T, C, H);
  const cudnnDataType_t io = dtype == DType::f16 ? CUDNN_DATA_HALF : CUDNN_DATA_BFLOAT16;
  Graph g;
  if (backward) build_backward(g, l, io);
  else build_forward(g, l, io);
  const Ref graph = g.finalize(nullptr);

  Desc heur(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
  const cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_A;
  ZT_CUDNN_SET(heur.get(), CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
               &graph);
  ZT_CUDNN_SET(heur.get(), CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode);
  ZT_CUDNN_SET(heur.get(), CUDNN_ATTR_ENGINEHEUR_DEVICEPROP, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
               &props);
  ZT_CUDNN_CHECK(cudnnBackendFinalize(heur.get()));
  int64_t count = 0;
  ZT_CUDNN_CHECK(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                          CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count, nullptr));
  AttentionEngineCheck r;
  if (count == 0) return r;
  std::vector<Desc> cfgs;
  std::vector<Ref> raw;
  for (int64_t i = 0; i < count; ++i) {
    cfgs.emplace_back(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
    raw.push_back(cfgs.back().get());
  }
  // Engines whose support check needs the driver drop out of this list without one.
  ZT_CUDNN_CHECK(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                          CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &r.configs,
                                          raw.data()));
  if (r.configs == 0) r.missing_driver = count;
  for (int64_t i = 0; i < r.configs; ++i) {
    Desc plan(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
    ZT_CUDNN_SET(plan.get(), CUDNN_ATTR_EXECUTION_PLAN_DEVICEPROP, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                 1, &props);
    ZT_CUDNN_SET(plan.get(), CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG,
                 CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &raw[static_cast<size_t>(i)]);
    const cudnnStatus_t st = cudnnBackendFinalize(plan.get());
    if (st == CUDNN_STATUS_SUCCESS || st == CUDNN_STATUS_EXECUTION_FAILED_CUDA_DRIVER) {
      ++r.accepted;  // built, or compiled and then not loadable without a GPU
    } else {
      if (st == CUDNN_STATUS_NOT_SUPPORTED_RUNTIME_PREREQUISITE_MISSING) ++r.missing_driver;
      r.last_refusal = detail::cudnn_error_message(st, "cudnnBackendFinalize(plan)", __FILE__,
                                                   __LINE__);
    }
  }
  return r;
#else
  (void)B, (void)T, (void)C, (void)H, (void)dtype, (void)backward, (void)device_properties_json;
  throw CudaError(str_cat("attention_engine_check: needs cuDNN >= 9.8 headers, built with ",
                          CUDNN_VERSION));
#endif
}

}  // namespace zt::cuda
