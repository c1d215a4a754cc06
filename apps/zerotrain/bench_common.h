// apps/zerotrain/bench_common.h: what the benchmarks (`zerotrain bench comm|overlap|optim` and
// the standalone apps/bench_*.cpp programs, which are thin wrappers over the same functions) share:
// where their JSON lines go, and the statistics they report.
//
// Every benchmark prints JSON lines (one object per measurement, a "bench" key naming it) for
// scripts and a short table for people. JSON lines go to a file (--json FILE), to stdout
// (--json -), or nowhere (empty path); the table goes to stdout unless turned off. Under mpirun
// only rank 0 writes either.
#pragma once

#include "core/error.h"

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

namespace zt::app::bench {

// A JSON lines destination: "" none, "-" stdout, otherwise a file (truncated). `enabled` false
// (ranks other than 0) makes every write a no-op.
class JsonLines {
 public:
  JsonLines(const std::string& path, bool enabled) {
    if (!enabled || path.empty()) return;
    if (path == "-") {
      f_ = stdout;
      return;
    }
    f_ = std::fopen(path.c_str(), "w");
    ZT_CHECK(f_ != nullptr, "--json: cannot write ", path);
    own_ = true;
  }
  ~JsonLines() {
    if (own_) std::fclose(f_);
  }
  JsonLines(const JsonLines&) = delete;
  JsonLines& operator=(const JsonLines&) = delete;

  bool on() const { return f_ != nullptr; }
  // One line (the object's text, without the newline); flushed at once so a killed run keeps
  // what it measured.
  void write(const std::string& line) {
    if (!f_) return;
    std::fputs(line.c_str(), f_);
    std::fputc('\n', f_);
    std::fflush(f_);
  }

 private:
  std::FILE* f_ = nullptr;
  bool own_ = false;
};

// A bad command-line value: a ConfigError (exit 2) naming the flag.
inline void check_arg(bool ok, const std::string& flag, const std::string& what) {
  if (!ok) throw ConfigError(flag + ": " + what);
}

inline double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
inline double best(const std::vector<double>& v) {
  return v.empty() ? 0 : *std::min_element(v.begin(), v.end());
}

}  // namespace zt::app::bench
