// tests/io/test_aio.cpp: io/aio.h. Round trips of odd sizes, offsets and buffer addresses through
// both backends (io_uring, pread/pwrite) and every `aio` knob; ordering (AioOrder::kAfterPrevious);
// errors that name the file and the errno text: a read past the end, an unwritable directory, a
// full filesystem (a 1 MiB tmpfs mounted for the test, as root); the buffered fallback on a
// filesystem that refuses O_DIRECT (ramfs).
#include "core/error.h"
#include "io/aio.h"

#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using zt::io::AioConfig;
using zt::io::AioEngine;
using zt::io::AioFile;
using zt::io::AioOrder;
using zt::io::AlignedBuffer;

namespace {

// A fresh directory under the build tree's temp dir (on the same disk as the build: ext4 here).
struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "zt_aio_XXXXXX").string();
    path = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

void fill(unsigned char* p, int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  for (int64_t i = 0; i < n; ++i) p[i] = static_cast<unsigned char>(rng());
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// The message of the zt::Error that f throws ("" if none).
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const zt::Error& e) {
    return e.what();
  }
  return "";
}

struct Knobs {
  const char* name;
  AioEngine::Backend backend;
  AioConfig cfg;
};

AioConfig cfg(int64_t block, int64_t depth, int64_t threads, bool single, bool overlap) {
  AioConfig c;
  c.block_size = block;
  c.queue_depth = depth;
  c.thread_count = threads;
  c.single_submit = single;
  c.overlap_events = overlap;
  return c;
}

class AioRoundTrip : public ::testing::TestWithParam<Knobs> {};

TEST_P(AioRoundTrip, OddSizesOffsetsAndAddresses) {
  const Knobs& k = GetParam();
  TempDir dir;
  AioEngine aio(k.cfg, k.backend);
  AioFile file((dir.path / "rt.bin").string(), AioFile::Mode::kCreate);
  EXPECT_TRUE(file.direct()) << "ext4 takes O_DIRECT";
  const int64_t sizes[] = {1, 4095, 4096, 4097, 12345, (1 << 20) + 7, 3 * (1 << 20) + 4096};
  const int64_t offsets[] = {0, 4096, 13, 8191, 5 << 20};
  const int64_t shifts[] = {0, 5, 4096 - 13};  // buffer address past a 4 KiB boundary
  uint32_t seed = 1;
  for (int64_t n : sizes) {
    for (int64_t off : offsets) {
      for (int64_t shift : shifts) {
        AlignedBuffer out(n + shift), in(n + shift);
        auto* src = out.as<unsigned char>() + shift;
        auto* dst = in.as<unsigned char>() + shift;
        fill(src, n, ++seed);
        aio.wait(aio.write(file, src, n, off));
        aio.wait(aio.read(file, dst, n, off));
        ASSERT_EQ(std::memcmp(src, dst, static_cast<size_t>(n)), 0)
            << k.name << " size " << n << " offset " << off << " shift " << shift;
      }
    }
  }
  // Many requests in flight at once, waited together.
  const int64_t n = (1 << 20) + 333;
  std::vector<AlignedBuffer> outs, ins;
  for (int i = 0; i < 6; ++i) {
    outs.emplace_back(n);
    ins.emplace_back(n);
    fill(outs.back().as<unsigned char>(), n, 100 + i);
  }
  for (int i = 0; i < 6; ++i) aio.write(file, outs[i].data(), n, i * n);
  aio.wait_all();
  std::vector<zt::io::AioTicket> t;
  for (int i = 0; i < 6; ++i) t.push_back(aio.read(file, ins[i].data(), n, i * n));
  for (auto& x : t) aio.wait(x);
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(std::memcmp(outs[i].data(), ins[i].data(), static_cast<size_t>(n)), 0) << i;
    EXPECT_TRUE(aio.done(t[static_cast<size_t>(i)]));
  }
  EXPECT_GE(file.size(), 6 * n);
  EXPECT_GE(aio.bytes_written(), 6 * n);
  EXPECT_GE(aio.bytes_read(), 6 * n);
}

