// zero/param_swap.cpp: the stage-3 parameter swap file (see param_swap.h).
#include "zero/param_swap.h"

#include <filesystem>
#include <system_error>

#include "core/error.h"

namespace zt::zero {

namespace fs = std::filesystem;

ParamSwap::ParamSwap(const std::string& nvme_path, int rank, int64_t n, DType dtype,
                     const io::AioConfig& aio)
    : n_(n), dtype_(dtype) {
  ZT_CHECK_CONFIG(!nvme_path.empty(), "zero_optimization.offload_param.nvme_path",
                  "device nvme needs a folder on the drive (nvme_path)");
  dir_ = (fs::path(nvme_path) / ("zerotrain_params_rank" + std::to_string(rank))).string();
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec)
    throw Error(detail::str_cat("offload_param: cannot create the swap directory ", dir_,
                                " (zero_optimization.offload_param.nvme_path): ", ec.message()));
  path_ = (fs::path(dir_) / "params.swp").string();
  file_ = std::make_unique<io::AioFile>(path_, io::AioFile::Mode::kCreate);
  file_->allocate(std::max<int64_t>(file_bytes(), 1));
  aio_ = std::make_unique<io::AioEngine>(aio);
}

ParamSwap::~ParamSwap() {
  aio_.reset();  // waits for its requests
  file_.reset();
  std::error_code ec;
  fs::remove(path_, ec);
  fs::remove(dir_, ec);
}

void ParamSwap::read(int64_t offset, int64_t count, void* dst) {
  ZT_ASSERT(offset >= 0 && count >= 0 && offset + count <= n_, "ParamSwap::read out of range");
  if (count == 0) return;
  const int64_t es = static_cast<int64_t>(dtype_size(dtype_));
  aio_->wait(aio_->read(*file_, dst, count * es, offset * es));
}

void ParamSwap::write(int64_t offset, int64_t count, const void* src) {
  ZT_ASSERT(offset >= 0 && count >= 0 && offset + count <= n_, "ParamSwap::write out of range");
  if (count == 0) return;
  const int64_t es = static_cast<int64_t>(dtype_size(dtype_));
  aio_->wait(aio_->write(*file_, src, count * es, offset * es));
}

}  // namespace zt::zero
