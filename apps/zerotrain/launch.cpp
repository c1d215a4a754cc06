// apps/zerotrain/launch.cpp: `zerotrain launch` (see launch.h for what it does and why).
#include "apps/zerotrain/launch.h"

#include "core/error.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

extern char** environ;

namespace zt::app {
namespace fs = std::filesystem;

namespace {

std::string_view trim(std::string_view s) {
  const char* ws = " \t\r\n";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (;;) {
    const size_t at = s.find(sep, start);
    out.push_back(s.substr(start, at == std::string_view::npos ? at : at - start));
    if (at == std::string_view::npos) return out;
    start = at + 1;
  }
}

// A non-negative decimal integer that fits an int, or -1.
int parse_count(std::string_view s) {
  if (s.empty() || s.size() > 9) return -1;
  int v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return -1;
    v = v * 10 + (c - '0');
  }
  return v;
}

bool valid_env_name(std::string_view n) {
  if (n.empty() || std::isdigit(static_cast<unsigned char>(n[0]))) return false;
  return std::all_of(n.begin(), n.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
  });
}

std::string read_text(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw ConfigError(
        detail::str_cat(what, " ", path, ": cannot read (", std::strerror(errno), ")"));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string join_slots(const std::vector<int>& slots) {
  std::string s;
  for (int v : slots) s += (s.empty() ? "" : ",") + std::to_string(v);
  return s;
}

}  // namespace

