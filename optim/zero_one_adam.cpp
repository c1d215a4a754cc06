// optim/zero_one_adam.cpp: 0/1 Adam (Lu et al. 2022, "Maximizing Communication Efficiency for
// Large-scale Training via 0/1 Adam", arXiv:2202.06009), with the semantics of DeepSpeed's
// ZeroOneAdam (deepspeed/runtime/fp16/onebit/zoadam.py).
//
// 1-bit Adam freezes the variance after a fixed warm-up; 0/1 Adam instead updates it at steps
// that grow exponentially apart, and, once it is frozen, also skips communication on most steps
// (local steps). Step t (1-based) is one of:
//   full step      t <= var_freeze_step and t % var_interval == 0: the engine all-reduces g;
//                    v = b2 v + (1 - b2) g^2,  m = b1 m + (1 - b1) g,  Adam's update.
//                  Every var_update_scaler (kappa) full steps, var_interval doubles (1, 2, 4...).
//   1-bit step     t <= var_freeze_step otherwise: the engine hands the local gradient;
//                    g = compressed_allreduce(g) (1-bit, error feedback),  m = b1 m + (1 - b1) g,
//                    v unchanged, Adam's update.
//   local step     t > var_freeze_step (v frozen, the error buffers zeroed once, because they now
//                  carry accumulated updates instead of gradients): no communication;
//                    m = b1 m + (1 - b1) g_local,  Adam's update,  u += (the change of p),
//                    lrs += lr.
//                  Every local_step_interval steps (a sync):
//                    p -= u                                   back to the last synced weights
//                    u = compressed_allreduce(u * denom)      denom = sqrt(v) / sqrt(bc2) + eps
//                    m = -u / (lrs / bc1)                     the lr-weighted mean momentum
//                    p += u / denom,  u = 0,  lrs = 0
//                  Every local_step_scaler steps, local_step_interval doubles up to
//                  local_step_clipper (H).
// compressed_allreduce compresses each tensor with its own scales and error buffers, as DeepSpeed
// calls it once per parameter (comm/compressed.h, "Scale granularity"; one segment per tensor).
// Adam's update here is p = p (1 - lr wd) - (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps) in the
// rounding of optim/adam.cpp, with bc1 = 1 - b1^t and bc2 = 1 - b2^k, k = the number of variance
// updates so far (bias_correction: false sets both to 1, DeepSpeed's updates: DeepSpeed ignores
// the key). The first var_update_scaler steps are all full steps, so they give Adam's bits.
// Parameters stay identical on every rank: full and 1-bit steps apply the same averaged g; local
// steps drift apart, and each sync replaces the drift by the same averaged update everywhere.
//
// Differences from DeepSpeed, deliberate: no dropped first step (DeepSpeed's first step() only
// allocates buffers); v freezes after step var_freeze_step, the paper's max T_v (DeepSpeed's
// check, one step later on its counter that includes the dropped step, lands on the same step);
// exp_avg_mask is refused (DeepSpeed's ZeroOneAdam has none either). Clipping and the norm: see onebit_adam.cpp.
// Checkpoints (DeepSpeed resets the counters to 1 and u, lrs and the error buffers to 0): the
// counters are recomputed from the step count; per rank (rank_state) go the error buffers and,
// when saved between two syncs (the ranks' weights, m and u have drifted apart), this rank's
// weights, m, u and lrs. A resume at the same world size continues bit for bit; at another world
// size those restart as in DeepSpeed (u, lrs and errors 0; weights and m as the shards hold them:
// the same on every rank, each range from the rank that saved it).
#include <algorithm>

#include "core/error.h"
#include "optim/detail/onebit_common.h"
#include "optim/optimizer.h"

namespace zt::optim {
namespace {

class ZeroOneAdam final : public Optimizer {
 public:
  explicit ZeroOneAdam(const OneBitParams& p) : p_(p) {
    ZT_CHECK(p.var_update_scaler >= 1 && p.local_step_scaler >= 1 && p.local_step_clipper >= 1,
             "ZeroOneAdam: var_update_scaler, local_step_scaler and local_step_clipper must be >= 1");
    ZT_CHECK(!p.eps_inside_sqrt, "ZeroOneAdam: eps_inside_sqrt is not supported");
  }
  std::string name() const override { return "ZeroOneAdam"; }

