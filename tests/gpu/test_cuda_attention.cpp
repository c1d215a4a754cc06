// tests/gpu/test_cuda_attention.cpp: causal attention on the GPU (cuDNN fused flash attention,
// core/cuda/attention.h) against the CPU backend, and the host logic it rests on.
//
// Host tests (run everywhere, GPU or not): the strides cuDNN is given address exactly the elements
// of the fused qkv / out buffers that the CPU backend reads (SdpaLayout), and the attention
// contract of core/ops.h on the CPU (saved shape, the backward form taking `out`).
// GPU tests (skip without a GPU), per dtype bf16 / f16 / f32: forward output and softmax
// statistics, backward dQ, dK, dV, against the CPU backend on the same (rounded) inputs, for
// several T (1, below and above 64, not multiples of 64) and head dims 32 and 64; causality (a
// change to future tokens leaves earlier outputs bit-identical); the plan cache (a repeated shape
// builds nothing); the current stream; clear errors for unsupported shapes.
//
// Tolerances (absolute, against the CPU's f32 result on identical inputs):
//  - out: `atol * max|V|`; P and out are rounded to the I/O dtype once each inside cuDNN, so
//    atol = 4 units of the last place at 1.0: bf16 4 * 2^-8 = 1.6e-2, f16 4 * 2^-11 = 2e-3.
//    f32 runs through bf16 (attention.h), and its inputs are rounded there too: 2.5e-2.
//  - stats: f32 softmax statistics from the same rounded inputs: 2e-3 * (1 + |want|), f32 path
//    (bf16-rounded inputs inside) 3e-2 * (1 + |want|).
//  - dQ, dK, dV: `tol * max|want|` per part (P^T and dS^T are rounded to the I/O dtype before
//    their products): bf16 3e-2, f16 5e-3, f32-through-bf16 4e-2.
#include "core/cuda/attention.h"
#include "core/cuda/device.h"
#include "core/cuda/stream.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/tensor.h"
#include "tests/gpu/gpu_test_util.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace {

using zt::Device;
using zt::DType;
using zt::Tensor;
namespace ops = zt::ops;
using zt::gputest::rand_host;
using zt::gputest::rounded;
using zt::gputest::to_gpu;
using zt::gputest::to_host;
namespace cuda = zt::cuda;

// ---- host: the layout of the graph tensors ----------------------------------------------------
int64_t addr(const cuda::SdpaTensor& t, int64_t i0, int64_t i1, int64_t i2, int64_t i3) {
  return t.offset + i0 * t.strides[0] + i1 * t.strides[1] + i2 * t.strides[2] + i3 * t.strides[3];
}

TEST(SdpaLayout, AddressesTheFusedQkvLayoutOfTheCpuBackend) {
  const int64_t B = 2, T = 5, H = 3, D = 4, C = H * D;
  const cuda::SdpaLayout l = cuda::sdpa_layout(B, T, C, H);
  EXPECT_EQ(l.D, D);
  std::vector<int> hits(static_cast<size_t>(B * T * 3 * C), 0), out_hits(B * T * C, 0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t)
        for (int64_t d = 0; d < D; ++d) {
          // core/cpu/attention.cpp: Q at qkv + b*T*3C + t*3C + h*hd + d, K at +C, V at +2C.
          const int64_t q = b * T * 3 * C + t * 3 * C + h * D + d;
          EXPECT_EQ(addr(l.q, b, h, t, d), q);
          EXPECT_EQ(addr(l.k, b, h, t, d), q + C);
          EXPECT_EQ(addr(l.v, b, h, t, d), q + 2 * C);
          EXPECT_EQ(addr(l.kt, b, h, d, t), q + C);  // K^T: same element, indices swapped
          EXPECT_EQ(addr(l.vt, b, h, d, t), q + 2 * C);
          EXPECT_EQ(addr(l.o, b, h, t, d), b * T * C + t * C + h * D + d);
          for (const cuda::SdpaTensor* x : {&l.q, &l.k, &l.v}) ++hits[addr(*x, b, h, t, d)];
          ++out_hits[addr(l.o, b, h, t, d)];
        }
  // Q, K, V tile qkv exactly; O tiles out exactly.
  EXPECT_EQ(std::count(hits.begin(), hits.end(), 1), static_cast<long>(hits.size()));
  EXPECT_EQ(std::count(out_hits.begin(), out_hits.end(), 1), static_cast<long>(out_hits.size()));
  for (const cuda::SdpaTensor* x : {&l.q, &l.k, &l.v, &l.o, &l.bhtd})
    EXPECT_EQ(x->strides[3], 1) << "cuDNN needs the head dim contiguous";
  // Packed tensors: stats [B, H, T, 1], scores and their transpose, the dQ accumulator.
  std::set<int64_t> seen;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t) {
        EXPECT_EQ(addr(l.stats, b, h, t, 0), (b * H + h) * T + t);  // = stats[b, h, t]
        for (int64_t j = 0; j < T; ++j) {
          EXPECT_EQ(addr(l.scores_t, b, h, j, t), addr(l.scores, b, h, t, j));
          seen.insert(addr(l.scores, b, h, t, j));
        }
        for (int64_t d = 0; d < D; ++d)
          EXPECT_EQ(addr(l.bhtd, b, h, t, d), ((b * H + h) * T + t) * D + d);
      }
  EXPECT_EQ(static_cast<int64_t>(seen.size()), B * H * T * T);
  EXPECT_EQ(*seen.rbegin(), B * H * T * T - 1);
  EXPECT_EQ(l.stats.dims, (std::array<int64_t, 4>{B, H, T, 1}));
  EXPECT_EQ(l.kt.dims, (std::array<int64_t, 4>{B, H, D, T}));
}

