// apps/bench_ckpt.cpp: checkpoint throughput of a real engine against the disk's plain speed, and
// the cost of an asynchronous persist to the training steps that run during it. JSON lines, then a
// short table with both sides and the ratios.
//  - save: Engine::save_checkpoint (synchronous: every byte written, fsynced, checksummed, the
//    manifest, renames, `latest`) against a plain write() of the same number of bytes in the same
//    4 MiB chunks into one file + fsync, to the same folder, alternating, median of --reps.
//  - load: Engine::load_checkpoint of that tag (one pass: this rank's ranges read straight into the
//    engine's buffers, each file's XXH3 computed as it streams and checked at the end) against a
//    plain read() of the same bytes into memory. "cold": the page cache dropped before each side
//    (as root: sync + /proc/sys/vm/drop_caches = 3; otherwise every file evicted with
//    posix_fadvise DONTNEED, the files being clean after fsync), which is what a resume after a
//    restart sees; "warm": from the page cache.
//  - step: the median training step (forward, backward, AdamW) without checkpoints, against the
//    steps that run while a background persist (SaveOptions::async) of the whole state is in
//    flight; the save call itself (agreement + snapshot copy) is reported apart (blocked_ms). Run
//    for writer_nice 10 (the default: the writer yields the cores to training) and 0.
// One process, stage 0, fp32 + Adam: 12 bytes of model state per parameter (weights, m, v); the
// default model (8 layers, 512 wide) has 25.3M parameters, 304 MB of state. Under mpirun each rank
// would hold only its partition; one process keeps the figures about the disk, not MPI.
// Usage: bench_ckpt [--dir DIR] [--layers N] [--width N] [--reps N] [--steps N] [--rounds N]
//                   [--batch N] [--seq N] [--threads N]
// --dir: the filesystem to measure; the bench works in DIR/zt_bench_ckpt.<pid>, which it makes and
// removes (nothing else under DIR is touched).
#include <fcntl.h>
#include <omp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "io/checkpoint_store.h"
#include "io/data.h"
#include "zero/engine.h"

namespace {

using namespace zt;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}
double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0 : s / static_cast<double>(v.size());
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "bench_ckpt: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

constexpr size_t kChunk = size_t{4} << 20;  // the store's default ShardWriteOptions::chunk_bytes

// The plain side: write `n` bytes of `src` in kChunk pieces, fsync the file and its folder.
void plain_write(const std::string& path, const char* src, size_t n) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) die("open " + path);
  for (size_t o = 0; o < n;) {
    ssize_t w = ::write(fd, src + o, std::min(kChunk, n - o));
    if (w <= 0) die("write " + path);
    o += static_cast<size_t>(w);
  }
  if (::fsync(fd) != 0) die("fsync " + path);
  ::close(fd);
  int d = ::open(fs::path(path).parent_path().c_str(), O_RDONLY | O_DIRECTORY);
  if (d >= 0) {
    ::fsync(d);
    ::close(d);
  }
}

void plain_read(const std::string& path, char* dst, size_t n) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) die("open " + path);
  for (size_t o = 0; o < n;) {
    ssize_t r = ::read(fd, dst + o, std::min(kChunk, n - o));
    if (r <= 0) die("read " + path);
    o += static_cast<size_t>(r);
  }
  ::close(fd);
}

// Drops a file's (clean) pages from the page cache.
void evict(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}
void evict_tree(const std::string& dir) {
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) evict(e.path().string());
}
// As root: the whole page cache (and dentries, inodes) dropped, what a restarted node sees. False
// when /proc/sys/vm/drop_caches is not writable (then evict() per file).
bool drop_caches() {
  ::sync();
  int fd = ::open("/proc/sys/vm/drop_caches", O_WRONLY);
  if (fd < 0) return false;
  const bool ok = ::write(fd, "3", 1) == 1;
  ::close(fd);
  return ok;
}
uint64_t tree_bytes(const std::string& dir) {
  uint64_t n = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) n += e.file_size();
  return n;
}

