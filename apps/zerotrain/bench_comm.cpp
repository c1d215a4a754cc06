// apps/zerotrain/bench_comm.cpp: bandwidth of the Communicator's collectives against raw MPI,
// nccl-tests style (`zerotrain bench comm`, and apps/bench_comm.cpp, a wrapper over the same code).
//
// For every size (bytes, min .. max in powers of `step`) and op it times the `mpi` Communicator
// (zt::comm, collectives on its comm thread) and the raw MPI call on the same buffers (on the main
// thread), and prints
//   size count type op time algbw busbw #wrong  and  mpi_time busbw ratio (= comm busbw / raw
//   busbw)
// as JSON lines and, on rank 0, a table. The ops and their raw counterparts:
//   all_reduce        MPI_Allreduce (in place)         busbw = algbw x 2(n-1)/n
//   reduce_scatter    MPI_Reduce_scatter_block          x (n-1)/n, size = the whole input
//   reduce_scatter_v  MPI_Reduce_scatter (uneven parts) x (n-1)/n, size = the whole input
//   all_gather        MPI_Allgather                     x (n-1)/n, size = the gathered output
//   all_gather_v      MPI_Allgatherv (uneven parts)     x (n-1)/n, size = the gathered output
//   broadcast         MPI_Bcast (root 0)                x 1
//   all_to_all        MPI_Alltoall                      x (n-1)/n, size = one rank's buffer
// as nccl-tests defines them (CONVENTIONS 13; its alltoall is (n-1)/n too). The uneven parts are
// ZeRO's case, a bucket that does not line up with the partitions: rank 0's part is half a share,
// the last rank's one and a half, the others one (each share = count / n); with even parts the _v
// factor is exact, with these it is the usual approximation (the comm log uses the same).
// Like nccl-tests, a trial issues `iters` ops back to back and then waits (so the comm thread's
// queue is measured as a pipeline, as a training step uses it); the time of a trial is the slowest
// rank's; the figure is the fastest of `trials` trials, comm and raw interleaved (interference
// from other processes on a shared machine only ever adds time; the JSON lines also carry the
// median). Iteration counts depend on the size only, so every rank runs the same number of
// collectives (never Google Benchmark here: it picks iterations per process and ranks would
// deadlock). #wrong: elements that differ from the exact result in a check run before the timing
// (data are small integers: exact in every dtype and every summation order), summed over ranks.
//
// Reading the figures on a small shared machine: OpenMPI's large collectives malloc temporary
// buffers on every call, and glibc serves (and trims, and page-faults) those differently in the
// main thread's arena and in the comm thread's, so raw MPI_Reduce_scatter_block on the main
// thread can be several times slower than the same call on the comm thread; running with
// GLIBC_TUNABLES=glibc.malloc.mmap_threshold=2147483647:glibc.malloc.trim_threshold=2147483647
// removes that difference. f16/bf16 reductions have no raw MPI counterpart (MPI cannot add 16-bit
// floats): their raw columns stay empty; the comm figures then include the f32 staging
// (comm/communicator.h).
#include "apps/zerotrain/bench_comm.h"

#include "apps/zerotrain/bench_common.h"
#include "comm/bootstrap.h"
#include "comm/comm_log.h"
#include "comm/communicator.h"
#include "core/error.h"
#include "core/tensor.h"

#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace zt::app {
namespace {

using namespace zt::comm;

void check_mpi(int rc, const char* what) {
  if (rc != MPI_SUCCESS) throw CommError(std::string("bench comm: ") + what + " failed");
}

// nccl-tests' factor; comm_log knows every op but all_to_all.
double bus_factor(const std::string& op, int world) {
  if (op == "all_to_all") return world > 1 ? (world - 1.0) / world : 0.0;
  return busbw_factor(op, world);
}

// Element i of a tensor as float / set from float (exact for the small integers used here).
float get(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::f16:
      return f16_to_f32(t.data_u16()[i]);
    case DType::bf16:
      return bf16_to_f32(t.data_u16()[i]);
    default:
      return t.data<float>()[i];
  }
}
void set(Tensor& t, int64_t i, float v) {
  switch (t.dtype()) {
    case DType::f16:
      t.data_u16()[i] = f32_to_f16(v);
      break;
    case DType::bf16:
      t.data_u16()[i] = f32_to_bf16(v);
      break;
    default:
      t.data<float>()[i] = v;
  }
}
float small_int(int rank, int64_t i) { return static_cast<float>((i * 7 + rank * 3) % 16); }

