// comm/mpi_communicator.cpp: the `mpi` backend of Communicator: host memory, device memory staged.
//
// Each op is checked on the caller's thread, then queued on the communicator's CommThread
// (comm/detail/comm_thread.h), which runs it with blocking MPI collectives on a private dup of
// MPI_COMM_WORLD. The paths, per op:
//   all_reduce      f32/i32: MPI_Allreduce in place. f16/bf16: widen to the f32 staging buffer,
//                   MPI_Allreduce(MPI_FLOAT) in place, round back (comm/communicator.h says why).
//   reduce_scatter  f32/i32 without overlap: MPI_Reduce_scatter_block straight into out. Otherwise
//                   staged: gather this piece of every rank's chunk into staging, reduce-scatter it
//                   in place, store the result (this also handles in/out overlap).
//   all_gather      MPI_Allgather, MPI_IN_PLACE when in is chunk rank() of out; over-long chunks
//                   use a resized datatype so that each piece lands at its offset in every chunk.
//   broadcast       MPI_Bcast.
// avg is sum followed by a division by world in f32 (before any rounding to 16 bits). Buffers
// longer than chunk_elems go in pieces, identically on every rank.
//
// Device tensors (CUDA memory; OpenMPI here is not CUDA-aware) are staged through page-locked host
// buffers that the communicator keeps (grown on demand, registered with cudaHostRegister, freed
// with it). At issue, an event is recorded on the caller's current stream; on the comm thread the
// op waits for it (the kernels that produced the data), copies device -> host, runs the host path
// above on the staging buffers, and copies host -> device before the Work completes, so wait()
// returning means the device buffer holds the result. Per op:
//   all_reduce, broadcast   pieces of chunk_elems elements: copy in, collective, copy out;
//   reduce_scatter          pieces of chunk_elems / world elements of every rank's chunk (one 2-D
//                           copy gathers piece j of each chunk), reduce-scattered, copied out;
//   all_gather              pieces of chunk_elems elements of `in`, gathered, scattered back into
//                           every chunk of `out` with one 2-D copy;
//   reduce_scatter_v, all_gather_v, all_to_all   whole tensors (one MPI call each anyway).
// Overlapping in/out (other than the in-place forms) stage the whole input first. Host tensors
// never reach this code (no CUDA call on the host path); CUDA calls live in comm/detail/cuda_rt.
#include "comm/bootstrap.h"
#include "comm/communicator.h"
#include "comm/detail/comm_thread.h"
#include "comm/detail/cuda_rt.h"
#include "comm/detail/mpi_check.h"
#include "comm/detail/staging.h"
#include "comm/watchdog.h"
#include "core/error.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <utility>
#include <vector>

namespace zt::comm {

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
      return "sum";
    case ReduceOp::avg:
      return "avg";
    case ReduceOp::max:
      return "max";
  }
  return "?";
}

namespace {

constexpr int64_t kDefaultChunkElems = int64_t{1} << 25;

// ZT_COMM_CHUNK_ELEMS, read once (CONVENTIONS 14: tunables in one place, cached, documented in
// comm/communicator.h's CommOptions::chunk_elems).
int64_t env_chunk_elems() {
  static const int64_t value = [] {
    const char* v = std::getenv("ZT_COMM_CHUNK_ELEMS");
    if (v == nullptr || *v == '\0') return int64_t{0};
    char* end = nullptr;
    long long x = std::strtoll(v, &end, 10);
    if (end == nullptr || *end != '\0' || x <= 0)
      throw ConfigError(zt::detail::str_cat("environment ZT_COMM_CHUNK_ELEMS=", v,
                                            ": expected a positive number of elements"));
    return static_cast<int64_t>(x);
  }();
  return value;
}

int64_t resolve_chunk(int64_t requested) {
  int64_t c = requested > 0 ? requested : env_chunk_elems();
  if (c <= 0) c = kDefaultChunkElems;
  return std::min<int64_t>(c, INT_MAX);
}

MPI_Datatype mpi_type(DType t) {
  switch (t) {
    case DType::f32:
      return MPI_FLOAT;
    case DType::f16:
    case DType::bf16:
      return MPI_UINT16_T;  // moved as bits; never reduced as such
    case DType::i32:
      return MPI_INT32_T;
    case DType::i64:
      return MPI_INT64_T;
  }
  return MPI_DATATYPE_NULL;
}

MPI_Op mpi_op(ReduceOp op) { return op == ReduceOp::max ? MPI_MAX : MPI_SUM; }

bool is_16bit_float(DType t) { return t == DType::f16 || t == DType::bf16; }

// [watchdog] Marks an op as running on the comm thread for the watchdog (comm/watchdog.h), from
// its start to its end, error or not.
class ProgressScope {
 public:
  ProgressScope(CommProgress& p, const char* op, int64_t seq, int64_t bytes, const char* dtype,
                int64_t count)
      : p_(p), seq_(seq) {
    p_.begin(op, seq, bytes, dtype, count);
  }
  ~ProgressScope() { p_.end(seq_); }
  ProgressScope(const ProgressScope&) = delete;
  ProgressScope& operator=(const ProgressScope&) = delete;

