// zero/onebit.cpp: config checks, notices and settings of the 1-bit optimizers (zero/onebit.h).
#include "zero/onebit.h"

#include "core/error.h"
#include "io/checkpoint_store.h"

namespace zt::zero {
namespace {

bool onebit(io::OptimizerType t) {
  return t == io::OptimizerType::kOneBitAdam || t == io::OptimizerType::kZeroOneAdam ||
         t == io::OptimizerType::kOneBitLamb;
}

}  // namespace

void check_onebit_supported(const io::Config& c) {
  const io::OptimizerConfig& o = c.optimizer;
  if (!onebit(o.type)) return;
  const std::string name = io::to_string(o.type);
  if (c.zero.stage != 0)
    throw ConfigError("config key `zero_optimization.stage`: optimizer " + name +
                      " supports ZeRO stage 0 only (as in DeepSpeed), but stage is " +
                      std::to_string(c.zero.stage) +
                      "; set zero_optimization.stage: 0 or use Adam/AdamW/Lamb");
  if (c.data_types.grad_accum_dtype == io::DTypeName::kFp16 ||
      c.data_types.grad_accum_dtype == io::DTypeName::kBf16)
    throw ConfigError("config key `data_types.grad_accum_dtype`: optimizer " + name +
                      " needs fp32 gradient accumulation (it compresses the local fp32 "
                      "gradient itself); remove the key or set it to fp32");
  if (o.eps_inside_sqrt && o.type != io::OptimizerType::kOneBitLamb)
    throw ConfigError("config key `optimizer.params.eps_inside_sqrt`: not supported by " + name +
                      " (DeepSpeed accepts it and ignores it); remove it");
  if (o.type != io::OptimizerType::kZeroOneAdam && o.freeze_step < 1)
    throw ConfigError("config key `optimizer.params.freeze_step`: must be >= 1 for " + name +
                      " (the variance frozen after warm-up would be zero)");
}

void onebit_notices(const io::Config& c, std::vector<std::string>& out) {
  const io::OptimizerConfig& o = c.optimizer;
  if (!onebit(o.type)) return;
  if (o.cuda_aware)
    out.push_back("optimizer.params.cuda_aware: no effect: the compressed all-reduce moves host "
                  "memory (it matters with CUDA buffers and a CUDA-aware MPI)");
  if (o.comm_backend_name == io::CommBackend::kNccl)
    out.push_back("optimizer.params.comm_backend_name: nccl: the compressed all-reduce runs on "
                  "the training communicator (mpi); the nccl backend does not exist yet");
}

void onebit_settings(const io::Config& c, EngineSettings& s) {
  const io::OptimizerConfig& o = c.optimizer;
  if (!onebit(o.type)) return;
  s.optimizer_kind = o.type == io::OptimizerType::kOneBitAdam    ? optim::OptimizerKind::onebit_adam
                     : o.type == io::OptimizerType::kZeroOneAdam ? optim::OptimizerKind::zero_one_adam
                                                                 : optim::OptimizerKind::onebit_lamb;
  optim::OneBitParams& p = s.onebit;
  p.beta1 = static_cast<float>(o.beta1);
  p.beta2 = static_cast<float>(o.beta2);
  p.eps = static_cast<float>(o.eps);
  p.weight_decay = static_cast<float>(o.weight_decay);
  p.bias_correction = o.bias_correction;
  p.eps_inside_sqrt = o.eps_inside_sqrt;
  p.freeze_step = o.freeze_step;
  p.var_freeze_step = o.var_freeze_step;
  p.var_update_scaler = o.var_update_scaler;
  p.local_step_scaler = o.local_step_scaler;
  p.local_step_clipper = o.local_step_clipper;
  p.max_coeff = static_cast<float>(o.max_coeff);
  p.min_coeff = static_cast<float>(o.min_coeff);
  p.coeff_beta = static_cast<float>(o.coeff_beta);
  p.factor_max = static_cast<float>(o.factor_max);
  p.factor_min = static_cast<float>(o.factor_min);
  p.factor_threshold = static_cast<float>(o.factor_threshold);
}

void add_rank_state(optim::Optimizer& opt, const float* span, io::SafetensorsWriter& w) {
  for (auto& [name, buf] : opt.rank_state(span))
    w.add(kRankStatePrefix + name, DType::f32, {static_cast<int64_t>(buf->size())},
          buf->empty() ? nullptr : buf->data());
}

bool load_rank_state(optim::Optimizer& opt, float* span, const std::string& dir,
                     const std::string& tag, int rank, int saved_world, int world) {
  auto bufs = opt.rank_state(span);
  bool restored = false;
  if (!bufs.empty() && saved_world == world) {
    io::SafetensorsReader rd = io::open_shard(dir, tag, rank);
    restored = true;
    for (auto& [name, buf] : bufs) {
      const io::SafetensorsTensorInfo* info = rd.find(kRankStatePrefix + name);
      if (!info || info->dtype != DType::f32 || info->nbytes() % 4 != 0) {
        restored = false;  // a checkpoint from before rank_state, or another optimizer's
        break;
      }
    }
    if (restored)
      for (auto& [name, buf] : bufs) {
        const io::SafetensorsTensorInfo* info = rd.find(kRankStatePrefix + name);
        buf->resize(static_cast<size_t>(info->nbytes() / 4));
        if (!buf->empty()) rd.read_range(kRankStatePrefix + name, 0, buf->data(), info->nbytes());
      }
  }
  try {
    opt.rank_state_loaded(restored, span);
  } catch (const CheckpointError&) {
    throw;
  } catch (const Error& e) {
    throw CheckpointError(detail::str_cat("load_checkpoint: ", dir, "/", tag, " (saved by ",
                                          saved_world, " ranks, loading on ", world,
                                          "): ", e.what()));
  }
  return restored;
}

}  // namespace zt::zero