// The uneven parts of the _v ops (see the top of the file); they sum to count.
std::vector<int64_t> uneven_counts(int64_t count, int world) {
  std::vector<int64_t> c(world, count / world);
  if (world == 1) return {count};
  const int64_t half = c[0] / 2;
  c[0] -= half;
  c[world - 1] += half + count % world;
  return c;
}
int64_t offset_of(const std::vector<int64_t>& counts, int r) {
  int64_t o = 0;
  for (int i = 0; i < r; ++i) o += counts[i];
  return o;
}

// The buffers of one (op, size): the same ones serve the communicator and raw MPI.
struct Buffers {
  Tensor in, out;               // all_reduce / broadcast use `in` only (in place)
  std::vector<int64_t> counts;  // the _v ops' parts
};

Buffers make_buffers(const std::string& op, int64_t count, int world, int rank, DType dt) {
  Buffers b;
  if (op == "reduce_scatter") {
    b.in = Tensor::zeros({count}, dt);
    b.out = Tensor::zeros({count / world}, dt);
  } else if (op == "reduce_scatter_v") {
    b.counts = uneven_counts(count, world);
    b.in = Tensor::zeros({count}, dt);
    b.out = Tensor::zeros({b.counts[rank]}, dt);
  } else if (op == "all_gather") {
    b.in = Tensor::zeros({count / world}, dt);
    b.out = Tensor::zeros({count}, dt);
  } else if (op == "all_gather_v") {
    b.counts = uneven_counts(count, world);
    b.in = Tensor::zeros({b.counts[rank]}, dt);
    b.out = Tensor::zeros({count}, dt);
  } else if (op == "all_to_all") {
    b.in = Tensor::zeros({count}, dt);
    b.out = Tensor::zeros({count}, dt);
  } else {
    b.in = Tensor::zeros({count}, dt);
  }
  return b;
}

std::shared_ptr<Work> issue(Communicator& c, const std::string& op, Buffers& b) {
  if (op == "all_reduce") return c.all_reduce(b.in);
  if (op == "reduce_scatter") return c.reduce_scatter(b.in, b.out);
  if (op == "reduce_scatter_v") return c.reduce_scatter_v(b.in, b.out, b.counts);
  if (op == "all_gather") return c.all_gather(b.in, b.out);
  if (op == "all_gather_v") return c.all_gather_v(b.in, b.out, b.counts);
  if (op == "all_to_all") return c.all_to_all(b.in, b.out);
  return c.broadcast(b.in, 0);
}

// Raw MPI on the same buffers; false when MPI has no such op for the dtype (16-bit sums).
bool has_raw(const std::string& op, DType dt) {
  const bool sums = op == "all_reduce" || op == "reduce_scatter" || op == "reduce_scatter_v";
  return dt == DType::f32 || !sums;
}
void raw(MPI_Comm comm, const std::string& op, Buffers& b) {
  MPI_Datatype t = b.in.dtype() == DType::f32 ? MPI_FLOAT : MPI_UINT16_T;
  auto ints = [](const std::vector<int64_t>& v) {
    std::vector<int> r(v.size());
    for (size_t i = 0; i < v.size(); ++i) r[i] = static_cast<int>(v[i]);
    return r;
  };
  if (op == "all_reduce") {
    check_mpi(
        MPI_Allreduce(MPI_IN_PLACE, b.in.raw(), static_cast<int>(b.in.numel()), t, MPI_SUM, comm),
        "MPI_Allreduce");
  } else if (op == "reduce_scatter") {
    check_mpi(MPI_Reduce_scatter_block(b.in.raw(), b.out.raw(), static_cast<int>(b.out.numel()), t,
                                       MPI_SUM, comm),
              "MPI_Reduce_scatter_block");
  } else if (op == "reduce_scatter_v") {
    std::vector<int> counts = ints(b.counts);
    check_mpi(MPI_Reduce_scatter(b.in.raw(), b.out.raw(), counts.data(), t, MPI_SUM, comm),
              "MPI_Reduce_scatter");
  } else if (op == "all_gather") {
    check_mpi(MPI_Allgather(b.in.raw(), static_cast<int>(b.in.numel()), t, b.out.raw(),
                            static_cast<int>(b.in.numel()), t, comm),
              "MPI_Allgather");
  } else if (op == "all_gather_v") {
    std::vector<int> counts = ints(b.counts), displs(counts.size());
    for (size_t r = 1; r < counts.size(); ++r) displs[r] = displs[r - 1] + counts[r - 1];
    check_mpi(MPI_Allgatherv(b.in.raw(), static_cast<int>(b.in.numel()), t, b.out.raw(),
                             counts.data(), displs.data(), t, comm),
              "MPI_Allgatherv");
  } else if (op == "all_to_all") {
    int size = 1;
    MPI_Comm_size(comm, &size);
    const int n = static_cast<int>(b.in.numel() / size);
    check_mpi(MPI_Alltoall(b.in.raw(), n, t, b.out.raw(), n, t, comm), "MPI_Alltoall");
  } else {
    check_mpi(MPI_Bcast(b.in.raw(), static_cast<int>(b.in.numel()), t, 0, comm), "MPI_Bcast");
  }
}