 private:
  CommProgress& p_;
  int64_t seq_;
};

char* bytes_of(const Tensor& t) { return static_cast<char*>(t.raw()); }

// Byte ranges of two tensors intersect (only possible within one storage).
bool overlaps(const Tensor& a, const Tensor& b) {
  if (!a.shares_storage(b) || a.nbytes() == 0 || b.nbytes() == 0) return false;
  const char* pa = bytes_of(a);
  const char* pb = bytes_of(b);
  return pa < pb + b.nbytes() && pb < pa + a.nbytes();
}

void divide(float* x, int64_t n, int world) {
  const float w = static_cast<float>(world);
  for (int64_t i = 0; i < n; ++i) x[i] /= w;
}

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator(MPI_Comm comm, CommOptions options);
  ~MpiCommunicator() override;

  int rank() const override { return rank_; }
  int world() const override { return world_; }
  std::string backend() const override { return "mpi"; }

  std::shared_ptr<Work> all_reduce(Tensor& buf, ReduceOp op) override;
  std::shared_ptr<Work> reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op) override;
  std::shared_ptr<Work> reduce_scatter_v(const Tensor& in, Tensor& out,
                                         const std::vector<int64_t>& counts, ReduceOp op) override;
  std::shared_ptr<Work> all_gather(const Tensor& in, Tensor& out) override;
  std::shared_ptr<Work> all_gather_v(const Tensor& in, Tensor& out,
                                     const std::vector<int64_t>& counts) override;
  std::shared_ptr<Work> broadcast(Tensor& buf, int root) override;
  std::shared_ptr<Work> all_to_all(const Tensor& in, Tensor& out) override;  // 1-bit optimizers
  void barrier() override;
  std::unique_ptr<Communicator> dup() override;

 private:
  // What an op runs on the comm thread: `run`, after `fence` (device tensors: the caller's stream
  // at issue) has been reached; the wait for the fence is neither logged nor watched.
  struct OpBody {
    std::function<void()> run;
    std::shared_ptr<detail::StreamFence> fence = nullptr;  // host tensors: none
  };
  // Queues `body` under a name for errors and a log record (nccl-tests size `log_bytes`).
  std::shared_ptr<Work> submit(const char* op, DType dtype, int64_t count, int64_t log_bytes,
                               OpBody body);
  void check_tensor(const char* op, const Tensor& t) const;
  void check_reduce(const char* op, const Tensor& t, ReduceOp rop) const;

  // Run on the comm thread.
  void run_all_reduce(const Tensor& buf, ReduceOp op);
  void run_reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp op);
  void run_reduce_scatter_v(const Tensor& in, const Tensor& out, const std::vector<int>& counts,
                            ReduceOp op);
  void run_all_gather(const Tensor& in, const Tensor& out);
  void run_all_gather_v(const Tensor& in, const Tensor& out, const std::vector<int>& counts);
  void run_broadcast(const Tensor& buf, int root);
  void run_all_to_all(const Tensor& in, const Tensor& out);
  float* staging_f32(int64_t n);  // the comm thread's staging buffer, at least n floats

  // [device tensors] Run on the comm thread after the producer's fence: stage through host.
  void dev_all_reduce(const Tensor& buf, ReduceOp op);
  void dev_reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp op);
  void dev_reduce_scatter_v(const Tensor& in, const Tensor& out, const std::vector<int>& counts,
                            ReduceOp op);
  void dev_all_gather(const Tensor& in, const Tensor& out);
  void dev_all_gather_v(const Tensor& in, const Tensor& out, const std::vector<int>& counts);
  void dev_broadcast(const Tensor& buf, int root);
  void dev_all_to_all(const Tensor& in, const Tensor& out);
  // Host staging tensor `slot` (0: input side, 1: output side) of dtype dt, n elements, pinned.
  Tensor host_stage(int slot, DType dt, int64_t n);
  // The body of an op on `dev` tensors: waits for the caller's stream at issue time, then `fn`.
  static OpBody on_device(int device, std::function<void()> fn);

  // A host tensor whose whole pages inside it are page-locked; views start at its first whole
  // page. (Only whole pages of our own allocation are registered, so two staging buffers that
  // share a heap page never register the same page twice, which cudaHostRegister refuses.)
  struct PinnedHost {
    Tensor t;
    int64_t offset = 0;    // elements from t's start to its first whole page
    int64_t capacity = 0;  // elements usable from offset
    void* pinned = nullptr;
  };
  std::map<std::pair<int, DType>, PinnedHost> host_stage_;  // comm thread only
  bool pin_warned_ = false;

  MPI_Comm comm_;
  int rank_ = 0, world_ = 1;
  int64_t chunk_;
  std::atomic<uint64_t> seq_{0};  // ops issued (names them in errors)
  std::shared_ptr<CommProgress> progress_ = register_communicator();  // [watchdog]
  std::vector<float> staging_;    // comm thread only
  std::vector<int32_t> staging_i32_;
  std::unique_ptr<detail::CommThread> thread_;
};

