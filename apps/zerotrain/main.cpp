// apps/zerotrain/main.cpp: the `zerotrain` command line.
//   zerotrain train --config FILE [--set k=v]... [--steps N] [--json-log FILE] [--threads N]
//   zerotrain config FILE [--set k=v]...        print the resolved configuration
//   zerotrain lr --config FILE [--set k=v]... [--steps N] [--plot FILE.svg]   the lr schedule
//   zerotrain ckpt inspect DIR                  tags, integrity, what a resume would load
//   zerotrain ckpt consolidate DIR [--tag T] --out FILE [--dtype f32|bf16|f16]   full weights
//   zerotrain generate --checkpoint DIR [--tag T] --prompt TEXT [--bytes N] [--temperature X]
//   zerotrain launch [--hostfile F] [--include S] ... [--dry-run] -- train ...   (mpirun for you)
//   zerotrain bench comm|overlap|optim [--json FILE|-] ...   benchmarks (apps/zerotrain/bench_*.h)
// Exit codes: 0 success, 2 bad config or input (one clear line on stderr), 1 runtime failure,
// 85 saved after SIGTERM/SIGUSR1/SIGINT, 130 a second SIGINT, 124 a collective stuck longer than
// comm.timeout_s (comm/watchdog.h: the report names the op, the step and the missing ranks).
// Under mpirun a failing rank ends the whole job (MPI_Abort with that code): no rank is left
// waiting in a collective. An error every rank hits (a bad config) is printed once, by rank 0.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <thread>

#include "apps/zerotrain/bench_comm.h"
#include "apps/zerotrain/bench_optim.h"
#include "apps/zerotrain/bench_overlap.h"
#include "apps/zerotrain/ckpt.h"
#include "apps/zerotrain/generate.h"
#include "apps/zerotrain/launch.h"
#include "apps/zerotrain/lr.h"
#include "apps/zerotrain/estimate.h"
#include "apps/zerotrain/train.h"
#include "comm/bootstrap.h"
#include "core/error.h"
#include "io/config.h"

