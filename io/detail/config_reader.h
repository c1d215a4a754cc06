// io/detail/config_reader.h: typed reading of one mapping of the config tree.
//
// A MapReader is opened on one block (`zero_optimization`...) and asked for each key the block
// may hold, in the struct's order. Asking declares the key (for "did you mean"), consumes it, and
// converts it with a located error when the type is wrong. finish() then rejects whatever was
// never asked for, naming the closest valid key. "auto" is recognised here once: read() reports
// Given::kAuto and leaves the field at its default, so each caller decides what "auto" means.
// Private to io/.
#pragma once

#include "io/detail/config_tree.h"

#include <cstdint>
#include <initializer_list>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

namespace zt::io::detail {

// Shared by all readers of one parse.
struct Ctx {
  std::string file;
  std::vector<std::string>* notices = nullptr;
  std::vector<std::string>* key_index = nullptr;  // collect mode: every declared key path
  void notice(const std::string& line) const {
    if (notices != nullptr) notices->push_back(line);
  }
};

enum class Given { kAbsent, kAuto, kValue };

// Another name for a key: DeepSpeed's deprecated spellings (a notice when used) or synonyms that
// pydantic's populate_by_name accepts silently (stage3_x and x).
struct Alias {
  std::string_view name;
  bool deprecated = true;
};

struct IntRange {
  int64_t min = std::numeric_limits<int64_t>::min();
  int64_t max = std::numeric_limits<int64_t>::max();
};
inline constexpr IntRange kNonNegative{0};
inline constexpr IntRange kPositive{1};

struct Choice {
  std::string_view spelling;  // compared case-insensitively
  int value;
};

[[noreturn]] void fail(const Ctx& ctx, const Node& at, const std::string& path,
                       const std::string& msg);
[[noreturn]] void fail(const Ctx& ctx, const std::string& path, const std::string& msg);
// "<where>: <msg>" for messages that name the key themselves ("`x` is not supported yet").
[[noreturn]] void fail_at(const Ctx& ctx, const Node& at, const std::string& msg);

bool is_auto(const Node& n);
std::string describe(const Node& n);  // "the string \"x\"", "a mapping", "`12`"... for messages

// Conversions of one node; `path` names it in errors.
bool to_bool(const Ctx& ctx, const Node& n, const std::string& path);
int64_t to_int(const Ctx& ctx, const Node& n, const std::string& path, IntRange range = {});
double to_double(const Ctx& ctx, const Node& n, const std::string& path, double min = -1e308);
std::string to_string_value(const Ctx& ctx, const Node& n, const std::string& path);
int to_choice(const Ctx& ctx, const Node& n, const std::string& path,
              const std::vector<Choice>& choices);

// The key among `candidates` closest to `key` (edit distance), or "" when none is close.
std::string closest_key(std::string_view key, const std::vector<std::string>& candidates);

// Every key path the config knows ("zero_optimization.reduce_bucket_size"...), built once by
// reading an empty config in collect mode (config.cpp). Lets "did you mean" point to a key that
// lives in another block.
const std::vector<std::string>& known_key_paths();

class MapReader {
 public:
  // `node` may be nullptr (block absent) or null (`block:` / `"block": null`): both read as empty.
  MapReader(const Ctx& ctx, const Node* node, std::string path);

  const std::string& path() const { return path_; }
  std::string child(std::string_view key) const;  // "path.key"
  bool present() const { return node_ != nullptr; }
  const Node* node() const { return node_; }

  // Declares `key` and its aliases and returns the value given for it (nullptr: absent). Two
  // spellings of one key fail, unless exactly one came from --set (the override wins).
  const Node* take(std::string_view key, std::initializer_list<Alias> aliases = {});

  Given read(std::string_view key, bool& out, std::initializer_list<Alias> aliases = {});
  Given read(std::string_view key, int& out, IntRange range = {},
             std::initializer_list<Alias> aliases = {});
  Given read(std::string_view key, int64_t& out, IntRange range = {},
             std::initializer_list<Alias> aliases = {});
  Given read(std::string_view key, double& out, double min = -1e308,
             std::initializer_list<Alias> aliases = {});
  Given read(std::string_view key, std::string& out, std::initializer_list<Alias> aliases = {});
  template <typename E>
  Given read_choice(std::string_view key, E& out, const std::vector<Choice>& choices,
                    std::initializer_list<Alias> aliases = {}) {
    const Node* n = take(key, aliases);
    if (n == nullptr || n->is_null()) return Given::kAbsent;
    if (is_auto(*n)) return Given::kAuto;
    out = static_cast<E>(to_choice(ctx_, *n, child(key), choices));
    return Given::kValue;
  }

  // A DeepSpeed key whose feature zerotrain has not built: accepted only while it asks for
  // nothing, i.e. is absent, null, "auto", or equal to `off` (a scalar such as "false", "1").
  void not_supported_unless(std::string_view key, std::string_view off);
  // A key that configures something only PyTorch has (module hooks, the Python GC): any value
  // is accepted, with a notice saying it has no effect in zerotrain.
  void no_effect(std::string_view key, std::string_view why);

  // Fails on the first key nobody asked for: "unknown key ..., did you mean ...?". `owner`
  // ("optimizer type Adam") says whose keys these are when that depends on another key.
  void finish(const std::string& owner = "");
  // The same for the top level, where DeepSpeed ignores keys it does not read: a key close to a
  // known one still fails ("did you mean"), any other is accepted with a notice.
  void finish_top_level();

 private:
  void finish_impl(const std::string& owner, bool ignore_unrelated);
  const Ctx& ctx_;
  const Node* node_;
  std::string path_;
  std::vector<std::string> declared_;
  std::vector<bool> used_;  // per entry of node_
};

}  // namespace zt::io::detail
