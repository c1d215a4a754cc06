// apps/zerotrain/faults.cpp: configuration agreement across ranks and the ZT_FAULT test hook.
#include "apps/zerotrain/faults.h"

#include "comm/communicator.h"
#include "core/error.h"
#include "core/nn/gpt.h"
#include "zero/engine.h"

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <thread>
#include <vector>

namespace zt::app {
namespace {

bool applies(const FaultHook& f, const zero::Engine& e, int64_t step) {
  return f.kind != FaultHook::Kind::none && step == f.step && (f.rank < 0 || f.rank == e.rank());
}

nn::Parameter& find_param(zero::Engine& e, const FaultHook& f) {
  for (nn::Parameter* p : e.model().parameters())
    if (p->name == f.param) return *p;
  throw ConfigError(detail::str_cat("ZT_FAULT=", f.text, ": no parameter named `", f.param,
                                    "` (e.g. ", e.model().parameters().front()->name, ")"));
}

void announce(const FaultHook& f, const zero::Engine& e, const char* what) {
  std::fprintf(stderr, "zerotrain: ZT_FAULT test hook (rank %d): %s\n", e.rank(), what);
  std::fflush(stderr);
  (void)f;
}

// The normalized text: comment lines (the source path, notices) do not count.
std::vector<std::string> config_lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    size_t b = line.find_first_not_of(' ');
    if (b == std::string::npos || line[b] == '#') continue;
    out.push_back(line);
  }
  return out;
}

uint64_t fnv1a(const std::vector<std::string>& lines) {
  uint64_t h = 1469598103934665603ull;
  for (const std::string& l : lines) {
    for (unsigned char c : l) h = (h ^ c) * 1099511628211ull;
    h = (h ^ '\n') * 1099511628211ull;
  }
  return h;
}

// "optimizer.params.lr: 0.003 (rank 0) vs 0.01 (rank 1)" for the first line that differs; the
// key path comes from the indentation of the YAML dump (two spaces per level).
std::string first_difference(const std::vector<std::string>& a, const std::vector<std::string>& b,
                             int rank_b) {
  std::vector<std::string> path;
  for (size_t i = 0; i < a.size() || i < b.size(); ++i) {
    const std::string& la = i < a.size() ? a[i] : std::string();
    const std::string& lb = i < b.size() ? b[i] : std::string();
    const std::string& l = la.empty() ? lb : la;
    size_t indent = l.find_first_not_of(' ');
    size_t colon = l.find(':');
    std::string key =
        colon == std::string::npos ? l.substr(indent) : l.substr(indent, colon - indent);
    path.resize(indent / 2);
    if (la != lb) {
      std::string full;
      for (const std::string& p : path) full += p + ".";
      full += key;
      auto value = [](const std::string& x) {
        size_t c = x.find(':');
        if (x.empty()) return std::string("(absent)");
        std::string v = c == std::string::npos ? x : x.substr(c + 1);
        size_t s = v.find_first_not_of(' ');
        return s == std::string::npos ? std::string("(a section)") : v.substr(s);
      };
      return detail::str_cat(full, ": ", value(la), " on rank 0 vs ", value(lb), " on rank ",
                             rank_b);
    }
    path.push_back(key);
  }
  return "";
}

}  // namespace

FaultHook fault_from_env() {
  FaultHook f;
  const char* v = std::getenv("ZT_FAULT");
  if (v == nullptr || *v == '\0') return f;
  f.text = v;
  auto bad = [&](const std::string& why) {
    return ConfigError(detail::str_cat("environment ZT_FAULT=", f.text, ": ", why,
                                       " (test hook: kind:rank=R:step=S[:param=NAME], kind one of ",
                                       "stall, kill, nan_grad, nan_weight)"));
  };
  std::vector<std::string> parts;
  std::istringstream in(f.text);
  for (std::string p; std::getline(in, p, ':');) parts.push_back(p);
  const std::string& kind = parts.front();
  f.kind = kind == "stall"        ? FaultHook::Kind::stall
           : kind == "kill"       ? FaultHook::Kind::kill
           : kind == "nan_grad"   ? FaultHook::Kind::nan_grad
           : kind == "nan_weight" ? FaultHook::Kind::nan_weight
                                  : FaultHook::Kind::none;
  if (f.kind == FaultHook::Kind::none) throw bad("unknown kind `" + kind + "`");
  for (size_t i = 1; i < parts.size(); ++i) {
    size_t eq = parts[i].find('=');
    if (eq == std::string::npos) throw bad("expected key=value, got `" + parts[i] + "`");
    std::string k = parts[i].substr(0, eq), val = parts[i].substr(eq + 1);
    if (k == "param") {
      f.param = val;
      continue;
    }
    char* end = nullptr;
    long long x = std::strtoll(val.c_str(), &end, 10);
    if (val.empty() || *end != '\0' || x < 0) throw bad("`" + parts[i] + "` is not a number >= 0");
    if (k == "rank")
      f.rank = static_cast<int>(x);
    else if (k == "step")
      f.step = x;
    else
      throw bad("unknown key `" + k + "`");
  }
  if (f.step < 1) throw bad("step=S (>= 1) is required");
  if ((f.kind == FaultHook::Kind::nan_grad || f.kind == FaultHook::Kind::nan_weight) &&
      f.param.empty())
    throw bad("param=NAME is required");
  return f;
}

