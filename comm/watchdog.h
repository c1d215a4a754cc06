// comm/watchdog.h: collective timeouts that end the job and say who is missing (torch's NCCL
// watchdog, ProcessGroupNCCL's "Watchdog caught collective operation timeout").
//
// A collective that never completes is the worst failure of a data-parallel job: one rank died,
// froze, or issued a different collective, and every other rank waits inside MPI forever. The
// watchdog turns that into one report per waiting rank and an MPI_Abort within timeout + ~3 s:
//
//   zerotrain: watchdog (rank 0): all_reduce #57 (f32, 1234 elements, 4936 bytes) at training
//   step 5 has not completed after 5 s (comm.timeout_s); missing: rank 1 (at step 5, not in a
//   collective, last completed op #56: computing, in I/O or stalled); ... aborting the job (124)
//
// What it watches. Every communicator tells its CommProgress (below) when an op starts and ends:
// the mpi backend when it runs on its comm thread (queueing time does not count), the nccl backend
// when the op becomes the oldest pending one on its stream and when its end event completes. The
// monitor thread wakes every ~0.1 s and fires when an op has been running longer than timeout_s.
//
// How it learns who is missing, without the stuck communicator. Each rank's progress record
// (step, the op it is in with its sequence number and size, the last op it completed on each
// communicator, pid, node) goes around on a side channel: a private dup of MPI_COMM_WORLD on
// which the heartbeat thread posts one MPI_Iallgather of the records every heartbeat (about 1 s)
// and polls it with MPI_Test. Why this channel:
//  - it needs nothing shared but MPI (files in a shared folder would need a shared file system,
//    and /tmp is node-local on most clusters), and an all-gather scales as log(world);
//  - it keeps working while the training communicator is stuck: a different communicator is a
//    different matching context, the heartbeat thread is not the thread stuck in the collective,
//    and a rank that stalls outside MPI (the usual culprit) still has a live heartbeat thread;
//  - one-sided windows were the alternative, but passive-target progress across nodes needs the
//    target inside MPI, which a stalled rank is not.
// An all-gather round completes only when every rank posts it, so a dead or frozen process stops
// the rounds: the report then says so, gives every rank's last known record with its age, and
// checks the pids of the ranks on this node (kill(pid, 0)) to name a rank that no longer exists.
// The decision to abort never depends on MPI: the monitor thread only reads memory, and if
// MPI_Abort itself does not return within 10 s the process _Exits (mpirun/srun then end the rest).
//
// Environment (read once by options_from_env; the names are torch's, and they apply to the
// watchdog of every backend; the nccl backend's own monitor aborts its NCCL communicator after
// CommOptions::timeout_s, comm/nccl_communicator.cpp):
//   NCCL_TIMEOUT=S                          seconds; overrides comm.timeout_s
//   [TORCH_]NCCL_BLOCKING_WAIT=1            Work::wait() throws CommError after the timeout on the
//                                           waiting thread (the program's error path ends the job,
//                                           exit 1); the watchdog only reports
//   [TORCH_]NCCL_ASYNC_ERROR_HANDLING=0|1|2|3   1, 3 (default): the watchdog aborts the job; 0: it
//                                           only reports (the job may hang); 2: report, and wait()
//                                           throws as with BLOCKING_WAIT
//
// Lifetime. A Watchdog is created collectively (every rank, MPI_COMM_WORLD) and stopped
// collectively: stop() (or the destructor on a normal return) runs heartbeat rounds until every
// rank has asked to stop, so that no round is left half posted before MPI_Finalize. A destructor
// that runs during exception unwinding abandons the heartbeat instead (the program is about to
// MPI_Abort, and the other ranks may never stop).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace zt::comm {

// The exit code of a job ended by the watchdog (GNU timeout's "timed out").
inline constexpr int kExitCommTimeout = 124;

// One communicator's progress, written by its comm thread, read by the watchdog. Ids are given in
// creation order, which is the same on every rank (creating a communicator is collective).
class CommProgress {
 public:
  explicit CommProgress(int id) : id_(id) {}
  int id() const { return id_; }
  // The op with sequence number `seq` (the communicator's issue count) starts / ends running.
  void begin(const char* op, int64_t seq, int64_t bytes, const char* dtype, int64_t count);
  void end(int64_t seq);

  struct Snapshot {
    int id = -1;
    const char* op = nullptr;  // null: idle
    const char* dtype = "";
    int64_t seq = -1, bytes = 0, count = 0;
    double running_s = 0;   // how long `op` has been running
    int64_t done_seq = -1;  // the last op completed (-1: none yet)
  };
  Snapshot snapshot() const;

 private:
  int id_;
  mutable std::mutex mu_;
  const char* op_ = nullptr;
  const char* dtype_ = "";
  int64_t seq_ = -1, bytes_ = 0, count_ = 0, done_seq_ = -1;
  std::chrono::steady_clock::time_point since_;
};

// A new CommProgress registered with the process's watchdog (kept as a weak reference).
std::shared_ptr<CommProgress> register_communicator();

struct WatchdogOptions {
  double timeout_s = 1800;       // comm.timeout_s (torch and DeepSpeed default: 30 minutes)
  bool abort_on_timeout = true;  // false: report only (NCCL_ASYNC_ERROR_HANDLING=0, blocking wait)
  bool blocking_wait = false;    // Work::wait() should throw after timeout_s (the caller sets it)
  int exit_code = kExitCommTimeout;
  double heartbeat_s = 0;  // 0: min(1 s, timeout / 5), at least 0.05 s
  // Test hook: called with the report instead of aborting (the watchdog then stops firing).
  std::function<void(const std::string&)> on_timeout;
  std::vector<std::string> notes;  // what the environment changed, for the start block
};

// comm.timeout_s adjusted by the environment variables above. Throws ConfigError naming a
// variable with a bad value.
WatchdogOptions options_from_env(double config_timeout_s);

class Watchdog {
 public:
  // Collective over MPI_COMM_WORLD (Bootstrap::init must have run): dups the side channel and
  // starts the heartbeat and monitor threads.
  explicit Watchdog(WatchdogOptions options);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // Collective: heartbeat rounds until every rank has asked to stop (bounded by timeout_s, then
  // abandoned with a warning), then the side channel is freed. Idempotent.
  void stop();

  // The training step the ranks are in, named in reports (process-wide; -1: not training yet).
  static void set_step(int64_t step);
  static int64_t step();

  const WatchdogOptions& options() const { return opt_; }

 private:
  struct State;
  WatchdogOptions opt_;
  std::shared_ptr<State> st_;
  std::thread heartbeat_, monitor_;
  bool stopped_ = false;
};

}  // namespace zt::comm
