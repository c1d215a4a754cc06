// io/config_reader.cpp: scalar conversions with located errors, "did you mean", MapReader.
//
// Numbers follow JSON/YAML 1.2 plain-scalar syntax. A count (an int64 field) also takes float
// syntax when the value is whole, because DeepSpeed configs write bucket sizes as 5e8 (pydantic's
// pp_int fields do the same). A quoted scalar is always a string: "5e8" where a count is meant is
// a type error, as it is for DeepSpeed's pydantic models in strict mode.
#include "io/detail/config_reader.h"

#include "core/error.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>

namespace zt::io::detail {

void fail(const Ctx& ctx, const Node& at, const std::string& path, const std::string& msg) {
  throw ConfigError(where(ctx.file, at) + ": config key `" + path + "`: " + msg);
}

void fail(const Ctx& ctx, const std::string& path, const std::string& msg) {
  throw ConfigError(ctx.file + ": config key `" + path + "`: " + msg);
}

void fail_at(const Ctx& ctx, const Node& at, const std::string& msg) {
  throw ConfigError(where(ctx.file, at) + ": " + msg);
}

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool is_integer_syntax(std::string_view s) {
  size_t i = (!s.empty() && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
  if (i == s.size()) return false;
  for (; i < s.size(); ++i)
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) return false;
  return true;
}

// [-+]? ( digits [. digits?] | . digits ) ([eE] [-+]? digits)?
bool is_float_syntax(std::string_view s) {
  size_t i = (!s.empty() && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
  size_t digits = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i, ++digits;
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i, ++digits;
  }
  if (digits == 0) return false;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
    size_t exp_digits = 0;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i, ++exp_digits;
    if (exp_digits == 0) return false;
  }
  return i == s.size();
}

bool parse_double(std::string_view s, double& out) {
  if (!is_float_syntax(s)) return false;
  if (s[0] == '+') s.remove_prefix(1);
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && ptr == s.data() + s.size() && std::isfinite(out);
}

void require_scalar(const Ctx& ctx, const Node& n, const std::string& path, const char* expected) {
  if (!n.is_scalar())
    fail(ctx, n, path, std::string("expected ") + expected + ", got " + describe(n));
}

