// optim/onebit_adam.cpp: 1-bit Adam (Tang et al. 2021, "1-bit Adam: Communication Efficient
// Large-Scale Training with Adam's Convergence Speed", arXiv:2102.02888), with the semantics of
// DeepSpeed's OnebitAdam (deepspeed/runtime/fp16/onebit/adam.py).
//
// Two stages, chosen by the step number t (1-based, skipped fp16 steps not counted):
//   warm-up, t <= freeze_step: plain Adam on the all-reduced gradient (the engine averages it as
//     for any optimizer). The update is optim/adam.cpp's own kernel (AdamW mode), so it gives
//     the same bits as Adam/AdamW with the same parameters.
//   compression, t > freeze_step: the variance v is frozen (its value after step freeze_step is a
//     good enough preconditioner, the paper's observation); the engine no longer all-reduces the
//     gradient (reduces_own_gradients() is true), and each rank
//       m = b1 m + (1 - b1) g_local
//       m = compressed_allreduce(m)            1-bit, error feedback (comm/compressed.h), each
//                                              tensor with its own scales, as DeepSpeed calls
//                                              it per parameter (one segment per tensor)
//       p = p (1 - lr wd) - (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps)
//     with bc1 = 1 - b1^t and bc2 = 1 - b2^freeze_step (frozen with v). m is identical on every
//     rank after the all-reduce, v too, so the parameters stay identical without any other
//     communication. The momentum crosses the wire at 1 bit per parameter instead of 32.
//
// Differences from DeepSpeed, each deliberate:
//   - bias_correction is honoured; DeepSpeed's 1-bit Adam accepts it and never corrects
//     (update = m / (sqrt(v) + eps)). bias_correction: false gives DeepSpeed's updates.
//   - DeepSpeed's first step() only allocates the cupy buffers and updates nothing (the first
//     gradient is dropped); here every step updates. Compression starts at the same step count
//     (DeepSpeed's counter includes that first step).
//   - exp_avg_mask (a mask for momenta that are always exactly zero, set by hand in DeepSpeed's
//     BERT example) is set_exp_avg_mask() (optim/optimizer.h; the engine's set_exp_avg_mask takes
//     it per parameter); as in DeepSpeed it multiplies m after the compressed all-reduce, also
//     with one rank, and is not checkpointed.
//   - eps_inside_sqrt is refused by zero/settings.cpp (DeepSpeed accepts and ignores it).
// Gradient clipping and the gradient norm follow DeepSpeed: in the compression stage the engine
// computes them from this rank's local gradient (DeepSpeed's FP16_Optimizer/clip_grad_norm_ only
// reduce over model-parallel ranks); the overflow check is still agreed by all ranks.
// With one rank there is nothing to compress: the compression stage is Adam with frozen v.
// Checkpoints hold m and v (the same on every rank), and per rank (rank_state) the two error
// buffers of the compressed all-reduce: a resume at the same world size continues bit for bit;
// at another world size the error buffers restart at zero, as DeepSpeed always does on load.
#include <algorithm>

#include "core/error.h"
#include "optim/detail/onebit_common.h"
#include "optim/optimizer.h"

namespace zt::optim {
namespace {

class OneBitAdam final : public Optimizer {
 public:
  explicit OneBitAdam(const OneBitParams& p) : p_(p) {
    ZT_CHECK(p.freeze_step >= 1, "OneBitAdam: freeze_step must be >= 1 (the variance is frozen ",
             "after it, and needs at least one uncompressed step), got ", p.freeze_step);
    ZT_CHECK(!p.eps_inside_sqrt, "OneBitAdam: eps_inside_sqrt is not supported");
    adam_ = make_adam(adam_params());
  }
  std::string name() const override { return "OneBitAdam"; }

