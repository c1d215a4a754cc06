// apps/zerotrain/generate.cpp: `zerotrain generate`: rebuild the GPT a checkpoint describes
// (metadata "model"), load its consolidated weights (apps/zerotrain/ckpt.h, as `ckpt consolidate`
// reads them: fp32 master when present) and sample bytes after a prompt.
//
// Sampling is the plainest kind (nanoGPT's sample.py without top-k): softmax of logits / T, one
// uniform draw from a seeded mt19937_64 turned into a double by its top 53 bits (not
// std::uniform_real_distribution, whose output differs between standard libraries), inverse CDF.
// Each new byte re-runs the forward over the last seq_len bytes: there is no KV cache, which is
// fine for the small byte-level models this is for.
#include "apps/zerotrain/generate.h"

#include "apps/zerotrain/ckpt.h"
#include "core/error.h"
#include "core/ops.h"

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <map>
#include <random>
#include <vector>

namespace zt::app {

std::string generate_bytes(nn::GPT& model, const std::string& prompt, int n, double temperature,
                           uint64_t seed) {
  const int64_t T = model.config().seq_len;
  const int V = model.config().vocab_size;
  std::vector<int32_t> ctx;
  for (char c : prompt.empty() ? std::string("\n") : prompt)
    ctx.push_back(static_cast<unsigned char>(c));
  std::mt19937_64 rng(seed);
  std::string out;
  std::vector<double> p(V);
  Tensor last = Tensor::empty({V});  // the last position's logits, on the host
  for (int i = 0; i < n; ++i) {
    const int64_t t = std::min<int64_t>(static_cast<int64_t>(ctx.size()), T);
    Tensor ids = Tensor::empty({1, t}, DType::i32), tgt = Tensor::empty({1, t}, DType::i32);
    std::copy(ctx.end() - t, ctx.end(), ids.data<int32_t>());
    std::fill_n(tgt.data<int32_t>(), t, -1);  // no targets: only the logits are wanted
    model.forward(ids, tgt);
    ops::copy(model.logits().flat_view((t - 1) * V, {V}), last);  // from a GPU model too
    const float* logits = last.data<float>();
    int next = 0;
    if (temperature <= 0.0) {
      next = static_cast<int>(std::max_element(logits, logits + V) - logits);
    } else {
      const double mx = *std::max_element(logits, logits + V);
      double sum = 0.0;
      for (int v = 0; v < V; ++v) sum += p[v] = std::exp((logits[v] - mx) / temperature);
      double r = static_cast<double>(rng() >> 11) * 0x1.0p-53 * sum;
      while (next < V - 1 && (r -= p[next]) >= 0) ++next;
    }
    ctx.push_back(next);
    out.push_back(static_cast<char>(next));
  }
  return out;
}

int run_generate(const GenerateOptions& opt) {
  if (opt.bytes < 0) throw ConfigError("--bytes " + std::to_string(opt.bytes) + ": must be >= 0");
  if (!(opt.temperature >= 0.0) || !std::isfinite(opt.temperature))
    throw ConfigError(detail::str_cat("--temperature ", opt.temperature,
                                      ": must be a finite number >= 0 (0: greedy)"));
  ConsolidatedWeights w = load_consolidated(opt.checkpoint, opt.tag);
  ZT_CHECK_DATA(w.model.vocab_size == 256, opt.checkpoint + "/" + w.tag,
                "the model's vocabulary has ", w.model.vocab_size,
                " tokens; generate reads and writes bytes, so it needs a byte-level model "
                "(model.vocab_size 256)");
  if (!w.note.empty()) std::fprintf(stderr, "note: %s\n", w.note.c_str());

  nn::GPT model(w.model);
  std::map<std::string, const Tensor*> by_name;
  for (const auto& [name, t] : w.tensors) by_name[name] = &t;
  const std::vector<nn::Parameter*> params = model.parameters();
  ZT_CHECK_DATA(params.size() == w.tensors.size(), opt.checkpoint + "/" + w.tag, "it holds ",
                w.tensors.size(), " tensors, the GPT its metadata describes has ", params.size());
  for (nn::Parameter* p : params) {
    auto it = by_name.find(p->name);
    ZT_CHECK_DATA(it != by_name.end(), opt.checkpoint + "/" + w.tag, "no tensor ", p->name);
    ZT_CHECK_DATA(it->second->shape() == p->value.shape(), opt.checkpoint + "/" + w.tag, p->name,
                  " has shape ", shape_str(it->second->shape()), ", the model wants ",
                  shape_str(p->value.shape()));
    ops::copy(*it->second, p->value);
  }
  std::fprintf(
      stderr,
      "zerotrain: %s/%s (global step %" PRId64 "): %d bytes, temperature %g, seed %" PRIu64 "\n",
      opt.checkpoint.c_str(), w.tag.c_str(), w.global_step, opt.bytes, opt.temperature, opt.seed);
  std::fflush(stderr);

  const std::string text = generate_bytes(model, opt.prompt, opt.bytes, opt.temperature, opt.seed);
  std::fwrite(opt.prompt.data(), 1, opt.prompt.size(), stdout);
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
  return 0;
}

}  // namespace zt::app