// The size of a communicator we are about to own, after making its errors come back as codes.
int prepare_comm(MPI_Comm comm) {
  ZT_MPI_CHECK(MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN));
  int size = 0;
  ZT_MPI_CHECK(MPI_Comm_size(comm, &size));
  return size;
}

MpiCommunicator::MpiCommunicator(MPI_Comm comm, CommOptions options)
    : Communicator(prepare_comm(comm), options),
      comm_(comm),
      chunk_(resolve_chunk(options.chunk_elems)) {
  ZT_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  world_ = log_.world();
  thread_ = std::make_unique<detail::CommThread>(options_.threaded, "zt-comm-mpi");
}

MpiCommunicator::~MpiCommunicator() {
  thread_.reset();  // drains the queue: ops already issued run first
  for (auto& [key, h] : host_stage_)
    if (h.pinned) detail::unpin_host(h.pinned);
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) ZT_MPI_CHECK_WARN(MPI_Comm_free(&comm_));
}

std::shared_ptr<Work> MpiCommunicator::submit(const char* op, DType dtype, int64_t count,
                                              int64_t log_bytes, OpBody body) {
  const auto seq = static_cast<int64_t>(seq_++);
  std::string what = zt::detail::str_cat(op, " #", seq, " (", dtype_name(dtype), ", ", count,
                                         " elements) on rank ", rank_);
  auto task = [this, op, dtype, count, log_bytes, seq, body = std::move(body)] {
    if (body.fence) body.fence->host_wait();  // the producer's kernels: not comm time
    auto t0 = std::chrono::steady_clock::now();
    {
      ProgressScope running(*progress_, op, seq, log_bytes, dtype_name(dtype), count);
      body.run();
    }
    auto t1 = std::chrono::steady_clock::now();
    double s = std::chrono::duration<double>(t1 - t0).count();
    log_.record(op, dtype, count, log_bytes, s);
    notify(op, log_bytes, t0, t1);
  };
  return thread_->submit(std::move(what), options_.timeout_s, std::move(task));
}

void MpiCommunicator::check_tensor(const char* op, const Tensor& t) const {
  ZT_CHECK(t.defined(), op, ": undefined tensor");
}

// in and out on one device (both host, or both the same GPU: the staging copies one device).
void check_same_device(const char* op, const Tensor& in, const Tensor& out) {
  ZT_CHECK(in.device() == out.device(), op, ": in is ", in.str(), " but out is ", out.str(),
           "; both must be on one device");
}

void MpiCommunicator::check_reduce(const char* op, const Tensor& t, ReduceOp rop) const {
  DType d = t.dtype();
  ZT_CHECK(d == DType::f32 || d == DType::f16 || d == DType::bf16 || d == DType::i32, op,
           ": reductions take f32, f16, bf16 or i32 tensors, got ", t.str());
  ZT_CHECK(rop != ReduceOp::avg || d != DType::i32, op,
           ": avg of i32 is not defined (integer division); use sum and divide yourself");
}

MpiCommunicator::OpBody MpiCommunicator::on_device(int device, std::function<void()> fn) {
  // The fence is recorded now, on the caller's thread and current stream.
  return {std::move(fn), std::make_shared<detail::StreamFence>(device)};
}

Tensor MpiCommunicator::host_stage(int slot, DType dt, int64_t n) {
  PinnedHost& h = host_stage_[{slot, dt}];
  if (!h.t.defined() || h.capacity < n) {
    if (h.pinned) detail::unpin_host(h.pinned);
    h = PinnedHost();
    static const int64_t page = std::max<long>(4096, sysconf(_SC_PAGESIZE));
    const int64_t es = static_cast<int64_t>(dtype_size(dt));
    const int64_t pad = page / es;  // a page before and after: whole pages hold n elements
    h.t = Tensor::empty({n + 2 * pad}, dt);
    const auto base = reinterpret_cast<uintptr_t>(h.t.raw());
    const uintptr_t first = (base + page - 1) / page * page;
    const uintptr_t last = (base + h.t.nbytes()) / page * page;
    h.offset = static_cast<int64_t>(first - base) / es;  // base is 64-byte aligned
    h.capacity = n;
    std::string why;
    if (detail::pin_host(reinterpret_cast<void*>(first), last - first, &why)) {
      h.pinned = reinterpret_cast<void*>(first);
    } else if (!pin_warned_) {
      pin_warned_ = true;
      std::fprintf(stderr,
                   "zerotrain: warning: rank %d: cannot page-lock %zu bytes of comm staging "
                   "memory (%s): device buffers are staged through pageable memory (slower)\n",
                   rank_, static_cast<size_t>(last - first), why.c_str());
    }
  }
  return h.t.flat_view(h.offset, {n});
}

