// io/checkpoint_load.cpp: one-pass reads of a tag with streaming XXH3 verification, and the order
// in which a resume tries tags (see io/checkpoint_load.h).
#include "io/checkpoint_load.h"

#include "core/error.h"
#include "io/checkpoint_checksum.h"
#include "io/detail/checkpoint_posix.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace zt::io {
namespace {

// Closes a file descriptor on every path out.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

std::string mismatch(const std::string& path, uint64_t got, uint64_t want) {
  return path + ": checksum " + checksum_hex(got) + ", the manifest says " + checksum_hex(want) +
         " (the file is corrupt)";
}

}  // namespace

TagLoader::TagLoader(std::string dir, std::string tag)
    : dir_(std::move(dir)), tag_(std::move(tag)), manifest_(read_manifest(dir_, tag_)) {}
TagLoader::~TagLoader() = default;

std::vector<std::string> TagLoader::check_sizes() const {
  return verify(dir_, tag_, /*checksums=*/false);
}

const SafetensorsReader& TagLoader::shard(int rank) {
  auto it = shards_.find(rank);
  if (it == shards_.end())
    it = shards_.emplace(rank, std::make_unique<SafetensorsReader>(open_shard(dir_, tag_, rank)))
             .first;
  return *it->second;
}

// The shard read front to back: pieces straight into their destinations, the rest through a
// scratch buffer, each chunk hashed right after its read. Pieces that overlap an earlier one (not
// produced by the engine's plans, but legal) are read again afterwards, outside the stream.
FileCheck TagLoader::read_verified(int rank, std::vector<const ShardPiece*> pieces,
                                   size_t chunk_bytes) {
  FileCheck fc;
  fc.name = shard_file_name(rank);
  const std::string path = detail::join(tag_dir(dir_, tag_), fc.name);
  try {
    const FileRecord* rec = manifest_.file(fc.name);
    if (!rec) throw CheckpointError(path + ": not listed in the manifest");
    const SafetensorsReader& rd = shard(rank);
    if (rd.file_size() != rec->size) {
      throw CheckpointError(path + ": " + std::to_string(rd.file_size()) +
                            " bytes, the manifest says " + std::to_string(rec->size) +
                            (rd.file_size() < rec->size ? " (truncated)" : " (grown)"));
    }
    struct Seg {
      uint64_t at, n;
      char* dst;
    };
    std::vector<Seg> segs;
    for (const ShardPiece* p : pieces) {
      const SafetensorsTensorInfo& t = rd.at(p->tensor);
      if (p->offset > t.nbytes() || p->nbytes > t.nbytes() - p->offset) {
        throw CheckpointError(path + ": tensor '" + p->tensor + "': read of bytes [" +
                              std::to_string(p->offset) + ", " +
                              std::to_string(p->offset + p->nbytes) + ") past its " +
                              std::to_string(t.nbytes()) + " bytes");
      }
      if (p->nbytes)
        segs.push_back(
            {rd.data_start() + t.begin + p->offset, p->nbytes, static_cast<char*>(p->dst)});
    }
    std::sort(segs.begin(), segs.end(), [](const Seg& a, const Seg& b) { return a.at < b.at; });

    Fd f{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
    if (f.fd < 0) detail::throw_errno("cannot open", path, errno);
    ::posix_fadvise(f.fd, 0, 0, POSIX_FADV_SEQUENTIAL);  // a hint: a larger readahead window
    Checksum sum;
    std::vector<char> scratch;
    uint64_t pos = 0;
    auto stream_to = [&](char* dst, uint64_t end) {  // dst nullptr: the bytes are only hashed
      while (pos < end) {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(chunk_bytes, end - pos));
        char* to = dst;
        if (!to) {
          if (scratch.empty()) scratch.resize(chunk_bytes);
          to = scratch.data();
        }
        detail::pread_all(f.fd, to, n, pos, path);
        sum.update(to, n);
        if (dst) dst += n;
        pos += n;
      }
    };
    std::vector<Seg> again;
    for (const Seg& s : segs) {
      if (s.at < pos) {
        again.push_back(s);
        continue;
      }
      stream_to(nullptr, s.at);
      stream_to(s.dst, s.at + s.n);
    }
    stream_to(nullptr, rec->size);
    for (const Seg& s : again) detail::pread_all(f.fd, s.dst, s.n, s.at, path);
    fc.checksum = sum.digest();
    fc.ok = fc.checksum == rec->checksum;
    if (!fc.ok) fc.problem = mismatch(path, fc.checksum, rec->checksum);
  } catch (const Error& e) {
    fc.ok = false;
    fc.problem = e.what();
  }
  return fc;
}

