// optim/onebit_lamb.cpp: 1-bit Lamb (Li et al. 2021, "1-bit LAMB: Communication Efficient
// Large-Scale Large-Batch Training with LAMB's Convergence Speed", arXiv:2104.06069), with the
// semantics of DeepSpeed's OnebitLamb (deepspeed/runtime/fp16/onebit/lamb.py).
//
// Warm-up, t <= freeze_step: Lamb (optim/lamb.cpp's formulas and rounding) on the all-reduced
// gradient, and per tensor an EMA of its trust ratio,
//   lamb_coeff_freeze = coeff_beta lamb_coeff_freeze + (1 - coeff_beta) ratio   (when ratio != 1);
// at t = freeze_step, v_fresh = v.
// Compression, t > freeze_step (v frozen; the engine hands the local gradient):
//   first time: scaling_coeff per tensor = united / (||m|| / sqrt(numel)), united = the mean of
//   ||m|| / sqrt(numel) over the tensors: momenta of very different magnitudes then share one
//   compression scale with less error.
//   m_last = m;  m = b1 m + (1 - b1) g_local;  m = compressed_allreduce(m * scaling) / scaling
//   (the whole momentum buffer one piece with one worker scale, as DeepSpeed compresses its fused
//   exp_avg_flat; scaling evens the tensors' magnitudes for that shared scale)
//   g_rec = (m - b1 m_last) / (1 - b1)          the averaged gradient, reconstructed
//   v_fresh = b2 v_fresh + (1 - b2) g_rec^2      a variance that keeps moving (not used to step)
//   per tensor: prelim = (m / bc1) / denom, denom = sqrt(v / bc2) + eps;  u = prelim + wd w;
//     factor = max over the tensor of denom / (sqrt(v_fresh / bc2') + eps); with wd > 0,
//     r = min(1, ||prelim|| / ||u||) and factor = factor r + (1 - r); factor is clamped to
//     [factor_min, factor_max] and to last_factor (1 -+ factor_threshold);
//     w -= lr lamb_coeff_freeze factor u
//   bc1 = 1 - b1^t, bc2 = 1 - b2^freeze_step (frozen with v), bc2' = 1 - b2^t (v_fresh keeps
//   counting); bias_correction: false makes them 1, DeepSpeed's updates (DeepSpeed ignores the
//   key). eps_inside_sqrt: sqrt(v_hat + eps) in both denominators, as in Lamb.
// The trust ratio and the factor are per whole tensor; the 1-bit family runs at ZeRO stage 0,
// where every rank holds whole tensors (the tensor-stats reducer of optimizer.h is still called
// in the warm-up, a no-op there).
//
// Differences from DeepSpeed: no dropped first step; a tensor whose momentum is all zero at the
// freeze gets scaling_coeff 1 (DeepSpeed divides by zero).
// Checkpoints: m, v and v_fresh (the same on every rank) in state(); per rank (rank_state) the
// per-tensor scalars (lamb_coeff_freeze, last_factor, scaling_coeff) and the error buffers. A
// resume at the same world size continues bit for bit, warm-up or compression stage. At another
// world size the error buffers restart at zero (as in DeepSpeed) and so do the scalars: fine
// before freeze_step (the trust-ratio EMA restarts, a small change), refused after it (the frozen
// trust ratios cannot be rebuilt) with an error that says so.
#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "optim/detail/onebit_common.h"
#include "optim/optimizer.h"

namespace zt::optim {
namespace {

constexpr int64_t kChunk = 1 << 14;

class OneBitLamb final : public Optimizer {
 public:
  explicit OneBitLamb(const OneBitParams& p) : p_(p) {
    ZT_CHECK(p.freeze_step >= 1, "OneBitLamb: freeze_step must be >= 1, got ", p.freeze_step);
    ZT_CHECK(p.min_coeff >= 0.f && p.min_coeff <= p.max_coeff,
             "OneBitLamb: need 0 <= min_coeff <= max_coeff");
  }
  std::string name() const override { return "OneBitLamb"; }

