// io/config_tree.cpp: builds the config tree from yaml-cpp's parser events (see
// detail/config_tree.h for why not YAML::Node), detects duplicate keys, applies --set overrides.
#include "io/detail/config_tree.h"

#include "core/error.h"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/exceptions.h>
#include <yaml-cpp/mark.h>
#include <yaml-cpp/parser.h>

#include <sstream>
#include <string_view>
#include <unordered_map>
#include <utility>

namespace zt::io::detail {

const Node* Node::find(std::string_view key) const {
  for (const Entry& e : entries)
    if (e.key == key) return &e.value;
  return nullptr;
}

std::string where(const std::string& file, const Mark& mark, const std::string& origin) {
  if (!origin.empty()) return file + " (" + origin + ")";
  if (mark.line <= 0) return file;
  return file + ":" + std::to_string(mark.line) + ":" + std::to_string(mark.column);
}

std::string where(const std::string& file, const Node& node) {
  return where(file, node.mark, node.origin);
}

namespace {

Mark to_mark(const YAML::Mark& m) {
  if (m.is_null()) return {};
  return {m.line + 1, m.column + 1};
}

[[noreturn]] void syntax_error(const std::string& file, const Mark& mark, const std::string& origin,
                               const std::string& msg) {
  throw ConfigError(where(file, mark, origin) + ": " + msg);
}

// Receives yaml-cpp's events and assembles Nodes. A stack holds the open collections; a map
// alternates key and value, so it remembers the pending key until its value arrives.
class TreeBuilder : public YAML::EventHandler {
 public:
  TreeBuilder(std::string file, std::string origin)
      : file_(std::move(file)), origin_(std::move(origin)) {}

  bool has_root() const { return has_root_; }
  Node take_root() { return std::move(root_); }

  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}

  void OnNull(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    Node n = make(Node::Kind::kNull, mark);
    remember(anchor, n);
    add(std::move(n));
  }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    auto it = anchors_.find(anchor);
    if (it == anchors_.end()) syntax_error(file_, to_mark(mark), origin_, "unknown alias");
    Node n = it->second;
    add(std::move(n));
  }
  void OnScalar(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                const std::string& value) override {
    // yaml-cpp tags plain scalars "?" and quoted ones "!"; an explicit tag (!!str) is neither.
    if (tag != "?" && tag != "!")
      syntax_error(file_, to_mark(mark), origin_,
                   "YAML tags (" + tag + ") are not supported in configs");
    Node n = make(Node::Kind::kScalar, mark);
    n.text = value;
    n.quoted = (tag == "!");
    remember(anchor, n);
    add(std::move(n));
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value) override {
    open_.push_back({make(Node::Kind::kSequence, mark), anchor, false, {}, {}});
  }
  void OnSequenceEnd() override { close(); }
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                  YAML::EmitterStyle::value) override {
    open_.push_back({make(Node::Kind::kMap, mark), anchor, false, {}, {}});
  }
  void OnMapEnd() override { close(); }

 private:
  struct Open {
    Node node;
    YAML::anchor_t anchor;
    bool have_key;  // maps: a key arrived and waits for its value
    std::string key;
    Mark key_mark;
  };

  Node make(Node::Kind kind, const YAML::Mark& mark) const {
    Node n;
    n.kind = kind;
    n.mark = to_mark(mark);
    n.origin = origin_;
    return n;
  }
  void remember(YAML::anchor_t anchor, const Node& n) {
    if (anchor != YAML::NullAnchor) anchors_[anchor] = n;
  }
  void close() {
    Open o = std::move(open_.back());
    open_.pop_back();
    if (o.node.is_map() && o.have_key)
      syntax_error(file_, o.key_mark, origin_, "key `" + o.key + "` has no value");
    remember(o.anchor, o.node);
    add(std::move(o.node));
  }
  void add(Node n) {
    if (open_.empty()) {
      if (has_root_) syntax_error(file_, n.mark, origin_, "more than one document in a config");
      root_ = std::move(n);
      has_root_ = true;
      return;
    }
    Open& top = open_.back();
    if (top.node.is_sequence()) {
      top.node.items.push_back(std::move(n));
      return;
    }
    if (!top.have_key) {  // this node is a key
      if (!n.is_scalar())
        syntax_error(file_, n.mark, origin_, "a config key must be a plain name, not a collection");
      if (n.text == "<<")
        syntax_error(file_, n.mark, origin_, "YAML merge keys (<<) are not supported in configs");
      for (const Entry& e : top.node.entries)
        if (e.key == n.text)
          syntax_error(file_, n.mark, origin_,
                       "config key `" + path_of(n.text) + "` given twice (lines " +
                           std::to_string(e.key_mark.line) + " and " + std::to_string(n.mark.line) +
                           "); keep one");
      top.have_key = true;
      top.key = n.text;
      top.key_mark = n.mark;
      return;
    }
    top.node.entries.push_back({std::move(top.key), top.key_mark, std::move(n)});
    top.have_key = false;
  }
  // The dotted path of `key` inside the currently open maps, for messages.
  std::string path_of(const std::string& key) const {
    std::string p;
    for (const Open& o : open_) {
      if (o.node.is_map() && o.have_key) p += o.key + ".";
      if (o.node.is_sequence()) {
        p += '[';
        p += std::to_string(o.node.items.size());
        p += "].";
      }
    }
    return p + key;
  }

  std::string file_, origin_;
  std::vector<Open> open_;
  std::unordered_map<YAML::anchor_t, Node> anchors_;
  Node root_;
  bool has_root_ = false;
};