  void init(int64_t n) override {
    n_ = n;
    m_.assign(static_cast<size_t>(n), 0.f);
    v_.assign(static_cast<size_t>(n), 0.f);
    u_.assign(static_cast<size_t>(n), 0.f);
    gbuf_.clear();
    compressor_.set(comm_, n_, true);
  }
  void set_communicator(comm::Communicator* c) override {
    comm_ = c;
    compressor_.set(comm_, n_, true);
  }
  bool reduces_own_gradients() const override {
    const int64_t next = t_ + 1;
    return next > p_.var_freeze_step || next % var_interval_ != 0;
  }

  void step(float* params, const float* grads, int64_t n, const std::vector<Segment>& segments,
            float lr) override {
    ZT_CHECK(n == n_, "ZeroOneAdam: step over ", n, " parameters, but init was for ", n_);
    ++t_;
    const bool frozen = t_ > p_.var_freeze_step;
    const bool full = !frozen && t_ % var_interval_ == 0;
    if (full) ++v_updates_;
    const float* g = grads;
    if (!frozen && !full && compressor_.active()) {  // 1-bit step: average the gradient, 1 bit
      gbuf_.assign(grads, grads + n);
      compressor_.run(gbuf_.data(), segments);
      g = gbuf_.data();
    }
    const double bc1 = detail::bias_correction(p_.bias_correction, p_.beta1, t_);
    const double bc2 = detail::bias_correction(p_.bias_correction, p_.beta2, v_updates_);
    float* m = m_.data();
    float* v = v_.data();
    float* u = u_.data();
    const detail::AdamStep k0 = detail::AdamStep::make(p_.beta1, p_.beta2, p_.eps, lr, 0.f, bc1, bc2);
#pragma omp parallel for schedule(static) if (n >= (1 << 16))
    for (int64_t i = 0; i < n; ++i) {
      if (full) v[i] = k0.v_update(v[i], g[i]);
      m[i] = k0.m_update(m[i], g[i]);
    }
    for (const Segment& s : segments) {
      const float wd = s.decay ? p_.weight_decay : 0.f;
      const detail::AdamStep k = detail::AdamStep::make(p_.beta1, p_.beta2, p_.eps, lr, wd, bc1, bc2);
      const int64_t o = s.offset;
      detail::for_chunks(s.size, [&](int64_t lo, int64_t hi) {
        detail::param_update(k, params + o + lo, m + o + lo, v + o + lo, hi - lo,
                             frozen ? u + o + lo : nullptr);
      });
    }
    if (frozen) {
      lrs_ += lr;
      if (t_ % local_interval_ == 0) sync(params, segments, k0, bc1);
    }
    advance_counters(t_);
  }

