// core/nn/gpt.h: a GPT-2 style language model (Radford et al. 2019; nanoGPT / llm.c layout):
// token + learned position embeddings, n_layer pre-LayerNorm transformer blocks, a final LayerNorm
// and a language-model head, optionally tied to the token embedding.
//
// The ZeRO engine needs to act between blocks (stage 3 gathers a block's parameters before its
// forward and releases them after; stages 2/3 reduce a block's gradients as soon as its backward is
// done). So the model is a sequence of *units* (unit 0: embeddings; units 1..L: blocks; unit L+1:
// final LayerNorm + head) and forward/backward call BlockHooks around each unit.
//
// Activation checkpointing (Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost";
// DeepSpeed's `activation_checkpointing`, HF's gradient checkpointing). With
// GPTConfig::checkpoint_activations the n_layer blocks are cut into `number_checkpoints` segments
// of consecutive blocks. Forward keeps only each segment's input (and the last block's output, the
// final LayerNorm's input); backward, reaching a segment, reruns its forward from the saved input
// (bit for bit the same: the ops are deterministic) and then runs its backward.
//
// Where the memory goes: layers keep their buffers as members (ensure_like), so "not keeping"
// them means sharing them. A checkpointed block borrows its activation buffers (Module::
// activation_buffers: forward outputs, saved-input handles, backward workspaces) from one set per
// position in a segment, shared by every segment, for the length of each forward, recompute or
// backward call, and holds empty handles in between. Memory: ceil(n_layer / number_checkpoints)
// block-sized sets plus (number_checkpoints + 1) x rows x n_embd floats of saved boundaries, in
// one contiguous buffer (DeepSpeed's contiguous_memory_optimization, always on), instead of
// n_layer block-sized sets. No allocation in the steady state either way.
#pragma once

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "core/nn/attention.h"

namespace zt::nn {

struct GPTConfig {
  int n_layer = 4;
  int n_embd = 128;
  int n_head = 4;
  int seq_len = 128;     // maximum sequence length (size of the position table)
  int vocab_size = 256;
  bool tie_weights = true;  // lm_head.weight is wte.weight (GPT-2)
  double init_std = 0.02;   // GPT-2's initialisation scale
  // Recompute the blocks in backward instead of keeping their activations (see above).
  bool checkpoint_activations = false;
  // DeepSpeed's number_checkpoints: how many checkpoints (segments of consecutive blocks, one saved
  // input each) the blocks are cut into; 0 means n_layer, one block each (Megatron's and HF's
  // choice). Fewer segments keep fewer inputs but recompute longer runs of blocks at once: k
  // segments need k + 1 saved boundaries and ceil(n_layer / k) block-sized buffer sets. When
  // n_layer is not a multiple of k, the first n_layer % k segments get one block more.
  int number_checkpoints = 0;
};

class Block : public Module {
 public:
  Block(int64_t dim, int n_head);
  const Tensor& forward(const Tensor& x, int64_t batch, int64_t seq);  // [B*T, C] -> [B*T, C]
  // dy may be this block's own dx buffer (a checkpointed block's previous user of the same shared
  // set wrote it there): it is last read before the result is written.
  const Tensor& backward(const Tensor& dy);
  LayerNorm& ln1() { return ln1_; }
  CausalSelfAttention& attn() { return attn_; }
  LayerNorm& ln2() { return ln2_; }
  MLP& mlp() { return mlp_; }

 private:
  LayerNorm ln1_;
  CausalSelfAttention attn_;
  LayerNorm ln2_;
  MLP mlp_;
  Tensor h_, out_, dh_, dx_;
};

// Called around each unit; default no-ops. unit indexes: 0 .. num_units()-1.
struct BlockHooks {
  virtual ~BlockHooks() = default;
  virtual void before_forward(int unit) {}
  virtual void after_forward(int unit) {}
  virtual void before_backward(int unit) {}
  virtual void after_backward(int unit) {}  // the unit's parameter gradients are complete
  // Activation checkpointing: a checkpointed block's forward reruns during backward, between the
  // previous unit's after_backward and its own before_backward (a segment of several blocks is
  // rerun, first to last, before its last block's before_backward). before_forward/after_forward
  // are not called again; these are instead, e.g. for ZeRO stage 3 to gather the block's
  // parameters again (before_recompute) and release them (after_recompute).
  virtual void before_recompute(int unit) {}
  virtual void after_recompute(int unit) {}
};

class GPT : public Module {
 public:
  explicit GPT(const GPTConfig& cfg);
  const GPTConfig& config() const { return cfg_; }

  // GPT-2 initialisation from a seed: weights normal(0, init_std = 0.02), residual projections
  // (attn.proj, mlp.proj) normal(0, init_std / sqrt(2 * n_layer)), biases zero, LayerNorm (1, 0).
  void init_weights(uint64_t seed);

  // ids, targets: i32 [B, T]. Returns the mean cross-entropy loss (targets < 0 ignored).
  // Devices: the model computes where its parameters are; ids and targets must be there too (the
  // engine copies batches up). Every activation follows (module.h, ensure_like). On a GPU the
  // returned loss is read back, so forward waits for the stream there; core/nn reads nothing else
  // back (the ops' id range checks still copy ids down: core/ops.cpp, require_ids).
  float forward(const Tensor& ids, const Tensor& targets, BlockHooks* hooks = nullptr);
  // Logits [B*T, V] of the last forward (for sampling / evaluation).
  const Tensor& logits() const { return logits_; }
  // Backward of the last forward's loss scaled by dloss (loss scaling multiplies it in).
  void backward(float dloss = 1.f, BlockHooks* hooks = nullptr);

  int num_units() const { return cfg_.n_layer + 2; }
  // Activation checkpointing's segments as [first, end) block indexes (unit = block + 1); empty
  // when checkpoint_activations is off.
  const std::vector<std::pair<int, int>>& checkpoint_segments() const { return segments_; }
  // Parameters of one unit (the tied head belongs to unit 0, the embedding).
  std::vector<Parameter*> unit_parameters(int unit);

  Embedding& wte() { return wte_; }
  Embedding& wpe() { return wpe_; }
  Block& block(int i) { return *blocks_[i]; }
  LayerNorm& ln_f() { return ln_f_; }

 private:
  GPTConfig cfg_;
  Embedding wte_, wpe_;
  std::vector<std::unique_ptr<Block>> blocks_;
  LayerNorm ln_f_;
  std::unique_ptr<Linear> lm_head_;  // only when not tied
  int64_t batch_ = 0, seq_ = 0;
  Tensor pos_ids_, x0_, logits_, probs_, targets_, dlogits_, dx_;
  int64_t pos_seq_ = 0;  // the T that pos_ids_ was built for (its cache key, with numel and device)

  // ---- activation checkpointing (gpt.cpp, "checkpointing")
  class BufferLoan;
  void recompute(int segment, BlockHooks& h);
  Tensor boundary(int k) const;  // the k-th saved boundary, [rows, C]
  std::vector<std::pair<int, int>> segments_;
  std::vector<int> segment_of_;   // per block
  std::vector<int> shared_set_;   // per block: the shared set it borrows (position in segment)
  std::vector<std::vector<Tensor*>> block_buffers_;  // each block's activation_buffers()
  std::vector<std::vector<Tensor>> shared_;          // ceil(n_layer / k) sets
  Tensor boundaries_;  // [k + 1, stride]: segment inputs, then the last block's output
  int64_t boundary_stride_ = 0;
};

}  // namespace zt::nn
