// tests/apps/test_launch.cpp: the pure parts of `zerotrain launch` (apps/zerotrain/launch.h):
// DeepSpeed's hostfile and --include/--exclude syntax, --num_nodes/--num_gpus, the environment
// file and forwarded variables, shell words, and the mpirun command line built from them.
#include "apps/zerotrain/launch.h"
#include "core/error.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace zt::app {
namespace {

using Strings = std::vector<std::string>;

// The error message of `f()`, which must throw ConfigError.
template <typename F>
std::string config_error(F&& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no ConfigError";
  return "";
}

Resources two_workers() { return parse_hostfile("worker-0 slots=4\nworker-1 slots=4\n", "hf"); }

std::string layout(const Resources& r) {
  std::string s;
  for (const auto& h : r) s += (s.empty() ? "" : " ") + h.host + ":" + visible_devices(h);
  return s;
}

TEST(LaunchHostfile, ParsesHostsSlotsCommentsAndBlankLines) {
  Resources r = parse_hostfile(
      "# the cluster\n\nworker-0 slots=4\n  worker-1\tslots=2   # half a node\r\n\n", "hf");
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].host, "worker-0");
  EXPECT_EQ(r[0].slots, (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(r[0].line, 3);
  EXPECT_EQ(r[1].host, "worker-1");
  EXPECT_EQ(r[1].slots, (std::vector<int>{0, 1}));
  EXPECT_EQ(r[1].line, 4);
}

TEST(LaunchHostfile, ErrorsNameFileAndLine) {
  EXPECT_EQ(config_error([] { parse_hostfile("a slots=1\nb\n", "hf"); }),
            "hf:2: `b` has no slot count: write `b slots=N`");
  EXPECT_EQ(config_error([] { parse_hostfile("a slots=x\n", "hf"); }),
            "hf:1: slots must be a whole number >= 1, got `x`");
  EXPECT_EQ(config_error([] { parse_hostfile("a slots=0\n", "hf"); }),
            "hf:1: slots must be a whole number >= 1, got `0`");
  EXPECT_EQ(config_error([] { parse_hostfile("a cpus=2\n", "hf"); }),
            "hf:1: expected `slots=N` after the host name, got `cpus=2`");
  EXPECT_EQ(config_error([] { parse_hostfile("a slots=2 max_slots=4\n", "hf"); }),
            "hf:1: unexpected `max_slots=4` after `slots=2`: a line is `HOST slots=N`");
  EXPECT_EQ(config_error([] { parse_hostfile("a slots=2\n\na slots=3\n", "hf"); }),
            "hf:3: host `a` is already listed on line 1");
  EXPECT_EQ(config_error([] { parse_hostfile("a:1 slots=2\n", "hf"); }),
            "hf:1: host name `a:1` contains one of `:,@=`");
  EXPECT_EQ(config_error([] { parse_hostfile("# nothing\n\n", "hf"); }),
            "hf: no hosts (lines are `HOST slots=N`)");
  EXPECT_NE(
      config_error([] { read_hostfile("/nonexistent/hostfile"); }).find("/nonexistent/hostfile"),
      std::string::npos);
}

TEST(LaunchIncludeExclude, DeepSpeedSyntax) {
  const Resources pool = two_workers();
  EXPECT_EQ(layout(filter_resources(pool, "", "")), "worker-0:0,1,2,3 worker-1:0,1,2,3");
  EXPECT_EQ(layout(filter_resources(pool, "worker-0:0,1@worker-1", "")),
            "worker-0:0,1 worker-1:0,1,2,3");
  EXPECT_EQ(layout(filter_resources(pool, "worker-1:3,1", "")), "worker-1:1,3");
  // The pool's order stays, whatever the order of the filter.
  EXPECT_EQ(layout(filter_resources(pool, "worker-1:0@worker-0:2", "")), "worker-0:2 worker-1:0");
  EXPECT_EQ(layout(filter_resources(pool, "", "worker-1")), "worker-0:0,1,2,3");
  EXPECT_EQ(layout(filter_resources(pool, "", "worker-0:0,3@worker-1:1")),
            "worker-0:1,2 worker-1:0,2,3");
}

TEST(LaunchIncludeExclude, ClearErrors) {
  const Resources pool = two_workers();
  EXPECT_EQ(config_error([&] { filter_resources(pool, "worker-0", "worker-1"); }),
            "--include and --exclude exclude each other: give one of them");
  EXPECT_EQ(config_error([&] { filter_resources(pool, "worker-9:0", ""); }),
            "--include: host `worker-9` is not in the host list (worker-0, worker-1)");
  EXPECT_EQ(config_error([&] { filter_resources(pool, "worker-0:4", ""); }),
            "--include: host `worker-0` has no slot 4 (slots 0,1,2,3)");
  EXPECT_EQ(config_error([&] { filter_resources(pool, "", "worker-0:a"); }),
            "--exclude `worker-0:a`: slot `a` is not a number");
  EXPECT_EQ(config_error([&] { filter_resources(pool, "worker-0@@worker-1", ""); }),
            "--include `worker-0@@worker-1`: empty host entry (between `@`s)");
  EXPECT_EQ(config_error([&] { filter_resources(pool, "worker-0:", ""); }),
            "--include `worker-0:`: no slots after `:`");
  EXPECT_EQ(config_error([&] { filter_resources(pool, "", "worker-0@worker-1"); }),
            "--exclude `worker-0@worker-1` leaves no host to run on");
}

TEST(LaunchLimits, NumNodesAndNumGpus) {
  const Resources pool = two_workers();
  EXPECT_EQ(layout(limit_resources(pool, -1, -1)), "worker-0:0,1,2,3 worker-1:0,1,2,3");
  EXPECT_EQ(layout(limit_resources(pool, 1, -1)), "worker-0:0,1,2,3");
  EXPECT_EQ(layout(limit_resources(pool, -1, 2)), "worker-0:0,1 worker-1:0,1");
  EXPECT_EQ(config_error([&] { limit_resources(pool, 3, -1); }),
            "--num_nodes 3: only 2 host(s) to run on");
  EXPECT_EQ(config_error([&] { limit_resources(pool, -1, 5); }),
            "--num_gpus 5: host `worker-0` has only 4 slot(s) (hostfile line 1)");
  EXPECT_EQ(config_error([&] { limit_resources(pool, 0, -1); }), "--num_nodes must be >= 1");
  EXPECT_EQ(config_error([&] { limit_resources(pool, -1, 0); }), "--num_gpus must be >= 1");
}

TEST(LaunchLocalGpus, CountAndCudaVisibleDevicesMask) {
  EXPECT_EQ(local_gpu_devices(0, nullptr), Strings{});
  EXPECT_EQ(local_gpu_devices(0, "0,1"), Strings{});  // a mask does not make GPUs
  EXPECT_EQ(local_gpu_devices(3, nullptr), (Strings{"0", "1", "2"}));
  EXPECT_EQ(local_gpu_devices(8, "6, 2"), (Strings{"6", "2"}));
  EXPECT_EQ(local_gpu_devices(8, "GPU-1a2b,GPU-3c4d"), (Strings{"GPU-1a2b", "GPU-3c4d"}));
  EXPECT_EQ(local_gpu_devices(8, ""), Strings{});
  EXPECT_EQ(local_gpu_devices(8, "-1"), Strings{});
  EXPECT_EQ(local_gpu_devices(8, "1,-1,2"), Strings{"1"});  // CUDA stops at an invalid entry
  // Slots index into the device names: include/exclude on localhost picks from the mask.
  HostSlots h{"localhost", {0, 1}, {"6", "2"}, 0};
  HostSlots picked = filter_resources({h}, "localhost:1", "").at(0);
  EXPECT_EQ(visible_devices(picked), "2");
}

TEST(LaunchEnvFile, NameValueLines) {
  auto kv = parse_env_file("# comment\n\nNCCL_IB_HCA=mlx5_0:1\nPATHS=a=b c \nEMPTY=\n", "envf");
  ASSERT_EQ(kv.size(), 3u);
  EXPECT_EQ(kv[0], (std::pair<std::string, std::string>{"NCCL_IB_HCA", "mlx5_0:1"}));
  EXPECT_EQ(kv[1], (std::pair<std::string, std::string>{"PATHS", "a=b c"}));
  EXPECT_EQ(kv[2], (std::pair<std::string, std::string>{"EMPTY", ""}));
  EXPECT_EQ(config_error([] { parse_env_file("A=1\njust words\n", "envf"); }),
            "envf:2: expected NAME=VALUE, got `just words`");
  EXPECT_EQ(config_error([] { parse_env_file("1A=1\n", "envf"); }),
            "envf:1: `1A` is not a variable name (letters, digits, _)");
  EXPECT_EQ(config_error([] { parse_env_file("A=1\nB=2\nA=3\n", "envf"); }),
            "envf:3: A is already set on line 1");
}

TEST(LaunchEnvForward, PrefixesMinusPerHostAndMpirunOwn) {
  Strings env = {"NCCL_DEBUG=INFO",
                 "UCX_TLS=rc",
                 "HOME=/root",
                 "CUDA_VISIBLE_DEVICES=0,1",
                 "CUDA_HOME=/usr/local/cuda",
                 "OMPI_MCA_btl=^openib",
                 "OMPI_COMM_WORLD_RANK=3",
                 "OMPI_MCA_orte_hnp_uri=x",
                 "FI_PROVIDER=efa",
                 "OMP_NUM_THREADS=8",
                 "ZT_ENV_FILE=e",
                 "MYNCCL_X=1",
                 "OMPI_ALLOW_RUN_AS_ROOT=1"};
  EXPECT_EQ(forwarded_env_names(env),
            (Strings{"CUDA_HOME", "FI_PROVIDER", "NCCL_DEBUG", "OMPI_ALLOW_RUN_AS_ROOT",
                     "OMPI_MCA_btl", "OMP_NUM_THREADS", "UCX_TLS", "ZT_ENV_FILE"}));
}

TEST(LaunchShellWords, SplitAndJoinRoundTrip) {
  EXPECT_EQ(split_shell_words(""), Strings{});
  EXPECT_EQ(split_shell_words("  --mca btl ^openib  "), (Strings{"--mca", "btl", "^openib"}));
  EXPECT_EQ(split_shell_words(R"(-x 'A=b c' "d \"e\"" f\ g '')"),
            (Strings{"-x", "A=b c", "d \"e\"", "f g", ""}));
  EXPECT_EQ(config_error([] { split_shell_words("'open"); }),
            "--launcher_args: unmatched ' in `'open`");
  const Strings words = {"mpirun", "-x", "A=b c", "it's", "", "plain-word_1.0:/x,y=z"};
  EXPECT_EQ(shell_join(words), R"(mpirun -x 'A=b c' 'it'\''s' '' plain-word_1.0:/x,y=z)");
  EXPECT_EQ(split_shell_words(shell_join(words)), words);
}

TEST(LaunchMpirunArgv, OneAppContextPerHostWithItsDevices) {
  LaunchPlan p;
  p.hosts = filter_resources(two_workers(), "worker-0:0,2@worker-1", "");
  p.allow_run_as_root = true;
  p.launcher_args = {"--mca", "btl", "^openib"};
  p.env_values = {{"FOO", "bar baz"}, {"MASTER_ADDR", "worker-0"}};
  p.env_names = {"NCCL_DEBUG"};
  p.program = {"/opt/zt/zerotrain", "train", "--config", "c.yaml"};
  const Strings expect = {"mpirun",
                          "--allow-run-as-root",
                          "--mca",
                          "btl",
                          "^openib",
                          "-np",
                          "2",
                          "-H",
                          "worker-0:2",
                          "-x",
                          "CUDA_VISIBLE_DEVICES=0,2",
                          "-x",
                          "FOO=bar baz",
                          "-x",
                          "MASTER_ADDR=worker-0",
                          "-x",
                          "NCCL_DEBUG",
                          "/opt/zt/zerotrain",
                          "train",
                          "--config",
                          "c.yaml",
                          ":",
                          "-np",
                          "4",
                          "-H",
                          "worker-1:4",
                          "-x",
                          "CUDA_VISIBLE_DEVICES=0,1,2,3",
                          "-x",
                          "FOO=bar baz",
                          "-x",
                          "MASTER_ADDR=worker-0",
                          "-x",
                          "NCCL_DEBUG",
                          "/opt/zt/zerotrain",
                          "train",
                          "--config",
                          "c.yaml"};
  EXPECT_EQ(build_mpirun_argv(p), expect);
}

TEST(LaunchMpirunArgv, CpuLayoutBindsToNumaAndSetsNoDevices) {
  LaunchPlan p;
  p.mpirun = "/usr/bin/mpirun";
  p.hosts = {HostSlots{"localhost", {0, 1}, {}, 0}};
  p.set_visible_devices = false;
  p.cpu_numa_binding = true;
  p.program = {"zt", "train"};
  EXPECT_EQ(build_mpirun_argv(p),
            (Strings{"/usr/bin/mpirun", "--map-by", "numa", "--bind-to", "numa", "-np", "2", "-H",
                     "localhost:2", "zt", "train"}));
}

}  // namespace
}  // namespace zt::app
