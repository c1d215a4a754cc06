// comm/comm_log.cpp: aggregation and the summary table of the comm log.
#include "comm/comm_log.h"

#include <algorithm>
#include <cstdio>

namespace zt::comm {

double busbw_factor(const std::string& op, int world) {
  const double n = world;
  if (op == "all_reduce") return n > 1 ? 2.0 * (n - 1) / n : 0.0;
  // reduce_scatter_v / all_gather_v (uneven parts): the same factor, exact when parts are even.
  // all_to_all: each rank keeps 1/n of its buffer and sends the rest (nccl-tests' alltoall).
  if (op == "all_gather" || op == "reduce_scatter" || op == "reduce_scatter_v" ||
      op == "all_gather_v" || op == "all_to_all")
    return n > 1 ? (n - 1) / n : 0.0;
  if (op == "broadcast") return 1.0;
  return 0.0;
}

double CommLog::Entry::algbw_gbs() const {
  double t = mean_seconds();
  return t > 0 ? static_cast<double>(bytes) / t / 1e9 : 0.0;
}

double CommLog::Entry::busbw_gbs(int world) const { return algbw_gbs() * busbw_factor(op, world); }

void CommLog::configure(const CommLogOptions& opts) {
  std::lock_guard<std::mutex> lock(mu_);
  opts_ = opts;
}

CommLogOptions CommLog::options() const {
  std::lock_guard<std::mutex> lock(mu_);
  return opts_;
}

void CommLog::set_enabled(bool on) {
  std::lock_guard<std::mutex> lock(mu_);
  opts_.enabled = on;
}

bool CommLog::enabled() const {
  std::lock_guard<std::mutex> lock(mu_);
  return opts_.enabled;
}

bool CommLog::wants(const std::string& op) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (!opts_.enabled) return false;
  return opts_.prof_all ||
         std::find(opts_.prof_ops.begin(), opts_.prof_ops.end(), op) != opts_.prof_ops.end();
}

void CommLog::record(const std::string& op, DType dtype, int64_t count, int64_t bytes,
                     double seconds) {
  if (!wants(op)) return;
  bool verbose;
  {
    std::lock_guard<std::mutex> lock(mu_);
    verbose = opts_.verbose;
    Entry& e = entries_[Key{op, dtype, bytes}];
    if (e.calls == 0) {
      e.op = op;
      e.dtype = dtype;
      e.count = count;
      e.bytes = bytes;
      e.min_seconds = e.max_seconds = seconds;
    }
    e.calls += 1;
    e.total_seconds += seconds;
    e.min_seconds = std::min(e.min_seconds, seconds);
    e.max_seconds = std::max(e.max_seconds, seconds);
  }
  if (verbose) {
    double algbw = seconds > 0 ? static_cast<double>(bytes) / seconds / 1e9 : 0.0;
    std::fprintf(stderr,
                 "zerotrain comm: %s %s count %lld size %lld B time %.1f us algbw %.3f GB/s "
                 "busbw %.3f GB/s\n",
                 op.c_str(), dtype_name(dtype), static_cast<long long>(count),
                 static_cast<long long>(bytes), seconds * 1e6, algbw,
                 algbw * busbw_factor(op, world_));
  }
}

std::vector<CommLog::Entry> CommLog::entries() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Entry> out;
  out.reserve(entries_.size());
  for (const auto& kv : entries_) out.push_back(kv.second);
  std::sort(out.begin(), out.end(), [](const Entry& a, const Entry& b) {
    return std::tie(a.op, a.bytes, a.dtype) < std::tie(b.op, b.bytes, b.dtype);
  });
  return out;
}

int64_t CommLog::total_calls() const {
  std::lock_guard<std::mutex> lock(mu_);
  int64_t n = 0;
  for (const auto& kv : entries_) n += kv.second.calls;
  return n;
}

void CommLog::clear() {
  std::lock_guard<std::mutex> lock(mu_);
  entries_.clear();
}

std::string CommLog::table(const std::string& title) const {
  std::vector<Entry> es = entries();
  std::string out;
  char line[256];
  std::snprintf(line, sizeof line,
                "%s (%d ranks; size = gathered bytes for all_gather and "
                "reduce_scatter; bandwidths in GB/s)\n",
                title.c_str(), world_);
  out += line;
  std::snprintf(line, sizeof line, "%-15s %-5s %12s %12s %8s %14s %12s %10s %10s\n", "op", "dtype",
                "size(B)", "count", "calls", "total(B)", "mean(us)", "algbw", "busbw");
  out += line;
  for (const Entry& e : es) {
    std::snprintf(line, sizeof line, "%-15s %-5s %12lld %12lld %8lld %14lld %12.1f %10.3f %10.3f\n",
                  e.op.c_str(), dtype_name(e.dtype), static_cast<long long>(e.bytes),
                  static_cast<long long>(e.count), static_cast<long long>(e.calls),
                  static_cast<long long>(e.bytes * e.calls), e.mean_seconds() * 1e6, e.algbw_gbs(),
                  e.busbw_gbs(world_));
    out += line;
  }
  return out;
}

}  // namespace zt::comm
