// io/checkpoint_load.h: reading a checkpoint tag in one pass, checksumming the bytes as they
// arrive.
//
// A load used to verify every file's XXH3 first (reading the whole tag) and then read the ranges
// into their destinations (reading them again): a cold-cache resume paid twice the disk. Here the
// caller plans the pieces it needs (ShardPiece: bytes of one tensor of one shard, landing at a
// destination), and TagLoader::read reads each piece once, straight into its destination. A shard
// marked for verification is read whole, front to back: its pieces go to their destinations, the
// bytes nobody asked for (headers, other ranks' ranges) through a small scratch buffer, and every
// chunk is hashed right after its read (cache-hot), so the checksum costs no second read. A shard
// not marked is read piece by piece (pread), unhashed: under mpirun another rank verifies it.
//
// Who verifies what is the caller's choice; the engine (zero/checkpoint.cpp) gives each shard to
// the rank that reads most of it (so a rank that reads a file whole hashes it for free) and agrees
// the results in one small collective. The bytes landed before verification ends are not yet
// trusted: the caller decides what to do with them when a check fails (the engine loads the next
// intact tag over them, or makes them NaN: it is never left holding a corrupt tag's state).
//
// Cheap structural checks come first and read no tensor data (check_sizes, the shard headers), so
// a truncated or missing file is found before a caller writes any destination.
#pragma once

#include "io/checkpoint_manifest.h"
#include "io/checkpoint_store.h"
#include "io/safetensors.h"

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace zt::io {

// Bytes [offset, offset + nbytes) of tensor `tensor` (offsets within its data) of the shard saved
// by rank `shard`, to be stored at `dst`.
struct ShardPiece {
  int shard = 0;
  std::string tensor;
  uint64_t offset = 0;
  uint64_t nbytes = 0;
  void* dst = nullptr;
};

// The outcome of verifying one file of the tag.
struct FileCheck {
  std::string name;  // relative to the tag folder (manifest.files[i].name)
  bool ok = false;
  uint64_t checksum = 0;  // what was computed (when the file could be read whole)
  std::string problem;    // when !ok: "<path>: ..." as verify() words it
};

class TagLoader {
 public:
  // Reads and checks the manifest; throws CheckpointError like read_manifest.
  TagLoader(std::string dir, std::string tag);
  ~TagLoader();

  const std::string& dir() const { return dir_; }
  const std::string& tag() const { return tag_; }
  const Manifest& manifest() const { return manifest_; }

  // Every file of the manifest present with its recorded size (verify(checksums=false)): the
  // problems, each naming its file; empty: sizes are right. Reads no data.
  std::vector<std::string> check_sizes() const;
  // The shard saved by `rank`, opened once; its header is read and validated (throws
  // CheckpointError naming the file).
  const SafetensorsReader& shard(int rank);

  // Reads `pieces` into their destinations. Shards in `verify` are read whole and checked against
  // the manifest; one FileCheck each, in the order given. A read error in a verified shard is a
  // failed check; a read error elsewhere throws CheckpointError naming the file.
  std::vector<FileCheck> read(const std::vector<ShardPiece>& pieces, const std::vector<int>& verify,
                              size_t chunk_bytes = size_t{4} << 20);
  // A small file of the tag (client_state.json) read whole and checked against its record.
  std::string read_text(const std::string& name, FileCheck& check) const;

 private:
  FileCheck read_verified(int rank, std::vector<const ShardPiece*> pieces, size_t chunk_bytes);
  std::string dir_, tag_;
  Manifest manifest_;
  std::map<int, std::unique_ptr<SafetensorsReader>> shards_;
};

// The tags a resume (tag "" = latest) tries, in order: the one `latest` names, then the others
// newest first; a tag whose files are missing or of the wrong size is left out (no data is read:
// checksums are checked by the load itself, TagLoader::read).
struct LoadCandidates {
  std::vector<TagInfo> tags;
  std::optional<std::string> latest;  // what `latest` names, when it could be read
  std::string why;                    // why the tag `latest` names is not tags[0] (empty: it is)
  size_t tags_seen = 0;
};
LoadCandidates load_candidates(const std::string& dir);
// resolve_latest's messages: loading `chosen` instead of `latest` because of `why`; and nothing
// loadable (`why`: the last reason `latest` could not be used).
std::string fallback_message(const std::string& dir, const std::string& why, const TagInfo& chosen);
std::string nothing_intact_message(const std::string& dir, const std::string& why, bool had_latest,
                                   size_t tags_seen);

}  // namespace zt::io