void fault_at_step_start(const FaultHook& f, zero::Engine& engine, int64_t step) {
  if (!applies(f, engine, step)) return;
  if (f.kind == FaultHook::Kind::stall) {
    announce(f, engine, detail::str_cat("stalling at step ", step).c_str());
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(60));
  }
  if (f.kind == FaultHook::Kind::nan_weight) {
    nn::Parameter& p = find_param(engine, f);
    ZT_CHECK(!engine.partitioned_params() && !engine.mixed(), "ZT_FAULT=", f.text,
             ": nan_weight supports fp32 training at stages 0-2");
    announce(f, engine, detail::str_cat("NaN into ", p.name, "[0] at step ", step).c_str());
    p.value.data<float>()[0] = NAN;
  }
}

void fault_before_backward(const FaultHook& f, zero::Engine& engine, int64_t step,
                           int64_t micro_batch) {
  if (micro_batch != 0 || !applies(f, engine, step)) return;
  if (f.kind == FaultHook::Kind::kill) {
    announce(f, engine, detail::str_cat("SIGKILL in the middle of step ", step).c_str());
    ::kill(::getpid(), SIGKILL);
  }
  if (f.kind == FaultHook::Kind::nan_grad) {
    nn::Parameter& p = find_param(engine, f);
    ZT_CHECK(!engine.partitioned_params(), "ZT_FAULT=", f.text, ": nan_grad supports stages 0-2");
    announce(f, engine,
             detail::str_cat("NaN into the gradient of ", p.name, "[0] at step ", step).c_str());
    p.grad.data<float>()[0] = NAN;  // backward accumulates (+=) into it
  }
}

void check_config_agreement(comm::Communicator& comm, const std::string& resolved_config) {
  const int world = comm.world();
  const std::vector<std::string> lines = config_lines(resolved_config);
  Tensor mine = Tensor::empty({1}, DType::i64), all = Tensor::empty({world}, DType::i64);
  mine.data<int64_t>()[0] = static_cast<int64_t>(fnv1a(lines));
  comm.all_gather(mine, all)->wait();
  const int64_t* h = all.data<int64_t>();
  std::vector<int> differ;
  for (int r = 1; r < world; ++r)
    if (h[r] != h[0]) differ.push_back(r);
  if (differ.empty()) return;
  // Rank 0's text and the first differing rank's, everywhere: every rank names the same key.
  auto share = [&](int root) {
    std::string text;
    for (const std::string& l : lines) text += l + "\n";
    Tensor n = Tensor::empty({1}, DType::i32);
    n.data<int32_t>()[0] = static_cast<int32_t>(text.size());
    comm.broadcast(n, root)->wait();
    const int64_t len = n.data<int32_t>()[0];
    Tensor buf = Tensor::zeros({(len + 3) / 4}, DType::i32);
    if (comm.rank() == root) std::memcpy(buf.raw(), text.data(), text.size());
    comm.broadcast(buf, root)->wait();
    return config_lines(std::string(static_cast<const char*>(buf.raw()), static_cast<size_t>(len)));
  };
  std::vector<std::string> a = share(0), b = share(differ.front());
  std::string ranks;
  for (int r : differ) ranks += (ranks.empty() ? "" : ", ") + std::to_string(r);
  throw ConfigError(detail::str_cat(
      "the ranks resolved different configurations: rank", differ.size() > 1 ? "s " : " ", ranks,
      " differ", differ.size() > 1 ? "" : "s",
      " from rank 0; first difference: ", first_difference(a, b, differ.front()),
      ". Give every rank the same config file and --set options"));
}

}  // namespace zt::app
