// comm/nccl_communicator.cpp: the `nccl` backend of Communicator, on device memory (one GPU per
// rank), as torch's ProcessGroupNCCL and DeepSpeed's comm layer use NCCL.
//
// ---- Status (issue #5, comm/nccl) ---------------------------------------------------------------
// Compiles warning-free with CUDA 13 / NCCL 2.28 (sm_90) and has NEVER RUN: no session so far had
// a GPU. tests/comm/test_nccl.cpp (one rank: every op, f32/bf16, against exact values; the error
// path) skips without a GPU; a GPU session runs `ctest -L gpu` first. Not done: an event pool
// (three cudaEventCreate per op), the performance pass against nccl-tests.
//
// How it works:
//  - Creation (make_nccl_communicator, collective over MPI_COMM_WORLD): every rank checks that it
//    has its GPU and the ranks agree over MPI before anyone enters NCCL (a rank that cannot join
//    would leave the others waiting in ncclCommInitRank); rank 0's ncclUniqueId is broadcast with
//    MPI_Bcast; ncclCommInitRank on the rank's GPU; the ranks agree on the result, so a failure
//    (e.g. "invalid usage": two ranks on one GPU) is thrown on every rank. dup() is ncclCommSplit
//    (every rank, one colour): a communicator of its own, whose ops never interleave with these.
//  - Issue (caller's thread, any op): an event `ready` is recorded on the caller's current stream
//    (core/cuda/stream.h) and the communicator's own high-priority stream waits for it, so the
//    collective runs after the kernels that produced its data without the host waiting; then
//    `start`, the NCCL call(s), `end` on the comm stream. The Work keeps the op's tensors (and any
//    scratch copy) alive until the op has completed: the caching allocator hands memory back per
//    stream and knows nothing of the comm stream (no record_stream).
//  - Completion (the communicator's monitor thread, the "watchdog" of ProcessGroupNCCL): takes the
//    ops in issue order and polls each op's `end` event (cudaEventQuery), ncclCommGetAsyncError,
//    and CommOptions::timeout_s (counted from when the op became the oldest pending one, so it
//    includes time the comm stream waited for compute). On success: comm log and observer (the
//    time is the start->end event interval; the observer's interval ends when the monitor saw the
//    end) and the watchdog's CommProgress (begin/end as for the mpi backend). On an asynchronous
//    NCCL error, a CUDA error or a timeout: ncclCommAbort (which unblocks the hung kernels), the op
//    fails with a CommError naming op, sequence number and rank with NCCL's error string, every
//    op queued after it fails too, and later issues throw at once.
//  - Work::wait(): the caller's current stream waits for `end` (later kernels are ordered after
//    the collective), and the host blocks until the monitor has seen the op complete (errors and
//    timeouts surface there, as with the mpi backend); with CommOptions::stream_wait_only, only
//    the stream wait (torch's default), rethrowing an error the monitor already saw. test(): done
//    when the monitor says so or `end` has completed (cudaEventQuery); rethrows the op's error.
//  - Destruction waits for every op already issued (the other ranks need them), then
//    ncclCommFinalize + ncclCommDestroy (or nothing after an abort), and destroys the stream.
//
// Per op: all_reduce ncclAllReduce (sum, avg = ncclAvg, max); reduce_scatter ncclReduceScatter;
// all_gather ncclAllGather; broadcast ncclBroadcast. NCCL has no v-variants: reduce_scatter_v is a
// group of ncclReduce, one per part with its owner as root; all_gather_v a group of ncclBroadcast,
// one per part from its owner. all_to_all is a group of ncclSend/ncclRecv pairs. barrier is a
// one-element all-reduce waited on. In-place forms are NCCL's own (out = chunk rank of in; in =
// chunk rank of out); any other overlap of in and out first copies `in` on the comm stream.
// 16-bit floats are reduced by NCCL in 16 bits (comm/communicator.h says what that means).
#include "comm/bootstrap.h"
#include "comm/communicator.h"
#include "comm/detail/cuda_rt.h"
#include "comm/detail/mpi_check.h"
#include "comm/detail/nccl_check.h"
#include "comm/detail/rank_devices.h"
#include "comm/watchdog.h"
#include "core/cuda/check.h"
#include "core/cuda/device.h"
#include "core/cuda/stream.h"
#include "core/error.h"

#include <cuda_runtime.h>
#include <nccl.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace zt::comm {
namespace {

using Clock = std::chrono::steady_clock;
using detail::DeviceScope;

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::f32:
      return ncclFloat32;
    case DType::f16:
      return ncclFloat16;
    case DType::bf16:
      return ncclBfloat16;
    case DType::i32:
      return ncclInt32;
    case DType::i64:
      return ncclInt64;
  }
  return ncclFloat32;
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
      return ncclSum;
    case ReduceOp::avg:
      return ncclAvg;
    case ReduceOp::max:
      return ncclMax;
  }
  return ncclSum;
}