// One correctness run of the communicator's op: wrong elements summed over ranks.
int64_t check(Communicator& c, MPI_Comm comm, const std::string& op, Buffers& b) {
  const int me = c.rank(), w = c.world();
  for (int64_t i = 0; i < b.in.numel(); ++i) set(b.in, i, small_int(me, i));
  issue(c, op, b)->wait();
  int64_t wrong = 0;
  auto sum = [&](int64_t i) {
    float s = 0;
    for (int r = 0; r < w; ++r) s += small_int(r, i);
    return s;
  };
  if (op == "all_reduce") {
    for (int64_t i = 0; i < b.in.numel(); ++i) wrong += get(b.in, i) != sum(i);
  } else if (op == "reduce_scatter") {
    const int64_t n = b.out.numel();
    for (int64_t i = 0; i < n; ++i) wrong += get(b.out, i) != sum(me * n + i);
  } else if (op == "reduce_scatter_v") {
    const int64_t off = offset_of(b.counts, me);
    for (int64_t i = 0; i < b.out.numel(); ++i) wrong += get(b.out, i) != sum(off + i);
  } else if (op == "all_gather") {
    const int64_t n = b.in.numel();
    for (int64_t i = 0; i < b.out.numel(); ++i)
      wrong += get(b.out, i) != small_int(static_cast<int>(i / n), i % n);
  } else if (op == "all_gather_v") {
    for (int r = 0; r < w; ++r) {
      const int64_t off = offset_of(b.counts, r);
      for (int64_t i = 0; i < b.counts[r]; ++i) wrong += get(b.out, off + i) != small_int(r, i);
    }
  } else if (op == "all_to_all") {
    const int64_t n = b.in.numel() / w;
    for (int r = 0; r < w; ++r)
      for (int64_t i = 0; i < n; ++i) wrong += get(b.out, r * n + i) != small_int(r, me * n + i);
  } else {
    for (int64_t i = 0; i < b.in.numel(); ++i) wrong += get(b.in, i) != small_int(0, i);
  }
  int64_t total = 0;
  check_mpi(MPI_Allreduce(&wrong, &total, 1, MPI_INT64_T, MPI_SUM, comm), "MPI_Allreduce");
  for (Tensor* t : {&b.in, &b.out})  // zeros for the timing: repeated sums stay finite
    if (t->defined() && t->numel() > 0) std::memset(t->raw(), 0, t->nbytes());
  return total;
}

// Seconds per op of one trial: iters ops issued back to back, then waited; the slowest rank's.
template <typename Run>
double trial(MPI_Comm comm, int iters, Run run) {
  check_mpi(MPI_Barrier(comm), "MPI_Barrier");
  double t0 = MPI_Wtime();
  run(iters);
  double t = MPI_Wtime() - t0, tmax = 0;
  check_mpi(MPI_Allreduce(&t, &tmax, 1, MPI_DOUBLE, MPI_MAX, comm), "MPI_Allreduce");
  return tmax / iters;
}

