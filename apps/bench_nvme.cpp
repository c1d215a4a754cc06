// apps/bench_nvme.cpp: speed of the offloaded optimizer step (zero/offload.h) against what the
// same disk and memory give a plain program, measured in one run, as JSON lines and a table.
//  - seq: the floor for NVMe offload. A plain sequential write (pwrite of --seq-chunk-mib chunks,
//    one thread, then fdatasync) and read (pread) of exactly the bytes of the offload's swap file,
//    on the same filesystem, both with O_DIRECT, so the page cache holds nothing on either side
//    (--drop-caches, as root, also writes /proc/sys/vm/drop_caches before every timed phase; off
//    by default: with O_DIRECT it changes nothing here and it slows everyone else on the
//    machine). The file is reserved with fallocate first, as the offload's is. gbps = (bytes
//    written + bytes read) / (write time + read time). Each chunk size of --seq-chunk-mib is
//    measured (one synchronous request at a time: a large one is split by the kernel into many
//    in flight) and the fastest is the floor, so the comparison is against the best plain run.
//  - nvme: OptimizerOffload on device nvme, one full AdamW step (swap in, update, swap out, every
//    write complete) per timed repetition, for each (sub_group_size, buffer_count) given:
//    params/s, and swap gbps = 2 x file bytes / step time; fraction_of_seq = swap gbps / seq
//    gbps (target >= 0.7). The step overlaps the update with the I/O, so the fraction says how
//    much of the disk's sequential speed the swap pipeline keeps.
//  - cpu: OptimizerOffload on device cpu (sub-group steps over host memory) next to make_adam's
//    step on the same span (the in-memory optimizer): params/s of both. PyTorch's AdamW (foreach)
//    on the same size: bench/torch_adam.py (bench/RESULTS.md puts the two side by side).
// Medians over --reps repetitions; the first step of each configuration is a warm-up.
// Usage: bench_nvme [--dir PATH] [--paired] [--params 64M] [--sub-groups 64M,8M,2M] [--buffers 2,4]
//                   [--block-kib 1024] [--queue-depth 8] [--aio-threads 1] [--reps 3]
//                   [--seq-chunk-mib 8,64] [--threads N] [--update-threads 0] [--drop-caches]
// --paired: also one plain sequential write + read (the floor's best chunk) right before each
// timed step, and paired_fraction = the median over repetitions of (plain time / step time): the
// disk of this VM drifts by tens of percent within a minute, and a floor measured once per run
// then moves every ratio of the run together; pairs next to each other in time drift less.
// --same-file: also, right before each timed step, a plain pass over the offload's OWN swap file:
// each chunk (the floor's best size) read with pread and written back unchanged with pwrite
// (O_DIRECT), then fdatasync: the same bytes, in the same blocks of the same disk, in the same
// read-then-write pattern, one request at a time and nothing overlapped. same_file_fraction = the
// median over repetitions of (plain time / step time). A separate file (the floor, --paired) lands
// on other regions of a virtual disk whose speed differs by region (bench/RESULTS.md measured up to
// 2x between positions); this pair takes placement out of the ratio.
// --update-threads: OffloadOptions::update_threads, a list (0 = automatic: the cores the aio
// threads leave free while I/O is in flight; N = N OpenMP threads), each measured in turn.
#include "io/aio.h"
#include "zero/offload.h"

#include <fcntl.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int64_t parse_count(const std::string& s) {
  int64_t mult = 1;
  std::string t = s;
  if (!t.empty() && (t.back() == 'M' || t.back() == 'm'))
    mult = 1 << 20, t.pop_back();
  else if (!t.empty() && (t.back() == 'K' || t.back() == 'k'))
    mult = 1 << 10, t.pop_back();
  return std::stoll(t) * mult;
}
std::vector<int64_t> parse_list(const std::string& s) {
  std::vector<int64_t> out;
  size_t a = 0;
  while (a <= s.size()) {
    size_t b = s.find(',', a);
    if (b == std::string::npos) b = s.size();
    if (b > a) out.push_back(parse_count(s.substr(a, b - a)));
    a = b + 1;
  }
  return out;
}

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "bench_nvme: %s\n", msg.c_str());
  std::exit(1);
}