char* bytes_of(const Tensor& t) { return static_cast<char*>(t.raw()); }

bool overlaps(const Tensor& a, const Tensor& b) {
  if (!a.shares_storage(b) || a.nbytes() == 0 || b.nbytes() == 0) return false;
  const char* pa = bytes_of(a);
  const char* pb = bytes_of(b);
  return pa < pb + b.nbytes() && pb < pa + a.nbytes();
}

// One issued op: its events, the tensors it keeps alive, and its completion as seen by the monitor.
class NcclWork final : public Work {
 public:
  NcclWork(std::string what, const char* op, int64_t seq, DType dtype, int64_t count, int64_t bytes,
           int device, double timeout_s, bool logged, bool stream_wait_only)
      : what_(std::move(what)),
        op_(op),
        seq_(seq),
        dtype_(dtype),
        count_(count),
        bytes_(bytes),
        device_(device),
        timeout_s_(timeout_s),
        logged_(logged),
        stream_wait_only_(stream_wait_only) {
    DeviceScope scope(device);
    ZT_CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
    ZT_CUDA_CHECK(cudaEventCreate(&start_));  // timing: the comm log's seconds
    ZT_CUDA_CHECK(cudaEventCreate(&end_));
  }
  ~NcclWork() override {
    for (cudaEvent_t e : {ready_, start_, end_})
      if (e != nullptr) ZT_CUDA_CHECK_WARN(cudaEventDestroy(e));
  }
  NcclWork(const NcclWork&) = delete;
  NcclWork& operator=(const NcclWork&) = delete;

  void wait() override {
    {
      // Later work on the caller's stream comes after the collective (no-op once it completed).
      std::lock_guard<std::mutex> lk(mu_);
      if (!done_ || !error_) ZT_CUDA_CHECK(cudaStreamWaitEvent(cuda::current_stream(), end_, 0));
      if (stream_wait_only_) {
        if (done_ && error_) std::rethrow_exception(error_);
        return;
      }
    }
    wait_host();
  }

  // Blocks the host until the monitor has seen the op complete; rethrows its error.
  void wait_host() {
    std::unique_lock<std::mutex> lock(mu_);
    if (timeout_s_ > 0) {
      // The monitor aborts after timeout_s; this bound only guards against a stuck monitor.
      auto limit = std::chrono::duration<double>(2 * timeout_s_ + 10);
      if (!cv_.wait_for(lock, limit, [this] { return done_; }))
        throw CommError(zt::detail::str_cat(what_, ": not complete after ", 2 * timeout_s_ + 10,
                                            " s although CommOptions::timeout_s is ", timeout_s_,
                                            " s: the NCCL monitor is stuck; end the job "
                                            "(Bootstrap::abort)"));
    } else {
      cv_.wait(lock, [this] { return done_; });
    }
    if (error_) std::rethrow_exception(error_);
  }

