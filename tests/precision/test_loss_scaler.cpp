// tests/precision/test_loss_scaler.cpp: LossScaler against DeepSpeed's DynamicLossScaler, with the
// expected trajectories worked out by hand, step by step, from the rule of
// deepspeed/runtime/fp16/loss_scaler.py (DynamicLossScaler.update_scale), reproduced here:
//
//   if overflow:
//       if delayed_shift == 1 or cur_hysteresis == 1:
//           if cur_scale == min_scale and raise_error_at_min_scale: raise Exception(...)
//           cur_scale = max(cur_scale / 2, min_scale)
//       else:
//           cur_hysteresis -= 1
//       last_overflow_iter = cur_iter
//   else:
//       if consecutive_hysteresis: cur_hysteresis = delayed_shift
//       stable_interval = (cur_iter - last_overflow_iter) - 1
//       if stable_interval > 0 and stable_interval % scale_window == 0:
//           if not consecutive_hysteresis: cur_hysteresis = delayed_shift
//           cur_scale *= 2
//   cur_iter += 1
//
// (delayed_shift = fp16.hysteresis, scale_window = fp16.loss_scale_window, last_overflow_iter
// starts at -1.) Older DeepSpeed releases raised when (cur_iter - last_overflow_iter) %
// scale_window == 0: one good step earlier (in table 1: at it 3 instead of 4, at it 10 instead of
// 11). The tables below follow today's rule; the comment on each row says which branch fired.
#include "precision/loss_scaler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