  void init(int64_t n) override {
    n_ = n;
    m_.assign(static_cast<size_t>(n), 0.f);
    v_.assign(static_cast<size_t>(n), 0.f);
    v_fresh_.assign(static_cast<size_t>(n), 0.f);
    compressor_.set(comm_, n_, false);
  }
  void set_communicator(comm::Communicator* c) override {
    comm_ = c;
    compressor_.set(comm_, n_, false);
  }
  void set_exp_avg_mask(std::vector<float> mask) override {  // optim/optimizer.h
    detail::check_mask(name(), mask, n_);
    mask_ = std::move(mask);
  }
  bool reduces_own_gradients() const override { return t_ >= p_.freeze_step; }
  bool uses_tensor_stats() const override { return true; }
  void set_tensor_stats(int64_t num_tensors, TensorStatsReducer reduce) override {
    num_tensors_ = num_tensors;
    reduce_ = std::move(reduce);
  }

  void step(float* params, const float* grads, int64_t n, const std::vector<Segment>& segments,
            float lr) override {
    ZT_CHECK(n == n_, "OneBitLamb: step over ", n, " parameters, but init was for ", n_);
    int64_t tensors = num_tensors_;
    if (tensors < 0) {
      tensors = 0;
      for (const Segment& s : segments) tensors = std::max(tensors, s.tensor + 1);
    }
    for (const Segment& s : segments)
      ZT_CHECK(s.tensor >= 0 && s.tensor < tensors, "OneBitLamb needs the tensor of every ",
               "segment (Segment::tensor in [0, ", tensors, ")), got ", s.tensor);
    if (static_cast<int64_t>(coeff_freeze_.size()) != tensors) {
      coeff_freeze_.assign(static_cast<size_t>(tensors), 0.f);
      last_factor_.assign(static_cast<size_t>(tensors), 1.f);
    }
    ++t_;
    if (t_ <= p_.freeze_step)
      warmup(params, grads, segments, lr, tensors);
    else
      compressed(params, grads, segments, lr, tensors);
  }

  std::vector<std::pair<std::string, std::vector<float>*>> state() override {
    return {{"exp_avg", &m_}, {"exp_avg_sq", &v_}, {"exp_avg_sq_fresh", &v_fresh_}};
  }
  int64_t step_count() const override { return t_; }
  void set_step_count(int64_t s) override { t_ = s; }
  std::vector<std::pair<std::string, std::vector<float>*>> rank_state(const float*) override {
    std::vector<std::pair<std::string, std::vector<float>*>> out;
    compressor_.add_rank_state(out);
    out.emplace_back("lamb_coeff_freeze", &coeff_freeze_);
    out.emplace_back("last_factor", &last_factor_);
    out.emplace_back("scaling_coeff", &scaling_);
    return out;
  }
  void rank_state_loaded(bool restored, float*) override {
    compressor_.loaded(restored);
    const bool sized = coeff_freeze_.size() == last_factor_.size() &&
                       (scaling_.empty() || scaling_.size() == coeff_freeze_.size());
    if (restored && sized) return;
    ZT_CHECK(t_ <= p_.freeze_step, "OneBitLamb: cannot resume at step ", t_, " after freeze_step ",
             p_.freeze_step, ": the checkpoint's per-rank state (per-tensor frozen trust ratios, ",
             "error buffers) is only restored at the world size it was saved at (or it predates ",
             "it); load it with that many ranks, or resume from a checkpoint saved before ",
             "freeze_step");
    coeff_freeze_.clear();  // the warm-up's trust-ratio EMA restarts (step() sizes them)
    last_factor_.clear();
    scaling_.clear();
  }
  bool set_betas(float beta1, float beta2) override {
    p_.beta1 = beta1;
    p_.beta2 = beta2;
    return true;
  }

 private:
  float denom(float v_hat) const {
    return p_.eps_inside_sqrt ? std::sqrt(v_hat + p_.eps) : std::sqrt(v_hat) + p_.eps;
  }