INSTANTIATE_TEST_SUITE_P(
    Knobs, AioRoundTrip,
    ::testing::Values(
        Knobs{"uring_default", AioEngine::Backend::kAuto, AioConfig{}},
        Knobs{"uring_small_blocks", AioEngine::Backend::kAuto, cfg(4096, 4, 1, false, true)},
        Knobs{"uring_odd_block_3_threads", AioEngine::Backend::kAuto,
              cfg(10000, 2, 3, false, true)},
        Knobs{"uring_single_submit", AioEngine::Backend::kAuto, cfg(65536, 8, 2, true, true)},
        Knobs{"uring_no_overlap_events", AioEngine::Backend::kAuto, cfg(65536, 3, 1, false, false)},
        Knobs{"uring_depth_1", AioEngine::Backend::kAuto, cfg(8192, 1, 1, true, false)},
        Knobs{"posix", AioEngine::Backend::kPosix, cfg(65536, 8, 2, false, true)}),
    [](const ::testing::TestParamInfo<Knobs>& i) { return std::string(i.param.name); });

TEST(Aio, UsesIoUringHere) {
  AioEngine aio;
  EXPECT_TRUE(aio.uses_uring()) << "io_uring unavailable: the pread/pwrite fallback runs";
}

// Write buffer -> file A, then read file B into the same buffer: with kAfterPrevious the read
// never overtakes the write, for any block size and thread count.
TEST(Aio, AfterPreviousOrdersRequestsOnOneBuffer) {
  TempDir dir;
  for (int64_t threads : {1, 3}) {
    AioEngine aio(cfg(8192, 8, threads, false, true));
    AioFile a((dir.path / "a.bin").string(), AioFile::Mode::kCreate);
    AioFile b((dir.path / "b.bin").string(), AioFile::Mode::kCreate);
    const int64_t n = 256 * 1024 + 4096;
    AlignedBuffer buf(n), other(n), check(n);
    for (int round = 0; round < 20; ++round) {
      fill(other.as<unsigned char>(), n, 7000 + round);
      aio.wait(aio.write(b, other.data(), n, 0));
      fill(buf.as<unsigned char>(), n, 9000 + round);
      auto w = aio.write(a, buf.data(), n, 0);
      auto r = aio.read(b, buf.data(), n, 0, AioOrder::kAfterPrevious);
      aio.wait(r);
      aio.wait(w);
      aio.wait(aio.read(a, check.data(), n, 0));
      AlignedBuffer expect(n);
      fill(expect.as<unsigned char>(), n, 9000 + round);
      ASSERT_EQ(std::memcmp(check.data(), expect.data(), static_cast<size_t>(n)), 0)
          << "the write saw the read's data: threads " << threads << " round " << round;
      ASSERT_EQ(std::memcmp(buf.data(), other.data(), static_cast<size_t>(n)), 0);
    }
  }
}