  bool test() override {
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (done_) {
        if (error_) std::rethrow_exception(error_);
        return true;
      }
    }
    const cudaError_t q = cudaEventQuery(end_);
    if (q == cudaSuccess) return true;  // the monitor records it shortly
    (void)cudaGetLastError();
    if (q == cudaErrorNotReady) return false;
    throw CommError(zt::detail::str_cat(what_, ": cudaEventQuery: ", cudaGetErrorName(q), ": ",
                                        cudaGetErrorString(q)));
  }

  void finish(std::exception_ptr error) {
    std::vector<Tensor> release;
    {
      std::lock_guard<std::mutex> lk(mu_);
      done_ = true;
      error_ = std::move(error);
      release.swap(keep_);
    }
    cv_.notify_all();
  }
  void keep(std::vector<Tensor> tensors) {
    std::lock_guard<std::mutex> lk(mu_);
    keep_ = std::move(tensors);
  }

  const std::string& what() const { return what_; }
  const char* op() const { return op_; }
  int64_t seq() const { return seq_; }
  DType dtype() const { return dtype_; }
  int64_t count() const { return count_; }
  int64_t bytes() const { return bytes_; }
  int device() const { return device_; }
  bool logged() const { return logged_; }
  cudaEvent_t ready() const { return ready_; }
  cudaEvent_t start() const { return start_; }
  cudaEvent_t end() const { return end_; }

 private:
  std::string what_;  // "all_reduce #12 (bf16, 1001 elements) on rank 3 (nccl)"
  const char* op_;
  int64_t seq_;
  DType dtype_;
  int64_t count_, bytes_;
  int device_;
  double timeout_s_;
  bool logged_;
  bool stream_wait_only_;  // CommOptions::stream_wait_only
  cudaEvent_t ready_ = nullptr, start_ = nullptr, end_ = nullptr;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::exception_ptr error_;
  std::vector<Tensor> keep_;
};

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(ncclComm_t comm, int rank, int world, int device, CommOptions options);
  ~NcclCommunicator() override;

  int rank() const override { return rank_; }
  int world() const override { return world_; }
  std::string backend() const override { return "nccl"; }

  std::shared_ptr<Work> all_reduce(Tensor& buf, ReduceOp op) override;
  std::shared_ptr<Work> reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op) override;
  std::shared_ptr<Work> reduce_scatter_v(const Tensor& in, Tensor& out,
                                         const std::vector<int64_t>& counts, ReduceOp op) override;
  std::shared_ptr<Work> all_gather(const Tensor& in, Tensor& out) override;
  std::shared_ptr<Work> all_gather_v(const Tensor& in, Tensor& out,
                                     const std::vector<int64_t>& counts) override;
  std::shared_ptr<Work> broadcast(Tensor& buf, int root) override;
  std::shared_ptr<Work> all_to_all(const Tensor& in, Tensor& out) override;
  void barrier() override;
  std::unique_ptr<Communicator> dup() override;

 private:
  // Enqueues the op's NCCL calls on the stream; may add scratch tensors to `keep`.
  using Enqueue = std::function<void(cudaStream_t, std::vector<Tensor>& keep)>;
  // Issues `fn` on the comm stream after the caller's current stream; `keep` lives until done.
  std::shared_ptr<Work> submit(const char* op, DType dtype, int64_t count, int64_t log_bytes,
                               std::vector<Tensor> keep, Enqueue fn, bool logged = true);
  void check_tensor(const char* op, const Tensor& t) const;
  void check_reduce(const char* op, const Tensor& t, ReduceOp rop) const;
  // A copy of `t` made on the comm stream (for overlapping in/out); added to `keep`.
  static Tensor scratch_copy(const Tensor& t, int device, cudaStream_t s,
                             std::vector<Tensor>& keep);
  void group(const std::function<void()>& calls);  // ncclGroupStart ... ncclGroupEnd
  void monitor_loop();
  // Aborts the NCCL communicator once, fails `current` and every queued op with `why`.
  void abort_and_fail(const std::string& why, const std::shared_ptr<NcclWork>& current);

  ncclComm_t comm_;
  int rank_, world_, device_;
  cudaStream_t stream_ = nullptr;
  std::timed_mutex issue_mu_;  // one issuing thread at a time inside NCCL on comm_
  std::atomic<uint64_t> seq_{0};
  std::atomic<bool> aborted_{false};  // set once, before ncclCommAbort
  std::mutex query_mu_;               // ncclCommGetAsyncError vs ncclCommAbort
  std::shared_ptr<CommProgress> progress_ = register_communicator();  // [watchdog]
  Tensor barrier_buf_;

  std::mutex mu_;  // guards the monitor's queue and broken_
  std::condition_variable cv_;
  std::deque<std::shared_ptr<NcclWork>> queue_;
  bool stop_ = false;
  std::string broken_;  // non-empty once aborted: why
  std::thread monitor_;
};

NcclCommunicator::NcclCommunicator(ncclComm_t comm, int rank, int world, int device,
                                   CommOptions options)
    : Communicator(world, options), comm_(comm), rank_(rank), world_(world), device_(device) {
  DeviceScope scope(device_);
  int least = 0, greatest = 0;  // comm kernels first when the GPU is busy (as torch does)
  ZT_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  ZT_CUDA_CHECK(cudaStreamCreateWithPriority(&stream_, cudaStreamNonBlocking, greatest));
  monitor_ = std::thread([this] { monitor_loop(); });
  pthread_setname_np(monitor_.native_handle(), "zt-comm-nccl");
}

NcclCommunicator::~NcclCommunicator() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  monitor_.join();  // every op issued has completed, failed, or been aborted
  barrier_buf_ = Tensor();
  if (!aborted_.load()) {
    ZT_NCCL_CHECK_WARN(comm_, ncclCommFinalize(comm_));
    ZT_NCCL_CHECK_WARN(comm_, ncclCommDestroy(comm_));
  }
  if (stream_ != nullptr) ZT_CUDA_CHECK_WARN(cudaStreamDestroy(stream_));
}

void NcclCommunicator::check_tensor(const char* op, const Tensor& t) const {
  ZT_CHECK(t.defined(), op, ": undefined tensor");
  ZT_CHECK(t.device() == Device::cuda(device_), op, ": the nccl backend works on tensors on its ",
           "GPU, cuda:", device_, "; got ", t.str(), " (use the mpi backend for host tensors)");
}

