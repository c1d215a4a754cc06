// io/checkpoint_store.h: the on-disk layout of zerotrain checkpoints and the protocol that makes a
// checkpoint written by many ranks appear all at once, or not at all.
//
// Layout (DeepSpeed's save_dir / tag / `latest`, with ZeRO shards as safetensors):
//   <dir>/latest                          the tag to resume from (text, no newline, like DeepSpeed)
//   <dir>/<tag>/rank00000.safetensors     rank 0's tensors: its weight and optimizer partitions
//   <dir>/<tag>/rank00001.safetensors     ...one per rank
//   <dir>/<tag>/client_state.json         the engine's and the user's client_state (DeepSpeed's)
//   <dir>/<tag>/manifest.json             written last: sizes, checksums, partition map
//   <dir>/.tmp.<tag>/                     a save in progress (never read; cleanup_stale removes it)
//   <dir>/.old.<tag>/, <dir>/.trash.<tag>/  a replaced or retired tag on its way out
// A tag is "global_step<N>" by default (default_tag), as in DeepSpeed.
//
// Save protocol (DESIGN.md, checkpoint visibility). No MPI here: the engine puts the collectives
// between the phases, and on any failure (any rank) rank 0 calls abort_save.
//   rank 0      begin_save(dir, tag)          creates dir, an empty .tmp.<tag> (stale one removed)
//   -- barrier --
//   every rank  write_shard(dir, tag, rank, shard) -> FileRecord  (.part, fsync, rename, fsync)
//   rank 0      write_client_state(dir, tag, json) -> FileRecord
//   -- gather the FileRecords (size + checksum: two uint64 per rank) to rank 0 --
//   rank 0      commit_save(dir, manifest)    writes manifest.json the same way; renames
//               .tmp.<tag> -> <tag> (an existing <tag> is swapped out atomically, then deleted);
//               replaces `latest` by write-temp + fsync + rename
//   rank 0      apply_retention(dir, keep)    optional
// A crash at any point leaves the previous tag and `latest` as they were (or, after the final
// rename, the new tag complete); leftovers are hidden `.tmp.*` folders that readers ignore.
//
// Load: rank 0 calls cleanup_stale(dir) (only when no save is running). Tools verify first
// (resolve_latest / verify_or_throw, then read_manifest, open_shard); the engine reads each byte
// once and checksums while it reads (io/checkpoint_load.h: load_candidates, TagLoader).
//
// Errors are CheckpointError naming the file: unwritable dir, disk full (ENOSPC from write or
// fsync), corrupt manifest, missing shard, size or checksum mismatch.
#pragma once