Node parse_any(const std::string& text, const std::string& file, const std::string& origin) {
  std::istringstream in(text);
  TreeBuilder builder(file, origin);
  try {
    YAML::Parser parser(in);
    while (parser.HandleNextDocument(builder)) {
    }
  } catch (const YAML::Exception& e) {
    // yaml-cpp reports a JSON object or array that lost a comma (DeepSpeedExamples'
    // imagenet/config/ds_config.json) as an unclosed flow at the entry after the gap.
    std::string hint;
    if (e.msg == "end of map flow not found" || e.msg == "end of sequence flow not found")
      hint =
          " (in JSON: is a comma missing at the end of the entry before this one, or a closing "
          "bracket missing?)";
    syntax_error(file, to_mark(e.mark), origin, "YAML/JSON syntax error: " + e.msg + hint);
  }
  if (!builder.has_root()) {
    Node empty;
    empty.origin = origin;
    return empty;
  }
  return builder.take_root();
}

// JSON has no comments, but configs copied from tutorials sometimes carry `//` or `/* */`
// (DeepSpeed's json.load rejects them too). YAML would misread them as keys, with a confusing
// message, so a text that opens with `{` is scanned first, outside its strings.
void reject_json_comments(const std::string& text, const std::string& file) {
  const size_t first = text.find_first_not_of(" \t\r\n\xEF\xBB\xBF");
  if (first == std::string::npos || text[first] != '{') return;
  int line = 1, column = 1;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i, ++column;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '/' && i + 1 < text.size() && (text[i + 1] == '/' || text[i + 1] == '*') &&
               (i == 0 || std::string_view(" \t\r\n,{}[]").find(text[i - 1]) !=
                              std::string_view::npos)) {  // not inside a plain YAML scalar
      syntax_error(file, Mark{line, column}, "",
                   "JSON does not allow comments (`" + text.substr(i, 2) +
                       "`), and DeepSpeed's json.load rejects them too: remove the comment");
    }
    if (c == '\n') {
      ++line, column = 1;
    } else {
      ++column;
    }
  }
}

}  // namespace

Node parse_tree(const std::string& text, const std::string& file) {
  reject_json_comments(text, file);
  Node root = parse_any(text, file, "");
  if (root.is_null()) root.kind = Node::Kind::kMap;  // empty file: all defaults
  if (!root.is_map())
    syntax_error(file, root.mark, "", "the top level of a config must be a mapping of keys");
  return root;
}

void apply_override(Node& root, const std::string& assignment, const std::string& file) {
  const std::string origin = "--set " + assignment;
  const size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    throw ConfigError(file + " (" + origin + "): an override must read key.path=value");
  const std::string path = assignment.substr(0, eq);

  std::vector<std::string> parts;
  for (size_t start = 0;;) {
    const size_t dot = path.find('.', start);
    parts.push_back(path.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  for (const std::string& p : parts)
    if (p.empty()) throw ConfigError(file + " (" + origin + "): empty key in `" + path + "`");

  Node value = parse_any(assignment.substr(eq + 1), file, origin);

  Node* node = &root;
  std::string walked;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (node->is_null()) {  // `block:` with nothing under it, or created just now
      node->kind = Node::Kind::kMap;
      node->origin = origin;
    }
    if (!node->is_map())
      throw ConfigError(where(file, *node) + ": config key `" + walked + "` is not a mapping, so " +
                        origin + " cannot set `" + path + "` inside it");
    Entry* found = nullptr;
    for (Entry& e : node->entries)
      if (e.key == parts[i]) found = &e;
    if (found == nullptr) {
      Node fresh;
      fresh.origin = origin;
      node->entries.push_back({parts[i], Mark{}, std::move(fresh)});
      found = &node->entries.back();
    }
    walked += (walked.empty() ? "" : ".") + parts[i];
    if (i + 1 == parts.size()) {
      found->value = std::move(value);
      found->key_mark = Mark{};
    }
    node = &found->value;
  }
}

}  // namespace zt::io::detail