void NcclCommunicator::check_reduce(const char* op, const Tensor& t, ReduceOp rop) const {
  DType d = t.dtype();
  ZT_CHECK(d == DType::f32 || d == DType::f16 || d == DType::bf16 || d == DType::i32, op,
           ": reductions take f32, f16, bf16 or i32 tensors, got ", t.str());
  ZT_CHECK(rop != ReduceOp::avg || d != DType::i32, op,
           ": avg of i32 is not defined (integer division); use sum and divide yourself");
}

std::shared_ptr<Work> NcclCommunicator::submit(const char* op, DType dtype, int64_t count,
                                               int64_t log_bytes, std::vector<Tensor> keep,
                                               Enqueue fn, bool logged) {
  const auto seq = static_cast<int64_t>(seq_++);
  std::string what = zt::detail::str_cat(op, " #", seq, " (", dtype_name(dtype), ", ", count,
                                         " elements) on rank ", rank_, " (nccl)");
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!broken_.empty())
      throw CommError(what + ": not issued: the NCCL communicator was aborted after " + broken_);
  }
  auto w = std::make_shared<NcclWork>(what, op, seq, dtype, count, log_bytes, device_,
                                      options_.timeout_s, logged, options_.stream_wait_only);
  try {
    std::lock_guard<std::timed_mutex> lk(issue_mu_);
    DeviceScope scope(device_);
    ZT_CUDA_CHECK(cudaEventRecord(w->ready(), cuda::current_stream()));
    ZT_CUDA_CHECK(cudaStreamWaitEvent(stream_, w->ready(), 0));
    ZT_CUDA_CHECK(cudaEventRecord(w->start(), stream_));
    fn(stream_, keep);
    ZT_CUDA_CHECK(cudaEventRecord(w->end(), stream_));
  } catch (const std::exception& e) {
    // The op may be half enqueued and the ranks' sequences now differ: this communicator is done.
    const std::string why = what + ": " + e.what();
    abort_and_fail(why, nullptr);
    throw CommError(why);
  }
  w->keep(std::move(keep));
  std::string aborted_after;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (broken_.empty())
      queue_.push_back(w);
    else
      aborted_after = broken_;  // aborted while this op was being enqueued
  }
  if (!aborted_after.empty())
    w->finish(std::make_exception_ptr(
        CommError(what + ": not run: the NCCL communicator was aborted after " + aborted_after)));
  cv_.notify_one();
  return w;
}

void NcclCommunicator::monitor_loop() {
  ZT_CUDA_CHECK_WARN(cudaSetDevice(device_));  // this thread's GPU: events and NCCL queries
  for (;;) {
    std::shared_ptr<NcclWork> w;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stop_ and drained
      w = queue_.front();
      queue_.pop_front();
    }
    progress_->begin(w->op(), w->seq(), w->bytes(), dtype_name(w->dtype()), w->count());
    const auto since = Clock::now();
    std::string error;
    for (int polls = 0;; ++polls) {
      const cudaError_t q = cudaEventQuery(w->end());
      if (q == cudaSuccess) break;
      (void)cudaGetLastError();
      if (q != cudaErrorNotReady) {
        error = zt::detail::str_cat("CUDA error while waiting for it: ", cudaGetErrorName(q), ": ",
                                    cudaGetErrorString(q));
        break;
      }
      if (std::lock_guard<std::mutex> q_lk(query_mu_); !aborted_.load()) {
        ncclResult_t async = ncclSuccess;
        const ncclResult_t rc = ncclCommGetAsyncError(comm_, &async);
        if (rc != ncclSuccess) async = rc;
        if (async != ncclSuccess && async != ncclInProgress) {
          const char* last = ncclGetLastError(comm_);
          error = zt::detail::str_cat("NCCL asynchronous error ", static_cast<int>(async), " (",
                                      ncclGetErrorString(async), ")",
                                      last != nullptr && *last ? ": " : "", last ? last : "");
          break;
        }
      }
      const double waited = std::chrono::duration<double>(Clock::now() - since).count();
      if (options_.timeout_s > 0 && waited > options_.timeout_s) {
        error = zt::detail::str_cat(
            "not complete after ", options_.timeout_s,
            " s (CommOptions::timeout_s); another rank may have failed or issued collectives in a "
            "different order. The NCCL communicator was aborted (ncclCommAbort)");
        break;
      }
      // Spin briefly (short collectives), then sleep: the monitor must not steal a core.
      if (polls < 64)
        std::this_thread::yield();
      else
        std::this_thread::sleep_for(std::chrono::microseconds(polls < 1000 ? 20 : 200));
    }
    progress_->end(w->seq());
    if (!error.empty()) {
      abort_and_fail(w->what() + ": " + error, w);
      continue;
    }
    const auto t1 = Clock::now();
    float ms = 0.f;
    if (cudaEventElapsedTime(&ms, w->start(), w->end()) != cudaSuccess) {
      (void)cudaGetLastError();
      ms = static_cast<float>(std::chrono::duration<double, std::milli>(t1 - since).count());
    }
    const auto t0 = t1 - std::chrono::duration_cast<Clock::duration>(
                             std::chrono::duration<double, std::milli>(ms));
    if (w->logged()) {
      log_.record(w->op(), w->dtype(), w->count(), w->bytes(), ms / 1e3);
      notify(w->op(), w->bytes(), t0, t1);
    }
    w->finish(nullptr);
  }
}

