// zero/offload.h: ZeRO-Offload / ZeRO-Infinity optimizer offload (`offload_optimizer`): the fp32
// master weights and Adam's m and v of this rank's partition, kept in host memory (device cpu) or
// in a swap file on an NVMe drive (device nvme), and the Adam/AdamW step over them.
//
// DeepSpeed (Ren et al. 2021, "ZeRO-Offload"; Rajbhandari et al. 2021, "ZeRO-Infinity") runs
// DeepSpeedCPUAdam on the host over `sub_group_size` pieces of the partition: for NVMe each piece
// is swapped in (fp32 weights + m + v), updated, swapped out, and its updated weights are copied
// back to the 16-bit model while the next piece computes. OptimizerOffload does the same:
//   step(grads, segments, lr, on_updated)  for each sub-group i in order:
//       nvme: wait for its read (issued earlier into one of `buffer_count` buffers);
//             issue the read of sub-group i + buffer_count - 1 (pipeline_read);
//       Adam on the sub-group (optim::adam_update: the kernels of make_adam, so the result is bit
//       for bit the in-memory optimizer's);
//       nvme: issue the write of sub-group i (pipeline_write: do not wait for it);
//       on_updated(offset, count, master): the engine rounds the sub-group's new fp32 weights into
//       its 16-bit parameters while the disk writes sub-group i-1.. and reads i+1...
//   At the end of step() every write is complete (a checkpoint may read the files right after).
// With buffer_count = B the disk works on up to B - 1 reads ahead plus the writes of the last
// sub-groups while one sub-group computes; a read into a buffer whose previous sub-group is still
// being written is ordered after that write by the aio layer (io::AioOrder::kAfterPrevious, block
// by block on the buffer's memory, without draining the queue), so B = 2 already overlaps both
// directions with the update. While I/O is in flight the update runs on the cores the aio threads
// leave free (OffloadOptions::update_threads).
//
// Sub-groups. sub_group_size S >= 1 cuts the partition into pieces of S parameters (the last one
// shorter). S = 0 is DeepSpeed's "one sub-group per parameter" (its _create_fp16_sub_groups closes
// a sub-group as soon as it holds at least sub_group_size elements, so 0 closes one after every
// parameter): the pieces are cut where the model's tensors begin (OffloadOptions::param_starts,
// filled by the engine), e.g. axolotl's zero3_bf16_cpuoffload_all.json.
//
// Swap file layout: <nvme_path>/zerotrain_rank<r>/optimizer.swp holds, for sub-group i, a slot
// [master | exp_avg | exp_avg_sq] of 3 * stride_i bytes, stride_i = the sub-group's fp32 bytes
// rounded up to 4 KiB, the slots one after the other: every transfer is one O_DIRECT request at an
// aligned offset, and a step reads and writes the file sequentially. The swap buffers hold the
// largest slot.
// The file is reserved at construction (fallocate: a full drive fails there, naming it) and reads
// as zeros, which is the initial m and v. The directory and file are removed by the destructor.
//
// Config keys (offload_options() maps them, zero_optimization.offload_optimizer.*):
//   device        cpu | nvme.          nvme_path       the swap directory's parent.
//   buffer_count  nvme: swap buffers (at least 1; more than the sub-group count are not used).
//   pipeline_read, pipeline_write  nvme: prefetch the next sub-groups / do not wait for a
//                 sub-group's write before the next one (DeepSpeed's PipelinedOptimizerSwapper).
//                 Both false (DeepSpeed's default): swap in, update, swap out, one at a time.
//   pin_memory    page-lock (mlock) the host copy (cpu) or the swap buffers (nvme). Without a GPU
//                 there is no DMA engine to need pinned pages; locking keeps the optimizer state
//                 out of the kernel's swap and page faults out of the step. If the kernel refuses
//                 (RLIMIT_MEMLOCK), one warning line and the memory stays pageable.
//   fast_init     accepted, always on: DeepSpeed's fast_init skips writing the initial state to
//                 the swap files; here the files are reserved with fallocate, which reads as
//                 zeros, so only the master weights are ever written before the first step.
//   ratio         < 1 (partial offload: the rest of the state on the GPU) needs a GPU: ConfigError
//                 on this CPU-only backend.
//   sub_group_size (zero_optimization) and the aio block: see above and io/aio.h.
#pragma once

#include "io/aio.h"
#include "io/config.h"
#include "optim/optimizer.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace zt::zero {

struct OffloadOptions {
  io::OffloadDevice device = io::OffloadDevice::kCpu;  // kCpu or kNvme
  std::string nvme_path;  // nvme: files go to <nvme_path>/zerotrain_rank<rank>/
  int rank = 0;
  bool pin_memory = false;
  int64_t buffer_count = 4;
  bool pipeline_read = true;
  bool pipeline_write = true;
  int64_t sub_group_size = 1'000'000'000;  // 0: one sub-group per parameter (param_starts)
  // sub_group_size 0: where the model's tensors begin inside this rank's partition (offsets in
  // (0, n), increasing; the partition's start is implied). Ignored for sub_group_size >= 1.
  std::vector<int64_t> param_starts;
  io::AioConfig aio;
  // nvme: OpenMP threads for the update of a sub-group while the disk works on others (the step
  // restores the caller's count after). 0 = automatic: the cores left to the update by the aio
  // threads (omp_get_num_procs() - aio.thread_count, between 1 and omp_get_max_threads()) when
  // the pipeline overlaps I/O with the update, else omp_get_max_threads(). Why: each sub-group's
  // update is one parallel region, and after it libgomp's idle threads spin (GOMP_SPINCOUNT,
  // milliseconds) on the cores the io_uring thread, the kernel's completion work and the caller
  // need; on 2 cores that spinning halved the swap throughput at 2M-parameter sub-groups, while
  // one core updates a sub-group far faster than the disk moves it. The result is the same bits
  // for any count (the update is elementwise).
  int64_t update_threads = 0;
};