bool g_can_drop = false;
bool g_paired = false;
bool g_same_file = false;
void drop_caches() {
  if (!g_can_drop) return;
  ::sync();
  if (FILE* f = std::fopen("/proc/sys/vm/drop_caches", "w")) {
    std::fputs("3\n", f);
    std::fclose(f);
  }
}

// Plain sequential write + fdatasync, then read, of `bytes` with O_DIRECT: seconds of each.
std::pair<double, double> sequential(const std::string& path, int64_t bytes, int64_t chunk) {
  zt::io::AlignedBuffer buf(chunk);
  std::memset(buf.data(), 0x5a, static_cast<size_t>(buf.bytes()));
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_DIRECT, 0644);
  if (fd < 0) die("cannot open " + path + " with O_DIRECT: " + std::strerror(errno));
  if (::posix_fallocate(fd, 0, bytes) != 0)
    die("cannot reserve " + std::to_string(bytes) + " bytes");
  drop_caches();
  auto t0 = Clock::now();
  for (int64_t off = 0; off < bytes; off += chunk) {
    const size_t n = static_cast<size_t>(std::min(chunk, bytes - off));
    if (::pwrite(fd, buf.data(), n, off) != static_cast<ssize_t>(n))
      die("write of " + path + ": " + std::strerror(errno));
  }
  ::fdatasync(fd);
  const double tw = since(t0);
  drop_caches();
  t0 = Clock::now();
  for (int64_t off = 0; off < bytes; off += chunk) {
    const size_t n = static_cast<size_t>(std::min(chunk, bytes - off));
    if (::pread(fd, buf.data(), n, off) != static_cast<ssize_t>(n))
      die("read of " + path + ": " + std::strerror(errno));
  }
  const double tr = since(t0);
  ::close(fd);
  std::filesystem::remove(path);
  return {tw, tr};
}

// The --same-file pass: every chunk of `path` read and written back unchanged, O_DIRECT, then
// fdatasync; seconds.
double read_write_back(const std::string& path, int64_t chunk) {
  const int fd = ::open(path.c_str(), O_RDWR | O_DIRECT);
  if (fd < 0) die("cannot open " + path + " with O_DIRECT: " + std::strerror(errno));
  const int64_t bytes = static_cast<int64_t>(std::filesystem::file_size(path));
  zt::io::AlignedBuffer buf(chunk);
  const auto t0 = Clock::now();
  for (int64_t off = 0; off < bytes; off += chunk) {
    const size_t n = static_cast<size_t>(std::min(chunk, bytes - off));
    if (::pread(fd, buf.data(), n, off) != static_cast<ssize_t>(n))
      die("read of " + path + ": " + std::strerror(errno));
    if (::pwrite(fd, buf.data(), n, off) != static_cast<ssize_t>(n))
      die("write of " + path + ": " + std::strerror(errno));
  }
  ::fdatasync(fd);
  const double t = since(t0);
  ::close(fd);
  return t;
}