void NcclCommunicator::abort_and_fail(const std::string& why,
                                      const std::shared_ptr<NcclWork>& current) {
  std::deque<std::shared_ptr<NcclWork>> pending;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (broken_.empty()) broken_ = why;
    pending.swap(queue_);
  }
  if (!aborted_.exchange(true)) {
    // Not while another thread is inside NCCL on comm_, unless it is stuck there (then abort is
    // what unblocks it).
    const bool locked = issue_mu_.try_lock_for(std::chrono::seconds(2));
    {
      std::lock_guard<std::mutex> q_lk(query_mu_);  // not during the monitor's error query
      ZT_NCCL_CHECK_WARN(comm_, ncclCommAbort(comm_));
    }
    if (locked) issue_mu_.unlock();
    std::fprintf(stderr, "zerotrain: rank %d: NCCL communicator aborted: %s\n", rank_, why.c_str());
  }
  if (current) current->finish(std::make_exception_ptr(CommError(why)));
  for (auto& p : pending)
    p->finish(std::make_exception_ptr(
        CommError(p->what() + ": not run: the NCCL communicator was aborted after " + why)));
}

Tensor NcclCommunicator::scratch_copy(const Tensor& t, int device, cudaStream_t s,
                                      std::vector<Tensor>& keep) {
  Tensor c = Tensor::empty({t.numel()}, t.dtype(), Device::cuda(device));
  ZT_CUDA_CHECK(cudaMemcpyAsync(c.raw(), t.raw(), t.nbytes(), cudaMemcpyDeviceToDevice, s));
  keep.push_back(c);
  return c;
}

void NcclCommunicator::group(const std::function<void()>& calls) {
  ZT_NCCL_CHECK(comm_, ncclGroupStart());
  try {
    calls();
  } catch (...) {
    ZT_NCCL_CHECK_WARN(comm_, ncclGroupEnd());
    throw;
  }
  ZT_NCCL_CHECK(comm_, ncclGroupEnd());
}

// ---- the ops ------------------------------------------------------------------------------------

std::shared_ptr<Work> NcclCommunicator::all_reduce(Tensor& buf, ReduceOp op) {
  check_tensor("all_reduce", buf);
  check_reduce("all_reduce", buf, op);
  return submit("all_reduce", buf.dtype(), buf.numel(), static_cast<int64_t>(buf.nbytes()), {buf},
                [this, buf, op](cudaStream_t s, std::vector<Tensor>&) {
                  if (buf.numel() == 0) return;
                  ZT_NCCL_CHECK(
                      comm_, ncclAllReduce(buf.raw(), buf.raw(), static_cast<size_t>(buf.numel()),
                                           nccl_type(buf.dtype()), nccl_op(op), comm_, s));
                });
}

std::shared_ptr<Work> NcclCommunicator::reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op) {
  check_tensor("reduce_scatter", in);
  check_tensor("reduce_scatter", out);
  check_reduce("reduce_scatter", in, op);
  ZT_CHECK(in.dtype() == out.dtype(), "reduce_scatter: in is ", in.str(), " but out is ", out.str(),
           "; both must have one dtype");
  ZT_CHECK(in.numel() == static_cast<int64_t>(world_) * out.numel(),
           "reduce_scatter: in must hold world (", world_, ") x out's elements: in ", in.str(),
           ", out ", out.str());
  const int64_t n = out.numel();
  const size_t es = dtype_size(in.dtype());
  const bool in_place = bytes_of(out) == bytes_of(in) + rank_ * n * es;
  const bool copy_in = overlaps(in, out) && !in_place;
  return submit(
      "reduce_scatter", in.dtype(), in.numel(), static_cast<int64_t>(in.nbytes()), {in, out},
      [this, in, out, op, n, copy_in](cudaStream_t s, std::vector<Tensor>& keep) {
        if (n == 0) return;
        const Tensor src = copy_in ? scratch_copy(in, device_, s, keep) : in;
        ZT_NCCL_CHECK(comm_, ncclReduceScatter(src.raw(), out.raw(), static_cast<size_t>(n),
                                               nccl_type(in.dtype()), nccl_op(op), comm_, s));
      });
}