namespace zt::precision {
namespace {

struct Row {
  bool overflow;
  double scale;     // after the update
  int hysteresis;   // counter after the update
  const char* why;  // the branch of update_scale that fired
};

void run_table(LossScaler& s, const std::vector<Row>& rows, int64_t first_it = 0) {
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    const auto u = s.update(r.overflow);
    SCOPED_TRACE("it " + std::to_string(first_it + static_cast<int64_t>(i)) + ": " + r.why);
    EXPECT_EQ(u.iteration, first_it + static_cast<int64_t>(i));
    EXPECT_EQ(u.skipped, r.overflow);
    EXPECT_EQ(s.scale(), r.scale);
    EXPECT_EQ(u.scale_after, r.scale);
    EXPECT_EQ(s.hysteresis(), r.hysteresis);
  }
}

LossScalerOptions dyn(int power, int64_t window, int hysteresis, bool consecutive,
                      double min_scale = 1.0) {
  LossScalerOptions o;
  o.loss_scale = 0.0;
  o.initial_scale_power = power;
  o.loss_scale_window = window;
  o.hysteresis = hysteresis;
  o.consecutive_hysteresis = consecutive;
  o.min_loss_scale = min_scale;
  return o;
}

constexpr bool O = true;   // overflow
constexpr bool G = false;  // good step

// Table 1: window 4, hysteresis 2, consecutive_hysteresis off, initial 2^4.
const std::vector<Row> kTable1 = {
    {G, 16, 2, "stable = 0-(-1)-1 = 0"},
    {G, 16, 2, "stable 1"},
    {G, 16, 2, "stable 2"},
    {G, 16, 2, "stable 3 (the old rule would raise here)"},
    {G, 32, 2, "stable 4 % 4 == 0: raise, refill hysteresis"},
    {O, 32, 1, "hysteresis 2 > 1: absorbed, 2 -> 1; last = 5"},
    {O, 16, 1, "hysteresis == 1: halve; last = 6"},
    {G, 16, 1, "stable 0 (not consecutive: the counter stays 1)"},
    {G, 16, 1, "stable 1"},
    {G, 16, 1, "stable 2"},
    {G, 16, 1, "stable 3"},
    {G, 32, 2, "stable 4: raise, refill"},
    {O, 32, 1, "absorbed 2 -> 1; last = 12"},
    {G, 32, 1, "stable 0: no refill without consecutive_hysteresis"},
    {O, 16, 1, "hysteresis == 1: halve; last = 14"},
    {O, 8, 1, "halve again; last = 15"},
    {G, 8, 1, "stable 0"},
    {G, 8, 1, "stable 1"},
    {G, 8, 1, "stable 2"},
    {G, 8, 1, "stable 3"},
    {G, 16, 2, "stable 4: raise, refill"},
    {G, 16, 2, "stable 5"},
    {G, 16, 2, "stable 6"},
    {G, 16, 2, "stable 7"},
    {G, 32, 2, "stable 8 % 4 == 0: raise"},
};

// Table 2: the same steps with consecutive_hysteresis on: every good step refills the counter, so
// the overflow at it 14 (one good step after the one at 12) is absorbed instead of halving.
const std::vector<Row> kTable2 = {
    {G, 16, 2, "stable 0"},
    {G, 16, 2, "stable 1"},
    {G, 16, 2, "stable 2"},
    {G, 16, 2, "stable 3"},
    {G, 32, 2, "stable 4: raise"},
    {O, 32, 1, "absorbed 2 -> 1; last = 5"},
    {O, 16, 1, "hysteresis == 1: halve; last = 6"},
    {G, 16, 2, "good step refills to 2; stable 0"},
    {G, 16, 2, "stable 1"},
    {G, 16, 2, "stable 2"},
    {G, 16, 2, "stable 3"},
    {G, 32, 2, "stable 4: raise"},
    {O, 32, 1, "absorbed 2 -> 1; last = 12"},
    {G, 32, 2, "refill; stable 0"},
    {O, 32, 1, "absorbed again 2 -> 1; last = 14"},
    {O, 16, 1, "hysteresis == 1: halve; last = 15"},
    {G, 16, 2, "refill; stable 0"},
    {G, 16, 2, "stable 1"},
    {G, 16, 2, "stable 2"},
    {G, 16, 2, "stable 3"},
    {G, 32, 2, "stable 4: raise"},
    {G, 32, 2, "stable 5"},
    {G, 32, 2, "stable 6"},
    {G, 32, 2, "stable 7"},
    {G, 64, 2, "stable 8: raise"},
};

TEST(PrecisionLossScaler, Table1WindowFourHysteresisTwo) {
  LossScaler s(dyn(4, 4, 2, false));
  EXPECT_TRUE(s.dynamic());
  EXPECT_EQ(s.scale(), 16.0);
  run_table(s, kTable1);
  EXPECT_EQ(s.iteration(), 25);
  EXPECT_EQ(s.skipped_steps(), 5);
  EXPECT_EQ(s.last_overflow_iteration(), 15);
}

TEST(PrecisionLossScaler, Table2ConsecutiveHysteresis) {
  LossScaler s(dyn(4, 4, 2, true));
  run_table(s, kTable2);
  EXPECT_EQ(s.skipped_steps(), 5);
}

// Table 3: hysteresis 1, window 2, min_loss_scale 2, initial 2^3; the run ends at the minimum.
TEST(PrecisionLossScaler, Table3MinimumScaleIsFatal) {
  LossScaler s(dyn(3, 2, 1, false, 2.0));
  run_table(s, {
                   {O, 4, 1, "delayed_shift == 1: halve; last = 0"},
                   {O, 2, 1, "halve to the minimum; last = 1"},
                   {G, 2, 1, "stable 0"},
                   {G, 2, 1, "stable 1"},
                   {G, 4, 1, "stable 2 % 2 == 0: raise"},
                   {O, 2, 1, "halve; last = 5"},
               });
  // it 6: overflow with cur_scale == min_scale: DeepSpeed raises "Current loss scale already at
  // minimum - cannot decrease scale anymore. Exiting run." before touching any state.
  try {
    s.update(true);
    FAIL() << "expected LossScaleError";
  } catch (const LossScaleError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("step 7"), std::string::npos) << m;
    EXPECT_NE(m.find("minimum 2"), std::string::npos) << m;
    EXPECT_NE(m.find("fp16.min_loss_scale"), std::string::npos) << m;
    EXPECT_NE(m.find("cannot decrease scale anymore"), std::string::npos) << m;
    EXPECT_NE(m.find("4 of 7 steps overflowed"), std::string::npos) << m;
    EXPECT_NE(m.find("learning rate"), std::string::npos) << m;  // says what to do
  }
  EXPECT_EQ(s.scale(), 2.0);
  EXPECT_EQ(s.iteration(), 6);
  EXPECT_EQ(s.skipped_steps(), 3);  // it 0, 1, 5: the fatal one is not recorded
  EXPECT_EQ(s.last_overflow_iteration(), 5);
  // Reaching the minimum by clamping counts too: 4 -> max(2, 3) = 3, then fatal.
  LossScaler c(dyn(2, 10, 1, false, 3.0));
  EXPECT_EQ(c.update(true).scale_after, 3.0);
  EXPECT_THROW(c.update(true), LossScaleError);
  EXPECT_THROW(c.update(true), Error);  // a zt::Error, caught at the top like every other
}