// ---- host: cuDNN accepts every descriptor of both graphs (no GPU needed) ----------------------
TEST(SdpaGraph, CudnnFinalizesEveryDescriptorWithoutAGpu) {
  if (cuda::attention_graph_self_check(1, 8, 16, 2, DType::bf16, false) < 0)
    GTEST_SKIP() << "CPU-only build: no cuDNN";
  for (DType dt : {DType::bf16, DType::f16})
    for (int64_t T : {1, 17, 64, 129})
      for (int64_t D : {32, 64}) {
        SCOPED_TRACE(std::string(zt::dtype_name(dt)) + " T " + std::to_string(T) + " D " +
                     std::to_string(D));
        // forward: 2 matmuls, scale, 4 mask ops, max, sub, exp, sum, log, add, div
        EXPECT_EQ(cuda::attention_graph_self_check(2, T, 3 * D, 3, dt, false), 14);
        // backward: rowsum(dO * O) 3, scores 3, mask 4, exp, dV 2, dS 4, dK 2, dQ 3
        EXPECT_EQ(cuda::attention_graph_self_check(2, T, 3 * D, 3, dt, true), 22);
      }
}

// ---- host: cuDNN's sm_90 engines accept both graphs (no GPU; needs libcuda, see below) --------
// An H100 SXM's properties in the JSON form of cuDNN's device-properties descriptor (cuDNN 9.8+).
// The schema is cuDNN-internal (the keys are those cuDNN 9.19 asks for); if a later cuDNN refuses
// it, the test skips saying so.
const char* kH100Properties = R"({"maxGridSize":[2147483647,65535,65535],
  "maxBlockSize":[1024,1024,64],"regsPerBlock":65536,"multiProcessorCount":132,"warpSize":32,
  "maxSharedMemoryPerBlock":49152,"maxSharedMemoryPerBlockOptin":232448,
  "reservedSharedMemoryPerBlock":1024,"maxRegistersPerSM":65536,"maxCtasPerSM":32,
  "maxThreadsPerBlock":1024,"maxThreadsPerSM":2048,"pciDeviceId":8963,"isTccDriver":0,
  "supportCoopLaunch":1,"smClockRateKHz":1980000,"memClockRateKHz":2619000,
  "l2CacheSize":52428800,"deviceName":"NVIDIA H100 80GB HBM3","deviceVer":900,"driverVer":13000,
  "cudnnVersion":91900,"schemaVersion":1,"smVersion":90,"totalGlobalMem":85029158912,
  "cudaDeviceId":0})";