float* MpiCommunicator::staging_f32(int64_t n) {
  if (static_cast<int64_t>(staging_.size()) < n) staging_.resize(static_cast<size_t>(n));
  return staging_.data();
}

// ---- all_reduce ---------------------------------------------------------------------------------

std::shared_ptr<Work> MpiCommunicator::all_reduce(Tensor& buf, ReduceOp op) {
  check_tensor("all_reduce", buf);
  check_reduce("all_reduce", buf, op);
  OpBody body{[this, buf, op] { run_all_reduce(buf, op); }};
  if (buf.device().is_cuda())
    body = on_device(buf.device().index, [this, buf, op] { dev_all_reduce(buf, op); });
  return submit("all_reduce", buf.dtype(), buf.numel(), static_cast<int64_t>(buf.nbytes()),
                std::move(body));
}

void MpiCommunicator::run_all_reduce(const Tensor& buf, ReduceOp op) {
  const DType dt = buf.dtype();
  const int64_t n = buf.numel();
  const size_t es = dtype_size(dt);
  char* p = bytes_of(buf);
  for (int64_t o = 0; o < n; o += chunk_) {
    const int c = static_cast<int>(std::min(chunk_, n - o));
    if (is_16bit_float(dt)) {
      float* s = staging_f32(c);
      detail::widen_to_f32(p + o * es, dt, s, c);
      ZT_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, s, c, MPI_FLOAT, mpi_op(op), comm_));
      if (op == ReduceOp::avg) divide(s, c, world_);
      detail::narrow_from_f32(s, p + o * es, dt, c);
    } else {
      ZT_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, p + o * es, c, mpi_type(dt), mpi_op(op), comm_));
      if (op == ReduceOp::avg) divide(reinterpret_cast<float*>(p) + o, c, world_);
    }
  }
}

// ---- reduce_scatter -----------------------------------------------------------------------------

std::shared_ptr<Work> MpiCommunicator::reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op) {
  check_tensor("reduce_scatter", in);
  check_tensor("reduce_scatter", out);
  check_reduce("reduce_scatter", in, op);
  ZT_CHECK(in.dtype() == out.dtype(), "reduce_scatter: in is ", in.str(), " but out is ", out.str(),
           "; both must have one dtype");
  ZT_CHECK(in.numel() == static_cast<int64_t>(world_) * out.numel(),
           "reduce_scatter: in must hold ", "world (", world_, ") x out's elements: in ", in.str(),
           ", out ", out.str());
  check_same_device("reduce_scatter", in, out);
  OpBody body{[this, in, out, op] { run_reduce_scatter(in, out, op); }};
  if (in.device().is_cuda())
    body = on_device(in.device().index, [this, in, out, op] { dev_reduce_scatter(in, out, op); });
  return submit("reduce_scatter", in.dtype(), in.numel(), static_cast<int64_t>(in.nbytes()),
                std::move(body));
}

void MpiCommunicator::run_reduce_scatter(const Tensor& in_arg, const Tensor& out, ReduceOp op) {
  const DType dt = out.dtype();
  const int64_t n = out.numel();
  const size_t es = dtype_size(dt);
  if (n == 0) return;
  const bool overlap = overlaps(in_arg, out);
  if (!is_16bit_float(dt) && !overlap && n <= chunk_) {
    ZT_MPI_CHECK(MPI_Reduce_scatter_block(in_arg.raw(), out.raw(), static_cast<int>(n),
                                          mpi_type(dt), mpi_op(op), comm_));
    if (op == ReduceOp::avg) divide(static_cast<float*>(out.raw()), n, world_);
    return;
  }
  // Staged, piece by piece. Each piece reads in[r*n + j, +c) for every r, then writes
  // out[j, +c). That is safe when out starts before in or at a chunk boundary of in (out = chunk
  // r of in, the usual in-place case); any other overlap would overwrite input not read yet, so
  // the input is copied first.
  Tensor in = in_arg;
  if (overlap) {
    std::ptrdiff_t s = bytes_of(out) - bytes_of(in_arg);
    if (s > 0 && s % static_cast<std::ptrdiff_t>(n * es) != 0) {
      in = Tensor::empty(in_arg.shape(), dt);  // a plain copy (no OpenMP team on this thread)
      std::memcpy(in.raw(), in_arg.raw(), in_arg.nbytes());
    }
  }
  const char* src = bytes_of(in);
  char* dst = bytes_of(out);
  const int64_t piece = std::max<int64_t>(1, chunk_ / world_);
  for (int64_t j = 0; j < n; j += piece) {
    const int64_t c = std::min(piece, n - j);
    if (dt == DType::i32) {
      if (static_cast<int64_t>(staging_i32_.size()) < world_ * c)
        staging_i32_.resize(static_cast<size_t>(world_ * c));
      int32_t* s = staging_i32_.data();
      for (int r = 0; r < world_; ++r) std::memcpy(s + r * c, src + (r * n + j) * es, c * es);
      ZT_MPI_CHECK(MPI_Reduce_scatter_block(MPI_IN_PLACE, s, static_cast<int>(c), MPI_INT32_T,
                                            mpi_op(op), comm_));
      std::memcpy(dst + j * es, s, c * es);
    } else {
      float* s = staging_f32(world_ * c);
      for (int r = 0; r < world_; ++r)
        detail::widen_to_f32(src + (r * n + j) * es, dt, s + r * c, c);
      ZT_MPI_CHECK(MPI_Reduce_scatter_block(MPI_IN_PLACE, s, static_cast<int>(c), MPI_FLOAT,
                                            mpi_op(op), comm_));
      if (op == ReduceOp::avg) divide(s, c, world_);
      detail::narrow_from_f32(s, dst + j * es, dt, c);
    }
  }
}

