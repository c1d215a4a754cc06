// optim/detail/onebit_common.h: what the three 1-bit optimizers share (private to optim/): the
// Adam update in the exact rounding of optim/adam.cpp (so that their uncompressed steps give
// Adam's bits), and the optimizer's handle on the compressed all-reduce.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "comm/communicator.h"
#include "comm/compressed.h"

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

// 1 - beta^t in double (1 without bias correction).
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

// The compressed all-reduce of one optimizer (its error buffers persist across steps). Inactive
// without a communicator or with one rank: DeepSpeed skips the compression then too.
class Compressor {
 public:
  void set(comm::Communicator* c, int64_t n) {
    comm_ = c;
    car_.reset();
    if (c != nullptr && c->world() > 1) car_ = std::make_unique<comm::CompressedAllReduce>(*c, n);
  }
  bool active() const { return car_ != nullptr; }
  void run(float* buf) {
    if (car_) car_->run(buf);
  }
  void reset_errors() {
    if (car_) car_->reset_errors();
  }
  comm::CompressedAllReduce* get() { return car_.get(); }

  // Checkpoints: the error buffers as rank state (none with one rank), and after a load either
  // keep what was read (restored, sizes intact) or restart from zero.
  using NamedBuffers = std::vector<std::pair<std::string, std::vector<float>*>>;
  void add_rank_state(NamedBuffers& out) {
    if (!car_) return;
    out.emplace_back("worker_error", car_->mutable_worker_error());
    out.emplace_back("server_error", car_->mutable_server_error());
  }
  void loaded(bool restored) {
    if (!car_) return;
    if (!restored || !car_->errors_sized()) {
      car_->mutable_worker_error()->assign(static_cast<size_t>(car_->padded()), 0.f);
      car_->mutable_server_error()->assign(static_cast<size_t>(car_->chunk()), 0.f);
    }
  }

 private:
  comm::Communicator* comm_ = nullptr;
  std::unique_ptr<comm::CompressedAllReduce> car_;
};

}  // namespace zt::optim::detail
