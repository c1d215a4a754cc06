// io/checkpoint_async.cpp: the per-rank save protocol with caller-supplied agreement (see
// io/checkpoint_async.h for the phases and why each check is where it is).
#include "io/checkpoint_async.h"

#include "core/error.h"

#include <chrono>
#include <exception>

namespace zt::io {
namespace {
double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

PersistResult persist_checkpoint(const PersistRequest& req, const PersistCollectives& coll) {
  ZT_CHECK(req.shard != nullptr, "persist_checkpoint: no shard for rank ", req.rank);
  ZT_CHECK(req.rank >= 0 && req.rank < req.world, "persist_checkpoint: rank ", req.rank,
           " of a world of ", req.world);
  ZT_CHECK(req.world == 1 || (coll.any_failed && coll.gather),
           "persist_checkpoint: ", req.world, " ranks need PersistCollectives");
  const auto t0 = std::chrono::steady_clock::now();
  const bool lead = req.rank == 0;
  // A collective that throws (a timeout) ends the persist; rank 0 removes what it had started.
  auto collective = [&](auto&& f) {
    try {
      return f();
    } catch (...) {
      if (lead) abort_save(req.dir, req.tag);
      throw;
    }
  };
  auto agree = [&](bool failed, const char* phase) {
    if (!coll.any_failed) return failed;
    return collective([&] { return coll.any_failed(failed, phase); });
  };
  // After an agreed failure: the reason from the rank that failed, for every rank's message.
  auto reason = [&](const std::string& mine, const std::string& fallback) {
    if (!coll.first_error) return mine.empty() ? fallback : mine;
    std::string first = collective([&] { return coll.first_error(mine); });
    return first.empty() ? fallback : first;
  };

  PersistResult res;
  res.tag = req.tag;
  std::string err;

  // Phase 1: rank 0 opens <dir>/.tmp.<tag>.
  if (lead) {
    try {
      begin_save(req.dir, req.tag);
    } catch (const std::exception& e) {
      err = e.what();
    }
  }
  if (agree(!err.empty(), "begin")) {
    if (lead) abort_save(req.dir, req.tag);
    throw CheckpointError(reason(err, "rank 0 could not start the save of '" + req.tag +
                                          "' (see its message)"));
  }

  // Phase 2: every rank's shard, rank 0's client state; then everyone learns every record.
  FileRecord rec, client;
  try {
    const auto tw = std::chrono::steady_clock::now();
    rec = write_shard(req.dir, req.tag, req.rank, *req.shard, req.write);
    res.write_ms = ms_since(tw);
    res.shard_bytes = rec.size;
    if (lead && !req.client_state_json.empty())
      client = write_client_state(req.dir, req.tag, req.client_state_json);
  } catch (const std::exception& e) {
    err = e.what();
  }
  if (agree(!err.empty(), "write")) {
    if (lead) abort_save(req.dir, req.tag);
    throw CheckpointError(reason(err, "another rank failed to write its shard of '" + req.tag +
                                          "' (see its message); the previous checkpoint is intact"));
  }
  std::vector<std::pair<uint64_t, uint64_t>> recs = {{rec.size, rec.checksum}};
  if (coll.gather) recs = collective([&] { return coll.gather(rec.size, rec.checksum); });
  ZT_ASSERT(static_cast<int>(recs.size()) == req.world, "persist_checkpoint: gathered ",
            recs.size(), " records for ", req.world, " ranks");

  // Phase 3: rank 0 writes the manifest, publishes the tag and `latest`, applies retention.
  if (lead) {
    Manifest m = req.manifest;
    m.tag = req.tag;
    m.world_size = req.world;
    m.files.clear();
    for (int r = 0; r < req.world; ++r)
      m.files.push_back({shard_file_name(r), recs[r].first, recs[r].second});
    if (!client.name.empty()) m.files.push_back(client);
    try {
      m = commit_save(req.dir, std::move(m), req.commit);
      for (const FileRecord& f : m.files) res.tag_bytes += f.size;
      res.tag_bytes += manifest_to_json(m).size();
      if (req.keep > 0) res.retired = apply_retention(req.dir, req.keep);
    } catch (const std::exception& e) {
      err = e.what();
      abort_save(req.dir, req.tag);
    }
  }
  if (agree(!err.empty(), "commit"))
    throw CheckpointError(reason(err, "rank 0 could not commit '" + req.tag + "' (see its message)"));
  res.total_ms = ms_since(t0);
  return res;
}

}  // namespace zt::io