// The ordering is per byte of memory, not a drain: a read into the second half of a write's
// buffer (and beyond it) waits for the write's bytes it overlaps, and the swap pipeline's pattern
// (read sub-group g+1 into the buffer sub-group g-1 is still being written from, two buffers)
// moves every byte intact, for every ring setting.
TEST(Aio, AfterPreviousOrdersOverlappingMemoryOnly) {
  TempDir dir;
  for (int64_t threads : {1, 3}) {
    for (bool overlap : {true, false}) {
      AioEngine aio(cfg(8192, 4, threads, false, overlap));
      AioFile src((dir.path / "src.bin").string(), AioFile::Mode::kCreate);
      AioFile dst((dir.path / "dst.bin").string(), AioFile::Mode::kCreate);
      // Partial overlap: write big[0, n) then read into big[n/2, 3n/2).
      const int64_t n = 64 * 1024;
      AlignedBuffer big(2 * n), want(2 * n), check(n);
      fill(want.as<unsigned char>(), 2 * n, 11);
      aio.wait(aio.write(src, want.data(), 2 * n, 0));
      fill(big.as<unsigned char>(), 2 * n, 12);
      AlignedBuffer orig(2 * n);
      std::memcpy(orig.data(), big.data(), static_cast<size_t>(2 * n));
      auto w = aio.write(dst, big.data(), n, 0);
      auto r = aio.read(src, big.as<char>() + n / 2, n, 0, AioOrder::kAfterPrevious);
      aio.wait(r);
      aio.wait(w);
      aio.wait(aio.read(dst, check.data(), n, 0));
      ASSERT_EQ(std::memcmp(check.data(), orig.data(), static_cast<size_t>(n)), 0)
          << "threads " << threads << " overlap_events " << overlap;
      ASSERT_EQ(std::memcmp(big.as<char>() + n / 2, want.data(), static_cast<size_t>(n)), 0);

      // The pipeline: G slots of `slot` bytes, two buffers, each slot read, changed, written.
      const int64_t slot = 3 * 8192 + 4096, G = 9;
      AlignedBuffer all(G * slot), bufs[2] = {AlignedBuffer(slot), AlignedBuffer(slot)};
      fill(all.as<unsigned char>(), G * slot, 13);
      aio.wait(aio.write(src, all.data(), G * slot, 0));
      std::vector<zt::io::AioTicket> reads(G), writes(G);
      reads[0] = aio.read(src, bufs[0].data(), slot, 0);
      for (int64_t g = 0; g < G; ++g) {
        aio.wait(reads[static_cast<size_t>(g)]);
        if (g + 1 < G)
          reads[static_cast<size_t>(g + 1)] = aio.read(src, bufs[(g + 1) % 2].data(), slot,
                                                       (g + 1) * slot, AioOrder::kAfterPrevious);
        unsigned char* p = bufs[g % 2].as<unsigned char>();
        for (int64_t i = 0; i < slot; ++i) p[i] = static_cast<unsigned char>(p[i] ^ (g + 1));
        writes[static_cast<size_t>(g)] = aio.write(dst, p, slot, g * slot);
      }
      aio.wait_all();
      AlignedBuffer out(G * slot);
      aio.wait(aio.read(dst, out.data(), G * slot, 0));
      for (int64_t i = 0; i < G * slot; ++i)
        ASSERT_EQ(out.as<unsigned char>()[i],
                  static_cast<unsigned char>(all.as<unsigned char>()[i] ^ (i / slot + 1)))
            << "byte " << i << " threads " << threads << " overlap_events " << overlap;
    }
  }
}

TEST(Aio, ReadPastTheEndNamesFileAndOffset) {
  TempDir dir;
  AioEngine aio;
  const std::string path = (dir.path / "short.bin").string();
  AioFile f(path, AioFile::Mode::kCreate);
  AlignedBuffer buf(3 * 4096);
  aio.wait(aio.write(f, buf.data(), 4096, 0));
  const std::string msg = error_of([&] { aio.wait(aio.read(f, buf.data(), 3 * 4096, 0)); });
  EXPECT_TRUE(contains(msg, path)) << msg;
  EXPECT_TRUE(contains(msg, "end of file")) << msg;
  EXPECT_TRUE(contains(msg, "read of")) << msg;
  // wait_all does not report it a second time; a fresh request works.
  EXPECT_EQ(error_of([&] { aio.wait_all(); }), "");
  aio.wait(aio.read(f, buf.data(), 4096, 0));
}

TEST(Aio, OpenForReadingAMissingFileNamesIt) {
  TempDir dir;
  const std::string path = (dir.path / "missing.bin").string();
  const std::string msg = error_of([&] { AioFile f(path, AioFile::Mode::kRead); });
  EXPECT_TRUE(contains(msg, path) && contains(msg, std::strerror(ENOENT))) << msg;
}

// ---- filesystems mounted for the test (root only) -----------------------------------------------

// Mounts `type` with `options` on a fresh directory and runs f(mount point); returns "" or why the
// test cannot run here (then the caller skips).
std::string with_mount(const char* type, const char* options,
                       const std::function<void(const fs::path&)>& f) {
  if (::geteuid() != 0) return "not root: cannot mount a " + std::string(type);
  TempDir dir;
  if (::mount(type, dir.path.c_str(), type, 0, options) != 0)
    return "mount " + std::string(type) + " failed: " + std::strerror(errno);
  struct Unmount {
    const fs::path& p;
    ~Unmount() { ::umount2(p.c_str(), MNT_DETACH); }
  } unmount{dir.path};
  f(dir.path);
  return "";
}