// ---- reduce_scatter_v ---------------------------------------------------------------------------

std::shared_ptr<Work> MpiCommunicator::reduce_scatter_v(const Tensor& in, Tensor& out,
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
  std::vector<int> c32(counts.size());
  for (size_t r = 0; r < counts.size(); ++r) {
    ZT_CHECK(counts[r] >= 0, "reduce_scatter_v: negative count ", counts[r], " for rank ", r);
    total += counts[r];
    c32[r] = static_cast<int>(counts[r]);
  }
  ZT_CHECK(total == in.numel(), "reduce_scatter_v: counts add up to ", total, " but in is ",
           in.str());
  ZT_CHECK(out.numel() == counts[rank_], "reduce_scatter_v: out ", out.str(), " should hold ",
           counts[rank_], " elements (counts[", rank_, "])");
  ZT_CHECK(total <= INT_MAX, "reduce_scatter_v: ", total, " elements exceed one MPI call");
  ZT_CHECK(!overlaps(in, out) || out.numel() == 0, "reduce_scatter_v: in and out overlap");
  check_same_device("reduce_scatter_v", in, out);
  OpBody body{[this, in, out, c32, op] { run_reduce_scatter_v(in, out, c32, op); }};
  if (in.device().is_cuda())
    body = on_device(in.device().index,
                     [this, in, out, c32, op] { dev_reduce_scatter_v(in, out, c32, op); });
  return submit("reduce_scatter_v", in.dtype(), in.numel(), static_cast<int64_t>(in.nbytes()),
                std::move(body));
}

void MpiCommunicator::run_reduce_scatter_v(const Tensor& in, const Tensor& out,
                                           const std::vector<int>& counts, ReduceOp op) {
  const DType dt = in.dtype();
  const int64_t n = in.numel(), mine = out.numel();
  if (n == 0) return;
  if (!is_16bit_float(dt)) {
    ZT_MPI_CHECK(
        MPI_Reduce_scatter(in.raw(), out.raw(), counts.data(), mpi_type(dt), mpi_op(op), comm_));
    if (op == ReduceOp::avg) divide(static_cast<float*>(out.raw()), mine, world_);
    return;
  }
  // 16-bit: reduce in f32 (see communicator.h); the staging buffer holds in, then our part.
  float* s = staging_f32(n + mine);
  detail::widen_to_f32(bytes_of(in), dt, s, n);
  ZT_MPI_CHECK(MPI_Reduce_scatter(s, s + n, counts.data(), MPI_FLOAT, mpi_op(op), comm_));
  if (op == ReduceOp::avg) divide(s + n, mine, world_);
  detail::narrow_from_f32(s + n, bytes_of(out), dt, mine);
}

// ---- all_gather ---------------------------------------------------------------------------------

std::shared_ptr<Work> MpiCommunicator::all_gather(const Tensor& in, Tensor& out) {
  check_tensor("all_gather", in);
  check_tensor("all_gather", out);
  ZT_CHECK(in.dtype() == out.dtype(), "all_gather: in is ", in.str(), " but out is ", out.str(),
           "; both must have one dtype");
  ZT_CHECK(out.numel() == static_cast<int64_t>(world_) * in.numel(), "all_gather: out must hold ",
           "world (", world_, ") x in's elements: in ", in.str(), ", out ", out.str());
  check_same_device("all_gather", in, out);
  OpBody body{[this, in, out] { run_all_gather(in, out); }};
  if (in.device().is_cuda())
    body = on_device(in.device().index, [this, in, out] { dev_all_gather(in, out); });
  return submit("all_gather", in.dtype(), out.numel(), static_cast<int64_t>(out.nbytes()),
                std::move(body));
}