  std::vector<std::pair<std::string, std::vector<float>*>> state() override {
    return {{"exp_avg", &m_}, {"exp_avg_sq", &v_}};
  }
  int64_t step_count() const override { return t_; }
  void set_step_count(int64_t s) override {
    // A checkpoint load: replay the interval schedules to step s (they depend on the step count
    // only); the accumulated local update and the error buffers restart at zero (file comment).
    t_ = 0;
    var_interval_ = 1;
    var_counter_ = 0;
    local_interval_ = 1;
    local_counter_ = 0;
    v_updates_ = 0;
    for (int64_t i = 1; i <= s; ++i) {
      if (i <= p_.var_freeze_step && i % var_interval_ == 0) ++v_updates_;
      advance_counters(i);
    }
    t_ = s;
  }
  std::vector<std::pair<std::string, std::vector<float>*>> rank_state(const float* params) override {
    std::vector<std::pair<std::string, std::vector<float>*>> out;
    compressor_.add_rank_state(out);
    // Between syncs (lrs > 0) each rank has its own weights, m and u: keep them whole.
    if (lrs_ != 0.0 && params != nullptr) {
      ckpt_p_.assign(params, params + n_);
      ckpt_m_ = m_;
      ckpt_u_ = u_;
    } else {
      ckpt_p_.clear();
      ckpt_m_.clear();
      ckpt_u_.clear();
    }
    ckpt_scalars_.clear();
    detail::put_double(ckpt_scalars_, 0, lrs_);
    out.emplace_back("local_params", &ckpt_p_);
    out.emplace_back("local_exp_avg", &ckpt_m_);
    out.emplace_back("local_update", &ckpt_u_);
    out.emplace_back("local_lr_sum", &ckpt_scalars_);
    return out;
  }
  void rank_state_loaded(bool restored, float* params) override {
    compressor_.loaded(restored);
    const size_t n = static_cast<size_t>(n_);
    const bool drifted = restored && ckpt_p_.size() == n && ckpt_m_.size() == n &&
                         ckpt_u_.size() == n && params != nullptr;
    if (drifted) {
      std::copy(ckpt_p_.begin(), ckpt_p_.end(), params);
      m_ = ckpt_m_;
      u_ = ckpt_u_;
      lrs_ = detail::get_double(ckpt_scalars_, 0);
    } else {
      std::fill(u_.begin(), u_.end(), 0.f);
      lrs_ = 0.0;
    }
    ckpt_p_ = {};
    ckpt_m_ = {};
    ckpt_u_ = {};
  }
  bool set_betas(float beta1, float beta2) override {
    p_.beta1 = beta1;
    p_.beta2 = beta2;
    return true;
  }

 private:
  // The schedules after step t (DeepSpeed's bookkeeping at the end of step()).
  void advance_counters(int64_t t) {
    if (t <= p_.var_freeze_step) {
      if (t % var_interval_ == 0 && ++var_counter_ == p_.var_update_scaler) {
        var_counter_ = 0;
        var_interval_ *= 2;
      }
      if (t == p_.var_freeze_step) compressor_.reset_errors();  // gradients -> accumulated updates
    } else if (++local_counter_ == p_.local_step_scaler) {
      local_counter_ = 0;
      local_interval_ = std::min(p_.local_step_clipper, local_interval_ * 2);
    }
  }

  // The end of a local-step interval: replace each rank's local drift by the averaged update.
  void sync(float* params, const std::vector<Segment>& segments, const detail::AdamStep& k,
            double bc1) {
    float* u = u_.data();
    const float* v = v_.data();
    for (const Segment& s : segments)
      for (int64_t i = s.offset; i < s.offset + s.size; ++i) params[i] -= u[i];
#pragma omp parallel for schedule(static) if (n_ >= (1 << 16))
    for (int64_t i = 0; i < n_; ++i) u[i] *= k.denom(v[i]);
    compressor_.run(u, segments);
    const float m_scale = static_cast<float>(-bc1 / lrs_);
    float* m = m_.data();
#pragma omp parallel for schedule(static) if (n_ >= (1 << 16))
    for (int64_t i = 0; i < n_; ++i) m[i] = u[i] * m_scale;
    for (const Segment& s : segments)
      for (int64_t i = s.offset; i < s.offset + s.size; ++i) params[i] += u[i] / k.denom(v[i]);
    std::fill(u_.begin(), u_.end(), 0.f);
    lrs_ = 0.0;
  }

  OneBitParams p_;
  int64_t n_ = 0, t_ = 0;
  int64_t var_interval_ = 1, var_counter_ = 0, v_updates_ = 0;
  int64_t local_interval_ = 1, local_counter_ = 0;
  double lrs_ = 0.0;  // sum of the learning rates since the last sync
  std::vector<float> m_, v_, u_, gbuf_;
  std::vector<float> ckpt_p_, ckpt_m_, ckpt_u_, ckpt_scalars_;  // rank_state's copies
  comm::Communicator* comm_ = nullptr;
  detail::Compressor compressor_;
};

}  // namespace

std::unique_ptr<Optimizer> make_zero_one_adam(const OneBitParams& p) {
  return std::make_unique<ZeroOneAdam>(p);
}

}  // namespace zt::optim