// cuDNN compiles an engine's kernels while finalizing its plan and needs libcuda.so.1 for that; on
// a machine without a driver the ctest entry SdpaGraph.Sm90EnginesOffline (tests/gpu/
// CMakeLists.txt) runs this test with the CUDA toolkit's stub libcuda first on the library path:
// kernels compile and only their loading fails, which is what is checked here. Without libcuda at
// all it skips.
TEST(SdpaGraph, Sm90EnginesAcceptTheGraphsOffline) {
  const int64_t version = cuda::cudnn_runtime_version();
  if (version == 0) GTEST_SKIP() << "CPU-only build: no cuDNN";
  if (version < 90800)
    GTEST_SKIP() << "cuDNN " << version << " has no device-properties descriptor";
  struct Case {
    int64_t T, D;
  };
  for (DType dt : {DType::bf16, DType::f16})
    for (bool backward : {false, true})
      for (Case c : {Case{17, 64}, Case{129, 32}, Case{256, 64}}) {
        const std::string what = std::string(zt::dtype_name(dt)) + (backward ? " bwd" : " fwd") +
                                 " T " + std::to_string(c.T) + " D " + std::to_string(c.D);
        SCOPED_TRACE(what);
        cuda::AttentionEngineCheck r;
        try {
          r = cuda::attention_engine_check(2, c.T, 2 * c.D, 2, dt, backward, kH100Properties);
        } catch (const zt::Error& e) {
          if (std::string(e.what()).find("device_props") != std::string::npos)
            GTEST_SKIP() << "cuDNN " << version << " refuses the H100 properties: " << e.what();
          throw;
        }
        if (r.accepted == 0 && r.missing_driver > 0)
          GTEST_SKIP() << "cuDNN needs libcuda.so.1 to compile the engines: run the ctest entry "
                          "SdpaGraph.Sm90EnginesOffline (it puts the toolkit's stub first)";
        EXPECT_GT(r.accepted, 0) << what << ": " << r.configs << " configurations, none accepted; "
                                 << r.last_refusal;
      }
  // The check can fail: head dim 12 is not a multiple of 8, and no engine takes it.
  const cuda::AttentionEngineCheck bad =
      cuda::attention_engine_check(2, 64, 24, 2, DType::bf16, false, kH100Properties);
  EXPECT_EQ(bad.accepted, 0);
}

// ---- host: the attention contract of core/ops.h on the CPU -------------------------------------

TEST(AttentionContract, CpuSavesProbabilitiesAndBothBackwardFormsAgree) {
  const int64_t B = 2, T = 7, C = 8;
  const int H = 2;
  Tensor qkv = rand_host({B, T, 3 * C}, 1), dout = rand_host({B, T, C}, 2);
  EXPECT_EQ(ops::attention_saved_shape(qkv, H), (zt::Shape{B, H, T, T}));
  Tensor out = Tensor::empty({B, T, C}), probs = Tensor::empty(ops::attention_saved_shape(qkv, H));
  ops::attention_forward(qkv, H, out, probs);
  Tensor d1 = Tensor::empty({B, T, 3 * C}), d2 = Tensor::empty({B, T, 3 * C});
  ops::attention_backward(dout, qkv, out, probs, H, d1);
  ops::attention_backward(dout, qkv, probs, H, d2);
  EXPECT_EQ(d1.to_vector(), d2.to_vector());
  Tensor short_out = Tensor::empty({B, T, C - 1});
  EXPECT_THROW(ops::attention_backward(dout, qkv, short_out, probs, H, d1), zt::Error);
  Tensor stats_shaped = Tensor::empty({B, H, T});  // the CUDA form is refused on the CPU
  EXPECT_THROW(ops::attention_forward(qkv, H, out, stats_shaped), zt::Error);
}

// ---- GPU helpers ------------------------------------------------------------------------------

// Columns [lo, hi) of every row of a [rows, width] host vector.
std::vector<float> columns(const std::vector<float>& v, int64_t width, int64_t lo, int64_t hi) {
  std::vector<float> r;
  for (size_t row = 0; row < v.size() / static_cast<size_t>(width); ++row)
    r.insert(r.end(), v.begin() + static_cast<long>(row * width + lo),
             v.begin() + static_cast<long>(row * width + hi));
  return r;
}

// |got - want| <= atol + rtol * |want| elementwise; reports the first few misses and the worst.
void expect_near(const std::vector<float>& got, const std::vector<float>& want, float atol,
                 float rtol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int bad = 0;
  float worst = 0.f;
  for (size_t i = 0; i < got.size(); ++i) {
    const float err = std::fabs(got[i] - want[i]), lim = atol + rtol * std::fabs(want[i]);
    worst = std::max(worst, err);
    if (!(err <= lim) && ++bad <= 5)
      ADD_FAILURE() << what << "[" << i << "]: gpu " << got[i] << ", cpu " << want[i] << " (tol "
                    << lim << ")";
  }
  EXPECT_EQ(bad, 0) << what << ": worst error " << worst << " over " << got.size() << " values";
}
float max_abs(const std::vector<float>& v) {
  float m = 0.f;
  for (float x : v) m = std::max(m, std::fabs(x));
  return m;
}