TEST(PrecisionLossScaler, AtMinimumWithoutErrorKeepsSkipping) {
  // raise_error_at_min_scale = false (DeepSpeed's DynamicLossScaler argument; its FP16_Optimizer
  // behaves this way too): max(min / 2, min) = min, the steps keep being skipped.
  LossScalerOptions o = dyn(1, 2, 1, false, 1.0);
  o.raise_error_at_min_scale = false;
  LossScaler s(o);
  EXPECT_EQ(s.update(true).scale_after, 1.0);
  for (int i = 0; i < 5; ++i) {
    const auto u = s.update(true);
    EXPECT_EQ(u.event, ScaleUpdate::Event::kLowered);
    EXPECT_EQ(u.scale_after, 1.0);
  }
  EXPECT_EQ(s.skipped_steps(), 6);
  EXPECT_NE(s.update(true).message().find("stays at its minimum 1"), std::string::npos);
}

TEST(PrecisionLossScaler, WindowOfOneRaisesEveryOtherStepAfterAnOverflow) {
  // stable_interval > 0 excludes the first good step after an overflow (and the very first step).
  LossScaler s(dyn(4, 1, 1, false));
  run_table(s, {
                   {G, 16, 1, "stable 0: no raise"},
                   {G, 32, 1, "stable 1"},
                   {G, 64, 1, "stable 2"},
                   {O, 32, 1, "halve; last = 3"},
                   {G, 32, 1, "stable 0"},
                   {G, 64, 1, "stable 1"},
               });
}

// DeepSpeed's own tests (tests/unit/runtime/half_precision/test_dynamic_loss_scale.py) replayed.
TEST(PrecisionLossScaler, DeepSpeedUnitTestSequences) {
  {  // test_no_overflow: window 2, 10 good steps: 2^8 doubles after steps 2, 4, 6, 8 (0-based).
    LossScaler s(dyn(8, 2, 2, false));
    for (int i = 0; i < 10; ++i) {
      s.update(false);
      EXPECT_EQ(s.scale(), std::ldexp(1.0, 8 + i / 2)) << i;
    }
  }
  {  // test_some_overflow: hysteresis 1, window 2: two overflows, window + 1 good steps, one more.
    LossScaler s(dyn(8, 2, 1, false));
    s.update(true);
    s.update(true);
    EXPECT_EQ(s.scale(), 64.0);
    for (int i = 0; i < 3; ++i) s.update(false);
    EXPECT_EQ(s.scale(), 128.0);
    s.update(true);
    EXPECT_EQ(s.scale(), 64.0);
    EXPECT_EQ(s.iteration(), 6);
  }
  {  // TestZeroStage0Hysteresis.test_hysteresis: hysteresis 3, four overflows.
    LossScaler s(dyn(8, 1000, 3, false));
    std::vector<double> scales;
    for (int i = 0; i < 4; ++i) scales.push_back(s.update(true).scale_after);
    EXPECT_EQ(scales, (std::vector<double>{256, 256, 128, 64}));
  }
  {  // test_consecutive_hysteresis: hysteresis 2, (overflow, good) x 4: the scale never moves.
    LossScaler s(dyn(8, 1000, 2, true));
    for (int i = 0; i < 4; ++i) {
      s.update(true);
      s.update(false);
    }
    EXPECT_EQ(s.scale(), 256.0);
  }
}

