// tests/zero/test_device_config.cpp: the `device` key (zero/settings.h) on whatever machine runs
// the tests. Without a GPU (or in a CPU-only build): `device: cuda` is one ConfigError naming the
// key and saying why, `auto` picks the CPU. With one: `cuda` and `auto` pick cuda:(local rank mod
// GPUs), and what is not yet on CUDA is refused under `cuda` and sends `auto` to the CPU with a
// notice. Unit tests: they run everywhere, each checking the branch of the machine it is on.
#include <gtest/gtest.h>

#include <string>

#include "core/cuda/device.h"
#include "core/error.h"
#include "io/config.h"
#include "zero/settings.h"

namespace zt {
namespace {

io::Config config(const std::string& text) {
  io::Config c = io::parse_config_text(text, "test.yaml");
  io::resolve_batch_sizes(c, 1);
  return c;
}

std::string refusal(const io::Config& c) {
  try {
    zero::check_supported(c);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(DeviceConfig, CudaWithoutAGpuIsOneClearError) {
  if (cuda::device_count() > 0) GTEST_SKIP() << "a GPU is visible: " << cuda::device_summary();
  const std::string why = refusal(config("device: cuda\n"));
  EXPECT_NE(why.find("`device`"), std::string::npos) << why;  // names the key
  // ...and the reason: this build, or this machine.
  const bool built = cuda::device_summary() != "built without CUDA";
  EXPECT_NE(why.find(built ? "no GPU" : "built without CUDA"), std::string::npos) << why;
  EXPECT_NE(why.find("device: cpu"), std::string::npos) << "says what to set: " << why;
}

TEST(DeviceConfig, AutoAndCpuPickTheCpuWithoutAGpu) {
  if (cuda::device_count() > 0) GTEST_SKIP() << "a GPU is visible: " << cuda::device_summary();
  for (const char* text : {"device: auto\n", "device: cpu\n", "{}\n"}) {
    const io::Config c = config(text);
    EXPECT_EQ(refusal(c), "") << text;
    EXPECT_EQ(zero::resolve_device(c, 0), Device::cpu()) << text;
    EXPECT_EQ(zero::resolve_device(c, 3), Device::cpu()) << text;
  }
  // The engine settings stay on the CPU until the trainer sets the resolved device.
  EXPECT_EQ(zero::engine_settings(config("device: auto\n")).device, Device::cpu());
}

TEST(DeviceConfig, CudaPicksTheLocalRanksGpu) {
  const int n = cuda::device_count();
  if (n == 0) GTEST_SKIP() << "no GPU: " << cuda::device_summary();
  const io::Config c = config("device: cuda\n");
  EXPECT_EQ(refusal(c), "");
  for (int local = 0; local < 2 * n + 1; ++local)
    EXPECT_EQ(zero::resolve_device(c, local), Device::cuda(local % n)) << "local rank " << local;
  EXPECT_EQ(zero::resolve_device(config("device: auto\n"), 1), Device::cuda(1 % n));
  EXPECT_EQ(zero::resolve_device(config("device: cpu\n"), 0), Device::cpu());
}

TEST(DeviceConfig, WhatIsNotYetOnCudaIsNamed) {
  const char* stage3 = "device: cuda\nzero_optimization: {stage: 3}\n";
  const char* offload =
      "device: cuda\nzero_optimization: {stage: 2, offload_optimizer: {device: cpu}}\n";
  EXPECT_STREQ(zero::not_on_cuda(config(stage3)), "zero_optimization.stage 3");
  EXPECT_STREQ(zero::not_on_cuda(config(offload)), "zero_optimization.offload_optimizer");
  EXPECT_EQ(zero::not_on_cuda(config("zero_optimization: {stage: 2}\n")), nullptr);
  if (cuda::device_count() == 0) return;  // refused earlier, for want of a GPU (test above)
  const std::string why = refusal(config(stage3));
  EXPECT_NE(why.find("not yet on CUDA"), std::string::npos) << why;
  EXPECT_NE(why.find("`device`"), std::string::npos) << why;
  // auto runs such a config on the CPU and says so.
  const io::Config a = config("zero_optimization: {stage: 3}\n");
  EXPECT_EQ(zero::resolve_device(a, 0), Device::cpu());
  bool noted = false;
  for (const std::string& n : zero::config_notices(a))
    noted = noted || n.find("device: auto runs on the CPU") != std::string::npos;
  EXPECT_TRUE(noted);
}

}  // namespace
}  // namespace zt