  void init(int64_t n) override {
    n_ = n;
    adam_->init(n);
    compressor_.set(comm_, n_, true);
  }
  void set_communicator(comm::Communicator* c) override {
    comm_ = c;
    compressor_.set(comm_, n_, true);
  }
  void set_exp_avg_mask(std::vector<float> mask) override {
    detail::check_mask(name(), mask, n_);
    mask_ = std::move(mask);
  }
  bool reduces_own_gradients() const override { return step_count() >= p_.freeze_step; }

  void step(float* params, const float* grads, int64_t n, const std::vector<Segment>& segments,
            float lr) override {
    ZT_CHECK(n == n_, "OneBitAdam: step over ", n, " parameters, but init was for ", n_);
    if (step_count() < p_.freeze_step) {  // warm-up: Adam itself
      adam_->step(params, grads, n, segments, lr);
      return;
    }
    const int64_t t = step_count() + 1;
    adam_->set_step_count(t);
    float* m = buffer("exp_avg");
    const float* v = buffer("exp_avg_sq");
    const double bc1 = detail::bias_correction(p_.bias_correction, p_.beta1, t);
    const double bc2 = detail::bias_correction(p_.bias_correction, p_.beta2, p_.freeze_step);
    const detail::AdamStep k0 = detail::AdamStep::make(p_.beta1, p_.beta2, p_.eps, lr, 0.f, bc1, bc2);
    detail::for_chunks(n, [&](int64_t lo, int64_t hi) {
      detail::momentum_update(k0, m + lo, grads + lo, hi - lo);
    });
    compressor_.run(m, segments);  // every rank now holds the same (compressed) average momentum
    detail::apply_mask(mask_, m, 0, n);
    for (const Segment& s : segments) {
      const float wd = s.decay ? p_.weight_decay : 0.f;
      const detail::AdamStep k = detail::AdamStep::make(p_.beta1, p_.beta2, p_.eps, lr, wd, bc1, bc2);
      float* ps = params + s.offset;
      const float* ms = m + s.offset;
      const float* vs = v + s.offset;
      detail::for_chunks(s.size, [&](int64_t lo, int64_t hi) {
        detail::param_update(k, ps + lo, ms + lo, vs + lo, hi - lo);
      });
    }
  }

  std::vector<std::pair<std::string, std::vector<float>*>> state() override {
    return adam_->state();
  }
  int64_t step_count() const override { return adam_->step_count(); }
  void set_step_count(int64_t s) override { adam_->set_step_count(s); }
  std::vector<std::pair<std::string, std::vector<float>*>> rank_state(const float*) override {
    std::vector<std::pair<std::string, std::vector<float>*>> out;
    compressor_.add_rank_state(out);
    return out;
  }
  void rank_state_loaded(bool restored, float*) override { compressor_.loaded(restored); }
  bool set_betas(float beta1, float beta2) override {
    p_.beta1 = beta1;
    p_.beta2 = beta2;
    return adam_->set_betas(beta1, beta2);
  }

 private:
  AdamParams adam_params() const {
    AdamParams a;
    a.beta1 = p_.beta1;
    a.beta2 = p_.beta2;
    a.eps = p_.eps;
    a.weight_decay = p_.weight_decay;
    a.adam_w_mode = true;  // decay added to the update, as DeepSpeed's 1-bit Adam does
    a.bias_correction = p_.bias_correction;
    return a;
  }
  float* buffer(const char* name) {
    for (auto& [k, b] : adam_->state())
      if (k == name) return b->data();
    ZT_ASSERT(false, "OneBitAdam: Adam has no state ", name);
  }

  OneBitParams p_;
  std::unique_ptr<Optimizer> adam_;  // the warm-up, and the owner of m, v and the step count
  comm::Communicator* comm_ = nullptr;
  detail::Compressor compressor_;
  std::vector<float> mask_;  // exp_avg_mask: empty = none
  int64_t n_ = 0;
};

}  // namespace

std::unique_ptr<Optimizer> make_onebit_adam(const OneBitParams& p) {
  return std::make_unique<OneBitAdam>(p);
}

}  // namespace zt::optim