struct Row {
  std::string op;
  int64_t bytes = 0, count = 0;
  int iters = 0;
  double comm_s = 0, raw_s = 0;  // best trial; raw_s 0: no raw counterpart
  double comm_median_s = 0, raw_median_s = 0;
  int64_t wrong = 0;
};

std::string json_line(const Row& r, const char* impl, double s, double s_median, DType dt,
                      int world) {
  const double algbw = static_cast<double>(r.bytes) / s / 1e9;
  char buf[640];
  int n =
      std::snprintf(buf, sizeof buf,
                    "{\"bench\": \"comm\", \"impl\": \"%s\", \"op\": \"%s\", \"dtype\": \"%s\", "
                    "\"ranks\": %d, \"size\": %lld, \"count\": %lld, \"iters\": %d, "
                    "\"time_us\": %.2f, \"median_time_us\": %.2f, \"algbw_gbs\": %.4f, "
                    "\"busbw_gbs\": %.4f, \"wrong\": %lld",
                    impl, r.op.c_str(), dtype_name(dt), world, static_cast<long long>(r.bytes),
                    static_cast<long long>(r.count), r.iters, s * 1e6, s_median * 1e6, algbw,
                    algbw * bus_factor(r.op, world), static_cast<long long>(r.wrong));
  std::string line(buf, static_cast<size_t>(n));
  if (std::string(impl) == "comm" && r.raw_s > 0) {
    std::snprintf(buf, sizeof buf, ", \"ratio\": %.4f", r.raw_s / r.comm_s);
    line += buf;
  }
  return line + "}";
}

void table_row(const Row& r, DType dt, int world) {
  const double f = bus_factor(r.op, world);
  const double cb = static_cast<double>(r.bytes) / r.comm_s / 1e9;
  std::printf("%12lld %11lld %5s %-16s %5d %10.1f %8.3f %8.3f %6lld",
              static_cast<long long>(r.bytes), static_cast<long long>(r.count), dtype_name(dt),
              r.op.c_str(), r.iters, r.comm_s * 1e6, cb, cb * f, static_cast<long long>(r.wrong));
  if (r.raw_s > 0) {
    const double rb = static_cast<double>(r.bytes) / r.raw_s / 1e9;
    std::printf(" | %10.1f %8.3f %6.3f\n", r.raw_s * 1e6, rb * f, r.raw_s / r.comm_s);
  } else {
    std::printf(" | %10s %8s %6s\n", "-", "-", "-");
  }
  std::fflush(stdout);
}

}  // namespace

const std::vector<std::string>& comm_bench_ops() {
  static const std::vector<std::string> ops = CommBenchOptions{}.ops;
  return ops;
}

std::vector<std::string> parse_comm_ops(const std::string& list, const std::string& flag) {
  std::vector<std::string> out;
  const std::vector<std::string>& known = comm_bench_ops();
  for (size_t p = 0; p <= list.size();) {
    size_t q = list.find(',', p);
    if (q == std::string::npos) q = list.size();
    std::string op = list.substr(p, q - p);
    if (std::find(known.begin(), known.end(), op) == known.end()) {
      std::string all;
      for (const std::string& k : known) all += (all.empty() ? "" : ", ") + k;
      throw ConfigError(flag + ": unknown op `" + op + "` (known: " + all + ")");
    }
    out.push_back(op);
    p = q + 1;
  }
  return out;
}

