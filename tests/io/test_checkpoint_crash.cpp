// tests/io/test_checkpoint_crash.cpp: the store under real failures.
//  - A process SIGKILLed in the middle of writing a shard (fork, the child pauses inside the write
//    after 16 MiB of a 64 MiB shard, the parent kills it) and at each step of the commit: the
//    previous checkpoint stays the one `latest` names and verifies; the leftovers are hidden,
//    ignored by readers and removed by cleanup_stale; a new save then succeeds.
//  - Disk full: a 1 MiB tmpfs and a 2 MiB shard: one CheckpointError naming the file and "disk
//  full",
//    no temporary folder left, the previous checkpoint intact.
//  - A read-only file system (tmpfs remounted read-only): a clear error, the previous checkpoint
//    still loads.
//  - The same during an asynchronous persist (io/checkpoint_async.h): the protocol runs on a
//    BackgroundJob from a snapshot while the main thread keeps changing the live buffer; a SIGKILL
//    in the middle of the shard write or after a commit step leaves the previous version loadable.
// Mounting needs root (or a user namespace, tried when root is not available); the tests skip with
// a message only when neither is permitted.
#include "core/error.h"
#include "io/checkpoint_async.h"
#include "io/checkpoint_store.h"
#include "io/checkpoint_writer.h"
#include "test_checkpoint_util.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