// logsumexp of each row's scaled causal scores, in double, from the host qkv: [B, H, T].
std::vector<float> ref_stats(const Tensor& qkv, int64_t H) {
  const int64_t B = qkv.size(0), T = qkv.size(1), C = qkv.size(2) / 3, D = C / H;
  const std::vector<float> x = qkv.to_vector();
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  std::vector<float> r(static_cast<size_t>(B * H * T));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t) {
        std::vector<double> s(static_cast<size_t>(t + 1));
        for (int64_t j = 0; j <= t; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d)
            dot += static_cast<double>(x[(b * T + t) * 3 * C + h * D + d]) *
                   x[(b * T + j) * 3 * C + C + h * D + d];
          s[j] = dot * scale;
        }
        const double m = *std::max_element(s.begin(), s.end());
        double sum = 0;
        for (double v : s) sum += std::exp(v - m);
        r[(b * H + h) * T + t] = static_cast<float>(m + std::log(sum));
      }
  return r;
}

struct Shape4 {
  int64_t B, T, H, D;
};
std::string name(const Shape4& s) {
  return "B" + std::to_string(s.B) + " T" + std::to_string(s.T) + " H" + std::to_string(s.H) +
         " D" + std::to_string(s.D);
}
// T = 1 (a single key), below 64, a multiple of 64, odd values above 64; head dims 64 and 32.
const Shape4 kShapes[] = {{2, 1, 2, 64}, {2, 17, 2, 64}, {1, 64, 4, 32},
                          {2, 100, 2, 64}, {1, 129, 3, 32}, {1, 200, 1, 64}};
constexpr float kInputRange = 2.f;  // qkv in [-2, 2]: peaked enough softmax rows

class CudaAttention : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    if (zt::cuda::device_count() == 0) GTEST_SKIP() << "no GPU: " << zt::cuda::device_summary();
  }
  DType dt() const { return GetParam(); }
  float out_atol() const {
    return dt() == DType::f16 ? 2e-3f : dt() == DType::bf16 ? 1.6e-2f : 2.5e-2f;
  }
  float stats_tol() const { return dt() == DType::f32 ? 3e-2f : 2e-3f; }
  float grad_tol() const {
    return dt() == DType::f16 ? 5e-3f : dt() == DType::bf16 ? 3e-2f : 4e-2f;
  }
};

TEST_P(CudaAttention, ForwardMatchesCpu) {
  uint32_t seed = 10;
  for (const Shape4& s : kShapes) {
    SCOPED_TRACE(name(s));
    const int64_t C = s.H * s.D;
    const int H = static_cast<int>(s.H);
    Tensor qkv = rounded(rand_host({s.B, s.T, 3 * C}, seed++, -kInputRange, kInputRange), dt());
    Tensor out = Tensor::empty({s.B, s.T, C}), probs = Tensor::empty({s.B, s.H, s.T, s.T});
    ops::attention_forward(qkv, H, out, probs);

    Tensor gqkv = to_gpu(qkv, dt());
    EXPECT_EQ(ops::attention_saved_shape(gqkv, H), (zt::Shape{s.B, s.H, s.T}));
    Tensor gout = Tensor::empty({s.B, s.T, C}, dt(), Device::cuda());
    Tensor gstats = Tensor::empty({s.B, s.H, s.T}, DType::f32, Device::cuda());
    ops::attention_forward(gqkv, H, gout, gstats);
    expect_near(to_host(gout).to_vector(), out.to_vector(), out_atol() * kInputRange, 0.f, "out");
    expect_near(to_host(gstats).to_vector(), ref_stats(qkv, s.H), stats_tol(), stats_tol(),
                "stats");
  }
}