std::shared_ptr<Work> NcclCommunicator::reduce_scatter_v(const Tensor& in, Tensor& out,
                                                         const std::vector<int64_t>& counts,
                                                         ReduceOp op) {
  check_tensor("reduce_scatter_v", in);
  check_tensor("reduce_scatter_v", out);
  check_reduce("reduce_scatter_v", in, op);
  ZT_CHECK(in.dtype() == out.dtype(), "reduce_scatter_v: in is ", in.str(), " but out is ",
           out.str(), "; both must have one dtype");
  ZT_CHECK(static_cast<int>(counts.size()) == world_, "reduce_scatter_v: ", counts.size(),
           " counts for a world of ", world_);
  int64_t total = 0;
  for (size_t r = 0; r < counts.size(); ++r) {
    ZT_CHECK(counts[r] >= 0, "reduce_scatter_v: negative count ", counts[r], " for rank ", r);
    total += counts[r];
  }
  ZT_CHECK(total == in.numel(), "reduce_scatter_v: counts add up to ", total, " but in is ",
           in.str());
  ZT_CHECK(out.numel() == counts[rank_], "reduce_scatter_v: out ", out.str(), " should hold ",
           counts[rank_], " elements (counts[", rank_, "])");
  ZT_CHECK(total <= INT_MAX, "reduce_scatter_v: ", total, " elements exceed one MPI call");
  ZT_CHECK(!overlaps(in, out) || out.numel() == 0, "reduce_scatter_v: in and out overlap");
  return submit("reduce_scatter_v", in.dtype(), in.numel(), static_cast<int64_t>(in.nbytes()),
                {in, out}, [this, in, out, counts, op](cudaStream_t s, std::vector<Tensor>&) {
                  const size_t es = dtype_size(in.dtype());
                  // One ncclReduce per non-empty part, rooted at its owner (recvbuff is only
                  // written on the root; elsewhere it points at the part itself).
                  group([&] {
                    int64_t off = 0;
                    for (int r = 0; r < world_; ++r) {
                      const int64_t c = counts[static_cast<size_t>(r)];
                      char* part = bytes_of(in) + off * es;
                      off += c;
                      if (c == 0) continue;
                      ZT_NCCL_CHECK(comm_, ncclReduce(part, r == rank_ ? out.raw() : part,
                                                      static_cast<size_t>(c), nccl_type(in.dtype()),
                                                      nccl_op(op), r, comm_, s));
                    }
                  });
                });
}

std::shared_ptr<Work> NcclCommunicator::all_gather(const Tensor& in, Tensor& out) {
  check_tensor("all_gather", in);
  check_tensor("all_gather", out);
  ZT_CHECK(in.dtype() == out.dtype(), "all_gather: in is ", in.str(), " but out is ", out.str(),
           "; both must have one dtype");
  ZT_CHECK(out.numel() == static_cast<int64_t>(world_) * in.numel(),
           "all_gather: out must hold world (", world_, ") x in's elements: in ", in.str(),
           ", out ", out.str());
  const int64_t n = in.numel();
  const size_t es = dtype_size(in.dtype());
  const bool in_place = bytes_of(in) == bytes_of(out) + rank_ * n * es;
  const bool copy_in = overlaps(in, out) && !in_place;
  return submit("all_gather", in.dtype(), out.numel(), static_cast<int64_t>(out.nbytes()),
                {in, out}, [this, in, out, n, copy_in](cudaStream_t s, std::vector<Tensor>& keep) {
                  if (n == 0) return;
                  const Tensor src = copy_in ? scratch_copy(in, device_, s, keep) : in;
                  ZT_NCCL_CHECK(comm_, ncclAllGather(src.raw(), out.raw(), static_cast<size_t>(n),
                                                     nccl_type(in.dtype()), comm_, s));
                });
}