float value(int64_t i, uint64_t salt) {
  uint64_t x = (static_cast<uint64_t>(i) + salt) * 0x9E3779B97F4A7C15ull;
  x ^= x >> 29;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 32;
  return static_cast<float>(x >> 40) / static_cast<float>(1 << 23) - 1.f;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = std::filesystem::temp_directory_path().string();
  int64_t n = 64 << 20;
  std::vector<int64_t> sub_groups, buffers = {2, 4}, update_threads = {0};
  zt::io::AioConfig aio;
  int reps = 3;
  std::vector<int64_t> seq_chunks = {8, 64};
  int threads = omp_get_max_threads();
  std::string sub_arg;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) die("missing value after " + a);
      return argv[++i];
    };
    if (a == "--dir")
      dir = next();
    else if (a == "--params")
      n = parse_count(next());
    else if (a == "--sub-groups")
      sub_arg = next();
    else if (a == "--buffers")
      buffers = parse_list(next());
    else if (a == "--block-kib")
      aio.block_size = parse_count(next()) * 1024;
    else if (a == "--queue-depth")
      aio.queue_depth = parse_count(next());
    else if (a == "--aio-threads")
      aio.thread_count = parse_count(next());
    else if (a == "--reps")
      reps = static_cast<int>(parse_count(next()));
    else if (a == "--seq-chunk-mib")
      seq_chunks = parse_list(next());
    else if (a == "--drop-caches")
      g_can_drop = true;
    else if (a == "--paired")
      g_paired = true;
    else if (a == "--same-file")
      g_same_file = true;
    else if (a == "--update-threads")
      update_threads = parse_list(next());
    else if (a == "--threads")
      threads = static_cast<int>(parse_count(next()));
    else
      die("unknown argument " + a + " (see the comment at the top of apps/bench_nvme.cpp)");
  }
  sub_groups = sub_arg.empty() ? std::vector<int64_t>{n, 8 << 20, 2 << 20} : parse_list(sub_arg);
  omp_set_num_threads(threads);
  if (g_can_drop && ::geteuid() != 0) die("--drop-caches needs root");

  std::vector<float> grads(static_cast<size_t>(n)), init(static_cast<size_t>(n));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    grads[static_cast<size_t>(i)] = 0.01f * value(i, 1ull << 40);
    init[static_cast<size_t>(i)] = value(i, 0);
  }
  zt::optim::AdamParams ap;
  ap.weight_decay = 0.01f;
  const std::vector<zt::optim::Segment> segs = {{0, n, true}};

  struct Row {
    int64_t sub_group, buffers, update_threads, file_bytes;
    double sec, seq_gbps, paired, same_file;
  };
  std::vector<Row> rows;
  std::vector<double> seq_w, seq_r;
  int64_t best_chunk = 0;
  int64_t seq_bytes = 0;
  for (int64_t sg : sub_groups) {
    for (int64_t b : buffers) {
      for (int64_t ut : update_threads) {
        zt::zero::OffloadOptions opt;
        opt.device = zt::io::OffloadDevice::kNvme;
        opt.nvme_path = dir;
        opt.sub_group_size = sg;
        opt.buffer_count = b;
        opt.update_threads = ut;
        opt.aio = aio;
        zt::zero::OptimizerOffload off(ap, n, opt);
        off.write_state("master", 0, n, init.data());
        const int64_t file_bytes = off.memory().file_bytes;
        // The floor on the same bytes, interleaved with the offload's runs (the disk and the VM
        // vary over minutes): once per distinct file size.
        if (file_bytes != seq_bytes) {
          seq_bytes = file_bytes;
          double best = 0;
          for (int64_t chunk_mib : seq_chunks) {
            const int64_t chunk = chunk_mib << 20;
            std::vector<double> w, rd;
            for (int r = 0; r < reps; ++r) {
              auto [tw, tr] = sequential(dir + "/zerotrain_seq.bin", file_bytes, chunk);
              w.push_back(tw);
              rd.push_back(tr);
            }
            const double tw = median(w), tr = median(rd), gbps = 2.0 * file_bytes / (tw + tr);
            std::printf(
                "{\"bench\": \"seq\", \"dir\": \"%s\", \"bytes\": %ld, \"chunk\": %ld, "
                "\"write_gbps\": %.3f, \"read_gbps\": %.3f, \"gbps\": %.3f, \"o_direct\": true, "
                "\"drop_caches\": %s}\n",
                dir.c_str(), static_cast<long>(file_bytes), static_cast<long>(chunk),
                file_bytes / tw / 1e9, file_bytes / tr / 1e9, gbps / 1e9,
                g_can_drop ? "true" : "false");
            if (gbps > best) {
              best = gbps;
              best_chunk = chunk;
              seq_w = w;
              seq_r = rd;
            }
          }
        }
        std::vector<double> ts, paired, same;
        for (int r = 0; r <= reps; ++r) {
          double seq_sec = 0, same_sec = 0;
          if (g_paired && r > 0) {
            auto [tw, tr] = sequential(dir + "/zerotrain_seq.bin", file_bytes, best_chunk);
            seq_sec = tw + tr;
          }
          if (g_same_file && r > 0) same_sec = read_write_back(off.swap_path(), best_chunk);
          drop_caches();
          auto t0 = Clock::now();
          off.step(grads.data(), segs, 1e-3f);
          if (r > 0) ts.push_back(since(t0));
          if (seq_sec > 0) paired.push_back(seq_sec / ts.back());
          if (same_sec > 0) same.push_back(same_sec / ts.back());
        }
        const double sec = median(ts);
        const double paired_fraction = paired.empty() ? 0 : median(paired);
        const double same_file_fraction = same.empty() ? 0 : median(same);
        const double seq_gbps = 2.0 * file_bytes / (median(seq_w) + median(seq_r));
        const double swap_gbps = 2.0 * file_bytes / sec;
        std::printf(
            "{\"bench\": \"nvme\", \"params\": %ld, \"sub_group_size\": %ld, \"buffer_count\": "
            "%ld, "
            "\"update_threads\": %d, \"block_size\": %ld, \"queue_depth\": %ld, \"aio_threads\": "
            "%ld, "
            "\"threads\": %d, "
            "\"file_bytes\": %ld, \"direct\": %s, \"uring\": %s, \"step_ms\": %.1f, "
            "\"params_per_s\": %.4g, \"swap_gbps\": %.3f, \"seq_gbps\": %.3f, "
            "\"fraction_of_seq\": %.3f, \"paired_fraction\": %.3f, \"same_file_fraction\": "
            "%.3f}\n",
            static_cast<long>(n), static_cast<long>(off.sub_group_size()), static_cast<long>(b),
            off.update_threads(), static_cast<long>(aio.block_size),
            static_cast<long>(aio.queue_depth), static_cast<long>(aio.thread_count), threads,
            static_cast<long>(file_bytes),
            off.describe().find("buffered") == std::string::npos ? "true" : "false",
            off.describe().find("pread") == std::string::npos ? "true" : "false", sec * 1e3,
            n / sec, swap_gbps / 1e9, seq_gbps / 1e9, swap_gbps / seq_gbps, paired_fraction,
            same_file_fraction);
        std::fflush(stdout);
        rows.push_back({off.sub_group_size(), b, off.update_threads(), file_bytes, sec, seq_gbps,
                        paired_fraction, same_file_fraction});
      }
    }
  }

  // CPU offload vs the in-memory optimizer on the same span.
  double cpu_sec = 0, mem_sec = 0;
  {
    zt::zero::OffloadOptions opt;
    opt.sub_group_size = sub_groups.back();
    zt::zero::OptimizerOffload off(ap, n, opt);
    off.write_state("master", 0, n, init.data());
    auto ref = zt::optim::make_adam(ap);
    ref->init(n);
    std::vector<float> p = init;
    std::vector<double> tc, tm;
    for (int r = 0; r <= std::max(reps, 5); ++r) {
      auto t0 = Clock::now();
      off.step(grads.data(), segs, 1e-3f);
      const double a = since(t0);
      t0 = Clock::now();
      ref->step(p.data(), grads.data(), n, segs, 1e-3f);
      const double b = since(t0);
      if (r > 0) tc.push_back(a), tm.push_back(b);
    }
    cpu_sec = median(tc);
    mem_sec = median(tm);
    std::printf(
        "{\"bench\": \"cpu\", \"params\": %ld, \"sub_group_size\": %ld, \"threads\": %d, "
        "\"offload_params_per_s\": %.4g, \"in_memory_params_per_s\": %.4g, \"ratio\": %.3f}\n",
        static_cast<long>(n), static_cast<long>(off.sub_group_size()), threads, n / cpu_sec,
        n / mem_sec, mem_sec / cpu_sec);
  }

  std::printf("# NVMe offload, %ld params, dir %s, aio block %ld KiB qd %ld threads %ld\n",
              static_cast<long>(n), dir.c_str(), static_cast<long>(aio.block_size >> 10),
              static_cast<long>(aio.queue_depth), static_cast<long>(aio.thread_count));
  std::printf("# %-14s %-8s %-8s %-10s %-12s %-11s %-10s %-9s %-8s %s\n", "sub_group_size",
              "buffers", "update", "step_ms", "params/s", "swap GB/s", "seq GB/s", "fraction",
              "paired", "same-file");
  for (const Row& r : rows) {
    const double seq = r.seq_gbps;
    std::printf("# %-14ld %-8ld %-8ld %-10.1f %-12.4g %-11.3f %-10.3f %-9.3f %-8.3f %.3f\n",
                static_cast<long>(r.sub_group), static_cast<long>(r.buffers),
                static_cast<long>(r.update_threads), r.sec * 1e3, n / r.sec,
                2.0 * r.file_bytes / r.sec / 1e9, seq / 1e9, 2.0 * r.file_bytes / r.sec / seq,
                r.paired, r.same_file);
  }
  std::printf("# CPU offload %.4g params/s, in-memory AdamW %.4g params/s (%.3f)\n", n / cpu_sec,
              n / mem_sec, mem_sec / cpu_sec);
  return 0;
}
