// tests/optim/test_onebit.cpp: the 1-bit optimizers (optim/onebit_adam.cpp, zero_one_adam.cpp,
// onebit_lamb.cpp) under mpiexec at 1, 2 and 4 ranks:
//   - warm-up: OneBitAdam and ZeroOneAdam's first full steps give AdamW's bits, OneBitLamb's
//     warm-up Lamb's;
//   - each optimizer against a double-precision reference of its formulas (one rank: nothing is
//     compressed, so the reference is the plain math, including ZeroOneAdam's variance schedule,
//     local steps and syncs, and OneBitLamb's frozen trust ratio and factor);
//   - several ranks: the momentum after a compressed step is exactly the compressed all-reduce of
//     the ranks' local momenta (an independent CompressedAllReduce fed the same inputs, one piece
//     per tensor as DeepSpeed compresses them), and the
//     parameters stay identical on every rank.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "comm/communicator.h"
#include "comm/compressed.h"
#include "core/tensor.h"
#include "optim/optimizer.h"

namespace zt::optim {
namespace {

comm::Communicator& world() {
  static std::unique_ptr<comm::Communicator> c = comm::make_mpi_communicator();
  return *c;
}

std::vector<float> randn(int64_t n, uint32_t seed, float scale = 1.f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = d(gen);
  return v;
}

// Two tensors: a decayed matrix [0, 600) and a bias [600, 700) without decay.
const int64_t kN = 700;
const std::vector<Segment> kSegs = {{0, 600, true, 0}, {600, 100, false, 1}};

OneBitParams params() {
  OneBitParams p;
  p.weight_decay = 0.1f;
  p.freeze_step = 4;
  p.var_freeze_step = 9;
  p.var_update_scaler = 2;
  p.local_step_scaler = 2;
  p.local_step_clipper = 4;
  return p;
}

AdamParams adamw(const OneBitParams& p) {
  AdamParams a;
  a.beta1 = p.beta1;
  a.beta2 = p.beta2;
  a.eps = p.eps;
  a.weight_decay = p.weight_decay;
  a.adam_w_mode = true;
  a.bias_correction = p.bias_correction;
  return a;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<double>& b) {
  double d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, std::abs(a[i] - b[i]));
  return d;
}

float lr_at(int t) { return 0.01f * (1.f + 0.1f * static_cast<float>(t % 3)); }

// ---- warm-up equals Adam / Lamb bitwise (no communicator: one process's view) --------------------

TEST(OneBitWarmup, OneBitAdamIsAdamWBitwise) {
  OneBitParams p = params();
  p.freeze_step = 50;
  auto a = make_adam(adamw(p)), b = make_onebit_adam(p);
  a->init(kN);
  b->init(kN);
  std::vector<float> pa = randn(kN, 1), pb = pa;
  for (int t = 1; t <= 10; ++t) {
    auto g = randn(kN, 100 + t);
    EXPECT_FALSE(b->reduces_own_gradients());
    a->step(pa.data(), g.data(), kN, kSegs, lr_at(t));
    b->step(pb.data(), g.data(), kN, kSegs, lr_at(t));
  }
  EXPECT_EQ(pa, pb);
  EXPECT_EQ(*a->state()[0].second, *b->state()[0].second);
  EXPECT_EQ(*a->state()[1].second, *b->state()[1].second);
}

TEST(OneBitWarmup, ZeroOneAdamFullStepsAreAdamWBitwise) {
  OneBitParams p = params();
  p.var_update_scaler = 6;  // steps 1..6 all update the variance (interval 1)
  auto a = make_adam(adamw(p)), b = make_zero_one_adam(p);
  a->init(kN);
  b->init(kN);
  std::vector<float> pa = randn(kN, 2), pb = pa;
  for (int t = 1; t <= 6; ++t) {
    auto g = randn(kN, 200 + t);
    a->step(pa.data(), g.data(), kN, kSegs, lr_at(t));
    b->step(pb.data(), g.data(), kN, kSegs, lr_at(t));
  }
  EXPECT_EQ(pa, pb);
}

TEST(OneBitWarmup, OneBitLambIsLambBitwise) {
  OneBitParams p = params();
  p.freeze_step = 50;
  LambParams lp;
  lp.weight_decay = p.weight_decay;
  auto a = make_lamb(lp), b = make_onebit_lamb(p);
  a->init(kN);
  b->init(kN);
  std::vector<float> pa = randn(kN, 3), pb = pa;
  for (int t = 1; t <= 10; ++t) {
    auto g = randn(kN, 300 + t);
    a->step(pa.data(), g.data(), kN, kSegs, lr_at(t));
    b->step(pb.data(), g.data(), kN, kSegs, lr_at(t));
  }
  EXPECT_EQ(pa, pb);
}

// ---- double-precision references, one rank -------------------------------------------------------

struct RefAdam {  // shared by the OneBitAdam and ZeroOneAdam references
  std::vector<double> p, m, v;
  double b1, b2, eps, wd;
  explicit RefAdam(const std::vector<float>& p0, const OneBitParams& o)
      : p(p0.begin(), p0.end()), m(p0.size(), 0.0), v(p0.size(), 0.0), b1(o.beta1), b2(o.beta2),
        eps(o.eps), wd(o.weight_decay) {}
  double denom(size_t i, double bc2) const { return std::sqrt(v[i]) / std::sqrt(bc2) + eps; }
  // p <- p (1 - lr wd) - lr / bc1 m / denom, on the decayed segment with wd
  double apply(size_t i, double lr, double bc1, double bc2) {
    const double w = i < 600 ? wd : 0.0;
    const double np = p[i] * (1 - lr * w) - lr / bc1 * m[i] / denom(i, bc2);
    const double d = np - p[i];
    p[i] = np;
    return d;
  }
};

TEST(OneBitReference, OneBitAdam) {
  ASSERT_EQ(world().world(), 1) << "a one-rank reference (the multi-rank ctest entries filter it out)";
  const OneBitParams o = params();
  auto opt = make_onebit_adam(o);
  opt->init(kN);
  opt->set_communicator(&world());
  std::vector<float> p = randn(kN, 4);
  RefAdam r(p, o);
  for (int t = 1; t <= 10; ++t) {
    EXPECT_EQ(opt->reduces_own_gradients(), t > o.freeze_step) << t;
    auto g = randn(kN, 400 + t);
    opt->step(p.data(), g.data(), kN, kSegs, lr_at(t));
    const bool frozen = t > o.freeze_step;
    const double bc1 = 1 - std::pow(r.b1, t), bc2 = 1 - std::pow(r.b2, frozen ? o.freeze_step : t);
    for (size_t i = 0; i < p.size(); ++i) {
      r.m[i] = r.b1 * r.m[i] + (1 - r.b1) * g[i];
      if (!frozen) r.v[i] = r.b2 * r.v[i] + (1 - r.b2) * g[i] * g[i];
      r.apply(i, lr_at(t), bc1, bc2);
    }
    EXPECT_LT(max_abs_diff(p, r.p), 2e-6) << "step " << t;
  }
}

TEST(OneBitReference, ZeroOneAdamScheduleLocalStepsAndSyncs) {
  ASSERT_EQ(world().world(), 1) << "a one-rank reference (the multi-rank ctest entries filter it out)";
  const OneBitParams o = params();  // kappa 2, var_freeze_step 9, local_step_scaler 2, clipper 4
  auto opt = make_zero_one_adam(o);
  opt->init(kN);
  opt->set_communicator(&world());
  std::vector<float> p = randn(kN, 5);
  RefAdam r(p, o);
  std::vector<double> u(kN, 0.0);
  // Hand-checked schedule: variance interval 1 for 2 full steps (t = 1, 2), then 2 (t = 4, 6),
  // then 4 (t = 8); frozen from t = 10; the local interval doubles every 2 frozen steps (DeepSpeed
  // counts steps, not syncs): 1 for t = 10, 11 (both sync), 2 for 12, 13 (12 syncs), then 4, the
  // clipper (16, 20 sync).
  const std::vector<int> full = {1, 2, 4, 6, 8};
  const std::vector<int> syncs = {10, 11, 12, 16, 20};
  int v_updates = 0;
  double lrs = 0;
  for (int t = 1; t <= 20; ++t) {
    const bool is_full = std::find(full.begin(), full.end(), t) != full.end();
    EXPECT_EQ(opt->reduces_own_gradients(), !is_full) << "step " << t;
    auto g = randn(kN, 500 + t);
    const float lr = lr_at(t);
    opt->step(p.data(), g.data(), kN, kSegs, lr);
    if (is_full) ++v_updates;
    const bool frozen = t > o.var_freeze_step;
    const double bc1 = 1 - std::pow(r.b1, t), bc2 = 1 - std::pow(r.b2, v_updates);
    for (size_t i = 0; i < p.size(); ++i) {
      if (is_full) r.v[i] = r.b2 * r.v[i] + (1 - r.b2) * g[i] * g[i];
      r.m[i] = r.b1 * r.m[i] + (1 - r.b1) * g[i];
      const double d = r.apply(i, lr, bc1, bc2);
      if (frozen) u[i] += d;
    }
    if (frozen) lrs += lr;
    if (std::find(syncs.begin(), syncs.end(), t) != syncs.end()) {
      for (size_t i = 0; i < p.size(); ++i) {
        const double den = r.denom(i, bc2);
        r.p[i] -= u[i];
        const double ud = u[i] * den;
        r.m[i] = -ud * bc1 / lrs;
        r.p[i] += ud / den;
        u[i] = 0;
      }
      lrs = 0;
    }
    EXPECT_LT(max_abs_diff(p, r.p), 5e-6) << "step " << t;
    std::vector<float> m = *opt->state()[0].second;
    // m after a sync comes from u, a float sum of parameter changes (p_new - p: the change
    // keeps ~1e-6 of its own size), hence the looser bound on m.
    EXPECT_LT(max_abs_diff(m, r.m), 1e-4) << "step " << t;
  }
}

TEST(OneBitReference, OneBitLamb) {
  ASSERT_EQ(world().world(), 1) << "a one-rank reference (the multi-rank ctest entries filter it out)";
  OneBitParams o = params();
  o.freeze_step = 5;
  auto opt = make_onebit_lamb(o);
  opt->init(kN);
  opt->set_communicator(&world());
  std::vector<float> p = randn(kN, 6);
  const double b1 = o.beta1, b2 = o.beta2, eps = o.eps, wd = o.weight_decay;
  std::vector<double> rp(p.begin(), p.end()), m(kN, 0), v(kN, 0), vf(kN, 0);
  const std::vector<std::pair<size_t, size_t>> tens = {{0, 600}, {600, 700}};
  double coeff_freeze[2] = {0, 0}, last_factor[2] = {1, 1};
  for (int t = 1; t <= 12; ++t) {
    EXPECT_EQ(opt->reduces_own_gradients(), t > o.freeze_step) << t;
    auto g = randn(kN, 600 + t);
    const double lr = lr_at(t);
    opt->step(p.data(), g.data(), kN, kSegs, lr_at(t));
    const bool frozen = t > o.freeze_step;
    const double bc1 = 1 - std::pow(b1, t), bc2 = 1 - std::pow(b2, frozen ? o.freeze_step : t),
                 bc2f = 1 - std::pow(b2, t);
    for (int j = 0; j < 2; ++j) {
      const double w = j == 0 ? wd : 0.0;
      auto [lo, hi] = tens[j];
      double w2 = 0, u2 = 0, p2 = 0, fmax = 0;
      std::vector<double> upd(hi - lo);
      for (size_t i = lo; i < hi; ++i) {
        const double m_last = m[i];
        m[i] = b1 * m[i] + (1 - b1) * g[i];
        if (!frozen) v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
        const double den = std::sqrt(v[i] / bc2) + eps;
        const double prelim = m[i] / bc1 / den;
        upd[i - lo] = prelim + w * rp[i];
        w2 += rp[i] * rp[i];
        u2 += upd[i - lo] * upd[i - lo];
        p2 += prelim * prelim;
        if (frozen) {
          const double gr = (m[i] - b1 * m_last) / (1 - b1);
          vf[i] = b2 * vf[i] + (1 - b2) * gr * gr;
          fmax = std::max(fmax, den / (std::sqrt(vf[i] / bc2f) + eps));
        }
      }
      double coeff;
      if (!frozen) {
        coeff = std::clamp(std::sqrt(w2) / std::sqrt(u2), double(o.min_coeff), double(o.max_coeff));
        if (coeff != 1.0) coeff_freeze[j] = o.coeff_beta * coeff_freeze[j] + (1 - o.coeff_beta) * coeff;
        if (t == o.freeze_step) vf = v;
      } else {
        double f = fmax;
        if (w > 0) {
          const double ratio = std::min(1.0, std::sqrt(p2) / std::sqrt(u2));
          f = f * ratio + (1 - ratio);
        }
        f = std::clamp(f, double(o.factor_min), double(o.factor_max));
        f = std::min(f, last_factor[j] * (1 + o.factor_threshold));
        f = std::max(f, last_factor[j] * (1 - o.factor_threshold));
        last_factor[j] = f;
        coeff = coeff_freeze[j] * f;
      }
      for (size_t i = lo; i < hi; ++i) rp[i] -= lr * coeff * upd[i - lo];
    }
    EXPECT_LT(max_abs_diff(p, rp), 2e-5) << "step " << t;
  }
}

// ---- several ranks: the compressed momentum is exactly the compressed all-reduce -----------------

TEST(OneBitMpi, OneBitAdamMomentumIsTheCompressedAverage) {
  comm::Communicator& c = world();
  const OneBitParams o = params();
  auto opt = make_onebit_adam(o);
  opt->init(kN);
  opt->set_communicator(&c);
  // One piece per tensor (kSegs' two), as OneBitAdam compresses: fed the same inputs, it has the
  // same error buffers.
  comm::CompressedAllReduce check(c, std::vector<int64_t>{600, 100});
  std::vector<float> p = randn(kN, 7);     // the same start on every rank
  for (int t = 1; t <= 10; ++t) {
    // warm-up: the engine would average; here every rank uses the same averaged gradient
    auto g = t <= o.freeze_step ? randn(kN, 700 + t) : randn(kN, 700 + t + 1000 * c.rank());
    std::vector<float> expect = *opt->state()[0].second;
    for (int64_t i = 0; i < kN; ++i)
      expect[i] = std::fma(o.beta1, expect[i], (1.f - o.beta1) * g[i]);
    opt->step(p.data(), g.data(), kN, kSegs, lr_at(t));
    if (t > o.freeze_step && c.world() > 1) {
      check.run(expect.data());
      EXPECT_EQ(*opt->state()[0].second, expect) << "step " << t;
    }
  }
  Tensor mine = Tensor::from_vector(p, {kN}), root = mine.clone();
  c.broadcast(root, 0)->wait();
  EXPECT_EQ(mine.to_vector(), root.to_vector()) << "parameters differ between ranks";
}

// ZeroOneAdam and OneBitLamb: with different local gradients on each rank, the parameters stay
// identical on every rank through 1-bit steps, local steps and syncs.
TEST(OneBitMpi, ParametersStayIdenticalOnEveryRank) {
  comm::Communicator& c = world();
  for (int which = 0; which < 2; ++which) {
    OneBitParams o = params();
    o.freeze_step = 3;
    auto opt = which == 0 ? make_zero_one_adam(o) : make_onebit_lamb(o);
    opt->init(kN);
    opt->set_communicator(&c);
    std::vector<float> p = randn(kN, 8);
    for (int t = 1; t <= 20; ++t) {
      // An averaged gradient when the engine would all-reduce, a local one otherwise.
      const bool local = opt->reduces_own_gradients();
      auto g = randn(kN, 800 + t + (local ? 1000 * c.rank() : 0));
      opt->step(p.data(), g.data(), kN, kSegs, lr_at(t));
      // (ZeroOneAdam between syncs: local steps drift apart by design; compare at syncs only)
    }
    // step 20 is a sync for ZeroOneAdam (see the schedule test), and OneBitLamb syncs every step
    Tensor mine = Tensor::from_vector(p, {kN}), root = mine.clone();
    c.broadcast(root, 0)->wait();
    const std::vector<float> a = mine.to_vector(), b = root.to_vector();
    double d = 0;
    for (size_t i = 0; i < a.size(); ++i) d = std::max(d, double(std::abs(a[i] - b[i])));
    EXPECT_LT(d, 1e-6) << opt->name() << ": parameters differ between ranks";
    for (float x : p) EXPECT_TRUE(std::isfinite(x));
  }
}

// exp_avg_mask (DeepSpeed's, set by the training program): entries whose gradient is always exactly
// zero keep a zero momentum and their weights once compression starts. Without it, 1-bit
// compression (which cannot send a zero) puts its error into them on 2+ ranks, and they drift.
TEST(OneBitMpi, ExpAvgMaskKeepsAlwaysZeroEntriesAtZero) {
  comm::Communicator& c = world();
  const int64_t lo = 550, hi = 600;  // the last 50 entries of tensor 0 never get a gradient
  for (int which = 0; which < 2; ++which) {
    for (bool masked : {true, false}) {
      OneBitParams o = params();
      o.weight_decay = 0.f;  // so that only the momentum can move the zero entries
      o.freeze_step = 3;
      auto opt = which == 0 ? make_onebit_adam(o) : make_onebit_lamb(o);
      opt->init(kN);
      opt->set_communicator(&c);
      std::vector<float> mask(kN, 1.f);
      for (int64_t i = lo; i < hi; ++i) mask[static_cast<size_t>(i)] = 0.f;
      if (masked) opt->set_exp_avg_mask(mask);
      std::vector<float> p = randn(kN, 9);
      const std::vector<float> p0 = p;
      for (int t = 1; t <= 12; ++t) {
        const bool local = opt->reduces_own_gradients();
        auto g = randn(kN, 900 + t + (local ? 1000 * c.rank() : 0));
        for (int64_t i = lo; i < hi; ++i) g[static_cast<size_t>(i)] = 0.f;
        opt->step(p.data(), g.data(), kN, kSegs, lr_at(t));
      }
      const std::vector<float>& m = *opt->state()[0].second;  // exp_avg
      double moved = 0, m_max = 0, m_rest = 0;
      for (int64_t i = 0; i < kN; ++i) {
        const size_t k = static_cast<size_t>(i);
        if (i >= lo && i < hi) {
          moved = std::max(moved, double(std::abs(p[k] - p0[k])));
          m_max = std::max(m_max, double(std::abs(m[k])));
        } else {
          m_rest = std::max(m_rest, double(std::abs(m[k])));
        }
      }
      SCOPED_TRACE(opt->name() + (masked ? " with the mask" : " without the mask"));
      EXPECT_GT(m_rest, 0.0) << "the other entries train";
      if (masked) {
        EXPECT_EQ(m_max, 0.0);
        EXPECT_EQ(moved, 0.0);
      } else if (c.world() > 1) {
        EXPECT_GT(m_max, 0.0) << "compression error reaches the always-zero entries";
        EXPECT_GT(moved, 0.0);
      }
    }
  }
  OneBitParams o = params();
  auto onebit = make_onebit_adam(o);
  onebit->init(kN);
  EXPECT_THROW(onebit->set_exp_avg_mask(std::vector<float>(kN - 1, 1.f)), zt::Error);  // size
  auto zoa = make_zero_one_adam(o);
  zoa->init(kN);
  EXPECT_THROW(zoa->set_exp_avg_mask(std::vector<float>(kN, 1.f)), zt::Error);
  auto adam = make_adam(adamw(o));
  adam->init(kN);
  EXPECT_THROW(adam->set_exp_avg_mask(std::vector<float>(kN, 1.f)), zt::Error);
}

}  // namespace
}  // namespace zt::optim