void MpiCommunicator::run_all_gather(const Tensor& in, const Tensor& out) {
  const DType dt = in.dtype();
  const int64_t n = in.numel();
  const size_t es = dtype_size(dt);
  if (n == 0) return;
  const MPI_Datatype type = mpi_type(dt);
  char* dst = bytes_of(out);
  // In place when in is exactly our chunk of out; any other overlap: copy in first.
  const bool in_place = overlaps(in, out) && bytes_of(in) == dst + rank_ * n * es;
  std::vector<char> copy;
  const char* src = bytes_of(in);
  if (!in_place && overlaps(in, out)) {
    copy.assign(src, src + n * es);
    src = copy.data();
  }
  if (n <= chunk_) {
    ZT_MPI_CHECK(MPI_Allgather(in_place ? MPI_IN_PLACE : src, static_cast<int>(n), type, dst,
                               static_cast<int>(n), type, comm_));
    return;
  }
  // Pieces of each rank's chunk: the receive type is `c` elements with an extent of a whole chunk,
  // so that rank r's piece lands at dst + r*n + j.
  for (int64_t j = 0; j < n; j += chunk_) {
    const int c = static_cast<int>(std::min(chunk_, n - j));
    MPI_Datatype piece = MPI_DATATYPE_NULL, strided = MPI_DATATYPE_NULL;
    ZT_MPI_CHECK(MPI_Type_contiguous(c, type, &piece));
    ZT_MPI_CHECK(MPI_Type_create_resized(piece, 0, static_cast<MPI_Aint>(n * es), &strided));
    ZT_MPI_CHECK(MPI_Type_commit(&strided));
    int rc = MPI_Allgather(in_place ? MPI_IN_PLACE : src + j * es, c, type, dst + j * es, 1,
                           strided, comm_);
    ZT_MPI_CHECK_WARN(MPI_Type_free(&strided));
    ZT_MPI_CHECK_WARN(MPI_Type_free(&piece));
    ZT_MPI_CHECK(rc);
  }
}

// ---- all_gather_v -------------------------------------------------------------------------------

std::shared_ptr<Work> MpiCommunicator::all_gather_v(const Tensor& in, Tensor& out,
                                                    const std::vector<int64_t>& counts) {
  check_tensor("all_gather_v", in);
  check_tensor("all_gather_v", out);
  ZT_CHECK(in.dtype() == out.dtype(), "all_gather_v: in is ", in.str(), " but out is ", out.str(),
           "; both must have one dtype");
  ZT_CHECK(static_cast<int>(counts.size()) == world_, "all_gather_v: ", counts.size(),
           " counts for a world of ", world_);
  int64_t total = 0;
  std::vector<int> c32(counts.size());
  for (size_t r = 0; r < counts.size(); ++r) {
    ZT_CHECK(counts[r] >= 0, "all_gather_v: negative count ", counts[r], " for rank ", r);
    total += counts[r];
    c32[r] = static_cast<int>(counts[r]);
  }
  ZT_CHECK(total == out.numel(), "all_gather_v: counts add up to ", total, " but out is ",
           out.str());
  ZT_CHECK(in.numel() == counts[rank_], "all_gather_v: in ", in.str(), " should hold ",
           counts[rank_], " elements (counts[", rank_, "])");
  ZT_CHECK(total <= INT_MAX, "all_gather_v: ", total, " elements exceed one MPI call");
  check_same_device("all_gather_v", in, out);
  OpBody body{[this, in, out, c32] { run_all_gather_v(in, out, c32); }};
  if (in.device().is_cuda())
    body = on_device(in.device().index, [this, in, out, c32] { dev_all_gather_v(in, out, c32); });
  return submit("all_gather_v", in.dtype(), out.numel(), static_cast<int64_t>(out.nbytes()),
                std::move(body));
}

void MpiCommunicator::run_all_gather_v(const Tensor& in, const Tensor& out,
                                       const std::vector<int>& counts) {
  if (out.numel() == 0) return;
  const size_t es = dtype_size(in.dtype());
  std::vector<int> displs(counts.size());
  int d = 0;
  for (size_t r = 0; r < counts.size(); ++r) {
    displs[r] = d;
    d += counts[r];
  }
  char* dst = bytes_of(out);
  const char* src = bytes_of(in);
  const bool in_place = src == dst + static_cast<size_t>(displs[rank_]) * es;
  std::vector<char> copy;
  if (!in_place && overlaps(in, out)) {
    copy.assign(src, src + in.numel() * es);
    src = copy.data();
  }
  const MPI_Datatype type = mpi_type(in.dtype());
  ZT_MPI_CHECK(MPI_Allgatherv(in_place ? MPI_IN_PLACE : src, counts[rank_], type, dst,
                              counts.data(), displs.data(), type, comm_));
}

// ---- broadcast ----------------------------------------------------------------------------------

std::shared_ptr<Work> MpiCommunicator::broadcast(Tensor& buf, int root) {
  check_tensor("broadcast", buf);
  ZT_CHECK(root >= 0 && root < world_, "broadcast: root ", root, " is not a rank of this ", world_,
           "-rank communicator");
  OpBody body{[this, buf, root] { run_broadcast(buf, root); }};
  if (buf.device().is_cuda())
    body = on_device(buf.device().index, [this, buf, root] { dev_broadcast(buf, root); });
  return submit("broadcast", buf.dtype(), buf.numel(), static_cast<int64_t>(buf.nbytes()),
                std::move(body));
}