Resources parse_hostfile(std::string_view text, const std::string& path) {
  Resources out;
  std::map<std::string, int, std::less<>> seen;  // host -> line
  int lineno = 0;
  for (std::string_view raw : split(text, '\n')) {
    ++lineno;
    std::string_view line = raw;
    if (size_t hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
    line = trim(line);
    if (line.empty()) continue;
    const std::string where = detail::str_cat(path, ":", lineno, ": ");
    // `HOST slots=N`: exactly two words.
    std::istringstream words{std::string(line)};
    std::string host, slots_kv, extra;
    words >> host >> slots_kv >> extra;
    if (slots_kv.empty())
      throw ConfigError(where + "`" + host + "` has no slot count: write `" + host + " slots=N`");
    if (!extra.empty())
      throw ConfigError(where + "unexpected `" + extra + "` after `" + slots_kv +
                        "`: a line is `HOST slots=N`");
    if (slots_kv.rfind("slots=", 0) != 0)
      throw ConfigError(where + "expected `slots=N` after the host name, got `" + slots_kv + "`");
    const int n = parse_count(std::string_view(slots_kv).substr(6));
    if (n < 1)
      throw ConfigError(where + "slots must be a whole number >= 1, got `" + slots_kv.substr(6) +
                        "`");
    if (host.find_first_of(":,@=") != std::string::npos)
      throw ConfigError(where + "host name `" + host + "` contains one of `:,@=`");
    if (auto it = seen.find(host); it != seen.end())
      throw ConfigError(where + "host `" + host + "` is already listed on line " +
                        std::to_string(it->second));
    seen.emplace(host, lineno);
    HostSlots h{host, {}, {}, lineno};
    for (int i = 0; i < n; ++i) h.slots.push_back(i);
    out.push_back(std::move(h));
  }
  if (out.empty()) throw ConfigError(path + ": no hosts (lines are `HOST slots=N`)");
  return out;
}

Resources read_hostfile(const std::string& path) {
  return parse_hostfile(read_text(path, "hostfile"), path);
}

Resources filter_resources(const Resources& pool, const std::string& include,
                           const std::string& exclude) {
  if (!include.empty() && !exclude.empty())
    throw ConfigError("--include and --exclude exclude each other: give one of them");
  if (include.empty() && exclude.empty()) return pool;
  const bool inc = !include.empty();
  const std::string& spec = inc ? include : exclude;
  const std::string opt = inc ? "--include" : "--exclude";

  // Parse `host[:slot,...]@...` into host -> slots (empty: the whole host).
  std::map<std::string, std::set<int>> picked;
  std::set<std::string> whole;
  for (std::string_view part : split(spec, '@')) {
    part = trim(part);
    if (part.empty()) throw ConfigError(opt + " `" + spec + "`: empty host entry (between `@`s)");
    const size_t colon = part.find(':');
    const std::string host(part.substr(0, colon));
    auto it =
        std::find_if(pool.begin(), pool.end(), [&](const HostSlots& h) { return h.host == host; });
    if (it == pool.end()) {
      std::string known;
      for (const auto& h : pool) known += (known.empty() ? "" : ", ") + h.host;
      throw ConfigError(opt + ": host `" + host + "` is not in the host list (" + known + ")");
    }
    if (colon == std::string_view::npos) {
      whole.insert(host);
      continue;
    }
    std::string_view slots = part.substr(colon + 1);
    if (slots.empty()) throw ConfigError(opt + " `" + std::string(part) + "`: no slots after `:`");
    for (std::string_view s : split(slots, ',')) {
      const int v = parse_count(trim(s));
      if (v < 0)
        throw ConfigError(opt + " `" + std::string(part) + "`: slot `" + std::string(s) +
                          "` is not a number");
      if (std::find(it->slots.begin(), it->slots.end(), v) == it->slots.end())
        throw ConfigError(opt + ": host `" + host + "` has no slot " + std::to_string(v) +
                          " (slots " + join_slots(it->slots) + ")");
      picked[host].insert(v);
    }
  }

  Resources out;
  for (const HostSlots& h : pool) {
    HostSlots k = h;
    k.slots.clear();
    for (int s : h.slots) {
      const bool named = whole.count(h.host) || (picked.count(h.host) && picked[h.host].count(s));
      if (named == inc) k.slots.push_back(s);
    }
    if (!k.slots.empty()) out.push_back(std::move(k));
  }
  if (out.empty()) throw ConfigError(opt + " `" + spec + "` leaves no host to run on");
  return out;
}

Resources limit_resources(const Resources& pool, int num_nodes, int num_gpus) {
  if (num_nodes == 0 || num_nodes < -1) throw ConfigError("--num_nodes must be >= 1");
  if (num_gpus == 0 || num_gpus < -1) throw ConfigError("--num_gpus must be >= 1");
  Resources out = pool;
  if (num_nodes > 0) {
    if (static_cast<size_t>(num_nodes) > out.size())
      throw ConfigError(
          detail::str_cat("--num_nodes ", num_nodes, ": only ", out.size(), " host(s) to run on"));
    out.resize(static_cast<size_t>(num_nodes));
  }
  if (num_gpus > 0) {
    for (HostSlots& h : out) {
      if (h.slots.size() < static_cast<size_t>(num_gpus))
        throw ConfigError(detail::str_cat(
            "--num_gpus ", num_gpus, ": host `", h.host, "` has only ", h.slots.size(), " slot(s)",
            h.line ? detail::str_cat(" (hostfile line ", h.line, ")") : ""));
      h.slots.resize(static_cast<size_t>(num_gpus));
    }
  }
  return out;
}

std::vector<std::string> local_gpu_devices(int physical, const char* cuda_visible) {
  std::vector<std::string> out;
  if (physical <= 0) return out;
  if (cuda_visible != nullptr) {
    // CUDA_VISIBLE_DEVICES is a mask already: keep its entries (indices or GPU-UUIDs) in order. An
    // empty value or -1 hides every GPU; CUDA stops at the first invalid entry, and so do we.
    for (std::string_view e : split(cuda_visible, ',')) {
      e = trim(e);
      if (e.empty() || e[0] == '-') break;
      out.emplace_back(e);
    }
    return out;
  }
  for (int i = 0; i < physical; ++i) out.push_back(std::to_string(i));
  return out;
}

std::string visible_devices(const HostSlots& h) {
  std::string s;
  for (int slot : h.slots) {
    s += s.empty() ? "" : ",";
    s += h.devices.empty() ? std::to_string(slot) : h.devices.at(static_cast<size_t>(slot));
  }
  return s;
}

std::vector<std::pair<std::string, std::string>> parse_env_file(std::string_view text,
                                                                const std::string& path) {
  std::vector<std::pair<std::string, std::string>> out;
  std::map<std::string, int> seen;
  int lineno = 0;
  for (std::string_view raw : split(text, '\n')) {
    ++lineno;
    std::string_view line = trim(raw);
    if (line.empty() || line[0] == '#') continue;
    const std::string where = detail::str_cat(path, ":", lineno, ": ");
    const size_t eq = line.find('=');
    if (eq == std::string_view::npos)
      throw ConfigError(where + "expected NAME=VALUE, got `" + std::string(line) + "`");
    const std::string name(trim(line.substr(0, eq)));
    if (!valid_env_name(name))
      throw ConfigError(where + "`" + name + "` is not a variable name (letters, digits, _)");
    if (auto it = seen.find(name); it != seen.end())
      throw ConfigError(where + name + " is already set on line " + std::to_string(it->second));
    seen.emplace(name, lineno);
    out.emplace_back(name, std::string(line.substr(eq + 1)));
  }
  return out;
}

const std::vector<std::string> kForwardedEnvPrefixes = {"NCCL_", "UCX_",  "UCC_", "FI_",
                                                        "OMPI_", "CUDA_", "OMP_", "ZT_"};

std::vector<std::string> forwarded_env_names(const std::vector<std::string>& environ_entries) {
  // What an mpirun sets for its own ranks: carrying these into a new job (a launch from inside a
  // rank) would hand it another job's ranks and session.
  static const char* kOmpiOwn[] = {"OMPI_COMM_WORLD_",
                                   "OMPI_APP_CTX_",
                                   "OMPI_ARGV",
                                   "OMPI_COMMAND",
                                   "OMPI_FILE_LOCATION",
                                   "OMPI_FIRST_RANKS",
                                   "OMPI_NUM_APP_CTX",
                                   "OMPI_UNIVERSE_SIZE",
                                   "OMPI_MCA_ess",
                                   "OMPI_MCA_orte_",
                                   "OMPI_MCA_pmix",
                                   "OMPI_MCA_initial_wdir",
                                   "OMPI_MCA_mpi_oversubscribe",
                                   "OMPI_MCA_shmem_RUNTIME_QUERY_hint"};
  std::set<std::string> names;
  for (const std::string& e : environ_entries) {
    const std::string name = e.substr(0, e.find('='));
    if (name == "CUDA_VISIBLE_DEVICES" || !valid_env_name(name)) continue;
    auto starts = [&](const std::string& p) { return name.rfind(p, 0) == 0; };
    if (!std::any_of(kForwardedEnvPrefixes.begin(), kForwardedEnvPrefixes.end(), starts)) continue;
    if (std::any_of(std::begin(kOmpiOwn), std::end(kOmpiOwn),
                    [&](const char* p) { return starts(p); }))
      continue;
    names.insert(name);
  }
  return {names.begin(), names.end()};
}

std::vector<std::string> build_mpirun_argv(const LaunchPlan& plan) {
  ZT_ASSERT(!plan.hosts.empty() && !plan.program.empty(), "launch plan without hosts or program");
  std::vector<std::string> a{plan.mpirun};
  if (plan.allow_run_as_root) a.push_back("--allow-run-as-root");
  if (plan.cpu_numa_binding) a.insert(a.end(), {"--map-by", "numa", "--bind-to", "numa"});
  a.insert(a.end(), plan.launcher_args.begin(), plan.launcher_args.end());
  // One app context per host; OpenMPI numbers the ranks context by context, so the hosts' order
  // is the ranks' order. `-x` belongs to its context: the exports are repeated in each.
  for (size_t i = 0; i < plan.hosts.size(); ++i) {
    const HostSlots& h = plan.hosts[i];
    const std::string k = std::to_string(h.slots.size());
    if (i > 0) a.push_back(":");
    a.insert(a.end(), {"-np", k, "-H", h.host + ":" + k});
    if (plan.set_visible_devices)
      a.insert(a.end(), {"-x", "CUDA_VISIBLE_DEVICES=" + visible_devices(h)});
    for (const auto& [n, v] : plan.env_values) a.insert(a.end(), {"-x", n + "=" + v});
    for (const auto& n : plan.env_names) a.insert(a.end(), {"-x", n});
    a.insert(a.end(), plan.program.begin(), plan.program.end());
  }
  return a;
}

std::vector<std::string> split_shell_words(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  bool in_word = false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '\'') {
      const size_t end = s.find('\'', i + 1);
      if (end == std::string::npos)
        throw ConfigError("--launcher_args: unmatched ' in `" + s + "`");
      cur += s.substr(i + 1, end - i - 1);
      i = end;
      in_word = true;
    } else if (c == '"') {
      size_t j = i + 1;
      for (; j < s.size() && s[j] != '"'; ++j) {
        if (s[j] == '\\' && j + 1 < s.size() && std::strchr("\"\\$`", s[j + 1])) ++j;
        cur += s[j];
      }
      if (j >= s.size()) throw ConfigError("--launcher_args: unmatched \" in `" + s + "`");
      i = j;
      in_word = true;
    } else if (c == '\\' && i + 1 < s.size()) {
      cur += s[++i];
      in_word = true;
    } else if (c == ' ' || c == '\t' || c == '\n') {
      if (in_word) out.push_back(cur);
      cur.clear();
      in_word = false;
    } else {
      cur += c;
      in_word = true;
    }
  }
  if (in_word) out.push_back(cur);
  return out;
}

