// zero/stage3.h: ZeRO stage 3's parameter coordinator: gather a unit's parameters before it runs,
// release them after, prefetch the next ones, and reduce-scatter each unit's gradient as soon as
// its backward is done (DeepSpeed: PartitionedParameterCoordinator + the stage-3 reduce hooks).
//
// At stage 3 no rank holds the whole model. Rank r keeps only its partition [r*size, (r+1)*size)
// of the flat weights (zero/partition.h), of the gradients and of the optimizer state: every term
// of the paper's 2 + 2 + K bytes per parameter is divided by N. The model runs unit by unit
// (core/nn/gpt.h: embeddings, blocks, head), and a unit's parameters are one contiguous range
// [lo, hi) of the flat buffer, spread over the partitions that cover it. So:
//
//   acquire(u)   before unit u's forward, recompute or backward: one all_gather_v of [lo, hi)
//                (each rank sends the piece of its partition inside the range) into a buffer from
//                a pool; the unit's Parameters are pointed at it (mixed precision: the 16-bit
//                weights are gathered, half the bytes, and widened into an f32 compute copy);
//   release(u)   after it: the buffer goes back to the pool and the Parameters point at nothing,
//                unless the unit is persistent or will be used again soon (below);
//   backward     before_backward(u) also gives the unit a zeroed f32 gradient buffer; after it,
//                the buffer is reduce-scattered (reduce_scatter_v, averaged) straight into the
//                owning partitions, and each rank adds its piece into its gradient partition. This
//                happens every micro-batch (the window's gradient is the sum), so no rank ever
//                holds a whole-model gradient. With overlap_comm the reduction runs on the comm
//                thread while the next unit's backward computes; without, it is waited for at once.
//
// The knobs (DeepSpeed's names; counts in elements):
//   stage3_prefetch_bucket_size   after each acquire, gather ahead the next units of the recorded
//                                 order, up to this many elements in flight, while this one runs;
//   stage3_max_live_parameters    a bound on gathered (non-persistent) elements: no prefetch and
//                                 no keeping beyond it (the unit being acquired is always fetched);
//   stage3_max_reuse_distance     at release, a unit needed again within this many gathered
//                                 elements of the recorded order stays (e.g. the last block, whose
//                                 backward follows its forward at once) instead of a re-gather;
//   stage3_param_persistence_threshold / stage3_model_persistence_threshold
//                                 a unit of fewer elements stays gathered from its first use until
//                                 the next optimizer step (in total at most the model threshold).
//                                 DeepSpeed decides this per parameter tensor; zerotrain gathers
//                                 whole units, one collective each, so a small tensor costs no
//                                 extra collective and persistence is decided per unit.
// None of these changes the numbers, only memory and time: the result is the same as stage 0 up to
// the order of float additions in the reductions.
//
// The order. Prefetching needs to know what comes next: like DeepSpeed, the coordinator records
// the sequence of acquires of the first micro-batch (forward, recomputes, backward) and follows it
// afterwards; if the model then runs a different order, it records again and does not prefetch
// meanwhile. Every rank must run the units in the same order, since each gather is a collective.
// A model with data-dependent control flow can break that, and in DeepSpeed this hangs the job.
// Here every acquire exchanges the unit id over a separate communicator (one tiny all-gather that
// never queues behind the gradient reductions), verified before any wait that a mismatch could
// hang (stage3.cpp, "the order check": not a barrier per unit): if the ranks disagree, the job
// ends with a message naming the units and the ranks (MPI_Abort) instead of hanging.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/nn/module.h"
#include "core/tensor.h"
#include "zero/partition.h"

namespace zt::comm {
class Communicator;
class Work;
}  // namespace zt::comm

namespace zt::zero {

class ParamSwap;

struct Stage3Options {
  int64_t prefetch_bucket_size = 50'000'000;
  int64_t max_live_parameters = 1'000'000'000;
  int64_t max_reuse_distance = 1'000'000'000;
  int64_t param_persistence_threshold = 100'000;
  int64_t model_persistence_threshold = INT64_MAX;
  bool overlap_comm = true;
  DType model_dtype = DType::f32;  // the dtype of the partition and of the gathers
  // data_types.grad_accum_dtype: the dtype of the gradient partition and of the reduce-scatters
  // (f32, or the 16-bit model dtype: 2 bytes per gradient as the ZeRO paper counts). The unit's
  // f32 gradient is rounded once before its reduction; each micro-batch's reduced piece is added
  // to the partition in f32 and rounded once.
  DType grad_dtype = DType::f32;
};

// One unit of the model as the coordinator sees it.
struct Stage3Unit {
  std::string name;  // "embeddings", "block 3", "head"
  int64_t lo = 0, hi = 0;  // flat range
  std::vector<nn::Parameter*> params;
  std::vector<int64_t> offsets;  // each parameter's flat offset
  std::vector<Shape> shapes;
  std::vector<int> also;  // other units whose parameters this unit's computation reads (tied head)
};

enum class Stage3Phase { forward, recompute, backward };

class ParamCoordinator {
 public:
  // part_params: this rank's partition of the weights (model dtype, part.size elements);
  // part_grads: this rank's gradient partition (grad_dtype; gradients are added into it). comm may be
  // nullptr (one rank: gathers are copies). check_comm: a dup of comm for the order check.
  // swap: offload_param nvme (zero/param_swap.h): the partition is read from it piece by piece
  // (part_params then unused); nullptr: in memory.
  ParamCoordinator(std::vector<Stage3Unit> units, const Partition& part, Tensor part_params,
                   Tensor part_grads, comm::Communicator* comm,
                   std::unique_ptr<comm::Communicator> check_comm, Stage3Options opts,
                   ParamSwap* swap = nullptr);
  ~ParamCoordinator();