std::vector<FileCheck> TagLoader::read(const std::vector<ShardPiece>& pieces,
                                       const std::vector<int>& verify, size_t chunk_bytes) {
  ZT_CHECK(chunk_bytes > 0, "TagLoader::read: chunk_bytes must be positive");
  std::map<int, std::vector<const ShardPiece*>> by_shard;
  for (const ShardPiece& p : pieces) by_shard[p.shard].push_back(&p);
  std::vector<FileCheck> checks;
  for (int r : verify) {
    auto it = by_shard.find(r);
    checks.push_back(read_verified(
        r, it == by_shard.end() ? std::vector<const ShardPiece*>{} : std::move(it->second),
        chunk_bytes));
    if (it != by_shard.end()) by_shard.erase(it);
  }
  for (const auto& [r, ps] : by_shard) {
    const SafetensorsReader& rd = shard(r);
    for (const ShardPiece* p : ps)
      if (p->nbytes) rd.read_range(p->tensor, p->offset, p->dst, p->nbytes);
  }
  return checks;
}

std::string TagLoader::read_text(const std::string& name, FileCheck& check) const {
  check = FileCheck{};
  check.name = name;
  const std::string path = detail::join(tag_dir(dir_, tag_), name);
  std::string text;
  try {
    const FileRecord* rec = manifest_.file(name);
    if (!rec) throw CheckpointError(path + ": not listed in the manifest");
    Fd f{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
    if (f.fd < 0) detail::throw_errno("cannot open", path, errno);
    text.resize(rec->size);
    detail::pread_all(f.fd, text.data(), text.size(), 0, path);
    char extra;
    if (::pread(f.fd, &extra, 1, static_cast<off_t>(rec->size)) > 0)
      throw CheckpointError(path + ": longer than the " + std::to_string(rec->size) +
                            " bytes the manifest says (grown)");
    Checksum sum;
    sum.update(text.data(), text.size());
    check.checksum = sum.digest();
    check.ok = check.checksum == rec->checksum;
    if (!check.ok) check.problem = mismatch(path, check.checksum, rec->checksum);
  } catch (const Error& e) {
    check.ok = false;
    check.problem = e.what();
  }
  return text;
}

// ---- which tags a resume tries ------------------------------------------------------------------

LoadCandidates load_candidates(const std::string& dir) {
  LoadCandidates c;
  std::vector<TagInfo> tags = list_checkpoints(dir);
  c.tags_seen = tags.size();
  try {
    c.latest = read_latest(dir);
    if (!c.latest) {
      c.why = "there is no `latest` file";
    } else {
      check_tag(*c.latest);
      auto problems = verify(dir, *c.latest, /*checksums=*/false);
      if (problems.empty()) {
        auto it = std::find_if(tags.begin(), tags.end(),
                               [&](const TagInfo& t) { return t.tag == *c.latest; });
        c.tags.push_back(it != tags.end() ? *it : TagInfo{*c.latest, -1, 0, ""});
      } else {
        c.why = "`latest` names '" + *c.latest + "', which is damaged: " + problems[0];
      }
    }
  } catch (const Error& e) {
    c.why = std::string("`latest` cannot be used: ") + e.what();
  }
  for (auto it = tags.rbegin(); it != tags.rend(); ++it) {
    if (c.latest && it->tag == *c.latest) continue;
    if (it->manifest_error.empty() && verify(dir, it->tag, /*checksums=*/false).empty())
      c.tags.push_back(*it);
  }
  return c;
}

std::string fallback_message(const std::string& dir, const std::string& why,
                             const TagInfo& chosen) {
  return "checkpoint: in " + dir + ", " + why + "; falling back to '" + chosen.tag +
         "' (global step " + std::to_string(chosen.global_step) + "), the newest intact checkpoint";
}

std::string nothing_intact_message(const std::string& dir, const std::string& why, bool had_latest,
                                   size_t tags_seen) {
  if (tags_seen == 0 && !had_latest) return "checkpoint: no checkpoint in " + dir;
  return "checkpoint: in " + dir + ", " + why + ", and no other intact checkpoint was found (" +
         std::to_string(tags_seen) + " tags looked at)";
}

}  // namespace zt::io