struct Args {
  std::string dir;
  int layers = 8, width = 512, reps = 3, steps = 8, rounds = 3, threads = 0;
  int64_t batch = 1, seq = 64;
};

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--dir") a.dir = v;
    else if (k == "--layers") a.layers = std::atoi(v.c_str());
    else if (k == "--width") a.width = std::atoi(v.c_str());
    else if (k == "--reps") a.reps = std::atoi(v.c_str());
    else if (k == "--steps") a.steps = std::atoi(v.c_str());
    else if (k == "--rounds") a.rounds = std::atoi(v.c_str());
    else if (k == "--batch") a.batch = std::atoll(v.c_str());
    else if (k == "--seq") a.seq = std::atoll(v.c_str());
    else if (k == "--threads") a.threads = std::atoi(v.c_str());
    else {
      std::fprintf(stderr, "bench_ckpt: unknown option %s (see the usage line in the source)\n",
                   k.c_str());
      return 2;
    }
  }
  if (a.threads > 0) omp_set_num_threads(a.threads);
  // The bench writes and deletes only inside a folder of its own under --dir (default: the temp
  // folder), never --dir itself: --dir may be any folder on the disk to measure.
  const fs::path parent = a.dir.empty() ? fs::temp_directory_path() : fs::path(a.dir);
  a.dir = (parent / ("zt_bench_ckpt." + std::to_string(::getpid()))).string();
  std::error_code ec;
  if (fs::exists(a.dir) || !fs::create_directories(a.dir, ec)) {
    std::fprintf(stderr, "bench_ckpt: cannot create the work folder %s: %s\n", a.dir.c_str(),
                 ec ? ec.message().c_str() : "it exists");
    return 2;
  }

  try {
    nn::GPTConfig g;
    g.n_layer = a.layers;
    g.n_embd = a.width;
    g.n_head = std::max(1, a.width / 64);
    g.seq_len = static_cast<int>(a.seq);
    g.vocab_size = 256;
    nn::GPT model(g);
    model.init_weights(1);
    zero::EngineSettings s;
    s.micro_batch = a.batch;
    s.optimizer_kind = optim::OptimizerKind::adam;  // AdamW: adam.adam_w_mode (the default)
    s.adam.weight_decay = 0.1f;
    s.scheduler = optim::make_constant_lr(1e-4);
    zero::Engine engine(model, s);
    io::TokenStream data;
    data.source = "bench";
    for (int i = 0; i < 1 << 16; ++i) data.tokens.push_back((i * 7 + i / 13) % 256);
    io::WindowSampler sampler(data, a.batch, a.seq, 1);
    Tensor ids, tgt;
    auto train_step = [&] {
      const auto t0 = Clock::now();
      sampler.next(ids, tgt);
      engine.forward(ids, tgt);
      engine.backward();
      engine.step();
      return seconds_since(t0) * 1e3;
    };
    train_step();  // Adam's m and v are no longer zero
    const int64_t params = engine.num_parameters();
    std::printf("{\"bench\": \"ckpt_setup\", \"params\": %lld, \"state_bytes\": %lld, "
                "\"threads\": %d, \"dir\": \"%s\"}\n",
                static_cast<long long>(params), static_cast<long long>(params * 12),
                omp_get_max_threads(), a.dir.c_str());
    std::fflush(stdout);

    // ---- save and load against plain write/read ------------------------------------------------
    std::vector<double> save_e, save_p, cold_e, cold_p, warm_e, warm_p;
    uint64_t bytes = 0;
    std::vector<char> buf;
    std::string cold_method = "fadvise_dontneed";
    const std::string plain = a.dir + "/plain.bin";
    for (int r = 0; r < a.reps; ++r) {
      const std::string tag = "bench" + std::to_string(r);
      auto engine_save = [&] {
        auto t0 = Clock::now();
        engine.save_checkpoint(a.dir, tag);
        save_e.push_back(seconds_since(t0));
        bytes = tree_bytes(io::tag_dir(a.dir, tag));
      };
      auto plain_save = [&] {
        auto t0 = Clock::now();
        plain_write(plain, buf.data(), bytes);
        save_p.push_back(seconds_since(t0));
      };
      if (r == 0) engine_save();  // learns the size
      if (buf.size() != bytes) {
        buf.assign(bytes, 0);
        std::memcpy(buf.data(), engine.flat_params().raw(),
                    std::min<size_t>(bytes, engine.flat_params().nbytes()));
      }
      if (r > 0 && r % 2 == 1) {  // alternate which side goes first (the disk's write-back state)
        plain_save();
        engine_save();
      } else {
        if (r > 0) engine_save();
        plain_save();
      }

      for (bool cold : {true, false}) {
        auto make_cold = [&] {
          if (!cold) return;
          if (drop_caches()) {
            cold_method = "drop_caches";
          } else {
            evict_tree(io::tag_dir(a.dir, tag));
            evict(plain);
          }
        };
        make_cold();
        // Warm: the engine's files are cached by the cold load just before; drop_caches there
        // took the plain file out again, so it is read once untimed.
        if (!cold) plain_read(plain, buf.data(), bytes);
        auto t0 = Clock::now();
        plain_read(plain, buf.data(), bytes);
        (cold ? cold_p : warm_p).push_back(seconds_since(t0));
        make_cold();
        t0 = Clock::now();
        engine.load_checkpoint(a.dir, tag);
        (cold ? cold_e : warm_e).push_back(seconds_since(t0));
      }
      fs::remove_all(io::tag_dir(a.dir, tag));
      fs::remove(plain);
    }
    auto line = [&](const char* what, const std::vector<double>& e, const std::vector<double>& p) {
      const double gb = static_cast<double>(bytes) / 1e9;
      std::printf("{\"bench\": \"%s\", \"bytes\": %llu, \"reps\": %d, \"engine_s\": %.4f, "
                  "\"plain_s\": %.4f, \"engine_gbps\": %.3f, \"plain_gbps\": %.3f, "
                  "\"ratio\": %.3f, \"cold_method\": \"%s\"}\n",
                  what, static_cast<unsigned long long>(bytes), a.reps, median(e), median(p),
                  gb / median(e), gb / median(p), median(p) / median(e), cold_method.c_str());
    };
    line("ckpt_save", save_e, save_p);
    line("ckpt_load_cold", cold_e, cold_p);
    line("ckpt_load_warm", warm_e, warm_p);
    std::fflush(stdout);

    // ---- training steps during a background persist -----------------------------------------
    struct StepRow {
      int nice;
      double base_ms, during_med_ms, during_mean_ms, blocked_ms, persist_ms;
      size_t during_n;
    };
    std::vector<StepRow> rows;
    for (int nice : {10, 0}) {
      if (a.rounds <= 0) break;  // --rounds 0: throughput only
      for (int i = 0; i < 2; ++i) train_step();
      std::vector<double> base;
      for (int i = 0; i < a.steps; ++i) base.push_back(train_step());
      zero::SaveOptions o;
      o.async = true;
      o.keep = 1;
      o.writer_nice = nice;
      engine.save_checkpoint(a.dir, "warmup", "{}", o);  // the snapshot's pages, once
      engine.wait_checkpoint();
      std::vector<double> during, blocked, persist;
      for (int r = 0; r < a.rounds; ++r) {
        train_step();
        zero::SaveResult sr =
            engine.save_checkpoint(a.dir, "async" + std::to_string(r), "{}", o);
        blocked.push_back(sr.blocked_ms);
        do during.push_back(train_step());
        while (engine.checkpoint_persisting());
        persist.push_back(engine.wait_checkpoint().persist_ms);
      }
      rows.push_back({nice, median(base), median(during), mean(during), median(blocked),
                      median(persist), during.size()});
      const StepRow& w = rows.back();
      std::printf("{\"bench\": \"ckpt_async_step\", \"writer_nice\": %d, \"base_step_ms\": %.2f, "
                  "\"during_persist_step_ms_median\": %.2f, \"during_persist_step_ms_mean\": %.2f, "
                  "\"steps_during\": %zu, \"ratio\": %.3f, \"save_blocked_ms\": %.2f, "
                  "\"persist_ms\": %.1f, \"state_bytes\": %llu}\n",
                  nice, w.base_ms, w.during_med_ms, w.during_mean_ms, w.during_n,
                  w.during_mean_ms / w.base_ms, w.blocked_ms, w.persist_ms,
                  static_cast<unsigned long long>(bytes));
      std::fflush(stdout);
    }

    // ---- table ---------------------------------------------------------------------------------
    const double gb = static_cast<double>(bytes) / 1e9;
    std::printf("\ncheckpoint of %.1f MB (%lld parameters, weights + Adam m, v in fp32), %d reps, "
                "median\n",
                gb * 1e3, static_cast<long long>(params), a.reps);
    std::printf("%-12s %14s %14s %8s\n", "", "engine GB/s", "plain GB/s", "ratio");
    std::printf("%-12s %14.3f %14.3f %8.2f\n", "save+fsync", gb / median(save_e),
                gb / median(save_p), median(save_p) / median(save_e));
    std::printf("%-12s %14.3f %14.3f %8.2f\n", "load cold", gb / median(cold_e),
                gb / median(cold_p), median(cold_p) / median(cold_e));
    std::printf("%-12s %14.3f %14.3f %8.2f\n", "load warm", gb / median(warm_e),
                gb / median(warm_p), median(warm_p) / median(warm_e));
    std::printf("\n%-12s %12s %14s %8s %12s %12s\n", "writer nice", "step ms", "during persist",
                "ratio", "save blocks", "persist ms");
    for (const StepRow& w : rows)
      std::printf("%-12d %12.1f %14.1f %8.3f %9.1f ms %12.0f\n", w.nice, w.base_ms,
                  w.during_mean_ms, w.during_mean_ms / w.base_ms, w.blocked_ms, w.persist_ms);
    fs::remove_all(a.dir);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_ckpt: %s\n", e.what());
    fs::remove_all(a.dir, ec);
    return 1;
  }
  return 0;
}