void MpiCommunicator::run_broadcast(const Tensor& buf, int root) {
  const int64_t n = buf.numel();
  const size_t es = dtype_size(buf.dtype());
  char* p = bytes_of(buf);
  for (int64_t o = 0; o < n; o += chunk_) {
    const int c = static_cast<int>(std::min(chunk_, n - o));
    ZT_MPI_CHECK(MPI_Bcast(p + o * es, c, mpi_type(buf.dtype()), root, comm_));
  }
}

// ---- all_to_all (the compressed all-reduce of the 1-bit optimizers, comm/compressed.h) ----------

std::shared_ptr<Work> MpiCommunicator::all_to_all(const Tensor& in, Tensor& out) {
  check_tensor("all_to_all", in);
  check_tensor("all_to_all", out);
  ZT_CHECK(in.dtype() == out.dtype(), "all_to_all: in is ", in.str(), " but out is ", out.str(),
           "; both must have one dtype");
  ZT_CHECK(in.numel() == out.numel() && in.numel() % world_ == 0, "all_to_all: in and out must ",
           "hold the same world (", world_, ") x n elements: in ", in.str(), ", out ", out.str());
  ZT_CHECK(in.numel() <= INT_MAX, "all_to_all: ", in.numel(), " elements exceed one MPI call");
  ZT_CHECK(!overlaps(in, out), "all_to_all: in and out overlap");
  check_same_device("all_to_all", in, out);
  OpBody body{[this, in, out] { run_all_to_all(in, out); }};
  if (in.device().is_cuda())
    body = on_device(in.device().index, [this, in, out] { dev_all_to_all(in, out); });
  return submit("all_to_all", in.dtype(), in.numel(), static_cast<int64_t>(in.nbytes()),
                std::move(body));
}

void MpiCommunicator::run_all_to_all(const Tensor& in, const Tensor& out) {
  const int n = static_cast<int>(in.numel() / world_);
  if (n == 0) return;
  const MPI_Datatype type = mpi_type(in.dtype());
  ZT_MPI_CHECK(MPI_Alltoall(in.raw(), n, type, out.raw(), n, type, comm_));
}

// ---- device tensors: staged through pinned host memory (see the top of this file) -------------

void MpiCommunicator::dev_all_reduce(const Tensor& buf, ReduceOp op) {
  const DType dt = buf.dtype();
  const int64_t n = buf.numel();
  const size_t es = dtype_size(dt);
  const int dev = buf.device().index;
  char* d = bytes_of(buf);
  for (int64_t o = 0; o < n; o += chunk_) {
    const int64_t c = std::min(chunk_, n - o);
    Tensor h = host_stage(0, dt, c);
    detail::copy_d2h(h.raw(), d + o * es, c * es, dev);
    run_all_reduce(h, op);
    detail::copy_h2d(d + o * es, h.raw(), c * es, dev);
  }
}

void MpiCommunicator::dev_broadcast(const Tensor& buf, int root) {
  const DType dt = buf.dtype();
  const int64_t n = buf.numel();
  const size_t es = dtype_size(dt);
  const int dev = buf.device().index;
  char* d = bytes_of(buf);
  for (int64_t o = 0; o < n; o += chunk_) {
    const int64_t c = std::min(chunk_, n - o);
    Tensor h = host_stage(0, dt, c);
    if (rank_ == root) detail::copy_d2h(h.raw(), d + o * es, c * es, dev);
    run_broadcast(h, root);
    if (rank_ != root) detail::copy_h2d(d + o * es, h.raw(), c * es, dev);
  }
}

void MpiCommunicator::dev_reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp op) {
  const DType dt = out.dtype();
  const int64_t n = out.numel();
  const size_t es = dtype_size(dt);
  const int dev = out.device().index;
  if (n == 0) return;
  // Piece j of every rank's chunk (world rows of c elements, n apart) in one 2-D copy. With
  // overlapping in/out the whole input is read before anything is written (one piece of n).
  const int64_t piece = overlaps(in, out) ? n : std::max<int64_t>(1, chunk_ / world_);
  const char* src = bytes_of(in);
  char* dst = bytes_of(out);
  for (int64_t j = 0; j < n; j += piece) {
    const int64_t c = std::min(piece, n - j);
    Tensor h_in = host_stage(0, dt, world_ * c);
    Tensor h_out = host_stage(1, dt, c);
    detail::copy_d2h_2d(h_in.raw(), c * es, src + j * es, n * es, c * es, world_, dev);
    run_reduce_scatter(h_in, h_out, op);
    detail::copy_h2d(dst + j * es, h_out.raw(), c * es, dev);
  }
}