// zero_optimization.offload_optimizer + sub_group_size + aio -> OffloadOptions, for this rank.
// Throws ConfigError naming the key for what cannot be done here (device none, ratio < 1,
// buffer_count 0). param_starts is left for the engine, which knows the partition.
OffloadOptions offload_options(const io::Config& cfg, int rank);

class OptimizerOffload {
 public:
  // Holds the state of a partition of n parameters. m and v start at zero; so do the master
  // weights: set them with write_state("master", ...) before the first step. Throws zt::Error
  // naming the path when the swap directory or file cannot be made or the drive lacks the space.
  OptimizerOffload(const optim::AdamParams& adam, int64_t n, const OffloadOptions& opt);
  ~OptimizerOffload();  // removes the swap file and the rank's directory
  OptimizerOffload(const OptimizerOffload&) = delete;
  OptimizerOffload& operator=(const OptimizerOffload&) = delete;

  // Called once per sub-group, in order, on the caller's thread: [offset, offset + count) of the
  // partition now holds master[0, count) (valid during the call only).
  using SubGroupDone = std::function<void(int64_t offset, int64_t count, const float* master)>;

  // One Adam/AdamW step (step_count() + 1) of the whole partition: grads[0, n) in fp32 (already
  // unscaled and clipped), segments over [0, n) as for optim::Optimizer::step, learning rate lr.
  void step(const float* grads, const std::vector<optim::Segment>& segments, float lr,
            const SubGroupDone& on_updated = {});

  int64_t size() const { return n_; }
  int64_t sub_group_size() const { return group_; }  // the largest sub-group's size
  int64_t num_sub_groups() const { return groups_; }
  // Sub-group g is [sub_group_begin(g), sub_group_begin(g + 1)) of the partition.
  int64_t sub_group_begin(int64_t g) const { return bounds_[static_cast<size_t>(g)]; }
  bool on_nvme() const { return file_ != nullptr; }
  int64_t step_count() const { return t_; }
  int update_threads() const;  // OpenMP threads of the update in step() (OffloadOptions)
  void set_step_count(int64_t t) { t_ = t; }
  bool set_betas(float beta1, float beta2);  // OneCycle's momentum cycling
  const optim::AdamParams& adam() const { return adam_; }

  // The named state for checkpoints: "master" (fp32 weights), "exp_avg", "exp_avg_sq"; the range
  // [offset, offset + count) of the partition, copied to/from a caller buffer. Not during step().
  static const std::vector<std::string>& state_names();
  void read_state(const std::string& name, int64_t offset, int64_t count, float* dst);
  void write_state(const std::string& name, int64_t offset, int64_t count, const float* src);

  struct Memory {
    int64_t host_bytes = 0;  // cpu: master + m + v; nvme: the swap buffers
    int64_t file_bytes = 0;  // nvme: the swap file
  };
  Memory memory() const;
  std::string describe() const;          // one line: device, sizes, buffers, path
  const std::string& swap_path() const;  // "" on cpu

 private:
  int state_index(const std::string& name) const;
  int64_t group_of(int64_t offset) const;  // the sub-group holding element `offset`
  // nvme: bytes per state of sub-group g's slot (its fp32 bytes rounded up to 4 KiB), and where
  // the slot starts in the file.
  int64_t stride(int64_t g) const { return slots_[static_cast<size_t>(g) + 1] - slots_[static_cast<size_t>(g)]; }
  int64_t slot_offset(int64_t g) const { return 3 * slots_[static_cast<size_t>(g)]; }
  void step_nvme(const float* grads, const std::vector<optim::Segment>& segments, float lr,
                 const SubGroupDone& on_updated);

  optim::AdamParams adam_;
  OffloadOptions opt_;
  int64_t n_ = 0, group_ = 0, groups_ = 0, stride_ = 0;  // stride_: the largest slot's stride
  std::vector<int64_t> bounds_;  // groups_ + 1 element offsets: 0, ..., n_
  std::vector<int64_t> slots_;   // nvme: groups_ + 1 byte offsets / 3: prefix sums of strides
  int64_t t_ = 0;
  // cpu: [master | exp_avg | exp_avg_sq], plane_ floats apart (see the constructor).
  int64_t plane_ = 0;
  io::AlignedBuffer host_;
  // nvme (declared before aio_, which is destroyed first and waits for its requests).
  std::string dir_, path_;
  std::unique_ptr<io::AioFile> file_;
  std::vector<io::AlignedBuffer> buffers_;  // 3 * stride_ bytes each
  std::unique_ptr<io::AioEngine> aio_;
};

// An optim::Optimizer face for an OptimizerOffload: name ("AdamW, offloaded to nvme"), step count,
// betas, so what asks the engine's optimizer for those works unchanged. The engine calls
// OptimizerOffload::step itself and checkpoints use read_state / write_state: the facade's step()
// throws and its state() is empty (the state is not in this process's memory as vectors).
std::unique_ptr<optim::Optimizer> make_offload_facade(OptimizerOffload& offload);

}  // namespace zt::zero
