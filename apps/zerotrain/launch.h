// apps/zerotrain/launch.h: `zerotrain launch`, DeepSpeed's `deepspeed` launcher as an mpirun
// command line.
//
//   zerotrain launch [--hostfile F] [--include S | --exclude S] [--num_nodes N] [--num_gpus G]
//                    [--master_addr A] [--master_port P] [--launcher_args "..."] [--dry-run]
//                    -- train --config ds_config.json ...
//
// What DeepSpeed's runner does, and how it maps here:
//  - The hostfile (`worker-0 slots=4`, `#` comments, blank lines) lists hosts and their GPU slots;
//    the order of hosts is the order of ranks. Without a hostfile the job runs on this machine:
//    one rank per local GPU (nvidia-smi -L, else /dev/nvidia[0-9]*, within CUDA_VISIBLE_DEVICES
//    when it is set), or, without GPUs, one rank per NUMA node (/sys/devices/system/node), each
//    bound to its node's cores and memory (`--map-by numa --bind-to numa`).
//  - --include/--exclude (`worker-0:0,2@worker-1`) keep or drop hosts and slots; --num_nodes and
//    --num_gpus keep the first N hosts and the first G slots of each. As in DeepSpeed, include and
//    exclude exclude each other and the two counts.
//  - Each host gets its own mpirun app context (`-np k -H host:k -x CUDA_VISIBLE_DEVICES=... prog
//    : ...`): one mpirun, one MPI_COMM_WORLD, and each host sees exactly its selected GPUs (`-x` is
//    per app context in OpenMPI, so the exports are repeated in every context).
//  - Variables reach every rank through `-x`: NAME=VALUE lines of `.deepspeed_env` (or the file
//    named by ZT_ENV_FILE, then DS_ENV_FILE; a bare name is looked up in the current folder, then
//    in $HOME), those in the environment whose names start with one of kForwardedEnvPrefixes, and
//    MASTER_ADDR/MASTER_PORT (zerotrain bootstraps over MPI and does not need them; scripts that
//    expect them find them).
// The functions below are pure (text in, values out) so that the unit tests can pin them down;
// run_launch does the looking around and the exec.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace zt::app {

// One host and the device slots to use on it. `slots` are indices into `devices`, the device
// names for CUDA_VISIBLE_DEVICES; when `devices` is empty a slot's name is its index (a hostfile
// host). `line` is where the hostfile defines the host (0: not from a file).
struct HostSlots {
  std::string host;
  std::vector<int> slots;
  std::vector<std::string> devices;
  int line = 0;
};
using Resources = std::vector<HostSlots>;  // in rank order

// Parses a DeepSpeed hostfile; `path` names it in errors ("path:line: ..."). Throws ConfigError on
// a malformed line, slots < 1, a host given twice, or a file without hosts.
Resources parse_hostfile(std::string_view text, const std::string& path);
Resources read_hostfile(const std::string& path);

// DeepSpeed's --include/--exclude filter (`host[:slot[,slot...]][@host...]`). At most one of the
// two may be non-empty. An unknown host or slot is a ConfigError naming it. Hosts left with no
// slot are dropped; the order stays the pool's.
Resources filter_resources(const Resources& pool, const std::string& include,
                           const std::string& exclude);

// --num_nodes (first N hosts) and --num_gpus (first G slots of each host); < 0: not given.
Resources limit_resources(const Resources& pool, int num_nodes, int num_gpus);

// This machine's devices without a hostfile: `physical` GPUs found (nvidia-smi, /dev/nvidia*),
// narrowed to the entries of CUDA_VISIBLE_DEVICES when that is set (`cuda_visible`, may be null).
// Empty: no GPU, the CPU layout applies.
std::vector<std::string> local_gpu_devices(int physical, const char* cuda_visible);

// The comma-separated CUDA_VISIBLE_DEVICES value for a host's selected slots.
std::string visible_devices(const HostSlots& h);

// `NAME=VALUE` lines, `#` comments and blank lines; a line without `=` or with a bad name is a
// ConfigError "path:line: ...". The value is taken verbatim (no quotes are removed).
std::vector<std::pair<std::string, std::string>> parse_env_file(std::string_view text,
                                                                const std::string& path);

// Names of the environment (from `environ`-style "NAME=VALUE" strings) that every rank should get:
// those starting with a kForwardedEnvPrefixes entry, less CUDA_VISIBLE_DEVICES (set per host) and
// the OMPI_ variables that mpirun sets for its own ranks. Sorted.
extern const std::vector<std::string> kForwardedEnvPrefixes;
std::vector<std::string> forwarded_env_names(const std::vector<std::string>& environ_entries);

// Everything the mpirun command line is made of.
struct LaunchPlan {
  std::string mpirun = "mpirun";
  Resources hosts;
  bool set_visible_devices = true;  // GPU slots: export CUDA_VISIBLE_DEVICES per host
  bool cpu_numa_binding = false;    // CPU layout: one rank per NUMA node, bound to it
  bool allow_run_as_root = false;
  std::vector<std::string> launcher_args;                       // after the mpirun options
  std::vector<std::string> env_names;                           // -x NAME
  std::vector<std::pair<std::string, std::string>> env_values;  // -x NAME=VALUE
  std::vector<std::string> program;                             // each rank's argv
};
std::vector<std::string> build_mpirun_argv(const LaunchPlan& plan);

// Splits --launcher_args like a POSIX shell would (quotes, backslashes; no expansions).
std::vector<std::string> split_shell_words(const std::string& s);
// One command line a shell reads back to the same argv (single quotes where needed).
std::string shell_join(const std::vector<std::string>& argv);

struct LaunchOptions {
  std::string hostfile;
  std::string include, exclude;
  int num_nodes = -1, num_gpus = -1;
  std::string master_addr;
  int master_port = 29500;
  std::string launcher_args;
  bool dry_run = false;
  std::vector<std::string>
      command;  // after `--`: a zerotrain subcommand and its arguments, or a program
};
// Builds the plan from the options and this machine, prints the command, and replaces this process
// with mpirun (or, with --dry-run, returns 0). Bad input throws ConfigError.
int run_launch(const LaunchOptions& opt);

}  // namespace zt::app