void MpiCommunicator::dev_all_gather(const Tensor& in, const Tensor& out) {
  const DType dt = in.dtype();
  const int64_t n = in.numel();
  const size_t es = dtype_size(dt);
  const int dev = in.device().index;
  if (n == 0) return;
  // In place (in is chunk rank() of out) is safe piece by piece: piece j of our chunk is written
  // with the bytes it already holds. Any other overlap: the whole input first.
  const char* src = bytes_of(in);
  char* dst = bytes_of(out);
  const bool in_place = src == dst + rank_ * n * es;
  const int64_t piece = overlaps(in, out) && !in_place ? n : chunk_;
  for (int64_t j = 0; j < n; j += piece) {
    const int64_t c = std::min(piece, n - j);
    Tensor h_in = host_stage(0, dt, c);
    Tensor h_out = host_stage(1, dt, world_ * c);
    detail::copy_d2h(h_in.raw(), src + j * es, c * es, dev);
    run_all_gather(h_in, h_out);
    detail::copy_h2d_2d(dst + j * es, n * es, h_out.raw(), c * es, c * es, world_, dev);
  }
}

void MpiCommunicator::dev_reduce_scatter_v(const Tensor& in, const Tensor& out,
                                           const std::vector<int>& counts, ReduceOp op) {
  const DType dt = in.dtype();
  const int dev = in.device().index;
  if (in.numel() == 0) return;
  Tensor h_in = host_stage(0, dt, in.numel());
  Tensor h_out = host_stage(1, dt, out.numel());
  detail::copy_d2h(h_in.raw(), in.raw(), in.nbytes(), dev);
  run_reduce_scatter_v(h_in, h_out, counts, op);
  detail::copy_h2d(out.raw(), h_out.raw(), out.nbytes(), dev);
}

void MpiCommunicator::dev_all_gather_v(const Tensor& in, const Tensor& out,
                                       const std::vector<int>& counts) {
  const DType dt = in.dtype();
  const int dev = in.device().index;
  if (out.numel() == 0) return;
  Tensor h_in = host_stage(0, dt, in.numel());
  Tensor h_out = host_stage(1, dt, out.numel());
  detail::copy_d2h(h_in.raw(), in.raw(), in.nbytes(), dev);
  run_all_gather_v(h_in, h_out, counts);
  detail::copy_h2d(out.raw(), h_out.raw(), out.nbytes(), dev);
}

void MpiCommunicator::dev_all_to_all(const Tensor& in, const Tensor& out) {
  const DType dt = in.dtype();
  const int dev = in.device().index;
  if (in.numel() == 0) return;
  Tensor h_in = host_stage(0, dt, in.numel());
  Tensor h_out = host_stage(1, dt, out.numel());
  detail::copy_d2h(h_in.raw(), in.raw(), in.nbytes(), dev);
  run_all_to_all(h_in, h_out);
  detail::copy_h2d(out.raw(), h_out.raw(), out.nbytes(), dev);
}

// ---- barrier, dup -------------------------------------------------------------------------------

void MpiCommunicator::barrier() {
  const auto seq = static_cast<int64_t>(seq_++);
  std::string what = zt::detail::str_cat("barrier #", seq, " on rank ", rank_);
  thread_
      ->submit(std::move(what), options_.timeout_s,
               [this, seq] {
                 ProgressScope running(*progress_, "barrier", seq, 0, "-", 0);
                 ZT_MPI_CHECK(MPI_Barrier(comm_));
               })
      ->wait();
}

std::unique_ptr<Communicator> MpiCommunicator::dup() {
  // MPI_Comm_dup is collective on comm_: it must run in order with the queued ops.
  // (`fresh` is shared: after a wait() timeout the task may still run and write it.)
  auto fresh = std::make_shared<MPI_Comm>(MPI_COMM_NULL);
  const auto seq = static_cast<int64_t>(seq_++);
  std::string what = zt::detail::str_cat("dup #", seq, " on rank ", rank_);
  thread_
      ->submit(std::move(what), options_.timeout_s,
               [this, fresh, seq] {
                 ProgressScope running(*progress_, "dup", seq, 0, "-", 0);
                 ZT_MPI_CHECK(MPI_Comm_dup(comm_, fresh.get()));
               })
      ->wait();
  auto child = std::make_unique<MpiCommunicator>(*fresh, options_);
  child->log().configure(log_.options());
  return child;
}

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator(const CommOptions& options) {
  Bootstrap& boot = Bootstrap::instance();  // throws when MPI is not initialised
  CommOptions opts = options;
  if (opts.threaded && !boot.thread_multiple()) {
    static bool warned = false;
    if (!warned && boot.topology().rank == 0)
      std::fprintf(stderr,
                   "zerotrain: warning: MPI does not provide MPI_THREAD_MULTIPLE: "
                   "collectives run on the calling thread (no overlap)\n");
    warned = true;
    opts.threaded = false;
  }
  MPI_Comm comm = MPI_COMM_NULL;
  ZT_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &comm));
  return std::make_unique<MpiCommunicator>(comm, opts);
}

}  // namespace zt::comm
