// core/cuda/attention_graph.h: the two cuDNN operation graphs of causal attention, built with
// cuDNN's backend (graph) C API; internal to core/cuda/attention.cpp (which caches their plans and
// runs them). Includes cudnn.h: never include it from a public header.
//
// The graphs are the composite SDPA pattern that cudnn-frontend 1.x lowers its sdpa() and
// sdpa_backward() nodes to for cuDNN 9 (before 9.21's unified operations), and that the backend
// matches to its fused flash-attention kernels. Tensors in capitals are bound in the variant pack,
// the rest are virtual (they live in registers and shared memory inside the fused kernel):
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
// ([B, H, T, 1] f32) and DQ_ACCUM ([B, H, T, D] f32) are scratch tensors that the caller places
// in the workspace (cudnn-frontend does the same). Q, K, V, O, dO, dQ, dK, dV are strided views
// of qkv/out/dqkv (sdpa_layout in attention.h): no copies.
#pragma once

#include <cudnn.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "core/cuda/attention.h"
#include "core/cuda/cudnn_check.h"

namespace zt::cuda::sdpa {

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
inline Ref causal_mask(Graph& g, const SdpaLayout& l, Ref s, Ref neg_inf) {
  Ref row = g.pointwise(l.scores, CUDNN_DATA_INT32, CUDNN_POINTWISE_GEN_INDEX, s, nullptr, nullptr,
                        kF32, /*axis=*/2);
  Ref col = g.pointwise(l.scores, CUDNN_DATA_INT32, CUDNN_POINTWISE_GEN_INDEX, s, nullptr, nullptr,
                        kF32, /*axis=*/3);
  Ref keep = g.pointwise(l.scores, CUDNN_DATA_BOOLEAN, CUDNN_POINTWISE_CMP_GE, row, col, nullptr,
                         CUDNN_DATA_BOOLEAN);
  return g.pointwise(l.scores, kF32, CUDNN_POINTWISE_BINARY_SELECT, s, neg_inf, keep);
}

inline void build_forward(Graph& g, const SdpaLayout& l, cudnnDataType_t io) {
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

inline void build_backward(Graph& g, const SdpaLayout& l, cudnnDataType_t io) {
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

}  // namespace zt::cuda::sdpa