// Optimal string alignment distance: insertions, deletions, substitutions and transpositions of
// neighbours ("cdua" is one edit from "cuda") each cost 1.
size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i)
    for (size_t j = 1; j <= b.size(); ++j) {
      d[i][j] = std::min(
          {d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[a.size()][b.size()];
}

std::string leaf(const std::string& path) {
  const size_t dot = path.rfind('.');
  return dot == std::string::npos ? path : path.substr(dot + 1);
}

}  // namespace

bool is_auto(const Node& n) { return n.is_scalar() && lower(n.text) == "auto"; }

std::string describe(const Node& n) {
  switch (n.kind) {
    case Node::Kind::kNull:
      return "null";
    case Node::Kind::kMap:
      return "a mapping";
    case Node::Kind::kSequence:
      return "a list";
    case Node::Kind::kScalar:
      break;
  }
  if (n.quoted) return "the string \"" + n.text + "\"";
  return "`" + n.text + "`";
}

bool to_bool(const Ctx& ctx, const Node& n, const std::string& path) {
  require_scalar(ctx, n, path, "true or false");
  if (!n.quoted) {
    const std::string v = lower(n.text);
    if (v == "true") return true;
    if (v == "false") return false;
  }
  const std::string v = lower(n.text);
  const bool quoted_bool = n.quoted && (v == "true" || v == "false");
  // Older DeepSpeed blocks took any non-empty string as true ("false" included): refuse rather
  // than guess which reading the file was written for.
  fail(ctx, n, path,
       "expected true or false, got " + describe(n) + (quoted_bool ? " (remove the quotes)" : ""));
}

int64_t to_int(const Ctx& ctx, const Node& n, const std::string& path, IntRange range) {
  require_scalar(ctx, n, path, "an integer");
  int64_t v = 0;
  bool ok = false;
  if (!n.quoted && is_integer_syntax(n.text)) {
    std::string_view s = n.text;
    if (s[0] == '+') s.remove_prefix(1);
    ok = std::from_chars(s.data(), s.data() + s.size(), v).ec == std::errc();
    if (!ok) fail(ctx, n, path, "integer " + n.text + " is out of range");
  } else if (double d = 0; !n.quoted && parse_double(n.text, d)) {
    // 5e8, 1e9, 2.5e8: whole numbers in float syntax, as DeepSpeed configs write counts.
    if (d != std::floor(d)) fail(ctx, n, path, "expected a whole number, got " + n.text);
    if (std::fabs(d) >= 9.2e18) fail(ctx, n, path, "integer " + n.text + " is out of range");
    v = static_cast<int64_t>(d);
    ok = true;
  }
  if (!ok) {
    std::string hint = n.quoted ? " (remove the quotes)" : "";
    fail(ctx, n, path, "expected an integer (such as 500000000 or 5e8), got " + describe(n) + hint);
  }
  if (v < range.min || v > range.max) {
    std::string bound;
    if (range.min == 0 && range.max == std::numeric_limits<int64_t>::max())
      bound = ">= 0";
    else if (range.min == 1 && range.max == std::numeric_limits<int64_t>::max())
      bound = ">= 1";
    else if (range.max == std::numeric_limits<int64_t>::max())
      bound = ">= " + std::to_string(range.min);
    else
      bound = "between " + std::to_string(range.min) + " and " + std::to_string(range.max);
    fail(ctx, n, path, "must be " + bound + ", got " + n.text);
  }
  return v;
}

double to_double(const Ctx& ctx, const Node& n, const std::string& path, double min) {
  require_scalar(ctx, n, path, "a number");
  double d = 0;
  if (n.quoted || !parse_double(n.text, d))
    fail(ctx, n, path,
         "expected a number, got " + describe(n) + (n.quoted ? " (remove the quotes)" : ""));
  if (d < min) {
    char buf[32];
    auto r = std::to_chars(buf, buf + sizeof buf, min);
    fail(ctx, n, path, "must be >= " + std::string(buf, r.ptr) + ", got " + n.text);
  }
  return d;
}

std::string to_string_value(const Ctx& ctx, const Node& n, const std::string& path) {
  require_scalar(ctx, n, path, "a string");
  return n.text;
}

int to_choice(const Ctx& ctx, const Node& n, const std::string& path,
              const std::vector<Choice>& choices) {
  require_scalar(ctx, n, path, "a name");
  const std::string v = lower(n.text);
  std::vector<std::string> names;
  for (const Choice& c : choices) {
    if (lower(c.spelling) == v) return c.value;
    names.push_back(std::string(c.spelling));
  }
  std::string list;
  for (const std::string& s : names) list += (list.empty() ? "" : ", ") + s;
  const std::string guess = closest_key(n.text, names);
  fail(ctx, n, path,
       describe(n) + " is not one of: " + list +
           (guess.empty() ? "" : "; did you mean `" + guess + "`?"));
}

namespace {
// The words of a snake_case name, sorted: "comm_overlap" and "overlap_comm" give the same list.
std::vector<std::string> sorted_words(const std::string& name) {
  std::vector<std::string> words;
  size_t start = 0;
  for (size_t i = 0; i <= name.size(); ++i)
    if (i == name.size() || name[i] == '_') {
      if (i > start) words.push_back(name.substr(start, i - start));
      start = i + 1;
    }
  std::sort(words.begin(), words.end());
  return words;
}
}  // namespace

std::string closest_key(std::string_view key, const std::vector<std::string>& candidates) {
  const std::string k = lower(key);
  // The same words in another order (DeepSpeedExamples' `comm_overlap` for `overlap_comm`).
  if (k.find('_') != std::string::npos) {
    const std::vector<std::string> words = sorted_words(k);
    for (const std::string& c : candidates)
      if (sorted_words(lower(c)) == words) return c;
  }
  // A truncated or extended name (train_micro_batch_size for train_micro_batch_size_per_gpu):
  // one is a prefix of the other and covers at least half of it. The most specific hint: first.
  std::string prefix_match;
  for (const std::string& c : candidates) {
    const std::string lc = lower(c);
    const std::string& shorter = lc.size() < k.size() ? lc : k;
    const std::string& longer = lc.size() < k.size() ? k : lc;
    if (longer.rfind(shorter, 0) == 0 && shorter.size() >= 4 &&
        shorter.size() * 2 >= longer.size() &&
        (prefix_match.empty() || c.size() < prefix_match.size()))
      prefix_match = c;
  }
  if (!prefix_match.empty()) return prefix_match;
  std::string best;
  size_t best_d = std::string::npos;
  for (const std::string& c : candidates) {
    const size_t d = edit_distance(k, lower(c));
    if (d < best_d) best_d = d, best = c;
  }
  // Close enough to be a typo: a third of the length, at least 2 edits.
  return best_d <= std::max<size_t>(2, key.size() / 3) ? best : std::string();
}

// ---- MapReader ----------------------------------------------------------------------------------
MapReader::MapReader(const Ctx& ctx, const Node* node, std::string path)
    : ctx_(ctx), node_(node), path_(std::move(path)) {
  if (node_ != nullptr && node_->is_null()) node_ = nullptr;
  if (node_ != nullptr && !node_->is_map())
    fail(ctx_, *node_, path_, "expected a mapping of keys, got " + describe(*node_));
  if (node_ != nullptr) used_.assign(node_->entries.size(), false);
}

std::string MapReader::child(std::string_view key) const {
  return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
}

const Node* MapReader::take(std::string_view key, std::initializer_list<Alias> aliases) {
  declared_.emplace_back(key);
  if (ctx_.key_index != nullptr) ctx_.key_index->push_back(child(key));
  for (const Alias& a : aliases) {
    declared_.emplace_back(a.name);
    if (ctx_.key_index != nullptr) ctx_.key_index->push_back(child(a.name));
  }
  if (node_ == nullptr) return nullptr;

  // Collect every spelling present.
  std::vector<size_t> hits;
  std::vector<const Alias*> hit_alias;
  for (size_t i = 0; i < node_->entries.size(); ++i) {
    const std::string& k = node_->entries[i].key;
    if (k == key) hits.push_back(i), hit_alias.push_back(nullptr);
    for (const Alias& a : aliases)
      if (k == a.name) hits.push_back(i), hit_alias.push_back(&a);
  }
  if (hits.empty()) return nullptr;
  for (size_t i : hits) used_[i] = true;

  size_t pick = 0;
  if (hits.size() > 1) {
    size_t overrides = 0;
    for (size_t j = 0; j < hits.size(); ++j)
      if (!node_->entries[hits[j]].value.origin.empty()) ++overrides, pick = j;
    if (overrides != 1) {
      const Entry& a = node_->entries[hits[0]];
      const Entry& b = node_->entries[hits[1]];
      fail(ctx_, b.value, child(key),
           "given twice, as `" + a.key + "` (" + where(ctx_.file, a.value) + ") and as `" + b.key +
               "` (" + where(ctx_.file, b.value) + "); keep one");
    }
  }
  const Entry& e = node_->entries[hits[pick]];
  if (hit_alias[pick] != nullptr && hit_alias[pick]->deprecated)
    ctx_.notice(where(ctx_.file, e.value) + ": `" + child(e.key) +
                "` is deprecated in DeepSpeed; read as `" + child(key) + "`");
  return &e.value;
}

Given MapReader::read(std::string_view key, bool& out, std::initializer_list<Alias> aliases) {
  const Node* n = take(key, aliases);
  if (n == nullptr || n->is_null()) return Given::kAbsent;
  if (is_auto(*n)) return Given::kAuto;
  out = to_bool(ctx_, *n, child(key));
  return Given::kValue;
}

Given MapReader::read(std::string_view key, int& out, IntRange range,
                      std::initializer_list<Alias> aliases) {
  int64_t v = out;
  range.min = std::max<int64_t>(range.min, std::numeric_limits<int>::min());
  range.max = std::min<int64_t>(range.max, std::numeric_limits<int>::max());
  const Given g = read(key, v, range, aliases);
  out = static_cast<int>(v);
  return g;
}

Given MapReader::read(std::string_view key, int64_t& out, IntRange range,
                      std::initializer_list<Alias> aliases) {
  const Node* n = take(key, aliases);
  if (n == nullptr || n->is_null()) return Given::kAbsent;
  if (is_auto(*n)) return Given::kAuto;
  out = to_int(ctx_, *n, child(key), range);
  return Given::kValue;
}

Given MapReader::read(std::string_view key, double& out, double min,
                      std::initializer_list<Alias> aliases) {
  const Node* n = take(key, aliases);
  if (n == nullptr || n->is_null()) return Given::kAbsent;
  if (is_auto(*n)) return Given::kAuto;
  out = to_double(ctx_, *n, child(key), min);
  return Given::kValue;
}

Given MapReader::read(std::string_view key, std::string& out,
                      std::initializer_list<Alias> aliases) {
  const Node* n = take(key, aliases);
  if (n == nullptr || n->is_null()) return Given::kAbsent;
  out = to_string_value(ctx_, *n, child(key));
  return Given::kValue;
}

void MapReader::not_supported_unless(std::string_view key, std::string_view off) {
  const Node* n = take(key);
  if (n == nullptr || n->is_null() || is_auto(*n)) return;
  if (n->is_scalar() && !n->quoted && lower(n->text) == lower(off)) return;
  if (n->is_scalar() && !n->quoted &&
      off.find_first_not_of("0123456789-") == std::string_view::npos) {
    // numeric defaults also match when written as floats (1.0 for 1)
    double d = 0;
    if (parse_double(n->text, d) && d == std::stod(std::string(off))) return;
  }
  fail_at(ctx_, *n,
          "`" + child(key) + "` is not supported yet (zerotrain accepts only " + std::string(off) +
              " here, got " + describe(*n) + ")");
}

void MapReader::no_effect(std::string_view key, std::string_view why) {
  const Node* n = take(key);
  if (n == nullptr) return;
  ctx_.notice(where(ctx_.file, *n) + ": `" + child(key) + "` has no effect in zerotrain (" +
              std::string(why) + ")");
}

void MapReader::finish(const std::string& owner) { finish_impl(owner, false); }

void MapReader::finish_top_level() { finish_impl("", true); }

void MapReader::finish_impl(const std::string& owner, bool ignore_unrelated) {
  if (node_ == nullptr) return;
  for (size_t i = 0; i < node_->entries.size(); ++i) {
    if (used_[i]) continue;
    const Entry& e = node_->entries[i];
    std::string msg = owner.empty() ? "unknown key" : "unknown key for " + owner;
    std::string guess = closest_key(e.key, declared_);
    if (!guess.empty()) {
      msg += "; did you mean `" + guess + "`?";
    } else {
      // The key may belong to another block: look for it (or a near spelling) by its last part.
      std::vector<std::string> elsewhere;
      for (const std::string& p : known_key_paths())
        if (leaf(p) == e.key) elsewhere.push_back(p);
      if (elsewhere.empty())
        for (const std::string& p : known_key_paths())
          if (leaf(p).size() > 3 && edit_distance(lower(e.key), lower(leaf(p))) <= 2)
            elsewhere.push_back(p);
      if (!elsewhere.empty()) {
        // `aio` written inside zero_optimization (a copy of HF's NVMe example): say where it goes.
        const bool top = elsewhere.front().find('.') == std::string::npos;
        msg += "; did you mean " + std::string(top ? "the top-level `" : "`") + elsewhere.front() +
               "`?";
      } else if (ignore_unrelated) {
        // DeepSpeed reads the top level as a plain dict and ignores keys it does not know
        // (LLaMA-Factory's `comms_config`, "_comment" keys...); only its blocks forbid extras.
        ctx_.notice(
            where(ctx_.file, e.key_mark.line > 0 ? e.key_mark : e.value.mark, e.value.origin) +
            ": `" + child(e.key) +
            "` is not a key DeepSpeed or zerotrain reads; DeepSpeed ignores unknown "
            "top-level keys, and so does zerotrain (check its spelling if you meant one)");
        continue;
      } else if (declared_.size() <= 16) {
        std::string list;
        for (const std::string& d : declared_) list += (list.empty() ? "" : ", ") + d;
        msg += " (valid keys here: " + list + ")";
      }
    }
    Node at = e.value;
    if (e.key_mark.line > 0) at.mark = e.key_mark;
    fail(ctx_, at, child(e.key), msg);
  }
}

}  // namespace zt::io::detail
