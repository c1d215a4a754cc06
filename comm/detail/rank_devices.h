// comm/detail/rank_devices.h: every rank's host and GPU identity, gathered over MPI_COMM_WORLD
// (implemented in comm/make_communicator.cpp; used there and by make_nccl_communicator, which
// refuses shared GPUs before anyone enters NCCL).
#pragma once

#include "comm/backend.h"

#include <vector>

namespace zt::comm::detail {

// ranks[r] = rank r's host name and the identity of its GPU `device` as rank r passed it ("" for
// none: device < 0, no GPU, CPU-only build). Collective over MPI_COMM_WORLD.
std::vector<RankDevice> gather_rank_devices(int device);

}  // namespace zt::comm::detail