TEST_P(CudaAttention, BackwardMatchesCpu) {
  uint32_t seed = 40;
  for (const Shape4& s : kShapes) {
    SCOPED_TRACE(name(s));
    const int64_t C = s.H * s.D;
    const int H = static_cast<int>(s.H);
    Tensor qkv = rounded(rand_host({s.B, s.T, 3 * C}, seed++, -kInputRange, kInputRange), dt());
    Tensor dout = rounded(rand_host({s.B, s.T, C}, seed++), dt());
    Tensor out = Tensor::empty({s.B, s.T, C}), probs = Tensor::empty({s.B, s.H, s.T, s.T});
    Tensor dqkv = Tensor::empty({s.B, s.T, 3 * C});
    ops::attention_forward(qkv, H, out, probs);
    ops::attention_backward(dout, qkv, out, probs, H, dqkv);

    Tensor gqkv = to_gpu(qkv, dt()), gdout = to_gpu(dout, dt());
    Tensor gout = Tensor::empty({s.B, s.T, C}, dt(), Device::cuda());
    Tensor gstats = Tensor::empty({s.B, s.H, s.T}, DType::f32, Device::cuda());
    Tensor gdqkv = Tensor::empty({s.B, s.T, 3 * C}, dt(), Device::cuda());
    ops::fill(gdqkv, 7.f);  // overwritten, not accumulated
    ops::attention_forward(gqkv, H, gout, gstats);
    ops::attention_backward(gdout, gqkv, gout, gstats, H, gdqkv);
    const std::vector<float> got = to_host(gdqkv).to_vector(), want = dqkv.to_vector();
    const char* part[] = {"dQ", "dK", "dV"};
    for (int i = 0; i < 3; ++i) {
      const std::vector<float> w = columns(want, 3 * C, i * C, (i + 1) * C);
      expect_near(columns(got, 3 * C, i * C, (i + 1) * C), w, grad_tol() * max_abs(w), 0.f,
                  part[i]);
    }
  }
}

TEST_P(CudaAttention, FutureTokensDoNotChangeEarlierOutputs) {
  const int64_t B = 2, T = 96, H = 2, D = 64, C = H * D, t0 = 41;
  Tensor qkv = rounded(rand_host({B, T, 3 * C}, 70, -kInputRange, kInputRange), dt());
  Tensor dout = rounded(rand_host({B, T, C}, 71), dt());
  // The same batch with every token from t0 on replaced (its q, k and v, and its dout).
  Tensor qkv2 = qkv.clone(), dout2 = dout.clone();
  Tensor noise = rounded(rand_host({B, T, 3 * C}, 72, -kInputRange, kInputRange), dt());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = t0; t < T; ++t) {
      for (int64_t c = 0; c < 3 * C; ++c)
        qkv2.data<float>()[(b * T + t) * 3 * C + c] = noise.data<float>()[(b * T + t) * 3 * C + c];
      for (int64_t c = 0; c < C; ++c) dout2.data<float>()[(b * T + t) * C + c] *= -3.f;
    }
  auto run = [&](const Tensor& x, const Tensor& dy, std::vector<float>& out,
                 std::vector<float>& dx) {
    Tensor gout = Tensor::empty({B, T, C}, dt(), Device::cuda());
    Tensor gstats = Tensor::empty({B, H, T}, DType::f32, Device::cuda());
    Tensor gdqkv = Tensor::empty({B, T, 3 * C}, dt(), Device::cuda());
    Tensor gqkv = to_gpu(x, dt());
    ops::attention_forward(gqkv, static_cast<int>(H), gout, gstats);
    ops::attention_backward(to_gpu(dy, dt()), gqkv, gout, gstats, static_cast<int>(H), gdqkv);
    out = to_host(gout).to_vector();
    dx = to_host(gdqkv).to_vector();
  };
  std::vector<float> out1, dx1, out2, dx2;
  run(qkv, dout, out1, dx1);
  run(qkv2, dout2, out2, dx2);
  int changed_late = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < C; ++c) {
        const size_t i = static_cast<size_t>((b * T + t) * C + c);
        if (t < t0) {
          ASSERT_EQ(out1[i], out2[i]) << "out changed at b " << b << " t " << t << " c " << c
                                      << " after tokens >= " << t0 << " changed";
          // dQ of earlier rows sees only earlier keys and its own dout row; cuDNN sums dQ with
          // atomics, so only up to rounding.
          const size_t j = static_cast<size_t>((b * T + t) * 3 * C + c);
          EXPECT_NEAR(dx1[j], dx2[j], grad_tol() * (1.f + std::fabs(dx1[j])))
              << "dQ at b " << b << " t " << t << " c " << c;
        } else {
          changed_late += out1[i] != out2[i];
        }
      }
  EXPECT_GT(changed_late, 0) << "the later outputs should have changed";
}

