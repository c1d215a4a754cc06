// optim/detail/onebit_common.h: what the three 1-bit optimizers share (private to optim/): the
// Adam update in the exact rounding of optim/adam.cpp (so that their uncompressed steps give
// Adam's bits), and the optimizer's handle on the compressed all-reduce (one piece per tensor, or
// the whole buffer).
#pragma once

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "comm/communicator.h"
#include "comm/compressed.h"
#include "core/error.h"
#include "optim/optimizer.h"

namespace zt::optim::detail {

// See optim/adam.cpp: keeps a product rounded (GCC would otherwise fuse it into the next add).
template <class T>
inline T keep_rounded(T x) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  asm("" : "+v"(x));
#endif
  return x;
}

// The per-step constants of Adam's update (optim/adam.cpp's Coeffs with l2 = 0: decoupled decay).
struct AdamStep {
  float b1, b2, one_minus_b1, one_minus_b2;
  float decoupled, step_size, inv_sqrt_bc2, eps;
  static AdamStep make(float b1, float b2, float eps, float lr, float wd, double bc1, double bc2) {
    return {b1,
            b2,
            1.f - b1,
            1.f - b2,
            std::fma(-lr, wd, 1.f),
            static_cast<float>(lr / bc1),
            static_cast<float>(1.0 / std::sqrt(bc2)),
            eps};
  }
  float m_update(float m, float g) const { return std::fma(b1, m, one_minus_b1 * g); }
  float v_update(float v, float g) const { return std::fma(b2, v, (one_minus_b2 * g) * g); }
  float denom(float v) const { return std::fma(std::sqrt(v), inv_sqrt_bc2, eps); }
  // p * (1 - lr wd) - (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps), Adam's rounding.
  float param(float p, float m, float v) const {
    return keep_rounded(p * decoupled) - (step_size * m) / denom(v);
  }
};

// Vectorized loops over AdamStep (same operations and order as its scalar members, so the same
// bits in every version; optim/adam.cpp explains why intrinsics: GCC does not vectorize a loop
// that calls std::sqrt). AVX-512 (16 lanes, masked tail), AVX2 + FMA (8 lanes, scalar tail), or
// the scalar members.
//   momentum:  m[i] = k.m_update(m[i], g[i])
//   param:     p[i] = k.param(p[i], m[i], v[i]); with u: u[i] += (new p[i]) - (old p[i])
inline void momentum_update(const AdamStep& k, float* m, const float* g, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512F__)
  const __m512 b1 = _mm512_set1_ps(k.b1), omb1 = _mm512_set1_ps(k.one_minus_b1);
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(m + i, _mm512_fmadd_ps(b1, _mm512_loadu_ps(m + i),
                                            _mm512_mul_ps(omb1, _mm512_loadu_ps(g + i))));
#elif defined(__AVX2__) && defined(__FMA__)
  const __m256 b1 = _mm256_set1_ps(k.b1), omb1 = _mm256_set1_ps(k.one_minus_b1);
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(m + i, _mm256_fmadd_ps(b1, _mm256_loadu_ps(m + i),
                                            _mm256_mul_ps(omb1, _mm256_loadu_ps(g + i))));
#endif
  for (; i < n; ++i) m[i] = k.m_update(m[i], g[i]);
}