std::shared_ptr<Work> NcclCommunicator::all_gather_v(const Tensor& in, Tensor& out,
                                                     const std::vector<int64_t>& counts) {
  check_tensor("all_gather_v", in);
  check_tensor("all_gather_v", out);
  ZT_CHECK(in.dtype() == out.dtype(), "all_gather_v: in is ", in.str(), " but out is ", out.str(),
           "; both must have one dtype");
  ZT_CHECK(static_cast<int>(counts.size()) == world_, "all_gather_v: ", counts.size(),
           " counts for a world of ", world_);
  int64_t total = 0;
  std::vector<int64_t> displs(counts.size());
  for (size_t r = 0; r < counts.size(); ++r) {
    ZT_CHECK(counts[r] >= 0, "all_gather_v: negative count ", counts[r], " for rank ", r);
    displs[r] = total;
    total += counts[r];
  }
  ZT_CHECK(total == out.numel(), "all_gather_v: counts add up to ", total, " but out is ",
           out.str());
  ZT_CHECK(in.numel() == counts[rank_], "all_gather_v: in ", in.str(), " should hold ",
           counts[rank_], " elements (counts[", rank_, "])");
  ZT_CHECK(total <= INT_MAX, "all_gather_v: ", total, " elements exceed one MPI call");
  const size_t es = dtype_size(in.dtype());
  const bool in_place = bytes_of(in) == bytes_of(out) + displs[rank_] * es;
  const bool copy_in = overlaps(in, out) && !in_place && in.numel() > 0;
  return submit(
      "all_gather_v", in.dtype(), out.numel(), static_cast<int64_t>(out.nbytes()), {in, out},
      [this, in, out, counts, displs, copy_in](cudaStream_t s, std::vector<Tensor>& keep) {
        const size_t es = dtype_size(in.dtype());
        const Tensor src = copy_in ? scratch_copy(in, device_, s, keep) : in;
        // One ncclBroadcast per non-empty part, from its owner into its place in out
        // (sendbuff is only read on the root).
        group([&] {
          for (int r = 0; r < world_; ++r) {
            const int64_t c = counts[static_cast<size_t>(r)];
            if (c == 0) continue;
            char* dst = bytes_of(out) + displs[static_cast<size_t>(r)] * es;
            ZT_NCCL_CHECK(comm_,
                          ncclBroadcast(r == rank_ ? src.raw() : dst, dst, static_cast<size_t>(c),
                                        nccl_type(in.dtype()), r, comm_, s));
          }
        });
      });
}

std::shared_ptr<Work> NcclCommunicator::broadcast(Tensor& buf, int root) {
  check_tensor("broadcast", buf);
  ZT_CHECK(root >= 0 && root < world_, "broadcast: root ", root, " is not a rank of this ", world_,
           "-rank communicator");
  return submit("broadcast", buf.dtype(), buf.numel(), static_cast<int64_t>(buf.nbytes()), {buf},
                [this, buf, root](cudaStream_t s, std::vector<Tensor>&) {
                  if (buf.numel() == 0) return;
                  ZT_NCCL_CHECK(
                      comm_, ncclBroadcast(buf.raw(), buf.raw(), static_cast<size_t>(buf.numel()),
                                           nccl_type(buf.dtype()), root, comm_, s));
                });
}

std::shared_ptr<Work> NcclCommunicator::all_to_all(const Tensor& in, Tensor& out) {
  check_tensor("all_to_all", in);
  check_tensor("all_to_all", out);
  ZT_CHECK(in.dtype() == out.dtype(), "all_to_all: in is ", in.str(), " but out is ", out.str(),
           "; both must have one dtype");
  ZT_CHECK(in.numel() == out.numel() && in.numel() % world_ == 0, "all_to_all: in and out must ",
           "hold the same world (", world_, ") x n elements: in ", in.str(), ", out ", out.str());
  ZT_CHECK(in.numel() <= INT_MAX, "all_to_all: ", in.numel(), " elements exceed one MPI call");
  ZT_CHECK(!overlaps(in, out), "all_to_all: in and out overlap");
  return submit("all_to_all", in.dtype(), in.numel(), static_cast<int64_t>(in.nbytes()), {in, out},
                [this, in, out](cudaStream_t s, std::vector<Tensor>&) {
                  const int64_t n = in.numel() / world_;
                  if (n == 0) return;
                  const size_t bytes = static_cast<size_t>(n) * dtype_size(in.dtype());
                  const ncclDataType_t t = nccl_type(in.dtype());
                  group([&] {
                    for (int r = 0; r < world_; ++r) {
                      ZT_NCCL_CHECK(comm_, ncclSend(bytes_of(in) + r * bytes,
                                                    static_cast<size_t>(n), t, r, comm_, s));
                      ZT_NCCL_CHECK(comm_, ncclRecv(bytes_of(out) + r * bytes,
                                                    static_cast<size_t>(n), t, r, comm_, s));
                    }
                  });
                });
}

void NcclCommunicator::barrier() {
  if (!barrier_buf_.defined()) {
    DeviceScope scope(device_);
    barrier_buf_ = Tensor::zeros({1}, DType::i32, Device::cuda(device_));
  }
  Tensor b = barrier_buf_;
  std::shared_ptr<Work> w = submit(
      "barrier", DType::i32, 1, 0, {b},
      [this, b](cudaStream_t s, std::vector<Tensor>&) {
        ZT_NCCL_CHECK(comm_, ncclAllReduce(b.raw(), b.raw(), 1, ncclInt32, ncclMax, comm_, s));
      },
      /*logged=*/false);
  w->wait();
  static_cast<NcclWork&>(*w).wait_host();  // blocking even with stream_wait_only
}