  // Lamb, in optim/lamb.cpp's formulas and order, plus the trust-ratio EMA.
  void warmup(float* params, const float* grads, const std::vector<Segment>& segments, float lr,
              int64_t tensors) {
    const float b1 = p_.beta1, b2 = p_.beta2;
    const float inv_bc1 =
        static_cast<float>(1.0 / detail::bias_correction(p_.bias_correction, b1, t_));
    const float inv_bc2 =
        static_cast<float>(1.0 / detail::bias_correction(p_.bias_correction, b2, t_));
    float* m = m_.data();
    float* v = v_.data();
    stats_.assign(static_cast<size_t>(2 * tensors), 0.0);
    for (const Segment& s : segments) {
      const float wd = s.decay ? p_.weight_decay : 0.f;
      const int64_t chunks = (s.size + kChunk - 1) / kChunk;
      partial_.assign(static_cast<size_t>(2 * chunks), 0.0);
      double* part = partial_.data();
#pragma omp parallel for schedule(static) if (s.size >= 4 * kChunk)
      for (int64_t c = 0; c < chunks; ++c) {
        const int64_t lo = s.offset + c * kChunk, hi = std::min(s.offset + s.size, lo + kChunk);
        double w2 = 0.0, u2 = 0.0;
#pragma omp simd reduction(+ : w2, u2)
        for (int64_t i = lo; i < hi; ++i) {
          const float g = grads[i];
          const float mi = b1 * m[i] + (1.f - b1) * g;
          const float vi = b2 * v[i] + (1.f - b2) * g * g;
          m[i] = mi;
          v[i] = vi;
          const float w = params[i];
          const float u = mi * inv_bc1 / denom(vi * inv_bc2) + wd * w;
          w2 += static_cast<double>(w) * w;
          u2 += static_cast<double>(u) * u;
        }
        part[2 * c] = w2;
        part[2 * c + 1] = u2;
      }
      double w2 = 0.0, u2 = 0.0;
      for (int64_t c = 0; c < chunks; ++c) {
        w2 += part[2 * c];
        u2 += part[2 * c + 1];
      }
      stats_[2 * s.tensor] += w2;
      stats_[2 * s.tensor + 1] += u2;
    }
    if (reduce_) reduce_(stats_.data(), static_cast<int64_t>(stats_.size()));
    std::vector<bool> seen(static_cast<size_t>(tensors), false);
    for (const Segment& s : segments) {
      const float wd = s.decay ? p_.weight_decay : 0.f;
      const float ratio = trust_ratio(stats_[2 * s.tensor], stats_[2 * s.tensor + 1]);
      if (!seen[s.tensor] && ratio != 1.f) {  // once per tensor (DeepSpeed: once per parameter)
        float& f = coeff_freeze_[s.tensor];
        f = p_.coeff_beta * f + (1.f - p_.coeff_beta) * ratio;
      }
      seen[s.tensor] = true;
      const float step = lr * ratio;
#pragma omp parallel for schedule(static) if (s.size >= 4 * kChunk)
      for (int64_t c = 0; c < (s.size + kChunk - 1) / kChunk; ++c) {
        const int64_t lo = s.offset + c * kChunk, hi = std::min(s.offset + s.size, lo + kChunk);
#pragma omp simd
        for (int64_t i = lo; i < hi; ++i)
          params[i] -= step * (m[i] * inv_bc1 / denom(v[i] * inv_bc2) + wd * params[i]);
      }
    }
    if (t_ == p_.freeze_step) v_fresh_ = v_;
  }

  float trust_ratio(double w2, double u2) const {
    const double w = std::sqrt(w2), u = std::sqrt(u2);
    if (w == 0.0 || u == 0.0) return 1.f;
    return static_cast<float>(
        std::clamp(w / u, static_cast<double>(p_.min_coeff), static_cast<double>(p_.max_coeff)));
  }