#include "io/checkpoint_manifest.h"
#include "io/safetensors.h"

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace zt::io {

inline constexpr const char* kLatestFile = "latest";
inline constexpr const char* kManifestFile = "manifest.json";
inline constexpr const char* kClientStateFile = "client_state.json";

std::string default_tag(int64_t global_step);  // "global_step<N>"
// Throws CheckpointError unless `tag` can name a folder: non-empty, at most 200 bytes, no '/', no
// leading '.', no control characters, not "latest".
void check_tag(const std::string& tag);
std::string tag_dir(const std::string& dir, const std::string& tag);  // <dir>/<tag>
std::string tmp_dir(const std::string& dir, const std::string& tag);  // <dir>/.tmp.<tag>

// ---- save ---------------------------------------------------------------------------------------

// Rank 0, before the first barrier: creates `dir` if needed, removes a stale .tmp.<tag> of an
// earlier crashed save, creates an empty one. Throws when dir is not writable.
void begin_save(const std::string& dir, const std::string& tag);

struct ShardWriteOptions {
  size_t chunk_bytes = size_t{4} << 20;
  // Called after each chunk is handed to the OS (bytes written so far, file size). Progress bars,
  // and the crash tests' hook for a kill in the middle of a write.
  std::function<void(uint64_t written, uint64_t total)> on_progress;
};

// Every rank: writes <dir>/.tmp.<tag>/rankNNNNN.safetensors durably and returns its size and
// XXH3-64, computed while streaming (no second read). On failure the partial file is removed.
FileRecord write_shard(const std::string& dir, const std::string& tag, int rank,
                       const SafetensorsWriter& shard, const ShardWriteOptions& options = {});

// Rank 0: client_state.json (must be valid JSON text; DeepSpeed's client_state dict).
FileRecord write_client_state(const std::string& dir, const std::string& tag,
                              const std::string& json_text);

struct CommitOptions {
  bool save_latest = true;  // DeepSpeed's save_latest: point `latest` at the new tag
  // Replacing an existing tag swaps it atomically (renameat2 RENAME_EXCHANGE) where the file system
  // can; false forces the rename-aside path that other file systems (NFS) get. For tests.
  bool allow_exchange = true;
  // Test hook, called after each durable step: "manifest" (manifest.json in .tmp.<tag>),
  // "set_aside" (rename-aside path only: the old <tag> is .old.<tag>), "published" (<tag>
  // visible), "latest" (`latest` replaced).
  std::function<void(std::string_view step)> on_step;
};

// Rank 0, after every rank's write_shard returned: `manifest.tag` names the tag, `manifest.files`
// holds the gathered FileRecords (each shard's, client_state's). Checks that each file is in
// .tmp.<tag> with its recorded size, sets created_unix, writes manifest.json, publishes the tag
// and replaces `latest`. Returns the manifest as written.
Manifest commit_save(const std::string& dir, Manifest manifest, const CommitOptions& options = {});

// Rank 0, when any rank failed: removes .tmp.<tag>. The previous checkpoint is untouched.
void abort_save(const std::string& dir, const std::string& tag) noexcept;

// All phases in one process (world size 1, tools, tests): shards[r] is rank r's. Aborts (removes
// .tmp.<tag>) and rethrows on any failure.
Manifest save_checkpoint_local(const std::string& dir, Manifest manifest,
                               const std::vector<const SafetensorsWriter*>& shards,
                               const std::string& client_state_json,
                               const CommitOptions& options = {});

// Replaces <dir>/latest durably (.tmp.latest, fsync, rename, fsync dir); never rewritten in place.
void write_latest(const std::string& dir, const std::string& tag);

// ---- read ---------------------------------------------------------------------------------------

struct TagInfo {
  std::string tag;
  int64_t global_step = -1;    // from the manifest; -1 when it cannot be read
  int64_t mtime_ns = 0;        // of manifest.json
  std::string manifest_error;  // empty when the manifest parsed
};
// Every <dir>/<tag>/ holding a manifest.json (hidden folders ignored), oldest first: by global
// step, then manifest mtime, then name. A missing dir is an empty list.
std::vector<TagInfo> list_checkpoints(const std::string& dir);
std::vector<std::string> list_tags(const std::string& dir);  // the same order

Manifest read_manifest(const std::string& dir, const std::string& tag);

// Problems of one tag, each naming its file: missing folder or manifest, corrupt manifest, missing
// file, wrong size (truncated), checksum mismatch (with `checksums`; else sizes only). Empty:
// intact.
std::vector<std::string> verify(const std::string& dir, const std::string& tag,
                                bool checksums = true);
// Throws CheckpointError with the first problem (and how many more) unless the tag is intact.
void verify_or_throw(const std::string& dir, const std::string& tag, bool checksums = true);

// <dir>/latest, trimmed; nullopt when there is no such file.
std::optional<std::string> read_latest(const std::string& dir);

struct ResolvedTag {
  std::optional<std::string> tag;  // nullopt: no intact checkpoint in dir
  bool fell_back = false;          // not the tag `latest` names (missing, corrupt, or no latest)
  std::string message;             // for the log, when fell_back or nothing was found
};
// The tag to resume from: the one `latest` names when it verifies; otherwise the newest intact tag
// (global step, then mtime), with a message saying why and what was chosen.
ResolvedTag resolve_latest(const std::string& dir, bool checksums = true);

std::string read_client_state(const std::string& dir, const std::string& tag);
SafetensorsReader open_shard(const std::string& dir, const std::string& tag, int rank);

// ---- maintenance --------------------------------------------------------------------------------

// Removes `.tmp.*` and `.trash.*` leftovers of crashed saves and deletions; a `.old.<tag>` (a tag
// set aside while being replaced, on file systems without atomic exchange) goes back to <tag> when
// the replacement never arrived, else is removed. Call only when no save is running in `dir`.
// Returns what it did, one line per entry.
std::vector<std::string> cleanup_stale(const std::string& dir);

// Keeps the `keep` newest intact tags and deletes the older intact ones (keep <= 0: keep all).
// Only intact tags count (all files present with their recorded sizes), so an older tag is never
// deleted because of a newer one that is incomplete or damaged; the tag `latest` names is never
// deleted (if it is older, keep + 1 remain); damaged tags are left for a person to look at. A tag
// is renamed to .trash.<tag> before its files go. Returns the deleted tags, oldest first.
std::vector<std::string> apply_retention(const std::string& dir, int keep);

}  // namespace zt::io
