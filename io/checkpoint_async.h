// io/checkpoint_async.h: the save protocol of io/checkpoint_store.h for one rank, run on the
// training thread (a synchronous save) or on a background thread (DeepSpeed's `checkpoint.async`
// and Nebula's asynchronous persistence) from a snapshot in host memory.
//
// persist_checkpoint() is the protocol once, with the agreement between its phases supplied by the
// caller (io/ has no MPI: the engine implements PersistCollectives on a communicator of its own,
// one MPI_Comm_dup per writer, never the training communicator; a single process passes none):
//   rank 0      begin_save                                  (.tmp.<tag>)
//   agree "begin"
//   every rank  write_shard; rank 0 write_client_state      (.part, fsync, rename, fsync)
//   agree "write"; gather every shard's (size, checksum)
//   rank 0      commit_save (manifest, rename, `latest` by rename); apply_retention(keep)
//   agree "commit"
// A failure on any rank is agreed at the next phase, rank 0 removes .tmp.<tag>, and every rank
// throws CheckpointError: the previous checkpoint is untouched. Retention runs only after the new
// tag is published, and counts only intact tags, so an older version is never deleted before a
// newer one is complete.
//
// The asynchronous save (zero/checkpoint.cpp) copies the rank's byte ranges into a ShardSnapshot
// (io/checkpoint_writer.h), builds the PersistRequest (manifest draft, client state) on the training
// thread, and runs persist_checkpoint on a BackgroundJob: the request owns or borrows nothing that
// training touches afterwards.
#pragma once

#include "io/checkpoint_manifest.h"
#include "io/checkpoint_store.h"
#include "io/safetensors.h"

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace zt::io {

struct PersistRequest {
  std::string dir, tag;
  int rank = 0, world = 1;
  const SafetensorsWriter* shard = nullptr;  // this rank's tensors; must outlive the persist
  // Rank 0 only:
  std::string client_state_json;  // written as client_state.json (checksummed) unless empty
  Manifest manifest;              // everything but `files` and `created_unix`, filled in here
  CommitOptions commit;
  int keep = 0;  // apply_retention(dir, keep) after the commit; 0: keep all
  ShardWriteOptions write;
};

struct PersistCollectives {
  // Called by every rank at each phase ("begin", "write", "commit"): true when `failed` is true on
  // some rank. May throw (a timeout): the persist then aborts. Unset: one rank.
  std::function<bool(bool failed, const char* phase)> any_failed;
  // After "write": every rank's (size, checksum) of its shard, in rank order. Unset: one rank.
  std::function<std::vector<std::pair<uint64_t, uint64_t>>(uint64_t size, uint64_t checksum)>
      gather;
  // After a phase agreed on a failure: the first failing rank's message as "rank r: <message>"
  // (every rank calls it with its own message, "" when it did not fail), so that every rank, rank 0
  // included, reports the real reason (e.g. the disk full on rank 1). Unset: "".
  std::function<std::string(const std::string& error)> first_error;
};

struct PersistResult {
  std::string tag;
  uint64_t shard_bytes = 0;  // this rank's shard file
  uint64_t tag_bytes = 0;    // rank 0: every file of the tag (shards, client state, manifest)
  double write_ms = 0;       // this rank's shard: write, fsync, rename
  double total_ms = 0;       // begin_save to the last agreement
  std::vector<std::string> retired;  // rank 0: tags deleted by retention
};

// Runs the protocol above for req.rank; throws CheckpointError (on every rank) when any rank failed.
PersistResult persist_checkpoint(const PersistRequest& req, const PersistCollectives& coll = {});

}  // namespace zt::io