namespace zt::io {
namespace {

using testing::sample_manifest;
using testing::save_sample;
using testing::TempDir;
namespace fs = std::filesystem;

bool contains(const std::string& s, const std::string& needle) {
  return s.find(needle) != std::string::npos;
}

std::vector<std::string> hidden_entries(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    std::string n = e.path().filename().string();
    if (n[0] == '.') out.push_back(n);
  }
  return out;
}

// Runs `body` in a child process; returns the child's wait status. The child never returns into
// gtest: it exits with 0, or 3 when `body` threw.
int run_child(const std::function<void()>& body, pid_t* pid_out = nullptr,
              const std::function<void(pid_t)>& parent = nullptr) {
  pid_t pid = ::fork();
  if (pid == 0) {
    try {
      body();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child: %s\n", e.what());
      ::_exit(3);
    }
    ::_exit(0);
  }
  if (pid_out) *pid_out = pid;
  if (parent) parent(pid);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

// The state every crash must leave: `good` is what `latest` names and it verifies; the visible tags
// are `visible`; the leftovers go with cleanup_stale; a new save then works.
void expect_recovers(const std::string& dir, const std::string& good,
                     std::vector<std::string> visible) {
  EXPECT_EQ(read_latest(dir), good);
  ResolvedTag r = resolve_latest(dir);
  EXPECT_EQ(r.tag, good);
  EXPECT_FALSE(r.fell_back) << r.message;
  EXPECT_TRUE(verify(dir, good).empty());
  EXPECT_EQ(list_tags(dir), visible);
  cleanup_stale(dir);
  EXPECT_TRUE(hidden_entries(dir).empty());
  EXPECT_EQ(list_tags(dir), visible) << "cleanup never touches complete tags";
  save_sample(dir, "after", 1000);
  EXPECT_EQ(resolve_latest(dir).tag, "after");
  visible.push_back("after");
  EXPECT_EQ(list_tags(dir), visible);
}

TEST(CheckpointCrash, SigkillInTheMiddleOfAShardWrite) {
  TempDir tmp;
  const std::string dir = tmp / "ckpt";
  save_sample(dir, "global_step1", 1);

  constexpr uint64_t kShardBytes = uint64_t{64} << 20, kKillAfter = uint64_t{16} << 20;
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const std::string part = tmp_dir(dir, "global_step2") + "/rank00000.safetensors.part";
  uint64_t part_size_at_kill = 0;
  int status = run_child(
      [&] {
        ::close(fds[0]);
        std::vector<float> big(kShardBytes / 4, 3.0f);
        SafetensorsWriter w;
        w.add("big", DType::f32, {static_cast<int64_t>(big.size())}, big.data());
        begin_save(dir, "global_step2");
        ShardWriteOptions opt;
        opt.chunk_bytes = size_t{1} << 20;
        opt.on_progress = [&](uint64_t written, uint64_t) {
          if (written < kKillAfter) return;
          char c = 'k';
          (void)!::write(fds[1], &c, 1);  // "I am in the middle of the write"
          for (;;) ::pause();             // ...and stay there until killed
        };
        write_shard(dir, "global_step2", 0, w, opt);
        ::_exit(4);  // never reached
      },
      nullptr,
      [&](pid_t pid) {
        ::close(fds[1]);
        pollfd p{fds[0], POLLIN, 0};
        char c = 0;
        bool signalled = ::poll(&p, 1, 60000) == 1 && ::read(fds[0], &c, 1) == 1;
        EXPECT_TRUE(signalled) << "the child never reached the middle of its write";
        part_size_at_kill = testing::file_size(part);
        ::kill(pid, SIGKILL);
        ::close(fds[0]);
      });
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "status " << status;
  EXPECT_GE(part_size_at_kill, kKillAfter) << "killed with a partial shard on disk";
  EXPECT_LT(part_size_at_kill, kShardBytes);
  EXPECT_TRUE(fs::exists(part)) << "the dead writer's partial file is still there";
  expect_recovers(dir, "global_step1", {"global_step1"});
}

// An asynchronous persist killed in the middle of its shard write (`kill_at` "write") or right
// after a commit step: the child's main thread "trains" (rewrites the live buffer) while the
// background job persists the snapshot; the parent SIGKILLs the child once the writer is inside.
void sigkill_during_background_persist(const std::string& kill_at) {
  TempDir tmp;
  const std::string dir = tmp / "ckpt";
  save_sample(dir, "global_step1", 1, 1);
  constexpr uint64_t kShardBytes = uint64_t{64} << 20, kKillAfter = uint64_t{16} << 20;
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  int status = run_child(
      [&] {
        ::close(fds[0]);
        std::vector<float> live(kShardBytes / 4, 3.0f);
        SafetensorsWriter w;
        w.add("big", DType::f32, {static_cast<int64_t>(live.size())}, live.data());
        ShardSnapshot snap;
        snap.assign(w);
        PersistRequest req;
        req.dir = dir;
        req.tag = "global_step2";
        req.shard = &snap.writer();
        req.manifest = sample_manifest("global_step2", 2, 1);
        req.client_state_json = "{}";
        req.keep = 1;  // would retire global_step1, but only after global_step2 is published
        auto stop_here = [&] {
          char c = 'k';
          (void)!::write(fds[1], &c, 1);  // "I am in the middle of the persist"
          for (;;) ::pause();
        };
        req.write.chunk_bytes = size_t{1} << 20;
        req.write.on_progress = [&](uint64_t written, uint64_t) {
          if (kill_at == "write" && written >= kKillAfter) stop_here();
        };
        req.commit.on_step = [&](std::string_view s) {
          if (s == kill_at) stop_here();
        };
        BackgroundJob<PersistResult> job;
        job.start([&] { return persist_checkpoint(req); }, /*nice=*/10);
        for (float v = 4.f;; v += 1.f) std::fill(live.begin(), live.end(), v);  // training
      },
      nullptr,
      [&](pid_t pid) {
        ::close(fds[1]);
        pollfd p{fds[0], POLLIN, 0};
        char c = 0;
        bool inside = ::poll(&p, 1, 60000) == 1 && ::read(fds[0], &c, 1) == 1;
        EXPECT_TRUE(inside) << "the background persist never reached " << kill_at;
        ::kill(pid, SIGKILL);
        ::close(fds[0]);
      });
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "status " << status;
  if (kill_at == "published") {  // visible and complete; `latest` and retention not yet run
    EXPECT_TRUE(verify(dir, "global_step2").empty());
    SafetensorsReader r = open_shard(dir, "global_step2", 0);
    std::vector<float> head(1024);
    r.read_range("big", 0, head.data(), head.size() * 4);
    EXPECT_EQ(head, std::vector<float>(1024, 3.0f)) << "the snapshot, not the live buffer";
    expect_recovers(dir, "global_step1", {"global_step1", "global_step2"});
  } else {
    expect_recovers(dir, "global_step1", {"global_step1"});
  }
}

TEST(CheckpointCrash, SigkillInTheMiddleOfABackgroundPersistWrite) {
  sigkill_during_background_persist("write");
}
TEST(CheckpointCrash, SigkillDuringABackgroundPersistCommit) {
  sigkill_during_background_persist("manifest");
  sigkill_during_background_persist("published");
}

// SIGKILL right after each durable step of commit_save (CommitOptions::on_step).
class CheckpointCrashCommit : public ::testing::TestWithParam<const char*> {};

TEST_P(CheckpointCrashCommit, SigkillAfterStep) {
  const std::string at = GetParam();
  TempDir tmp;
  const std::string dir = tmp.path();
  save_sample(dir, "global_step1", 1);
  int status = run_child([&] {
    CommitOptions opt;
    opt.on_step = [&](std::string_view s) {
      if (s == at) ::raise(SIGKILL);
    };
    save_sample(dir, "global_step2", 2, 2, opt);
  });
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "status " << status;
  if (at == "manifest") {  // complete in .tmp, never published
    EXPECT_TRUE(fs::exists(tmp_dir(dir, "global_step2") + "/manifest.json"));
    expect_recovers(dir, "global_step1", {"global_step1"});
  } else if (at == "published") {  // visible and complete, `latest` not yet moved
    EXPECT_TRUE(verify(dir, "global_step2").empty());
    expect_recovers(dir, "global_step1", {"global_step1", "global_step2"});
  } else {  // `latest` moved: the new one is the checkpoint
    expect_recovers(dir, "global_step2", {"global_step1", "global_step2"});
  }
}

INSTANTIATE_TEST_SUITE_P(Steps, CheckpointCrashCommit,
                         ::testing::Values("manifest", "published", "latest"));

TEST(CheckpointCrash, SigkillWhileReplacingATagKeepsTheOldOne) {
  TempDir tmp;
  const std::string dir = tmp.path();
  save_sample(dir, "best", 1);
  int status = run_child([&] {
    CommitOptions opt;
    opt.on_step = [](std::string_view s) {
      if (s == "manifest") ::raise(SIGKILL);
    };
    save_sample(dir, "best", 2, 2, opt);
  });
  ASSERT_TRUE(WIFSIGNALED(status)) << status;
  EXPECT_EQ(read_manifest(dir, "best").global_step, 1);
  expect_recovers(dir, "best", {"best"});
}

// File systems without RENAME_EXCHANGE replace a tag by renaming the old one aside first. A kill
// in that window leaves no <tag> at all; cleanup_stale puts the old one back.
TEST(CheckpointCrash, SigkillBetweenTheRenamesOfAReplacementIsRepairedByCleanup) {
  TempDir tmp;
  const std::string dir = tmp.path();
  save_sample(dir, "best", 1);
  CommitOptions aside;
  aside.allow_exchange = false;
  save_sample(dir, "best", 2, 2, aside);  // the rename-aside path works when nothing dies
  EXPECT_EQ(read_manifest(dir, "best").global_step, 2);
  EXPECT_TRUE(verify(dir, "best").empty());
  EXPECT_TRUE(hidden_entries(dir).empty());

  int status = run_child([&] {
    CommitOptions opt;
    opt.allow_exchange = false;
    opt.on_step = [](std::string_view s) {
      if (s == "set_aside") ::raise(SIGKILL);
    };
    save_sample(dir, "best", 3, 2, opt);
  });
  ASSERT_TRUE(WIFSIGNALED(status)) << status;
  EXPECT_FALSE(fs::exists(tag_dir(dir, "best")));
  EXPECT_FALSE(resolve_latest(dir).tag.has_value()) << "nothing visible until cleanup";
  auto done = cleanup_stale(dir);
  ASSERT_EQ(done.size(), 2u);  // restored .old.best, removed .tmp.best
  EXPECT_TRUE(contains(done[0], "restored")) << done[0];
  EXPECT_EQ(read_manifest(dir, "best").global_step, 2);
  expect_recovers(dir, "best", {"best"});
}

// ---- tmpfs scenarios ----------------------------------------------------------------------------

// Runs `scenario(mount_point)` with a tmpfs mounted there: directly when this process may mount
// (root), else in a child inside a new user + mount namespace (what `unshare -Urm` does). The
// scenario returns "" when every check held, else what failed. Returns {skipped?, failure}.
struct TmpfsOutcome {
  bool skipped = false;
  std::string failure;
};

TmpfsOutcome with_tmpfs(const std::string& mnt, const char* options,
                        const std::function<std::string(const std::string&)>& scenario) {
  if (::mount("tmpfs", mnt.c_str(), "tmpfs", 0, options) == 0) {
    std::string r;
    try {
      r = scenario(mnt);
    } catch (const std::exception& e) {
      r = std::string("unexpected exception: ") + e.what();
    }
    ::umount2(mnt.c_str(), MNT_DETACH);
    return {false, r};
  }
  const int err = errno;
  if (err != EPERM && err != EACCES)
    return {false, "mount tmpfs failed: " + std::string(std::strerror(err))};

  int fds[2];
  if (::pipe(fds) != 0) return {false, "pipe failed"};
  const uid_t uid = ::getuid();
  const gid_t gid = ::getgid();
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    auto say = [&](const std::string& s) { (void)!::write(fds[1], s.data(), s.size()); };
    auto put = [](const char* file, const std::string& text) {
      int fd = ::open(file, O_WRONLY);
      bool ok =
          fd >= 0 && ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
      if (fd >= 0) ::close(fd);
      return ok;
    };
    if (::unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) {
      say("SKIP user namespaces not permitted (" + std::string(std::strerror(errno)) + ")");
      ::_exit(0);
    }
    put("/proc/self/setgroups", "deny");
    if (!put("/proc/self/uid_map", "0 " + std::to_string(uid) + " 1\n") ||
        !put("/proc/self/gid_map", "0 " + std::to_string(gid) + " 1\n") ||
        ::mount("tmpfs", mnt.c_str(), "tmpfs", 0, options) != 0) {
      say("SKIP mount in a user namespace not permitted (" + std::string(std::strerror(errno)) +
          ")");
      ::_exit(0);
    }
    std::string r;
    try {
      r = scenario(mnt);
    } catch (const std::exception& e) {
      r = std::string("unexpected exception: ") + e.what();
    }
    say(r.empty() ? "OK" : "FAIL " + r);
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string msg;
  char buf[4096];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;)
    msg.append(buf, static_cast<size_t>(n));
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (contains(msg, "SKIP ")) {
    return {true, "mounting a tmpfs is not permitted here (not root: " +
                      std::string(std::strerror(err)) + "; " + msg.substr(5) + ")"};
  }
  if (msg != "OK") return {false, msg.empty() ? "the namespaced child died" : msg};
  return {false, ""};
}

// Appends "what" to `failures` unless `ok`.
void check(std::string& failures, bool ok, const std::string& what) {
  if (!ok) failures += what + "; ";
}

// The previous checkpoint is intact and still the one to load; nothing hidden was left.
void check_previous_intact(std::string& f, const std::string& dir, const std::string& tag) {
  check(f, read_latest(dir) == tag, "`latest` changed");
  check(f, resolve_latest(dir).tag == tag, "resolve_latest does not give " + tag);
  check(f, verify(dir, tag).empty(), tag + " does not verify");
  check(f, list_tags(dir) == std::vector<std::string>{tag}, "visible tags changed");
}

std::string disk_full_scenario(const std::string& mnt) {
  std::string f;
  const std::string dir = mnt + "/ckpt";
  save_sample(dir, "global_step1", 1);                 // ~30 KB: fits
  std::vector<float> big(size_t{2} << 20 >> 2, 1.0f);  // 2 MiB: does not
  SafetensorsWriter w;
  w.add("big", DType::f32, {static_cast<int64_t>(big.size())}, big.data());
  for (const char* tag :
       {"global_step2", "global_step1"}) {  // a new tag, then replacing the old one
    try {
      Manifest m;
      m.tag = tag;
      m.global_step = 2;
      save_checkpoint_local(dir, m, {&w}, "{}");
      check(f, false, std::string("saving ") + tag + " on a full disk did not throw");
    } catch (const CheckpointError& e) {
      const std::string msg = e.what();
      check(f, contains(msg, "No space left on device") && contains(msg, "disk full"),
            "message does not say disk full: " + msg);
      check(f, contains(msg, dir + "/.tmp." + tag + "/rank00000.safetensors"),
            "message does not name the file: " + msg);
    }
    check(f, !fs::exists(tmp_dir(dir, tag)), std::string(".tmp.") + tag + " was left behind");
    check(f, hidden_entries(dir).empty(), "hidden leftovers after the failed save");
    check_previous_intact(f, dir, "global_step1");
  }
  return f;
}

TEST(CheckpointCrash, DiskFullLeavesThePreviousCheckpointIntact) {
  TempDir tmp;
  fs::create_directories(tmp / "mnt");
  TmpfsOutcome r = with_tmpfs(tmp / "mnt", "size=1m", disk_full_scenario);
  if (r.skipped) GTEST_SKIP() << r.failure;
  EXPECT_EQ(r.failure, "");
}

std::string read_only_scenario(const std::string& mnt) {
  std::string f;
  const std::string dir = mnt + "/ckpt";
  save_sample(dir, "global_step1", 1);
  if (::mount(nullptr, mnt.c_str(), nullptr, MS_REMOUNT | MS_RDONLY, nullptr) != 0) {
    return "remount read-only failed: " + std::string(std::strerror(errno));
  }
  try {
    save_sample(dir, "global_step2", 2);
    check(f, false, "saving on a read-only file system did not throw");
  } catch (const CheckpointError& e) {
    const std::string msg = e.what();
    check(f, contains(msg, "Read-only file system"), "message does not say read-only: " + msg);
    check(f, contains(msg, dir + "/.tmp.global_step2"), "message does not name the path: " + msg);
  }
  check_previous_intact(f, dir, "global_step1");
  try {
    SafetensorsReader r = open_shard(dir, "global_step1", 1);
    check(f, r.contains("master"), "shard unreadable");
  } catch (const std::exception& e) {
    check(f, false, std::string("cannot load the previous checkpoint: ") + e.what());
  }
  return f;
}

TEST(CheckpointCrash, ReadOnlyFileSystemIsAClearError) {
  TempDir tmp;
  fs::create_directories(tmp / "mnt");
  TmpfsOutcome r = with_tmpfs(tmp / "mnt", "size=4m", read_only_scenario);
  if (r.skipped) GTEST_SKIP() << r.failure;
  EXPECT_EQ(r.failure, "");
}

}  // namespace
}  // namespace zt::io