int main(int argc, char** argv) {
  CLI::App app{"zerotrain: DeepSpeed's ZeRO training as a native MPI program"};
  app.require_subcommand(1);

  zt::app::TrainOptions topt;
  auto* train = app.add_subcommand("train", "train a model from a YAML or DeepSpeed JSON config");
  // --deepspeed_config: the flag DeepSpeed programs take for the same file.
  train->add_option("--config,-c,--deepspeed_config", topt.config_path,
                    "config file (YAML, or JSON such as a DeepSpeed ds_config.json)")
      ->required();
  train->add_option("--set", topt.overrides, "override a key: a.b.c=value (repeatable)");
  train->add_option("--steps", topt.steps, "optimizer steps (overrides training.steps)");
  train->add_option("--json-log", topt.json_log, "write one JSON object per step to FILE");
  train->add_option("--threads", topt.threads, "CPU threads (default: OpenMP's)");
  train->add_option("--sample", topt.sample_chars, "bytes of text to generate at the end (0: none)");
  train->add_option("--trace", topt.trace,
                    "write a Chrome trace (Perfetto, chrome://tracing) of compute and communication");
  train->add_option("--resume", topt.resume,
                    "continue from the latest intact checkpoint: `auto` (checkpoint.dir) or a folder");

  std::string cfg_path;
  std::vector<std::string> cfg_overrides;
  int cfg_world = 1;
  auto* config = app.add_subcommand("config", "print the resolved configuration as YAML");
  config->add_option("file", cfg_path, "config file (YAML or JSON)")->required();
  config->add_option("--set", cfg_overrides, "override a key: a.b.c=value (repeatable)");
  CLI::Option* cfg_world_opt =
      config->add_option("--world-size", cfg_world, "ranks to resolve batch sizes for (default 1)");

  zt::app::LrOptions lopt;
  auto* lr = app.add_subcommand("lr", "print a config's learning-rate schedule, one line per step "
                                      "(iteration lr [momentum]); --plot draws it as SVG");
  lr->add_option("--config,-c", lopt.config_path, "config file (YAML or JSON)")->required();
  lr->add_option("--set", lopt.overrides, "override a key: a.b.c=value (repeatable)");
  lr->add_option("--steps", lopt.steps, "steps to show (default: training.steps)");
  lr->add_option("--plot", lopt.plot_path, "write an SVG line chart of the schedule to FILE");

  auto* ckpt = app.add_subcommand("ckpt", "look into checkpoint folders (checkpoint.dir)");
  ckpt->require_subcommand(1);
  zt::app::CkptInspectOptions iopt;
  auto* inspect = ckpt->add_subcommand(
      "inspect", "list the tags with step, ranks, stage, dtypes, size and integrity; exit 2 "
                 "when `latest` is not an intact tag (and say what a resume would load)");
  inspect->add_option("dir", iopt.dir, "checkpoint folder")->required();
  inspect->add_flag("!--no-checksums", iopt.checksums, "check file sizes only (faster)");
  zt::app::CkptConsolidateOptions copt;
  auto* consolidate = ckpt->add_subcommand(
      "consolidate", "reassemble the full weights from the ranks' shards (any stage and world "
                     "size) into one safetensors file (DeepSpeed's zero_to_fp32)");
  consolidate->add_option("dir", copt.dir, "checkpoint folder")->required();
  consolidate->add_option("--tag", copt.tag, "tag to read (default: what a resume would load)");
  consolidate->add_option("--out,-o", copt.out, "safetensors file to write")->required();
  consolidate->add_option("--dtype", copt.dtype, "f32 (default), bf16 or f16");

  zt::app::GenerateOptions gopt;
  auto* generate = app.add_subcommand("generate", "print a prompt and the bytes a checkpoint's "
                                                  "byte-level GPT writes after it");
  generate->add_option("--checkpoint", gopt.checkpoint, "checkpoint folder")->required();
  generate->add_option("--tag", gopt.tag, "tag to read (default: what a resume would load)");
  generate->add_option("--prompt", gopt.prompt, "text to continue")->required();
  generate->add_option("--bytes", gopt.bytes, "bytes to generate (default 200)");
  generate->add_option("--temperature", gopt.temperature, "softmax temperature (default 0.8; 0: greedy)");
  generate->add_option("--seed", gopt.seed, "sampling seed (default 1234)");

  zt::app::EstimateOptions eopt;
  auto* estimate = app.add_subcommand(
      "estimate", "per-rank memory of the model states for each ZeRO stage and offload choice");
  estimate->add_option("--params", eopt.params, "total parameters")->required();
  estimate->add_option("--largest-layer", eopt.largest_layer,
                       "parameters of the largest layer (stage 3; default params/10)");
  estimate->add_option("--ranks", eopt.ranks_per_node, "ranks (GPUs) per node (default 1)");
  estimate->add_option("--nodes", eopt.nodes, "nodes (default 1)");
  estimate->add_option("--buffer-factor", eopt.buffer_factor,
                       "DeepSpeed's additional_buffer_factor for host memory (default 1.5)");

  // zerotrain launch: DeepSpeed's launcher as one mpirun command line (apps/zerotrain/launch.h).
  zt::app::LaunchOptions lnopt;
  auto* launch = app.add_subcommand(
      "launch", "run a command on every rank with mpirun: -- train --config FILE ... (hosts from "
                "a DeepSpeed hostfile, else this machine's GPUs, else one rank per NUMA node)");
  launch->add_option("--hostfile", lnopt.hostfile, "DeepSpeed hostfile: lines `HOST slots=N`");
  launch->add_option("--include,-i", lnopt.include,
                     "hosts/slots to use: host[:slot,...][@host...]");
  launch->add_option("--exclude,-e", lnopt.exclude, "hosts/slots to leave out (same syntax)");
  launch->add_option("--num_nodes", lnopt.num_nodes, "use the first N hosts");
  launch->add_option("--num_gpus", lnopt.num_gpus, "use the first G slots (GPUs) of each host");
  launch->add_option("--master_addr", lnopt.master_addr,
                     "MASTER_ADDR for the ranks (default: first host)");
  launch->add_option("--master_port", lnopt.master_port,
                     "MASTER_PORT for the ranks (default 29500)");
  launch->add_option("--launcher_args", lnopt.launcher_args, "more mpirun options, as one string");
  launch->add_flag("--dry-run,--dry_run", lnopt.dry_run, "print the mpirun command and exit");
  launch->add_option("command", lnopt.command, "after --: a zerotrain subcommand and its "
                                                "arguments (train --config FILE ...), or a program");

  // [bench] zerotrain bench comm|overlap|optim: JSON lines (--json FILE, or - for stdout) and a
  // short table; comm and overlap run under mpirun (apps/zerotrain/bench_*.cpp say what each
  // measures and how to read it).
  auto* bench = app.add_subcommand("bench", "benchmarks: collectives (comm), communication/"
                                            "computation overlap per ZeRO stage (overlap), the "
                                            "optimizer step (optim)");
  bench->require_subcommand(1);
  zt::app::CommBenchOptions bcopt;
  std::string bc_dtype = "f32", bc_ops;
  auto* bcomm = bench->add_subcommand(
      "comm", "nccl-tests-style bandwidth of every collective on the mpi backend, next to raw "
              "MPI on the same buffers (run under mpirun)");
  bcomm->add_option("--min-bytes", bcopt.min_bytes, "smallest size in bytes (default 1024)");
  bcomm->add_option("--max-bytes", bcopt.max_bytes, "largest size in bytes (default 64 MiB)");
  bcomm->add_option("--step", bcopt.step, "size factor between rows (default 4)");
  bcomm->add_option("--dtype", bc_dtype, "f32 (default), f16 or bf16");
  bcomm->add_option("--ops", bc_ops, "comma-separated subset of all_reduce, reduce_scatter, "
                                     "reduce_scatter_v, all_gather, all_gather_v, broadcast, "
                                     "all_to_all (default: all)");
  bcomm->add_option("--trials", bcopt.trials, "trials per row, the best is reported (default 11)");
  bcomm->add_option("--warmup", bcopt.warmup, "untimed trials first (default 2)");
  bcomm->add_option("--iters", bcopt.iters, "ops per trial (default: by size, 4..200)");
  bcomm->add_flag("!--no-raw", bcopt.raw, "do not time raw MPI beside the communicator");
  bcomm->add_option("--json", bcopt.json, "write JSON lines to FILE (- for stdout)");
  bcomm->add_flag("!--no-table", bcopt.table, "no table on stdout");
  zt::app::OverlapBenchOptions boopt;
  auto* boverlap = bench->add_subcommand(
      "overlap", "step time with overlap_comm off and on, communication time alone and the "
                 "fraction hidden, for ZeRO stages 1-3 (run under mpirun, 2+ ranks)");
  boverlap->add_option("--stages", boopt.stages, "stages to measure (default 1 2 3)")
      ->delimiter(',');
  boverlap->add_option("--layers", boopt.layers, "GPT blocks (default 4)");
  boverlap->add_option("--width", boopt.width, "GPT width n_embd (default 256)");
  boverlap->add_option("--heads", boopt.heads, "attention heads (default 4)");
  boverlap->add_option("--seq", boopt.seq, "tokens per sequence (default 32)");
  boverlap->add_option("--micro-batch", boopt.micro_batch, "sequences per rank (default 2)");
  boverlap->add_option("--bucket", boopt.bucket, "reduce_bucket_size in elements (default 500000)");
  boverlap->add_option("--steps", boopt.steps, "timed steps per configuration (default 10)");
  boverlap->add_option("--warmup", boopt.warmup, "untimed steps first (default 2)");
  boverlap->add_option("--threads", boopt.threads, "OpenMP threads per rank (default: cores / ranks)");
  boverlap->add_option("--json", boopt.json, "write JSON lines to FILE (- for stdout)");
  boverlap->add_option("--trace", boopt.trace, "write Chrome traces PREFIX.stageS.off|on.json");
  boverlap->add_flag("!--no-table", boopt.table, "no table on stdout");
  zt::app::OptimBenchOptions bpopt;
  std::string bp_sizes;
  auto* boptim = bench->add_subcommand(
      "optim", "AdamW step throughput (params/s, GB/s) against the copy-bandwidth floor");
  boptim->add_option("--threads", bpopt.threads, "OpenMP threads (default: OpenMP's)");
  boptim->add_option("--sizes", bp_sizes, "parameter counts, e.g. 1M,16M,64M,256M (the default)");
  boptim->add_option("--iters", bpopt.iters, "at most this many timed steps per size (default 20)");
  boptim->add_option("--copy-mib", bpopt.copy_mib, "MiB per buffer of the copy reference (default 512)");
  boptim->add_option("--copy-reps", bpopt.copy_reps, "repetitions of the copy reference (default 10)");
  boptim->add_option("--json", bpopt.json, "write JSON lines to FILE (- for stdout)");
  boptim->add_flag("!--no-table", bpopt.table, "no table on stdout");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  // Prints the error and ends the job. Under mpirun, ranks other than 0 wait a moment first: when
  // the error is everyone's (a bad config), rank 0's MPI_Abort ends them before they print, so the
  // message appears once; when only they failed, they print and abort the job themselves.
  auto fail = [](const char* kind, const std::exception& e, int code) -> int {
    int world = 1, rank = 0;
    if (zt::comm::Bootstrap::initialized()) {
      world = zt::comm::Bootstrap::instance().topology().world;
      rank = zt::comm::Bootstrap::instance().topology().rank;
    }
    if (world > 1 && rank != 0) std::this_thread::sleep_for(std::chrono::seconds(2));
    if (world > 1)
      std::fprintf(stderr, "zerotrain: %s (rank %d): %s\n", kind, rank, e.what());
    else
      std::fprintf(stderr, "zerotrain: %s: %s\n", kind, e.what());
    std::fflush(stderr);
    if (world > 1) zt::comm::Bootstrap::abort(code);
    return code;
  };
  try {
    if (*train) {
      zt::comm::Bootstrap::init(&argc, &argv);
      return zt::app::run_train(topt);
    }
    if (*lr) return zt::app::run_lr(lopt);
    if (*inspect) return zt::app::run_ckpt_inspect(iopt);
    if (*consolidate) return zt::app::run_ckpt_consolidate(copt);
    if (*generate) return zt::app::run_generate(gopt);
    if (*estimate) return zt::app::run_estimate(eopt);
    if (*launch) return zt::app::run_launch(lnopt);
    if (*bcomm) {  // [bench]
      zt::comm::Bootstrap::init(&argc, &argv);
      bcopt.dtype = zt::dtype_from_name(bc_dtype);
      if (!bc_ops.empty()) bcopt.ops = zt::app::parse_comm_ops(bc_ops, "--ops");
      return zt::app::run_bench_comm(bcopt);
    }
    if (*boverlap) {  // [bench]
      zt::comm::Bootstrap::init(&argc, &argv);
      return zt::app::run_bench_overlap(boopt);
    }
    if (*boptim) {  // [bench]
      if (!bp_sizes.empty()) bpopt.sizes = zt::app::parse_sizes(bp_sizes, "--sizes");
      return zt::app::run_bench_optim(bpopt);
    }
    if (*config) {
      zt::io::Config c = zt::io::load_config(cfg_path, cfg_overrides);
      try {
        zt::io::resolve_batch_sizes(c, cfg_world);
      } catch (const zt::ConfigError& e) {
        // A config written for a cluster: say how to resolve it for that many ranks here.
        if (cfg_world_opt->count() > 0) throw;
        throw zt::ConfigError(std::string(e.what()) +
                              " (`zerotrain config` resolves for 1 rank: add --world-size N)");
      }
      std::fputs(zt::io::dump_config(c).c_str(), stdout);
      return 0;
    }
  } catch (const zt::ConfigError& e) {
    return fail("config error", e, 2);
  } catch (const zt::DataError& e) {
    return fail("data error", e, 2);
  } catch (const std::exception& e) {
    return fail("error", e, 1);
  }
  return 0;
}