inline void param_update(const AdamStep& k, float* p, const float* m, const float* v, int64_t n,
                         float* u = nullptr) {
  int64_t i = 0;
#if defined(__AVX512F__)
  const __m512 dec = _mm512_set1_ps(k.decoupled), step = _mm512_set1_ps(k.step_size),
               ibc2 = _mm512_set1_ps(k.inv_sqrt_bc2), eps = _mm512_set1_ps(k.eps);
  auto one = [&](int64_t at, __mmask16 mask) {
    const __m512 pi = _mm512_maskz_loadu_ps(mask, p + at);
    const __m512 den = _mm512_fmadd_ps(_mm512_sqrt_ps(_mm512_maskz_loadu_ps(mask, v + at)), ibc2,
                                       eps);
    const __m512 np = _mm512_sub_ps(
        keep_rounded(_mm512_mul_ps(pi, dec)),
        _mm512_div_ps(_mm512_mul_ps(step, _mm512_maskz_loadu_ps(mask, m + at)), den));
    if (u)
      _mm512_mask_storeu_ps(u + at, mask,
                            _mm512_add_ps(_mm512_maskz_loadu_ps(mask, u + at),
                                          _mm512_sub_ps(np, pi)));
    _mm512_mask_storeu_ps(p + at, mask, np);
  };
  for (; i + 16 <= n; i += 16) one(i, static_cast<__mmask16>(0xFFFF));
  if (i < n) one(i, static_cast<__mmask16>((1u << (n - i)) - 1));
  i = n;
#elif defined(__AVX2__) && defined(__FMA__)
  const __m256 dec = _mm256_set1_ps(k.decoupled), step = _mm256_set1_ps(k.step_size),
               ibc2 = _mm256_set1_ps(k.inv_sqrt_bc2), eps = _mm256_set1_ps(k.eps);
  for (; i + 8 <= n; i += 8) {
    const __m256 pi = _mm256_loadu_ps(p + i);
    const __m256 den = _mm256_fmadd_ps(_mm256_sqrt_ps(_mm256_loadu_ps(v + i)), ibc2, eps);
    const __m256 np =
        _mm256_sub_ps(keep_rounded(_mm256_mul_ps(pi, dec)),
                      _mm256_div_ps(_mm256_mul_ps(step, _mm256_loadu_ps(m + i)), den));
    if (u) _mm256_storeu_ps(u + i, _mm256_add_ps(_mm256_loadu_ps(u + i), _mm256_sub_ps(np, pi)));
    _mm256_storeu_ps(p + i, np);
  }
#endif
  for (; i < n; ++i) {
    const float np = k.param(p[i], m[i], v[i]);
    if (u) u[i] += np - p[i];
    p[i] = np;
  }
}

// Runs f(lo, hi) over [0, n) in fixed chunks of kChunk elements, on OpenMP threads when n is
// large (a chunk's bounds never depend on the thread count; the loops above are elementwise).
constexpr int64_t kChunk = 1 << 14;
template <class F>
inline void for_chunks(int64_t n, F&& f) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n >= 4 * kChunk)
  for (int64_t c = 0; c < chunks; ++c) f(c * kChunk, std::min(n, (c + 1) * kChunk));
}

// 1 - beta^t in double (1 without bias correction).
// exp_avg_mask (optim/optimizer.h): checked against the span size, then m[i] *= mask[i].
inline void check_mask(const std::string& who, const std::vector<float>& mask, int64_t n) {
  ZT_CHECK(mask.empty() || static_cast<int64_t>(mask.size()) == n, who, ": exp_avg_mask has ",
           mask.size(), " elements, the optimizer's span ", n);
}
inline void apply_mask(const std::vector<float>& mask, float* m, int64_t lo, int64_t hi) {
  if (mask.empty()) return;
  for (int64_t i = lo; i < hi; ++i) m[i] *= mask[static_cast<size_t>(i)];
}

inline double bias_correction(bool on, float beta, int64_t t) {
  return on ? 1.0 - std::pow(static_cast<double>(beta), static_cast<double>(t)) : 1.0;
}

// Checkpoint helpers: a double kept exactly in two floats' bits (rank_state holds floats only).
inline void put_double(std::vector<float>& v, size_t at, double x) {
  if (v.size() < at + 2) v.resize(at + 2);
  std::memcpy(v.data() + at, &x, sizeof x);
}
inline double get_double(const std::vector<float>& v, size_t at) {
  double x = 0.0;
  if (v.size() >= at + 2) std::memcpy(&x, v.data() + at, sizeof x);
  return x;
}