int run_bench_comm(const CommBenchOptions& opt) {
  bench::check_arg(opt.step >= 2, "--step", "must be at least 2");
  bench::check_arg(opt.min_bytes > 0 && opt.min_bytes <= opt.max_bytes, "--min-bytes",
                   "must be positive and at most --max-bytes");
  bench::check_arg(opt.trials > 0, "--trials", "must be positive");
  bench::check_arg(opt.warmup >= 0 && opt.iters >= 0, "--warmup",
                   "and --iters must not be negative");
  bench::check_arg(is_floating(opt.dtype), "--dtype", "must be f32, f16 or bf16");
  const Topology& topo = Bootstrap::instance().topology();
  const int w = topo.world, me = topo.rank;
  const bool root = me == 0;
  const size_t es = dtype_size(opt.dtype);
  bench::JsonLines json(opt.json, root);
  std::unique_ptr<Communicator> comm = make_mpi_communicator();
  MPI_Comm raw_comm = MPI_COMM_NULL;
  check_mpi(MPI_Comm_dup(MPI_COMM_WORLD, &raw_comm), "MPI_Comm_dup");
  MPI_Comm_set_errhandler(raw_comm, MPI_ERRORS_RETURN);

  if (root && opt.table) {
    std::printf(
        "# zerotrain bench comm: %d rank(s) on %d node(s), mpi backend, dtype %s, best of %d "
        "trials\n# time in us, algbw and busbw in GB/s (nccl-tests: busbw = algbw x 2(n-1)/n "
        "all_reduce, (n-1)/n gather/scatter/all_to_all, 1 broadcast); right: raw MPI on the same "
        "buffers, ratio = comm busbw / mpi busbw\n",
        w, topo.nodes, dtype_name(opt.dtype), opt.trials);
    std::printf("%12s %11s %5s %-16s %5s %10s %8s %8s %6s | %10s %8s %6s\n", "size", "count",
                "type", "op", "iters", "time", "algbw", "busbw", "#wrong", "mpi time", "busbw",
                "ratio");
    std::fflush(stdout);
  }
  std::vector<Row> rows;
  for (int64_t bytes = opt.min_bytes; bytes <= opt.max_bytes; bytes *= opt.step) {
    // Elements: a multiple of the world size, so that every rank's chunk is whole.
    int64_t count = bytes / static_cast<int64_t>(es) / w * w;
    if (count == 0) continue;
    // 128 MiB of traffic per trial, at least 4 and at most 200 ops: long enough that the one
    // wake-up of the waiting thread per trial (a scheduler time slice on an oversubscribed node)
    // is amortised, short enough that the best of many trials misses other processes' bursts.
    const int iters =
        opt.iters > 0 ? opt.iters
                      : static_cast<int>(std::clamp<int64_t>((int64_t{128} << 20) / bytes, 4, 200));
    for (const std::string& op : opt.ops) {
      Buffers b = make_buffers(op, count, w, me, opt.dtype);
      Row row{op, count * static_cast<int64_t>(es), count, iters};
      row.wrong = check(*comm, raw_comm, op, b);
      const bool with_raw = opt.raw && has_raw(op, opt.dtype);
      auto run_comm = [&](int n) {
        std::shared_ptr<Work> last;
        for (int k = 0; k < n; ++k) last = issue(*comm, op, b);
        if (last) last->wait();  // in order: the last done means all done
      };
      auto run_raw = [&](int n) {
        for (int k = 0; k < n; ++k) raw(raw_comm, op, b);
      };
      if (opt.warmup > 0) {
        trial(raw_comm, opt.warmup, run_comm);
        if (with_raw) trial(raw_comm, opt.warmup, run_raw);
      }
      std::vector<double> tc, tr;
      for (int t = 0; t < opt.trials; ++t) {
        tc.push_back(trial(raw_comm, iters, run_comm));
        if (with_raw) tr.push_back(trial(raw_comm, iters, run_raw));
      }
      row.comm_s = bench::best(tc);
      row.comm_median_s = bench::median(tc);
      row.raw_s = with_raw ? bench::best(tr) : 0;
      row.raw_median_s = with_raw ? bench::median(tr) : 0;
      rows.push_back(row);
      json.write(json_line(row, "comm", row.comm_s, row.comm_median_s, opt.dtype, w));
      if (row.raw_s > 0)
        json.write(json_line(row, "mpi", row.raw_s, row.raw_median_s, opt.dtype, w));
      if (root && opt.table) table_row(row, opt.dtype, w);
    }
  }
  int64_t wrong = 0;
  for (const Row& r : rows) wrong += r.wrong;
  if (root && opt.table)
    std::printf("# %zu rows, #wrong in total: %lld%s\n", rows.size(), static_cast<long long>(wrong),
                wrong ? "  <-- WRONG RESULTS" : "");
  comm.reset();
  MPI_Comm_free(&raw_comm);
  return wrong == 0 ? 0 : 1;
}

}  // namespace zt::app