TEST(PrecisionLossScaler, StaticNeverChanges) {
  LossScalerOptions o;
  o.loss_scale = 128.0;
  LossScaler s(o);
  EXPECT_FALSE(s.dynamic());
  for (int i = 0; i < 3000; ++i) {
    const bool overflow = i % 7 == 0;
    const auto u = s.update(overflow);
    ASSERT_EQ(u.scale_after, 128.0);
    ASSERT_EQ(u.event, ScaleUpdate::Event::kKept);
    ASSERT_EQ(u.skipped, overflow);
  }
  EXPECT_EQ(s.skipped_steps(), 429);  // i = 0, 7, ..., 2996
  EXPECT_EQ(s.iteration(), 3000);
  EXPECT_NE(s.update(true).message().find("static loss scale 128"), std::string::npos);
  const LossScaler none = LossScaler::none();
  EXPECT_EQ(none.scale(), 1.0);
  EXPECT_FALSE(none.dynamic());
  EXPECT_EQ(LossScaler::fixed(4096).scale(), 4096.0);
}

TEST(PrecisionLossScaler, DefaultsAreTheConfigDefaults) {
  LossScaler s;  // dynamic, 2^16 (not DynamicLossScaler's class default 2^32), window 1000
  EXPECT_TRUE(s.dynamic());
  EXPECT_EQ(s.scale(), 65536.0);
  EXPECT_EQ(s.hysteresis(), 2);
  for (int i = 0; i < 1000; ++i) s.update(false);
  EXPECT_EQ(s.scale(), 65536.0);  // stable reaches 1000 at it 1000
  s.update(false);
  EXPECT_EQ(s.scale(), 131072.0);
}

TEST(PrecisionLossScaler, ConfigErrorsNameTheKey) {
  auto expect_key = [](LossScalerOptions o, const char* key) {
    try {
      LossScaler s(o);
      ADD_FAILURE() << "no error for " << key;
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
    }
  };
  LossScalerOptions o;
  o.hysteresis = 0;
  expect_key(o, "fp16.hysteresis");
  o = {};
  o.loss_scale_window = 0;
  expect_key(o, "fp16.loss_scale_window");
  o = {};
  o.min_loss_scale = 0.0;
  expect_key(o, "fp16.min_loss_scale");
  o = {};
  o.initial_scale_power = 2;
  o.min_loss_scale = 8.0;  // above 2^2
  expect_key(o, "fp16.min_loss_scale");
  o = {};
  o.loss_scale = -1.0;
  expect_key(o, "fp16.loss_scale");
  o = {};
  o.initial_scale_power = 200;
  expect_key(o, "fp16.initial_scale_power");
  EXPECT_THROW(LossScaler::fixed(0.0), ConfigError);
}

TEST(PrecisionLossScaler, Messages) {
  LossScaler s(dyn(16, 2, 2, false));
  auto u = s.update(true);
  EXPECT_EQ(u.message(),
            "step 1: gradient overflow, skipping it; loss scale stays 65536, hysteresis 2 -> 1 "
            "(skipped 1 of 1 steps)");
  u = s.update(true);
  EXPECT_EQ(u.message(),
            "step 2: gradient overflow, skipping it; loss scale 65536 -> 32768 (skipped 2 of 2 "
            "steps)");
  s.update(false);
  s.update(false);
  u = s.update(false);
  EXPECT_EQ(u.event, ScaleUpdate::Event::kRaised);
  EXPECT_EQ(u.message(), "step 5: no overflow in the window; loss scale 32768 -> 65536");
  EXPECT_FALSE(u.log);  // only skips are rate-limited log events
}