TEST_P(CudaAttention, PlanCacheBuildsEachShapeOnce) {
  const int64_t B = 1, T = 33, H = 2, D = 32, C = H * D;
  Tensor gqkv = to_gpu(rand_host({B, T, 3 * C}, 80), dt());
  Tensor gout = Tensor::empty({B, T, C}, dt(), Device::cuda());
  Tensor gstats = Tensor::empty({B, H, T}, DType::f32, Device::cuda());
  Tensor gdqkv = Tensor::empty({B, T, 3 * C}, dt(), Device::cuda());
  ops::attention_forward(gqkv, static_cast<int>(H), gout, gstats);  // builds (or finds) the plan
  ops::attention_backward(gout, gqkv, gout, gstats, static_cast<int>(H), gdqkv);
  const cuda::AttentionPlanStats a = cuda::attention_plan_stats();
  ops::attention_forward(gqkv, static_cast<int>(H), gout, gstats);
  ops::attention_backward(gout, gqkv, gout, gstats, static_cast<int>(H), gdqkv);
  const cuda::AttentionPlanStats b = cuda::attention_plan_stats();
  EXPECT_EQ(b.builds, a.builds) << "a repeated shape rebuilt its graph";
  EXPECT_EQ(b.hits, a.hits + 2);
  EXPECT_EQ(b.plans, a.plans);
  // A new T is a new graph (forward only here).
  Tensor gqkv2 = to_gpu(rand_host({B, T + 1, 3 * C}, 81), dt());
  Tensor gout2 = Tensor::empty({B, T + 1, C}, dt(), Device::cuda());
  Tensor gstats2 = Tensor::empty({B, H, T + 1}, DType::f32, Device::cuda());
  ops::attention_forward(gqkv2, static_cast<int>(H), gout2, gstats2);
  const cuda::AttentionPlanStats c = cuda::attention_plan_stats();
  EXPECT_LE(c.builds, b.builds + 1);  // + 0 when an earlier test already built T = 34
  EXPECT_EQ(c.builds + c.hits, b.builds + b.hits + 1);
  EXPECT_GE(cuda::cudnn_runtime_version(), 90000);
}

TEST_P(CudaAttention, RunsOnTheCurrentStream) {
  const int64_t B = 2, T = 50, H = 2, D = 64, C = H * D;
  Tensor gqkv = to_gpu(rand_host({B, T, 3 * C}, 90, -kInputRange, kInputRange), dt());
  Tensor o1 = Tensor::empty({B, T, C}, dt(), Device::cuda());
  Tensor o2 = Tensor::empty({B, T, C}, dt(), Device::cuda());
  Tensor st = Tensor::empty({B, H, T}, DType::f32, Device::cuda());
  ops::attention_forward(gqkv, static_cast<int>(H), o1, st);
  cuda::Stream().synchronize();  // the new stream does not order itself after the legacy one
  {
    cuda::Stream s = cuda::Stream::create(0);
    cuda::StreamGuard g(s);
    ops::attention_forward(gqkv, static_cast<int>(H), o2, st);
    s.synchronize();
  }
  EXPECT_EQ(to_host(o1).to_vector(), to_host(o2).to_vector());
}

TEST_P(CudaAttention, ClearErrors) {
  auto message = [](auto&& f) -> std::string {
    try {
      f();
    } catch (const zt::Error& e) {
      return e.what();
    }
    return "no error";
  };
  // Head dim 4: cuDNN's fused attention needs a multiple of 8.
  Tensor qkv = Tensor::zeros({1, 4, 24}, dt(), Device::cuda());
  Tensor out = Tensor::empty({1, 4, 8}, dt(), Device::cuda());
  Tensor stats = Tensor::empty({1, 2, 4}, DType::f32, Device::cuda());
  EXPECT_NE(message([&] { ops::attention_forward(qkv, 2, out, stats); }).find("head dim"),
            std::string::npos);
  // The CPU's [B, H, T, T] probabilities tensor is refused on CUDA, naming the statistics.
  Tensor qkv8 = Tensor::zeros({1, 4, 48}, dt(), Device::cuda());
  Tensor out8 = Tensor::empty({1, 4, 16}, dt(), Device::cuda());
  Tensor probs = Tensor::empty({1, 2, 4, 4}, DType::f32, Device::cuda());
  EXPECT_NE(message([&] { ops::attention_forward(qkv8, 2, out8, probs); }).find("statistics"),
            std::string::npos);
  // The backward form without `out` names the one to use.
  Tensor st8 = Tensor::empty({1, 2, 4}, DType::f32, Device::cuda());
  Tensor d8 = Tensor::empty({1, 4, 48}, dt(), Device::cuda());
  EXPECT_NE(message([&] { ops::attention_backward(out8, qkv8, st8, 2, d8); }).find("out, saved"),
            std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaAttention,
                         ::testing::Values(DType::bf16, DType::f16, DType::f32),
                         [](const ::testing::TestParamInfo<DType>& i) {
                           return std::string(zt::dtype_name(i.param));
                         });

}  // namespace