std::string shell_join(const std::vector<std::string>& argv) {
  static const std::regex safe("^[A-Za-z0-9_@%+=:,./-]+$");
  std::string out;
  for (const std::string& w : argv) {
    if (!out.empty()) out += ' ';
    if (std::regex_match(w, safe)) {
      out += w;
      continue;
    }
    out += '\'';
    for (char c : w) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    out += '\'';
  }
  return out;
}

// ---- this machine ------------------------------------------------------------------------------

namespace {

// GPUs on this machine: `nvidia-smi -L` lines ("GPU 0: ..."), else the /dev/nvidiaN device files.
int count_physical_gpus() {
  int n = 0;
  if (FILE* p = popen("nvidia-smi -L 2>/dev/null", "r")) {
    char buf[512];
    while (std::fgets(buf, sizeof buf, p)) n += std::strncmp(buf, "GPU ", 4) == 0;
    pclose(p);
  }
  if (n > 0) return n;
  std::error_code ec;
  static const std::regex dev("nvidia[0-9]+");
  for (const auto& e : fs::directory_iterator("/dev", ec))
    n += std::regex_match(e.path().filename().string(), dev);
  return n;
}

// NUMA nodes (/sys/devices/system/node/nodeN); 1 when the folder is missing.
int count_numa_nodes() {
  int n = 0;
  std::error_code ec;
  static const std::regex node("node[0-9]+");
  for (const auto& e : fs::directory_iterator("/sys/devices/system/node", ec))
    n += std::regex_match(e.path().filename().string(), node);
  return std::max(n, 1);
}

// .deepspeed_env, or the file ZT_ENV_FILE / DS_ENV_FILE name: a path is taken as it is, a bare name
// is looked up in the current folder, then in $HOME. A file named on purpose must exist.
std::vector<std::pair<std::string, std::string>> load_env_file() {
  const char* named = std::getenv("ZT_ENV_FILE");
  const char* var = "ZT_ENV_FILE";
  if (named == nullptr || !*named) {
    named = std::getenv("DS_ENV_FILE");
    var = "DS_ENV_FILE";
  }
  const bool explicit_name = named != nullptr && *named;
  const std::string name = explicit_name ? named : ".deepspeed_env";
  std::vector<std::string> candidates;
  if (name.find('/') != std::string::npos) {
    candidates.push_back(name);
  } else {
    candidates.push_back(name);
    if (const char* home = std::getenv("HOME"))
      candidates.push_back(std::string(home) + "/" + name);
  }
  for (const std::string& c : candidates)
    if (fs::is_regular_file(c)) return parse_env_file(read_text(c, "environment file"), c);
  if (explicit_name)
    throw ConfigError(
        detail::str_cat(var, "=", name, ": no such file",
                        name.find('/') == std::string::npos ? " here or in $HOME" : ""));
  return {};
}

std::string self_exe() {
  std::error_code ec;
  fs::path p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string("zerotrain") : p.string();
}

}  // namespace