std::unique_ptr<Communicator> NcclCommunicator::dup() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!broken_.empty())
      throw CommError(zt::detail::str_cat("dup on rank ", rank_,
                                          ": the NCCL communicator was aborted after ", broken_));
  }
  ncclComm_t child = nullptr;
  {
    std::lock_guard<std::timed_mutex> lk(issue_mu_);
    DeviceScope scope(device_);
    try {
      // Every rank, one colour, key = rank: the same ranks in the same order, a new context.
      ZT_NCCL_CHECK(comm_, ncclCommSplit(comm_, 0, rank_, &child, nullptr));
    } catch (const std::exception& e) {
      throw CommError(zt::detail::str_cat("dup (ncclCommSplit) on rank ", rank_, ": ", e.what()));
    }
  }
  auto c = std::make_unique<NcclCommunicator>(child, rank_, world_, device_, options_);
  c->log().configure(log_.options());
  return c;
}

// ---- creation -----------------------------------------------------------------------------------

// Every rank learns whether any rank reported a problem (`mine`, empty: none) and the first such
// rank's text. Collective over MPI_COMM_WORLD.
std::string first_problem(const std::string& mine, int rank) {
  int me = mine.empty() ? INT_MAX : rank, first = INT_MAX;
  ZT_MPI_CHECK(MPI_Allreduce(&me, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD));
  if (first == INT_MAX) return "";
  char text[1024] = {0};
  if (rank == first) std::snprintf(text, sizeof text, "%s", mine.c_str());
  ZT_MPI_CHECK(MPI_Bcast(text, sizeof text, MPI_CHAR, first, MPI_COMM_WORLD));
  return zt::detail::str_cat("rank ", first, ": ", text);
}

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(const CommOptions& options) {
  const Topology& topo = Bootstrap::instance().topology();  // throws when MPI is not initialised
  const int device = options.device >= 0 ? options.device : local_rank_device();
  const int gpus = cuda::device_count();

  // 1. Every rank has a GPU of its own, agreed before anyone enters NCCL (a rank that cannot join
  // would leave the others waiting in ncclCommInitRank): the same check as comm.backend: nccl.
  try {
    choose_backend(Backend::nccl, true, true, detail::gather_rank_devices(device));
  } catch (const ConfigError& e) {
    throw CommError(zt::detail::str_cat("make_nccl_communicator on rank ", topo.rank,
                                        " (cuda:", device, " of ", gpus, " visible): ", e.what()));
  }

  // 2. Rank 0's unique id, with its status, to every rank.
  struct {
    ncclUniqueId id;
    int rc;
  } msg{};
  if (topo.rank == 0) msg.rc = static_cast<int>(ncclGetUniqueId(&msg.id));
  ZT_MPI_CHECK(MPI_Bcast(&msg, sizeof msg, MPI_BYTE, 0, MPI_COMM_WORLD));
  if (msg.rc != ncclSuccess)
    throw CommError(zt::detail::str_cat("nccl backend: ncclGetUniqueId on rank 0 failed: ",
                                        ncclGetErrorString(static_cast<ncclResult_t>(msg.rc))));

  // 3. The communicator on our GPU; the ranks agree on the outcome.
  ncclComm_t comm = nullptr;
  std::string problem;
  {
    DeviceScope scope(device);
    const ncclResult_t rc = ncclCommInitRank(&comm, topo.world, msg.id, topo.rank);
    if (rc != ncclSuccess) {
      const char* last = ncclGetLastError(nullptr);
      problem = zt::detail::str_cat(
          "ncclCommInitRank on cuda:", device, " (", detail::gpu_identity(device),
          ") failed: NCCL error ", static_cast<int>(rc), " (", ncclGetErrorString(rc), ")",
          last != nullptr && *last ? ": " : "", last ? last : "",
          rc == ncclInvalidUsage ? " [NCCL refuses two ranks on one GPU; use comm.backend: mpi]"
                                 : "");
      comm = nullptr;
    }
  }
  if (std::string p = first_problem(problem, topo.rank); !p.empty()) {
    if (comm != nullptr) ZT_NCCL_CHECK_WARN(comm, ncclCommAbort(comm));
    throw CommError("nccl backend: " + p);
  }
  return std::make_unique<NcclCommunicator>(comm, topo.rank, topo.world, device, options);
}

}  // namespace zt::comm