  void compressed(float* params, const float* grads, const std::vector<Segment>& segments,
                  float lr, int64_t tensors) {
    const float b1 = p_.beta1, b2 = p_.beta2;
    float* m = m_.data();
    if (scaling_.empty()) {  // the first compressed step: one scale for all momenta
      std::vector<double> sq(static_cast<size_t>(tensors), 0.0), cnt(sq.size(), 0.0);
      for (const Segment& s : segments)
        for (int64_t i = s.offset; i < s.offset + s.size; ++i) {
          sq[s.tensor] += static_cast<double>(m[i]) * m[i];
          cnt[s.tensor] += 1.0;
        }
      std::vector<double> scale(sq.size(), 0.0);
      double sum = 0.0;
      int64_t present = 0;
      for (size_t j = 0; j < sq.size(); ++j)
        if (cnt[j] > 0) {
          scale[j] = std::sqrt(sq[j] / cnt[j]);
          sum += scale[j];
          ++present;
        }
      const double united = present > 0 ? sum / static_cast<double>(present) : 0.0;
      scaling_.assign(sq.size(), 1.f);
      for (size_t j = 0; j < sq.size(); ++j)
        if (scale[j] > 0.0) scaling_[j] = static_cast<float>(united / scale[j]);
    }
    m_last_.assign(m_.begin(), m_.end());
    for (const Segment& s : segments) {
      const float c = scaling_[s.tensor];
      for (int64_t i = s.offset; i < s.offset + s.size; ++i)
        m[i] = (b1 * m[i] + (1.f - b1) * grads[i]) * c;
    }
    compressor_.run(m, segments);
    const float inv_bc1 =
        static_cast<float>(1.0 / detail::bias_correction(p_.bias_correction, b1, t_));
    const float inv_bc2 =
        static_cast<float>(1.0 / detail::bias_correction(p_.bias_correction, b2, p_.freeze_step));
    const float inv_bc2f =
        static_cast<float>(1.0 / detail::bias_correction(p_.bias_correction, b2, t_));
    float* v_fresh = v_fresh_.data();
    const float* v = v_.data();
    // Per tensor: ||prelim||^2, ||u||^2, max denom / denom_real.
    std::vector<double> pre2(static_cast<size_t>(tensors), 0.0), u2(pre2.size(), 0.0);
    std::vector<float> fmax(pre2.size(), 0.f);
    for (const Segment& s : segments) {
      const float c = scaling_[s.tensor];
      const float wd = s.decay ? p_.weight_decay : 0.f;
      for (int64_t i = s.offset; i < s.offset + s.size; ++i) {
        m[i] /= c;
        if (!mask_.empty()) m[i] *= mask_[static_cast<size_t>(i)];  // exp_avg_mask, as DeepSpeed
        const float g_rec = (m[i] - b1 * m_last_[i]) / (1.f - b1);
        v_fresh[i] = b2 * v_fresh[i] + (1.f - b2) * g_rec * g_rec;
        const float d = denom(v[i] * inv_bc2);
        const float prelim = m[i] * inv_bc1 / d;
        const float u = prelim + wd * params[i];
        pre2[s.tensor] += static_cast<double>(prelim) * prelim;
        u2[s.tensor] += static_cast<double>(u) * u;
        fmax[s.tensor] = std::max(fmax[s.tensor], d / denom(v_fresh[i] * inv_bc2f));
      }
    }
    std::vector<float> coeff(pre2.size(), 0.f);
    std::vector<bool> done(pre2.size(), false);
    for (const Segment& s : segments) {
      const size_t j = static_cast<size_t>(s.tensor);
      if (done[j]) continue;
      done[j] = true;
      const float wd = s.decay ? p_.weight_decay : 0.f;
      float factor = fmax[j];
      if (wd > 0.f && u2[j] > 0.0) {
        const float r = static_cast<float>(std::min(1.0, std::sqrt(pre2[j]) / std::sqrt(u2[j])));
        factor = factor * r + (1.f - r);
      }
      factor = std::clamp(factor, p_.factor_min, p_.factor_max);
      factor = std::min(factor, last_factor_[j] * (1.f + p_.factor_threshold));
      factor = std::max(factor, last_factor_[j] * (1.f - p_.factor_threshold));
      last_factor_[j] = factor;
      coeff[j] = coeff_freeze_[j] * factor;
    }
    for (const Segment& s : segments) {
      const float wd = s.decay ? p_.weight_decay : 0.f;
      const float step = lr * coeff[s.tensor];
      for (int64_t i = s.offset; i < s.offset + s.size; ++i)
        params[i] -= step * (m[i] * inv_bc1 / denom(v[i] * inv_bc2) + wd * params[i]);
    }
  }

  OneBitParams p_;
  int64_t n_ = 0, t_ = 0;
  int64_t num_tensors_ = -1;
  TensorStatsReducer reduce_;
  std::vector<float> m_, v_, v_fresh_, m_last_;
  std::vector<float> mask_;  // exp_avg_mask: empty = none
  std::vector<float> coeff_freeze_, last_factor_, scaling_;  // per tensor
  std::vector<double> stats_, partial_;
  comm::Communicator* comm_ = nullptr;
  detail::Compressor compressor_;
};

}  // namespace

std::unique_ptr<Optimizer> make_onebit_lamb(const OneBitParams& p) {
  return std::make_unique<OneBitLamb>(p);
}

}  // namespace zt::optim