int run_launch(const LaunchOptions& opt) {
  if (opt.command.empty())
    throw ConfigError(
        "launch: give the command after `--`, e.g. "
        "`zerotrain launch -- train --config configs/tiny.yaml`");
  if ((opt.num_nodes >= 0 || opt.num_gpus >= 0) && (!opt.include.empty() || !opt.exclude.empty()))
    throw ConfigError(
        "--num_nodes/--num_gpus and --include/--exclude exclude each other "
        "(as in DeepSpeed): give one kind");
  if (opt.master_port < 1 || opt.master_port > 65535)
    throw ConfigError(detail::str_cat("--master_port ", opt.master_port, ": not a port (1-65535)"));

  LaunchPlan plan;
  if (const char* m = std::getenv("ZT_MPIRUN"); m && *m) plan.mpirun = m;
  plan.allow_run_as_root = geteuid() == 0;
  plan.launcher_args = split_shell_words(opt.launcher_args);

  // Where the ranks go.
  Resources pool;
  if (!opt.hostfile.empty()) {
    pool = read_hostfile(opt.hostfile);
  } else {
    HostSlots local{"localhost",
                    {},
                    local_gpu_devices(count_physical_gpus(), std::getenv("CUDA_VISIBLE_DEVICES")),
                    0};
    if (local.devices.empty()) {
      // No GPU: the CPU layout, one rank per NUMA node, each bound to its node.
      if (opt.num_gpus > 0)
        throw ConfigError(
            detail::str_cat("--num_gpus ", opt.num_gpus,
                            ": no GPU on this machine (nvidia-smi -L and /dev/nvidia* "
                            "show none, or CUDA_VISIBLE_DEVICES hides them)"));
      plan.set_visible_devices = false;
      plan.cpu_numa_binding = true;
      for (int i = 0, n = count_numa_nodes(); i < n; ++i) local.slots.push_back(i);
    } else {
      for (size_t i = 0; i < local.devices.size(); ++i) local.slots.push_back(static_cast<int>(i));
    }
    pool.push_back(std::move(local));
  }
  plan.hosts = limit_resources(filter_resources(pool, opt.include, opt.exclude), opt.num_nodes,
                               opt.num_gpus);

  // What every rank gets in its environment.
  plan.env_values = load_env_file();
  const std::string master = opt.master_addr.empty() ? plan.hosts.front().host : opt.master_addr;
  plan.env_values.emplace_back("MASTER_ADDR", master);
  plan.env_values.emplace_back("MASTER_PORT", std::to_string(opt.master_port));
  std::vector<std::string> env_entries;
  for (char** e = environ; e && *e; ++e) env_entries.emplace_back(*e);
  for (const std::string& n : forwarded_env_names(env_entries)) {
    const bool in_file = std::any_of(plan.env_values.begin(), plan.env_values.end(),
                                     [&](const auto& kv) { return kv.first == n; });
    if (!in_file) plan.env_names.push_back(n);
  }

  // The ranks' program: this zerotrain for one of its subcommands, else the program named.
  static const std::set<std::string> kSubcommands = {"train", "config",   "lr",
                                                     "ckpt",  "generate", "estimate"};
  if (opt.command[0] == "launch")
    throw ConfigError("launch: `-- launch ...` would launch a launcher");
  if (kSubcommands.count(opt.command[0])) plan.program.push_back(self_exe());
  plan.program.insert(plan.program.end(), opt.command.begin(), opt.command.end());

  const std::vector<std::string> argv = build_mpirun_argv(plan);
  int ranks = 0;
  std::string layout;
  for (const HostSlots& h : plan.hosts) {
    ranks += static_cast<int>(h.slots.size());
    layout += (layout.empty() ? "" : ", ") + h.host + ":" + join_slots(h.slots);
  }
  std::printf("# zerotrain launch: %d rank(s), %s %s\n%s\n", ranks,
              plan.set_visible_devices ? "GPU slots" : "one per NUMA node (no GPU found):",
              layout.c_str(), shell_join(argv).c_str());
  std::fflush(stdout);
  if (opt.dry_run) return 0;

  std::vector<char*> cargv;
  for (const std::string& s : argv) cargv.push_back(const_cast<char*>(s.c_str()));
  cargv.push_back(nullptr);
  execvp(cargv[0], cargv.data());
  throw Error(detail::str_cat("launch: cannot run ", plan.mpirun, ": ", std::strerror(errno),
                              " (install OpenMPI's mpirun or set ZT_MPIRUN)"));
}

}  // namespace zt::app
