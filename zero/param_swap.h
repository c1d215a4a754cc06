// zero/param_swap.h: ZeRO-Infinity's parameter offload to NVMe (`offload_param: {device: nvme}`,
// stage 3): this rank's partition of the 16-bit (or fp32) weights lives in a swap file, not in
// memory, and is read piece by piece when a unit is gathered.
//
// The file <nvme_path>/zerotrain_params_rank<r>/params.swp holds the partition in the model dtype,
// element i at byte i * dtype_size (io/aio.h does O_DIRECT for the aligned middle of a request and
// buffered I/O for unaligned heads and tails). Who reads and writes it:
//   ParamCoordinator::gather   this rank's piece of a unit, into a pool buffer, before the
//                              all_gather_v (zero/stage3.cpp);
//   Engine::step               the updated partition after the optimizer (per sub-group with
//                              offload_optimizer, else the whole partition through a buffer);
//   checkpoints                read for a save, written by a load.
// The space is reserved at construction (a full drive fails there, naming the file); the file and
// its folder are removed by the destructor.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/dtype.h"
#include "io/aio.h"

namespace zt::zero {

class ParamSwap {
 public:
  ParamSwap(const std::string& nvme_path, int rank, int64_t n, DType dtype, const io::AioConfig& aio);
  ~ParamSwap();
  ParamSwap(const ParamSwap&) = delete;
  ParamSwap& operator=(const ParamSwap&) = delete;

  // Elements [offset, offset + count) of the partition, to/from a caller buffer (blocking).
  void read(int64_t offset, int64_t count, void* dst);
  void write(int64_t offset, int64_t count, const void* src);

  int64_t size() const { return n_; }
  DType dtype() const { return dtype_; }
  int64_t file_bytes() const { return n_ * static_cast<int64_t>(dtype_size(dtype_)); }
  const std::string& path() const { return path_; }

 private:
  int64_t n_;
  DType dtype_;
  std::string dir_, path_;
  std::unique_ptr<io::AioFile> file_;
  std::unique_ptr<io::AioEngine> aio_;
};

}  // namespace zt::zero