TEST(Aio, UnwritableDirectoryNamesFileAndErrno) {
  if (::geteuid() != 0) {  // permissions apply: a directory without write permission
    TempDir dir;
    fs::permissions(dir.path, fs::perms::owner_read | fs::perms::owner_exec);
    const std::string path = (dir.path / "x.swp").string();
    const std::string msg = error_of([&] { AioFile f(path, AioFile::Mode::kCreate); });
    EXPECT_TRUE(contains(msg, path) && contains(msg, std::strerror(EACCES))) << msg;
    fs::permissions(dir.path, fs::perms::owner_all);
    return;
  }
  // Root ignores permissions: a read-only filesystem instead.
  const std::string skip = with_mount("tmpfs", "size=1m,ro", [](const fs::path& mnt) {
    const std::string path = (mnt / "x.swp").string();
    const std::string msg = error_of([&] { AioFile f(path, AioFile::Mode::kCreate); });
    EXPECT_TRUE(contains(msg, path) && contains(msg, std::strerror(EROFS))) << msg;
    EXPECT_TRUE(contains(msg, "cannot open")) << msg;
  });
  if (!skip.empty()) GTEST_SKIP() << skip;
}

TEST(Aio, FullFilesystemNamesFileAndENOSPC) {
  const std::string skip = with_mount("tmpfs", "size=1m", [](const fs::path& mnt) {
    const std::string nospace = std::strerror(ENOSPC);
    {  // allocate() reports it up front
      const std::string path = (mnt / "reserved.swp").string();
      AioFile f(path, AioFile::Mode::kCreate);
      const std::string msg = error_of([&] { f.allocate(4 << 20); });
      EXPECT_TRUE(contains(msg, path) && contains(msg, nospace)) << msg;
    }
    for (auto backend : {AioEngine::Backend::kAuto, AioEngine::Backend::kPosix}) {
      // A write that does not fit fails at wait(), naming the file, range and errno text.
      const std::string path = (mnt / "big.swp").string();
      AioEngine aio(cfg(65536, 4, 2, false, true), backend);
      AioFile f(path, AioFile::Mode::kCreate);
      AlignedBuffer buf(2 << 20);
      const std::string msg = error_of([&] { aio.wait(aio.write(f, buf.data(), 2 << 20, 0)); });
      EXPECT_TRUE(contains(msg, path) && contains(msg, nospace) && contains(msg, "write of"))
          << msg;
      EXPECT_TRUE(contains(msg, "[0, 2097152)")) << msg;
      fs::remove(path);
    }
  });
  if (!skip.empty()) GTEST_SKIP() << skip;
}

TEST(Aio, FilesystemWithoutODirectFallsBackToBufferedIo) {
  const std::string skip = with_mount("ramfs", "", [](const fs::path& mnt) {
    AioEngine aio;
    AioFile f((mnt / "f.swp").string(), AioFile::Mode::kCreate);
    EXPECT_FALSE(f.direct()) << "ramfs accepted O_DIRECT: this kernel does not test the fallback";
    const int64_t n = 1 << 20;
    AlignedBuffer out(n), in(n);
    fill(out.as<unsigned char>(), n, 3);
    aio.wait(aio.write(f, out.data(), n, 0));
    aio.wait(aio.read(f, in.data(), n, 0));
    EXPECT_EQ(std::memcmp(out.data(), in.data(), static_cast<size_t>(n)), 0);
  });
  if (!skip.empty()) GTEST_SKIP() << skip;
}

TEST(Aio, AlignedBufferIsAlignedZeroedAndLockable) {
  AlignedBuffer b(10000);
  EXPECT_EQ(b.bytes(), 12288);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data()) % 4096, 0u);
  for (int64_t i = 0; i < b.bytes(); ++i) {
    ASSERT_EQ(b.as<unsigned char>()[i], 0);
  }
  const std::string why = b.lock();
  EXPECT_EQ(why.empty(), b.locked()) << why;
  if (!why.empty()) {
    EXPECT_TRUE(contains(why, "RLIMIT_MEMLOCK")) << why;
  }
  AlignedBuffer moved = std::move(b);
  EXPECT_EQ(moved.bytes(), 12288);
  EXPECT_EQ(b.data(), nullptr);
}

TEST(Aio, BadKnobsAreConfigErrors) {
  AioConfig c;
  c.queue_depth = 0;
  EXPECT_THROW(AioEngine{c}, zt::ConfigError);
  c = AioConfig{};
  c.thread_count = 0;
  EXPECT_THROW(AioEngine{c}, zt::ConfigError);
}

}  // namespace