TEST(PrecisionLogLimiter, FirstNThenPowersOfTwo) {
  LogLimiter l(10);
  std::vector<int64_t> printed;
  for (int i = 1; i <= 1000; ++i)
    if (l.tick()) printed.push_back(i);
  EXPECT_EQ(printed,
            (std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 16, 32, 64, 128, 256, 512}));
  EXPECT_EQ(l.count(), 1000);
  EXPECT_FALSE(LogLimiter::should_log(0, 10));
  EXPECT_TRUE(LogLimiter::should_log(1024, 0));
  EXPECT_FALSE(LogLimiter::should_log(3, 0));
}

TEST(PrecisionLossScaler, SkipLogIsRateLimited) {
  LossScalerOptions o = dyn(4, 1000, 1, false);
  o.raise_error_at_min_scale = false;
  o.log_first_skips = 3;
  LossScaler s(o);
  std::vector<int64_t> logged;
  for (int i = 0; i < 100; ++i) {
    const auto u = s.update(true);
    if (u.log) logged.push_back(u.skipped_total);
    EXPECT_EQ(u.skipped_total, i + 1);
  }
  EXPECT_EQ(logged, (std::vector<int64_t>{1, 2, 3, 4, 8, 16, 32, 64}));
  EXPECT_FALSE(s.update(false).log);
}

TEST(PrecisionLossScaler, ResumeFromStateContinuesTheSameTrajectory) {
  // Table 1, interrupted after 13 steps (inside a hysteresis episode), resumed in a new scaler.
  LossScaler a(dyn(4, 4, 2, false));
  run_table(a, {kTable1.begin(), kTable1.begin() + 13});
  const LossScalerState st = a.state();
  EXPECT_TRUE(st.dynamic);
  EXPECT_EQ(st.iteration, 13);
  EXPECT_EQ(st.last_overflow_iteration, 12);
  EXPECT_EQ(st.hysteresis, 1);
  LossScaler b(dyn(4, 4, 2, false));
  b.load_state(st);
  EXPECT_EQ(b.state(), st);
  run_table(b, {kTable1.begin() + 13, kTable1.end()}, 13);
  EXPECT_EQ(b.skipped_steps(), 5);

  // Bad states are CheckpointErrors; a static config keeps its own scale.
  LossScalerState bad = st;
  bad.skipped_steps = 20;
  EXPECT_THROW(b.load_state(bad), CheckpointError);
  bad = st;
  bad.scale = 0.0;
  EXPECT_THROW(b.load_state(bad), CheckpointError);
  bad = st;
  bad.last_overflow_iteration = 13;
  EXPECT_THROW(b.load_state(bad), CheckpointError);
  LossScaler fixed = LossScaler::fixed(64);
  fixed.load_state(st);
  EXPECT_EQ(fixed.scale(), 64.0);
  EXPECT_EQ(fixed.iteration(), 13);
}

// update(GradCheck) is update(bool) on the check's flag: the device path shares the host rule.
TEST(PrecisionLossScaler, UpdateFromAGradCheck) {
  LossScalerOptions o;
  o.hysteresis = 1;
  LossScaler a(o), b(o);
  for (bool overflow : {false, true, false, true, true, false}) {
    GradCheck c;
    c.overflow = overflow;
    const ScaleUpdate ua = a.update(c), ub = b.update(overflow);
    EXPECT_EQ(ua.event, ub.event);
    EXPECT_EQ(a.state(), b.state());
  }
  EXPECT_EQ(a.scale(), std::ldexp(1.0, kDefaultInitialScalePower - 3));
}

}  // namespace
}  // namespace zt::precision