  void begin_forward();  // a new forward: the recorded order starts again
  void acquire(int unit, Stage3Phase phase);
  void release(int unit, Stage3Phase phase);  // backward: also launches the gradient reduction
  void end_backward();  // the first complete forward + backward becomes the recorded order
  // Waits for every gradient reduction and adds them into part_grads (before the step reads it).
  void finish_reductions();
  // The partition changed (optimizer step, checkpoint load): every gathered copy is stale.
  void invalidate();

  const std::vector<Stage3Unit>& units() const { return units_; }
  bool persistent(int unit) const { return state_[unit].persistent; }
  int persistent_units() const {
    int k = 0;
    for (const State& s : state_) k += s.persistent;
    return k;
  }
  // Pool bytes: buffers for gathered units and unit gradients, now and at most since the last
  // reset_peak(); gathered elements now (non-persistent, live or in flight).
  int64_t pool_bytes() const { return pool_bytes_; }
  int64_t pool_peak_bytes() const { return pool_peak_; }
  void reset_peak() { pool_peak_ = pool_bytes_; }
  int64_t live_elements() const { return live_elems_; }
  int64_t gathers() const { return gathers_; }         // all_gather_v issued (prefetches too)
  int64_t prefetch_hits() const { return prefetch_hits_; }  // acquires that found it in flight/live
  bool traced() const { return trace_done_; }

 private:
  enum class Status { released, inflight, live };
  struct State {
    Status status = Status::released;
    bool persistent = false;
    int users = 0;
    Tensor value;     // f32 compute values, [hi - lo]
    Tensor gather16;  // mixed precision: the gather's 16-bit target while in flight
    Tensor piece;     // offload_param nvme: this rank's piece, read from the swap file
    std::shared_ptr<comm::Work> work;
    Tensor grad;      // f32 gradient during backward
  };
  struct Reduction {
    std::shared_ptr<comm::Work> work;
    Tensor grad, out;
    int64_t dst = 0;  // offset in part_grads
  };

  int64_t numel(int u) const { return units_[u].hi - units_[u].lo; }
  struct PendingCheck {
    Tensor all;
    std::shared_ptr<comm::Work> work;
    int64_t index = 0;
  };
  void check_order(int unit, Stage3Phase phase);  // posts the check (see stage3.cpp)
  void verify_checks(size_t keep);                 // all but the newest `keep` pending checks
  [[noreturn]] void order_error(const std::string& message);
  void gather(int unit);       // issue (or copy, one rank) the unit's gather
  void wait_gather(int unit);  // make it live: wait, widen, bind
  void bind(int unit);
  void unbind(int unit);
  void drop(int unit);  // back to released, buffers to the pool
  void prefetch();
  bool keep_for_reuse(int unit) const;
  void reduce_grad(int unit);
  void drain(bool all);
  void accumulate(int64_t dst, const Tensor& piece);  // part_grads[dst, +n) += piece
  Tensor take(int64_t n, DType dt);
  void give(Tensor t);
  void record(int unit);

  std::vector<Stage3Unit> units_;
  std::vector<State> state_;
  Partition part_;
  Tensor part_params_, part_grads_;
  comm::Communicator* comm_;
  ParamSwap* swap_ = nullptr;
  std::unique_ptr<comm::Communicator> check_comm_;
  std::deque<PendingCheck> checks_;
  Stage3Options o_;
  std::vector<std::vector<int64_t>> counts_;  // per unit: elements of each rank's piece
  std::deque<Reduction> reductions_;
  std::map<std::pair<int64_t, int>, std::vector<Tensor>> free_;  // pool by (numel, dtype)
  int64_t pool_bytes_ = 0, pool_peak_ = 0, live_elems_ = 0;
  // The recorded order: unit ids of the acquires of one micro-batch.
  std::vector<int> trace_, recording_;
  bool trace_done_ = false, recording_on_ = true, backward_seen_ = false;
  size_t pos_ = 0;  // the next expected index in trace_ (trace_done_)
  int64_t accesses_ = 0, gathers_ = 0, prefetch_hits_ = 0;
};

}  // namespace zt::zero