// The pieces compressed with their own scales (comm/compressed.h, "Scale granularity"): one per
// model tensor, as DeepSpeed's OnebitAdam and ZeroOneAdam compress each parameter on its own.
// A piece starts where a segment's tensor differs from the previous segment's (or is -1: runs
// merged for Adam, taken as one piece each); span elements before the first segment or between
// segments join the piece before them (the engine's segments cover the span). No segments: one
// piece.
inline std::vector<int64_t> tensor_pieces(const std::vector<Segment>& segments, int64_t n) {
  std::vector<int64_t> starts;
  int64_t prev = -2;
  for (const Segment& s : segments) {
    if (s.size <= 0) continue;
    if (s.tensor < 0 || s.tensor != prev) starts.push_back(s.offset);
    prev = s.tensor;
  }
  if (starts.empty()) return {n};
  starts.front() = 0;
  std::vector<int64_t> sizes;
  for (size_t i = 0; i < starts.size(); ++i)
    sizes.push_back((i + 1 < starts.size() ? starts[i + 1] : n) - starts[i]);
  return sizes;
}

// The compressed all-reduce of one optimizer (its error buffers persist across steps). Inactive
// without a communicator or with one rank: DeepSpeed skips the compression then too. The pieces
// come from the first run()'s segments (the optimizer does not see the tensors before step()),
// so the CompressedAllReduce is built then; error buffers loaded from a checkpoint before it
// wait in pending_* and are adopted when their sizes fit the layout (else they restart at zero).
class Compressor {
 public:
  // per_tensor: one piece per tensor (OneBitAdam, ZeroOneAdam); false: the whole buffer one piece
  // (OneBitLamb: DeepSpeed compresses its fused momentum buffer in one call).
  void set(comm::Communicator* c, int64_t n, bool per_tensor) {
    comm_ = c;
    n_ = n;
    per_tensor_ = per_tensor;
    car_.reset();
    pending_worker_.clear();
    pending_server_.clear();
  }
  bool active() const { return comm_ != nullptr && comm_->world() > 1; }
  void run(float* buf, const std::vector<Segment>& segments) {
    if (!active()) return;
    if (!car_) build(segments);
    car_->run(buf);
  }
  void reset_errors() {
    if (car_) car_->reset_errors();
    pending_worker_.clear();
    pending_server_.clear();
  }
  comm::CompressedAllReduce* get() { return car_.get(); }

  // Checkpoints: the error buffers as rank state (none with one rank; empty before the first
  // compressed step: zeros), and after a load either keep what was read (restored, sizes
  // intact) or restart from zero.
  using NamedBuffers = std::vector<std::pair<std::string, std::vector<float>*>>;
  void add_rank_state(NamedBuffers& out) {
    if (!active()) return;
    out.emplace_back("worker_error", car_ ? car_->mutable_worker_error() : &pending_worker_);
    out.emplace_back("server_error", car_ ? car_->mutable_server_error() : &pending_server_);
  }
  void loaded(bool restored) {
    if (!active()) return;
    if (!car_) {
      if (!restored) reset_errors();
      return;  // adopted (or dropped) by build()
    }
    if (!restored || !car_->errors_sized()) {
      car_->mutable_worker_error()->assign(static_cast<size_t>(car_->padded()), 0.f);
      car_->mutable_server_error()->assign(static_cast<size_t>(car_->server_size()), 0.f);
    }
  }

 private:
  void build(const std::vector<Segment>& segments) {
    car_ = std::make_unique<comm::CompressedAllReduce>(
        *comm_, per_tensor_ ? tensor_pieces(segments, n_) : std::vector<int64_t>{n_});
    if (static_cast<int64_t>(pending_worker_.size()) == car_->padded() &&
        static_cast<int64_t>(pending_server_.size()) == car_->server_size()) {
      *car_->mutable_worker_error() = std::move(pending_worker_);
      *car_->mutable_server_error() = std::move(pending_server_);
    }
    pending_worker_.clear();
    pending_server_.clear();
  }

  comm::Communicator* comm_ = nullptr;
  int64_t n_ = 0;
  bool per_tensor_ = true;
  std::unique_ptr<comm::CompressedAllReduce> car_;
  std::vector<float> pending_worker_, pending_server_;
};

}  // namespace zt::optim::detail
