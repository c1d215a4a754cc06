// core/cuda/attention.cpp: causal self-attention through cuDNN's fused flash attention (what and
// why in core/cuda/attention.h): plans for the graphs of core/cuda/attention_graph.h, their cache,
// their execution, and the entry points.
//
// One graph + execution plan per (device, direction, dtype, B, H, T, D), cached forever (plans are
// small; a training run sees a handful of shapes); the engine is the first configuration of
// cuDNN's heuristics (mode A, then the fallback list) that finalizes. cuDNN handles: one per
// device, set to the current stream before each execution, all under one mutex. Backward's scratch
// tensors (SOFTMAX_SUM, DQ_ACCUM, zeroed first: cuDNN < 9.6 does not zero it) sit after the plan's
// workspace in one block from the caching allocator. The mask value is -inf from cuDNN 9.10 on and
// the lowest float before (cudnn-frontend's choice: older engines prefer a finite value).
//
// Status: compiles and links against cuDNN 9.19, and cuDNN 9.19's sm_90 engines accept (compile)
// both graphs offline (SdpaGraph.Sm90EnginesOffline); NEVER EXECUTED ON A GPU (no GPU was lent to
// the session that wrote it). tests/gpu/test_cuda_attention.cpp checks it against the CPU backend.
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
#include "core/cuda/attention_graph.h"
#include "core/cuda/check.h"
#include "core/cuda/cudnn_check.h"
#include "core/cuda/ops.h"
#include "core/cuda/stream.h"
#include "core/dtype.h"
#include "core/error.h"


namespace zt::cuda {
namespace {

using ::zt::detail::str_cat;
using namespace sdpa;  // Desc, Graph, Ref, the uids and the graph builders

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
    cudnnStatus_t s;
    {
      DeviceScope scope(device);
      s = cudnnCreate(&h);  // binds the handle to the current device
    }
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
