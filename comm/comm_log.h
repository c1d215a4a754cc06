// comm/comm_log.h: the communication log (DeepSpeed's `comms_logger`, figures as in nccl-tests).
//
// Every collective a Communicator runs reports (op, dtype, element count, bytes, seconds) here;
// when the log is enabled (config `comms_logger.enabled`) the records are summed per (op, size) and
// table() prints, for each: calls, total bytes, mean latency, algbw and busbw.
//
// Sizes and bandwidths follow nccl-tests (doc/PERFORMANCE.md there), so that figures compare with
// theirs and with the hardware's link speed:
//   size   all_reduce, broadcast: the buffer's bytes; all_gather, reduce_scatter(_v): the bytes
//          of the *gathered* buffer (world x the per-rank chunk);
//   algbw  = size / time;
//   busbw  = algbw x factor, factor = 2(n-1)/n for all_reduce, (n-1)/n for all_gather and
//          reduce_scatter, 1 for broadcast (n = world size). busbw is what each rank's link carried
//          under an optimal (ring) algorithm, and is independent of n.
// Time is measured on the thread that runs the collective, from its start to its end (queueing
// before it is not counted); for f16/bf16 reductions it includes the conversions to and from the
// f32 staging buffer (comm/communicator.h), so it is the cost the caller actually pays; for
// device tensors on the mpi backend it includes the staging copies. On the nccl backend it is the
// GPU time between two events around the NCCL calls on the comm stream.
//
// Thread safety: record() may run on a comm thread while the main thread reads; a mutex guards all.
#pragma once

#include "core/dtype.h"

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

namespace zt::comm {

// The keys of DeepSpeed's `comms_logger` section that the log implements. (`debug`, which names
// the Python caller of each op, has no meaning here; the engine decides what to do with it.)
struct CommLogOptions {
  bool enabled = false;
  bool verbose = false;  // also print one line per op, as it completes, on stderr
  bool prof_all = true;  // log every op; when false, only those named in prof_ops
  // Op names: all_reduce, reduce_scatter, reduce_scatter_v, all_gather, broadcast.
  std::vector<std::string> prof_ops;
};

// busbw / algbw for `op` on `world` ranks (the nccl-tests factor); 0 for an unknown op name.
double busbw_factor(const std::string& op, int world);

class CommLog {
 public:
  explicit CommLog(int world = 1) : world_(world) {}

  void configure(const CommLogOptions& opts);
  CommLogOptions options() const;
  void set_enabled(bool on);
  bool enabled() const;
  // Whether an op of this name would be recorded now (enabled, and prof_all or listed in prof_ops).
  bool wants(const std::string& op) const;

  // One completed collective. `bytes` is the nccl-tests size (see above). Ignored unless wants(op).
  void record(const std::string& op, DType dtype, int64_t count, int64_t bytes, double seconds);

  // Aggregate per (op, dtype, bytes).
  struct Entry {
    std::string op;
    DType dtype = DType::f32;
    int64_t count = 0;  // elements per call (the nccl-tests "count")
    int64_t bytes = 0;  // size per call
    int64_t calls = 0;
    double total_seconds = 0, min_seconds = 0, max_seconds = 0;
    double mean_seconds() const { return calls ? total_seconds / calls : 0; }
    double algbw_gbs() const;           // GB/s (1e9) at the mean latency
    double busbw_gbs(int world) const;  // algbw x busbw_factor(op, world)
  };
  std::vector<Entry> entries() const;  // sorted by op, then size
  int64_t total_calls() const;
  void clear();
  int world() const { return world_; }

  // The summary as a text table, one line per (op, dtype, size); `title` heads it.
  std::string table(const std::string& title = "comm log") const;

 private:
  using Key = std::tuple<std::string, DType, int64_t>;
  int world_;
  mutable std::mutex mu_;
  CommLogOptions opts_;
  std::map<Key, Entry> entries_;
};

}  // namespace zt::comm
