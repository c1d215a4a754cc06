// tests/io/test_config.cpp: the config reader (io/config.h).
//
// Every error path is checked by substrings of its message: unknown keys with "did you mean",
// wrong types with line:column, duplicate keys, features not built yet, DeepSpeed blocks outside
// zerotrain's scope, --set overrides; then DeepSpeed's batch-size rule table, deprecated aliases,
// "auto", counts written as 5e8, every JSON under configs/deepspeed/ (and the real configs that
// must be refused, under tests/io/data/), and dump_config round trips.
#include "core/error.h"
#include "io/config.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

namespace zt::io {
namespace {

namespace fs = std::filesystem;

Config parse(const std::string& text, const std::vector<std::string>& overrides = {}) {
  return parse_config_text(text, "t.yaml", overrides);
}

// The message of the ConfigError that parsing `text` throws ("" and a failure if none).
std::string error_of(const std::string& text, const std::vector<std::string>& overrides = {}) {
  try {
    parse(text, overrides);
  } catch (const ConfigError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no ConfigError for:\n" << text;
  return "";
}

#define EXPECT_HAS(msg, ...)                                                            \
  do {                                                                                  \
    const std::string m_ = (msg);                                                       \
    for (const char* s_ : std::initializer_list<const char*>{__VA_ARGS__})              \
      EXPECT_NE(m_.find(s_), std::string::npos) << "missing `" << s_ << "` in: " << m_; \
  } while (0)

bool has_notice(const Config& c, const std::string& part) {
  for (const std::string& n : c.notices)
    if (n.find(part) != std::string::npos) return true;
  return false;
}

// ---- defaults and formats -----------------------------------------------------------------------
TEST(ConfigDefaults, EmptyConfigIsTheTinyJob) {
  Config c = parse("");
  EXPECT_EQ(c.model, ModelConfig{});
  EXPECT_EQ(c.model.n_layer, 4);
  EXPECT_EQ(c.model.n_embd, 128);
  EXPECT_EQ(c.model.vocab_size, 256);
  EXPECT_EQ(c.optimizer.type, OptimizerType::kAdamW);
  EXPECT_DOUBLE_EQ(c.optimizer.lr, 1e-3);
  EXPECT_EQ(c.scheduler.type, SchedulerType::kNone);
  EXPECT_EQ(c.zero.stage, 0);
  EXPECT_FALSE(c.zero.overlap_comm);
  EXPECT_FALSE(c.fp16.enabled);
  EXPECT_FALSE(c.bf16.enabled);
  EXPECT_EQ(c.device, Device::kAuto);
  EXPECT_EQ(c.data.format, DataFormat::kAuto);
  EXPECT_STREQ(to_string(c.data.format), "auto");  // what io::load_tokens takes
  EXPECT_EQ(c.source_path, "t.yaml");
  EXPECT_TRUE(c.notices.empty());
  EXPECT_FALSE(c.train_batch_size.has_value());
  resolve_batch_sizes(c, 1);
  EXPECT_EQ(*c.train_micro_batch_size_per_gpu, kDefaultMicroBatch);
  EXPECT_EQ(*c.gradient_accumulation_steps, 1);
  EXPECT_EQ(*c.train_batch_size, kDefaultMicroBatch);
}

TEST(ConfigDefaults, DeepSpeedDefaultsWhenBlocksAreEmpty) {
  Config c = parse("zero_optimization: {}\nfp16: {}\n");
  EXPECT_EQ(c.zero.reduce_bucket_size, 500000000);
  EXPECT_EQ(c.zero.allgather_bucket_size, 500000000);
  EXPECT_EQ(c.zero.sub_group_size, 1000000000);
  EXPECT_EQ(c.zero.stage3_prefetch_bucket_size, 50000000);
  EXPECT_EQ(c.zero.stage3_param_persistence_threshold, 100000);
  EXPECT_TRUE(c.zero.contiguous_gradients);
  EXPECT_EQ(c.fp16.initial_scale_power, 16);
  EXPECT_EQ(c.fp16.loss_scale_window, 1000);
  EXPECT_EQ(c.fp16.hysteresis, 2);
  EXPECT_EQ(c.steps_per_print, 10);
  EXPECT_DOUBLE_EQ(c.gradient_clipping, 0.0);
}

TEST(ConfigFormats, YamlAndJsonReadTheSame) {
  Config y = parse(
      "train_micro_batch_size_per_gpu: 4\n"
      "zero_optimization:\n  stage: 2\n  reduce_bucket_size: 5e8\n"
      "optimizer:\n  type: Adam\n  params: {lr: 3e-4, betas: [0.9, 0.95]}\n"
      "model: {n_layer: 2, n_embd: 64}\n");
  Config j = parse(
      R"({"train_micro_batch_size_per_gpu": 4, "zero_optimization": {"stage": 2, "reduce_bucket_size": 5e8},
          "optimizer": {"type": "Adam", "params": {"lr": 3e-4, "betas": [0.9, 0.95]}},
          "model": {"n_layer": 2, "n_embd": 64}})");
  EXPECT_EQ(y, j);
  EXPECT_EQ(y.zero.stage, 2);
  EXPECT_DOUBLE_EQ(y.optimizer.beta2, 0.95);
  EXPECT_EQ(y.model.n_layer, 2);
}

TEST(ConfigFormats, OwnSections) {
  Config c = parse(
      "model: {n_layer: 6, n_head: 6, n_embd: 384, seq_len: 256, vocab_size: 50304, tie_weights: "
      "false,"
      " dropout: 0.1, checkpoint_activations: true}\n"
      "data: {path: /data/tok.bin, format: tokens_u16, val_fraction: 0.05, shuffle: false}\n"
      "training: {steps: 5000, seed: 7, eval_interval: 250, eval_batches: 20}\n"
      "checkpoint: {dir: /ckpt, interval: 500, keep: 3, async: true, resume: false, "
      "tag_validation: fail,"
      " use_node_local_storage: true, parallel_write: {pipeline_stage: true}}\n"
      "comm: {backend: nccl, timeout_s: 600}\n"
      "device: cuda\n");
  EXPECT_EQ(c.model.n_embd, 384);
  EXPECT_FALSE(c.model.tie_weights);
  EXPECT_TRUE(c.model.checkpoint_activations);
  EXPECT_EQ(c.data.format, DataFormat::kTokensU16);
  EXPECT_EQ(c.data.path, "/data/tok.bin");
  EXPECT_EQ(c.training.steps, 5000);
  EXPECT_EQ(c.checkpoint.interval, 500);
  EXPECT_EQ(c.checkpoint.tag_validation, TagValidation::kFail);
  EXPECT_TRUE(c.checkpoint.parallel_write_pipeline_stage);
  EXPECT_EQ(c.comm.backend, CommBackend::kNccl);
  EXPECT_EQ(c.device, Device::kCuda);
}

TEST(ConfigFormats, AnchorsAndAliasesWork) {
  Config c = parse("tensorboard: &mon {enabled: true, output_path: logs}\ncsv_monitor: *mon\n");
  EXPECT_TRUE(c.monitors.csv_monitor.enabled);
  EXPECT_EQ(c.monitors.csv_monitor.output_path, "logs");
}

// ---- errors: unknown keys -----------------------------------------------------------------------
TEST(ConfigErrors, UnknownKeyNamesPathLineAndClosestKey) {
  EXPECT_HAS(error_of("zero_optimization:\n  stage: 2\n  reduce_bucket_sise: 5e8\n"), "t.yaml:3:3",
             "`zero_optimization.reduce_bucket_sise`", "unknown key",
             "did you mean `reduce_bucket_size`?");
  EXPECT_HAS(error_of("fp16: {enabeld: true}\n"), "`fp16.enabeld`", "did you mean `enabled`?");
  EXPECT_HAS(error_of("train_micro_batch_size: 4\n"),
             "did you mean `train_micro_batch_size_per_gpu`?");
}

// The same words in another order (DeepSpeedExamples' ds_zero-offload_10B_config.json writes
// `comm_overlap`): edit distance alone finds nothing that close.
TEST(ConfigErrors, UnknownKeyWithItsWordsSwapped) {
  EXPECT_HAS(error_of("zero_optimization: {stage: 2, comm_overlap: true}\n"),
             "`zero_optimization.comm_overlap`", "did you mean `overlap_comm`?");
  EXPECT_HAS(error_of("zero_optimization: {bucket_size_reduce: 5e8}\n"),
             "did you mean `reduce_bucket_size`?");
  EXPECT_HAS(error_of("zero_optimization: {overlap: true}\n"), "unknown key");
}

TEST(ConfigErrors, UnknownKeyThatLivesInAnotherBlock) {
  EXPECT_HAS(error_of("reduce_bucket_size: 5e8\n"), "t.yaml:1:1", "`reduce_bucket_size`",
             "did you mean `zero_optimization.reduce_bucket_size`?");
  EXPECT_HAS(error_of("model: {steps: 10}\n"), "`model.steps`", "did you mean `training.steps`?");
  // A top-level block written inside another (aio inside zero_optimization).
  EXPECT_HAS(error_of("zero_optimization: {stage: 3, aio: {queue_depth: 32}}\n"),
             "`zero_optimization.aio`", "did you mean the top-level `aio`?");
}

TEST(ConfigErrors, UnknownKeyWithoutSuggestionListsTheValidKeys) {
  EXPECT_HAS(error_of("aio: {xyzzy: 1}\n"), "`aio.xyzzy`", "valid keys here:", "block_size",
             "queue_depth");
  EXPECT_HAS(error_of("trainig: {steps: 1}\n"), "`trainig`", "unknown key",
             "did you mean `training`?");
}

// DeepSpeed reads the top level as a plain dict: keys it does not know are ignored there (only
// its blocks forbid extras). Published configs rely on it (LLaMA-Factory's `comms_config` and
// `monitor_config`, "_comment", DeepSpeedExamples' `cuda_visible_devices`): a notice, no error.
// A key close to a known one is still a typo.
TEST(ConfigErrors, UnrelatedTopLevelKeysAreIgnoredWithANotice) {
  Config c = parse(
      "_comment: see the docs\ncomms_config: {verbose: false}\n"
      "monitor_config: {enabled: true, tag: DeepSpeedMonitor}\ncuda_visible_devices: 0\n"
      "qwertyuiop: 1\n");
  ASSERT_EQ(c.notices.size(), 5u);
  EXPECT_TRUE(
      has_notice(c, "t.yaml:2:1: `comms_config` is not a key DeepSpeed or zerotrain reads"));
  EXPECT_TRUE(has_notice(c, "`monitor_config`"));
  EXPECT_TRUE(has_notice(c, "DeepSpeed ignores unknown top-level keys"));
  c.notices.clear();
  EXPECT_EQ(c, parse(""));  // nothing else changes
  // Inside a block the rule stays strict, as in DeepSpeed's config models.
  EXPECT_HAS(error_of("zero_optimization: {comms_config: 1}\n"), "unknown key");
  EXPECT_HAS(error_of("zero_optimizaton: {stage: 2}\n"), "did you mean `zero_optimization`?");
  EXPECT_HAS(error_of("fp8: {enabled: true}\n"), "`fp8` is not supported yet");
  EXPECT_TRUE(has_notice(parse("fp8: {enabled: false}\n"), "`fp8`"));
}

// bf16 blocks copied from fp16 (LLaMA-Factory's ALST config): older DeepSpeed read only
// `enabled`; the loss-scaling keys have no effect without loss scaling. One notice.
TEST(ConfigNotices, Fp16LossScalingKeysInBf16) {
  Config c = parse(
      "bf16: {enabled: true, auto_cast: false, loss_scale: 0, initial_scale_power: 16,\n"
      "       loss_scale_window: 1000, hysteresis: 2, min_loss_scale: 1}\n");
  EXPECT_TRUE(c.bf16.enabled);
  ASSERT_EQ(c.notices.size(), 1u);
  EXPECT_TRUE(has_notice(c,
                         "`bf16` loss_scale, initial_scale_power, loss_scale_window, "
                         "hysteresis, min_loss_scale: no effect"));
  EXPECT_EQ(c.fp16, Fp16Config{});
  EXPECT_HAS(error_of("bf16: {enabled: true, auto_cast: true}\n"),
             "`bf16.auto_cast` is not supported yet");
  EXPECT_HAS(error_of("bf16: {enabled: true, hysteresis: two}\n"), "`bf16.hysteresis`");
  EXPECT_HAS(error_of("bf16: {enabled: true, los_scale: 0}\n"), "did you mean `loss_scale`?");
}

// The FLOPs profiler only measures: enabled, it is accepted with a notice (BLOOM's ds_config).
TEST(ConfigNotices, FlopsProfilerEnabledHasNoEffect) {
  Config c = parse(
      "flops_profiler: {enabled: true, profile_step: 1, module_depth: -1, top_modules: 1,\n"
      "  detailed: true, output_file: null, recompute_fwd_factor: 0.0}\n");
  ASSERT_EQ(c.notices.size(), 1u);
  EXPECT_TRUE(has_notice(c, "`flops_profiler` has no effect in zerotrain"));
  EXPECT_TRUE(parse("flops_profiler: {enabled: false, profile_step: 1}\n").notices.empty());
  EXPECT_HAS(error_of("flops_profiler: {enabled: true, profile_stp: 1}\n"),
             "`flops_profiler.profile_stp`", "did you mean `profile_step`?");
  EXPECT_HAS(error_of("flops_profiler: {module_depth: -2}\n"), "`flops_profiler.module_depth`");
  // DeepSpeed takes any profile_step (Megatron-DeepSpeed's ds_zero2_config_bf16.json: -1, a step
  // never reached, so it never profiles).
  EXPECT_TRUE(has_notice(parse("flops_profiler: {enabled: true, profile_step: -1}\n"),
                         "`flops_profiler` has no effect"));
  EXPECT_HAS(error_of("flops_profiler: {profile_step: 1.5}\n"), "`flops_profiler.profile_step`");
}

// Keys DeepSpeed reads that only choose how a result is reached (or that its fp16 mode never
// read): accepted with one notice each, the configuration otherwise unchanged.
TEST(ConfigNotices, KeysWithoutEffectInZerotrain) {
  // Apex AMP's opt_level written into fp16 (BELLE's run_config): DeepSpeed reads it only in `amp`.
  Config c = parse("fp16: {enabled: true, min_loss_scale: 1, opt_level: O2}\n");
  EXPECT_TRUE(c.fp16.enabled);
  ASSERT_EQ(c.notices.size(), 1u);
  EXPECT_TRUE(has_notice(c, "t.yaml:1:53: `fp16.opt_level` has no effect in zerotrain"));
  EXPECT_TRUE(has_notice(c, "`amp` block"));
  c.notices.clear();
  EXPECT_EQ(c, parse("fp16: {enabled: true, min_loss_scale: 1}\n"));
  // ZeRO-3's SDMA all-gather (DeepSpeed's examples/sdma_allgather).
  Config z = parse(
      "zero_optimization: {stage: 3, sdma_allgather: true, sdma_allgather_max_numel: 67108864}\n");
  EXPECT_EQ(z.notices.size(), 2u);
  EXPECT_TRUE(has_notice(z, "`zero_optimization.sdma_allgather` has no effect in zerotrain"));
  EXPECT_TRUE(has_notice(z, "`zero_optimization.sdma_allgather_max_numel` has no effect"));
  z.notices.clear();
  EXPECT_EQ(z, parse("zero_optimization: {stage: 3}\n"));
}

TEST(ConfigErrors, ParamsBelongToTheOptimizerType) {
  EXPECT_HAS(error_of("optimizer: {type: Adam, params: {max_coeff: 0.3}}\n"),
             "`optimizer.params.max_coeff`", "unknown key for optimizer type Adam");
  Config c = parse("optimizer: {type: Lamb, params: {max_coeff: 0.3, min_coeff: 0.01}}\n");
  EXPECT_DOUBLE_EQ(c.optimizer.max_coeff, 0.3);
  EXPECT_HAS(error_of("scheduler: {type: WarmupLR, params: {total_num_steps: 100}}\n"),
             "`scheduler.params.total_num_steps`", "unknown key for scheduler type WarmupLR");
}

// ---- errors: types ------------------------------------------------------------------------------
TEST(ConfigErrors, WrongTypeNamesPathAndLineColumn) {
  EXPECT_HAS(error_of("zero_optimization:\n  stage: two\n"), "t.yaml:2:10",
             "`zero_optimization.stage`", "expected an integer", "`two`");
  EXPECT_HAS(error_of("{\n  \"fp16\": {\n    \"enabled\": \"yes\"\n  }\n}\n"), "t.yaml:3:16",
             "`fp16.enabled`", "expected true or false");
  EXPECT_HAS(error_of("fp16: {enabled: yes}\n"), "t.yaml:1:17",
             "expected true or false, got `yes`");
  EXPECT_HAS(error_of("optimizer: {params: {lr: fast}}\n"), "`optimizer.params.lr`",
             "expected a number");
  EXPECT_HAS(error_of("zero_optimization: [1, 2]\n"), "`zero_optimization`", "expected a mapping");
  EXPECT_HAS(error_of("model: {n_layer: {a: 1}}\n"), "`model.n_layer`", "got a mapping");
}

// "true" in quotes: current DeepSpeed's pydantic blocks read it as true, its older dict readers
// took any non-empty string ("false" too) as true; zerotrain refuses and says what to change.
TEST(ConfigErrors, QuotedBooleansAreStrings) {
  EXPECT_HAS(error_of("{\"fp16\": {\"enabled\": \"true\"}}"), "`fp16.enabled`",
             "got the string \"true\" (remove the quotes)");
  EXPECT_HAS(error_of("fp16: {enabled: \"False\"}\n"), "(remove the quotes)");
  const std::string yes = error_of("fp16: {enabled: \"yes\"}\n");
  EXPECT_HAS(yes, "expected true or false");
  EXPECT_EQ(yes.find("remove the quotes"), std::string::npos);
}

TEST(ConfigErrors, QuotedNumbersAreStrings) {
  EXPECT_HAS(error_of("{\"zero_optimization\": {\"reduce_bucket_size\": \"5e8\"}}"),
             "`zero_optimization.reduce_bucket_size`", "the string \"5e8\"", "remove the quotes");
  EXPECT_HAS(error_of("{\"optimizer\": {\"params\": {\"lr\": \"3e-4\"}}}"), "the string \"3e-4\"");
}

TEST(ConfigErrors, RangesAndWholeNumbers) {
  EXPECT_HAS(error_of("zero_optimization: {stage: 4}\n"), "`zero_optimization.stage`",
             "between 0 and 3");
  EXPECT_HAS(error_of("zero_optimization: {reduce_bucket_size: 1.5}\n"),
             "expected a whole number, got 1.5");
  EXPECT_HAS(error_of("zero_optimization: {reduce_bucket_size: -1}\n"), "must be >= 0");
  EXPECT_HAS(error_of("train_batch_size: 0\n"), "`train_batch_size`", "must be between 1 and");
  EXPECT_HAS(error_of("optimizer: {params: {betas: [0.9]}}\n"), "`optimizer.params.betas`",
             "two numbers");
  EXPECT_HAS(error_of("optimizer: {params: {betas: [0.9, 1.5]}}\n"), "[0, 1)");
  EXPECT_HAS(error_of("model: {n_embd: 100, n_head: 3}\n"), "`model.n_embd`",
             "not divisible by model.n_head");
  EXPECT_HAS(error_of("zero_optimization: {offload_optimizer: {ratio: 2}}\n"), "between 0 and 1");
}

TEST(ConfigErrors, ChoicesSuggestTheClosest) {
  EXPECT_HAS(error_of("device: cdua\n"), "`device`", "not one of: auto, cpu, cuda",
             "did you mean `cuda`?");
  EXPECT_HAS(error_of("optimizer: {type: AdamX}\n"), "`optimizer.type`", "unknown type",
             "did you mean `Adam");
  EXPECT_HAS(error_of("scheduler: {type: WarmupCosine}\n"), "did you mean `WarmupCosineLR`?");
}

TEST(ConfigErrors, SyntaxAndStructure) {
  EXPECT_HAS(error_of("{\"a\": 1, \"b\": 2"), "t.yaml", "syntax error");
  // A JSON object that lost a comma (DeepSpeedExamples' imagenet ds_config.json): the error
  // points at the entry after the gap and says what is likely missing.
  EXPECT_HAS(error_of("{\n  \"fp16\": {\"enabled\": false}\n  \"steps_per_print\": 5\n}\n"),
             "t.yaml:3:3", "syntax error", "is a comma missing");
  // Comments copied into JSON from tutorials: one clear line at the comment, not a YAML puzzle.
  EXPECT_HAS(error_of("{\n  // micro batch\n  \"train_micro_batch_size_per_gpu\": 4\n}\n"),
             "t.yaml:2:3", "JSON does not allow comments (`//`)");
  EXPECT_HAS(error_of("{\"steps_per_print\": 5, /* every 5 */ \"fp16\": {}}"), "t.yaml:1:24",
             "(`/*`)");
  EXPECT_EQ(parse("{\"data\": {\"path\": \"http://host//x /* y */\"}}").data.path,
            "http://host//x /* y */");
  EXPECT_EQ(parse("{data: {path: /corpus//a.txt}}").data.path, "/corpus//a.txt");  // YAML flow
  EXPECT_HAS(error_of("- 1\n- 2\n"), "top level", "mapping");
  EXPECT_HAS(error_of("a: 1\n---\nb: 2\n"), "more than one document");
  EXPECT_HAS(error_of("x: !!str 5\n"), "tags");
  EXPECT_HAS(error_of("base: &b {stage: 1}\nzero_optimization:\n  <<: *b\n"), "merge keys");
}

TEST(ConfigErrors, EveryMessageNamesTheFile) {
  try {
    parse_config_text("fp16: {enabled: 3}\n", "/path/ds_config.json");
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()).rfind("/path/ds_config.json:1:", 0), 0u) << e.what();
  }
  EXPECT_THROW(load_config("/nonexistent/zt.yaml"), ConfigError);
  try {
    load_config("/nonexistent/zt.yaml");
  } catch (const ConfigError& e) {
    EXPECT_HAS(e.what(), "/nonexistent/zt.yaml", "cannot open");
  }
}

TEST(ConfigErrors, ValuesCheckedAcrossKeys) {
  EXPECT_HAS(error_of("? [a, b]\n: 1\n"), "plain name");
  EXPECT_EQ(zt::io::parse_config_text("checkpoint: {dir: \"\"}\n", "t.yaml").checkpoint.dir, "");
  EXPECT_HAS(error_of("data: {val_fraction: 1.0}\n"), "`data.val_fraction`", "below 1");
  EXPECT_HAS(error_of("model: {dropout: 1}\n"), "`model.dropout`", "below 1");
  EXPECT_HAS(error_of("model: {vocab_size: 100}\n"), "`model.vocab_size`", ">= 256");
  EXPECT_HAS(error_of("model: {vocab_size: 70000}\ndata: {format: tokens_u16}\n"), "<= 65536");
  EXPECT_HAS(error_of("optimizer: {type: Lamb, params: {min_coeff: 2, max_coeff: 1}}\n"),
             "`optimizer.params.min_coeff`", "must not exceed max_coeff");
  EXPECT_HAS(error_of("optimizer: {type: Lamb, params: {adam_w_mode: true}}\n"),
             "unknown key for optimizer type Lamb");
  EXPECT_HAS(error_of("comms_logger: {prof_ops: all_reduce}\n"), "`comms_logger.prof_ops`",
             "expected a list");
  EXPECT_HAS(error_of("checkpoint: {tag_validation: warning}\n"), "`checkpoint.tag_validation`",
             "Ignore, Warn, Fail", "did you mean `Warn`?");
  EXPECT_HAS(error_of("fp32_allreduce: true\ncommunication_data_type: fp16\n"), "`fp32_allreduce`",
             "cannot be given together with `communication_data_type`");
  EXPECT_HAS(
      error_of("scheduler: {type: OneCycle, params: {cycle_min_lr: auto, cycle_max_lr: 1}}\n"),
      "`scheduler.params.cycle_min_lr`", "OneCycle needs a value");
  EXPECT_HAS(error_of("timers: {throughput: {enabled: 1}}\n"), "`timers.throughput.enabled`");
  EXPECT_HAS(error_of("data_types: {param_dtype: bf16}\n"),
             "`data_types.param_dtype` is not supported yet");
  EXPECT_HAS(error_of("zero_optimization: {zenflow: {topk_ratio: 0.1}}\n"),
             "`zero_optimization.zenflow` is not supported yet");
}

TEST(ConfigNotices, SaidOnceWithLocation) {
  Config c = parse(
      "zero_optimization:\n  stage: 2\n  offload_param: {device: cpu}\n  offload_optimizer: "
      "{pin_memory: true}\n"
      "  memory_efficient_linear: false\n"
      "disable_python_gc: true\nvocabulary_size: 50257\n");
  EXPECT_TRUE(has_notice(
      c, "t.yaml:3:18: `zero_optimization.offload_param` has no effect below ZeRO stage 3"));
  EXPECT_TRUE(has_notice(c, "`zero_optimization.offload_optimizer` has no `device`"));
  EXPECT_TRUE(
      has_notice(c, "`zero_optimization.memory_efficient_linear` has no effect in zerotrain"));
  EXPECT_TRUE(has_notice(c, "`disable_python_gc` has no effect in zerotrain"));
  EXPECT_TRUE(has_notice(c, "`vocabulary_size` 50257 is not a multiple of 8"));
  EXPECT_EQ(c.notices.size(), 5u);
  EXPECT_EQ(c.zero.offload_optimizer.device, OffloadDevice::kNone);
  Config t = parse("timers: {throughput: {enabled: false}}\nsequence_parallel_size: 1\n");
  EXPECT_FALSE(t.timers.throughput_enabled);
  EXPECT_TRUE(t.timers.throughput_synchronized);
}

// ---- errors: duplicate keys ---------------------------------------------------------------------
TEST(ConfigErrors, DuplicateKeyNamesBothLines) {
  EXPECT_HAS(error_of("train_batch_size: 8\nsteps_per_print: 1\ntrain_batch_size: 16\n"),
             "t.yaml:3:1", "`train_batch_size` given twice (lines 1 and 3)");
  EXPECT_HAS(error_of("{\n \"zero_optimization\": {\n  \"stage\": 2,\n  \"stage\": 3\n }\n}\n"),
             "`zero_optimization.stage` given twice (lines 3 and 4)");
  EXPECT_HAS(error_of("optimizer:\n  params:\n    lr: 1\n    lr: 2\n"),
             "`optimizer.params.lr` given twice (lines 3 and 4)");
}

TEST(ConfigErrors, OneKeyUnderTwoNames) {
  EXPECT_HAS(
      error_of("zero_optimization:\n  stage3_prefetch_bucket_size: 1\n  prefetch_bucket_size: 2\n"),
      "`zero_optimization.stage3_prefetch_bucket_size`", "given twice",
      "as `stage3_prefetch_bucket_size` (t.yaml:2:32)", "as `prefetch_bucket_size` (t.yaml:3:25)");
  EXPECT_HAS(error_of("bf16: {enabled: true}\nbfloat16: {enabled: true}\n"), "`bf16`",
             "given twice");
  EXPECT_HAS(error_of("zero_optimization: {cpu_offload: true, offload_optimizer: {device: cpu}}\n"),
             "`zero_optimization.cpu_offload`",
             "cannot be given together with `zero_optimization.offload_optimizer`");
  EXPECT_HAS(error_of("data: {drop_last: true}\ndataloader_drop_last: false\n"),
             "`dataloader_drop_last`", "given twice");
}

// ---- not supported yet --------------------------------------------------------------------------
TEST(ConfigNotSupported, FeatureKeysFailUnlessOff) {
  EXPECT_HAS(error_of("zero_optimization:\n  zero_quantized_weights: true\n"), "t.yaml:2:27",
             "`zero_optimization.zero_quantized_weights` is not supported yet");
  EXPECT_HAS(error_of("zero_optimization: {zero_hpz_partition_size: 8}\n"),
             "`zero_optimization.zero_hpz_partition_size` is not supported yet");
  EXPECT_HAS(error_of("fp16: {enabled: true, auto_cast: true}\n"),
             "`fp16.auto_cast` is not supported yet");
  EXPECT_HAS(error_of("optimizer: {params: {amsgrad: true}}\n"),
             "`optimizer.params.amsgrad` is not supported yet");
  EXPECT_HAS(error_of("sparse_gradients: true\n"), "`sparse_gradients` is not supported yet");
  EXPECT_HAS(error_of("aio: {use_gds: true}\n"), "`aio.use_gds` is not supported yet");
  EXPECT_HAS(error_of("checkpoint: {writer: {type: fast}}\n"),
             "`checkpoint.writer` is not supported yet");
  // Their "off" values ask for nothing and load.
  Config c = parse(
      "zero_optimization: {zero_quantized_weights: false, zero_hpz_partition_size: 1, "
      "mics_shard_size: -1,"
      " zeropp_loco_param: null}\nfp16: {auto_cast: false}\nsparse_gradients: false\n"
      "managed_gradient_accumulation: true\n");
  EXPECT_EQ(c.zero.stage, 0);
}

TEST(ConfigNotSupported, OptimizersSchedulersDevicesMonitors) {
  EXPECT_HAS(error_of("optimizer: {type: Lion}\n"), "`optimizer.type: Lion` is not supported yet",
             "Adam, AdamW, Lamb, OneBitAdam, ZeroOneAdam, OneBitLamb");
  EXPECT_HAS(error_of("scheduler: {type: CosineAnnealingLR}\n"),
             "`scheduler.type: CosineAnnealingLR` is not supported yet");
  EXPECT_HAS(error_of("zero_optimization: {stage: 3, offload_param: {device: hpu}}\n"),
             "`zero_optimization.offload_param.device: hpu` is not supported yet");
  EXPECT_HAS(error_of("wandb: {enabled: true, project: x}\n"), "`wandb` is not supported yet");
  Config c = parse("wandb: {enabled: false, project: x, team: t}\n");
  EXPECT_EQ(c.monitors.wandb.project, "x");
}

TEST(ConfigNotSupported, RulesDeepSpeedItselfEnforces) {
  EXPECT_HAS(error_of("optimizer: {params: {max_grad_norm: 1.0}}\n"),
             "`optimizer.params.max_grad_norm`", "use the top-level `gradient_clipping`");
  EXPECT_HAS(error_of("fp16: {enabled: true}\nbf16: {enabled: true}\n"),
             "fp16 and bf16 cannot both be enabled");
  EXPECT_HAS(
      error_of(
          "zero_optimization: {stage: 2, offload_optimizer: {device: nvme, nvme_path: /nvme}}\n"),
      "needs ZeRO stage 3");
  EXPECT_HAS(error_of("zero_optimization: {stage: 3, offload_param: {device: nvme}}\n"),
             "needs `nvme_path`");
  EXPECT_HAS(
      error_of("zero_optimization: {stage: 2, offload_optimizer: {device: cpu, ratio: 0.5}}\n"),
      "partial offload");
  EXPECT_HAS(error_of("scheduler: {type: OneCycle, params: {cycle_max_lr: 0.1}}\n"),
             "`scheduler.params.cycle_min_lr`", "OneCycle needs a value");
  EXPECT_HAS(error_of("scheduler: {params: {warmup_num_steps: 10}}\n"), "`scheduler.type`",
             "is required");
  EXPECT_HAS(error_of("nebula: {enabled: true}\n"), "persistent_storage_path");
}

// ---- DeepSpeed blocks outside zerotrain's scope -------------------------------------------------
TEST(ConfigScope, EnabledForeignBlocksAreRefusedByName) {
  EXPECT_HAS(error_of("train_batch_size: 8\nsparse_attention:\n  mode: fixed\n  block: 16\n"),
             "t.yaml:3:3", "`sparse_attention`", "outside zerotrain's scope",
             "set `sparse_attention.enabled: false`");
  EXPECT_HAS(error_of("sequence_parallel: {enabled: true, size: 4, mode: ulysses}\n"),
             "`sequence_parallel`", "outside zerotrain's scope");
  EXPECT_HAS(error_of("pipeline: {stages: 2}\n"), "`pipeline`", "outside");
  EXPECT_HAS(error_of("amp: {enabled: true, opt_level: O1}\n"), "`amp`", "outside");
  EXPECT_HAS(error_of("autotuning: {enabled: true}\n"), "`autotuning`");
  EXPECT_HAS(error_of("elasticity: {enabled: true, max_train_batch_size: 100}\n"), "`elasticity`");
  EXPECT_HAS(error_of("data_efficiency: {enabled: true}\n"), "`data_efficiency`");
  EXPECT_HAS(error_of("curriculum_learning: {enabled: true}\n"), "`curriculum_learning`");
  EXPECT_HAS(
      error_of(
          "compression_training: {weight_quantization: {shared_parameters: {enabled: true}}}\n"),
      "`compression_training`", "outside");
  EXPECT_HAS(error_of("tensor_parallel: {autotp_size: 2}\n"), "`tensor_parallel`", "outside");
  EXPECT_HAS(error_of("compile: {deepcompile: true}\n"), "`compile`", "outside");
  EXPECT_HAS(error_of("sequence_parallel_size: 4\n"), "`sequence_parallel_size`", "outside");
  EXPECT_HAS(error_of("eigenvalue: {enabled: true, max_iter: 50}\n"), "`eigenvalue`", "outside");
  EXPECT_TRUE(has_notice(parse("eigenvalue: {enabled: false, max_iter: 50}\n"), "`eigenvalue`"));
}

TEST(ConfigScope, DisabledForeignBlocksLoadWithOneNotice) {
  Config c = parse(
      "sparse_attention: {enabled: false, mode: fixed}\n"
      "sequence_parallel: {enabled: false, size: 4}\n"
      "autotuning: {metric: throughput}\n"
      "amp: {enabled: auto, opt_level: auto}\n"
      "compression_training: {weight_quantization: {shared_parameters: {enabled: false}}}\n"
      "tensor_parallel: {autotp_size: 1}\n"
      "sequence_parallel_size: 1\n");
  ASSERT_EQ(c.notices.size(), 6u);
  for (const char* block : {"sparse_attention", "sequence_parallel", "autotuning", "amp",
                            "compression_training", "tensor_parallel"})
    EXPECT_TRUE(has_notice(c, std::string("`") + block + "`")) << block;
  EXPECT_TRUE(has_notice(c, "accepted because it is disabled"));
  for (const std::string& n : c.notices) EXPECT_EQ(n.find('\n'), std::string::npos);
}

// ---- --set overrides ----------------------------------------------------------------------------
TEST(ConfigOverrides, SetReplacesAndCreates) {
  const std::string file = "zero_optimization:\n  stage: 1\n  reduce_bucket_size: 5e8\n";
  Config c = parse(file, {"zero_optimization.stage=3", "zero_optimization.offload_param.device=cpu",
                          "optimizer.params.betas=[0.9, 0.95]", "model.n_layer=8",
                          "training.steps=10", "fp16.enabled=true", "checkpoint.dir=\"/tmp/x y\""});
  EXPECT_EQ(c.zero.stage, 3);
  EXPECT_EQ(c.zero.reduce_bucket_size, 500000000);
  EXPECT_EQ(c.zero.offload_param.device, OffloadDevice::kCpu);
  EXPECT_DOUBLE_EQ(c.optimizer.beta2, 0.95);
  EXPECT_EQ(c.model.n_layer, 8);
  EXPECT_EQ(c.training.steps, 10);
  EXPECT_TRUE(c.fp16.enabled);
  EXPECT_EQ(c.checkpoint.dir, "/tmp/x y");
  // The last override of a key wins.
  EXPECT_EQ(parse("", {"training.steps=5", "training.steps=6"}).training.steps, 6);
}

TEST(ConfigOverrides, OverrideWinsOverAnotherSpellingInTheFile) {
  Config c = parse("zero_optimization: {stage: 3, stage3_prefetch_bucket_size: 100}\n",
                   {"zero_optimization.prefetch_bucket_size=200"});
  EXPECT_EQ(c.zero.stage3_prefetch_bucket_size, 200);
  Config n = parse("nebula_config: {enabled: false}\n", {"nebula.num_of_version_in_retention=9"});
  EXPECT_EQ(n.nebula.num_of_version_in_retention, 9);
}

TEST(ConfigOverrides, BadOverridesFailNamingTheOverride) {
  EXPECT_HAS(error_of("", {"zero_optimization.stage"}), "--set zero_optimization.stage",
             "key.path=value");
  EXPECT_HAS(error_of("", {"=3"}), "key.path=value");
  EXPECT_HAS(error_of("", {"zero_optimization..stage=1"}), "empty key");
  EXPECT_HAS(error_of("", {"zero_optimization.stage=x"}),
             "t.yaml (--set zero_optimization.stage=x)", "`zero_optimization.stage`",
             "expected an integer");
  EXPECT_HAS(error_of("", {"zero_optimization.reduce_bucket_sise=1"}),
             "(--set zero_optimization.reduce_bucket_sise=1)",
             "did you mean `reduce_bucket_size`?");
  EXPECT_HAS(error_of("device: cpu\n", {"device.kind=cpu"}), "`device` is not a mapping");
  EXPECT_HAS(error_of("", {"sparse_attention.mode=fixed"}), "`sparse_attention`",
             "outside zerotrain's scope");
}

// ---- batch sizes --------------------------------------------------------------------------------
struct BatchCase {
  std::optional<int64_t> tb, mb, ga;
  int world;
  int64_t want_tb, want_mb, want_ga;  // 0: expect an error
  const char* error_part;
};

Config with_batch(const BatchCase& b) {
  Config c;
  c.source_path = "b.json";
  c.train_batch_size = b.tb;
  c.train_micro_batch_size_per_gpu = b.mb;
  c.gradient_accumulation_steps = b.ga;
  return c;
}

TEST(ConfigBatch, DeepSpeedRuleTable) {
  const std::optional<int64_t> none;
  const BatchCase cases[] = {
      // all three given
      {32, 4, 2, 4, 32, 4, 2, nullptr},
      {32, 4, 2, 2, 0, 0, 0,
       "train_batch_size (32) must equal train_micro_batch_size_per_gpu (4) x "
       "gradient_accumulation_steps (2) x world size (2) = 16 (the three agree on 4 ranks); set "
       "train_batch_size to 16"},
      {30, 4, 2, 1, 0, 0, 0, "x world size (1) = 8; set train_batch_size to 8"},  // 30 / 8: none
      // train + micro: gas inferred
      {64, 4, none, 4, 64, 4, 4, nullptr},
      {10, 3, none, 1, 0, 0, 0, "set train_batch_size to 9 or 12"},
      // train + gas: micro inferred
      {64, none, 2, 4, 64, 8, 2, nullptr},
      {30, none, 4, 2, 0, 0, 0, "set train_batch_size to 24 or 32"},
      // micro + gas: train inferred
      {none, 4, 2, 3, 24, 4, 2, nullptr},
      // train only: gas = 1
      {16, none, none, 4, 16, 4, 1, nullptr},
      {10, none, none, 4, 0, 0, 0, "set train_batch_size to 8 or 12"},
      {2, none, none, 4, 0, 0, 0, "set train_batch_size to 4"},
      // micro only: gas = 1
      {none, 6, none, 2, 12, 6, 1, nullptr},
      // gas only and none: zerotrain's default micro-batch
      {none, none, 4, 2, 64, 8, 4, nullptr},
      {none, none, none, 3, 24, 8, 1, nullptr},
  };
  for (const BatchCase& b : cases) {
    Config c = with_batch(b);
    SCOPED_TRACE("tb=" + (b.tb ? std::to_string(*b.tb) : std::string("-")) +
                 " mb=" + (b.mb ? std::to_string(*b.mb) : std::string("-")) +
                 " ga=" + (b.ga ? std::to_string(*b.ga) : std::string("-")) +
                 " world=" + std::to_string(b.world));
    if (b.error_part == nullptr) {
      resolve_batch_sizes(c, b.world);
      EXPECT_EQ(*c.train_batch_size, b.want_tb);
      EXPECT_EQ(*c.train_micro_batch_size_per_gpu, b.want_mb);
      EXPECT_EQ(*c.gradient_accumulation_steps, b.want_ga);
      EXPECT_EQ(*c.train_batch_size,
                *c.train_micro_batch_size_per_gpu * *c.gradient_accumulation_steps * b.world);
      EXPECT_EQ(c.world_size, b.world);
    } else {
      try {
        resolve_batch_sizes(c, b.world);
        ADD_FAILURE() << "no error";
      } catch (const ConfigError& e) {
        EXPECT_HAS(e.what(), "b.json", "`train_batch_size`", "`train_micro_batch_size_per_gpu`",
                   "`gradient_accumulation_steps`", b.error_part);
      }
    }
  }
  Config c;
  EXPECT_THROW(resolve_batch_sizes(c, 0), ConfigError);
  c.train_micro_batch_size_per_gpu = int64_t{1} << 60;
  EXPECT_THROW(resolve_batch_sizes(c, 8), ConfigError);
}

TEST(ConfigBatch, AutoMeansInferred) {
  Config c = parse(
      R"({"train_batch_size": "auto", "train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": "auto"})");
  EXPECT_FALSE(c.train_batch_size);
  resolve_batch_sizes(c, 4);
  EXPECT_EQ(*c.train_batch_size, 8);
  EXPECT_EQ(*c.gradient_accumulation_steps, 1);
}

// ---- aliases ------------------------------------------------------------------------------------
TEST(ConfigAliases, DeprecatedDeepSpeedNames) {
  Config c = parse(
      "zero_optimization: {stage: 3, cpu_offload: true, cpu_offload_param: true, "
      "cpu_offload_use_pin_memory: true,"
      " stage3_gather_fp16_weights_on_model_save: true}\n"
      "bfloat16: {enabled: true}\nfp32_allreduce: true\n");
  EXPECT_EQ(c.zero.offload_optimizer.device, OffloadDevice::kCpu);
  EXPECT_EQ(c.zero.offload_param.device, OffloadDevice::kCpu);
  EXPECT_TRUE(c.zero.offload_optimizer.pin_memory);
  EXPECT_TRUE(c.zero.offload_param.pin_memory);
  EXPECT_TRUE(c.zero.stage3_gather_16bit_weights_on_model_save);
  EXPECT_TRUE(c.bf16.enabled);
  EXPECT_EQ(c.comm.communication_data_type, DTypeName::kFp32);
  for (const char* k : {"`zero_optimization.cpu_offload`", "`zero_optimization.cpu_offload_param`",
                        "`zero_optimization.cpu_offload_use_pin_memory`",
                        "`zero_optimization.stage3_gather_fp16_weights_on_model_save`",
                        "`bfloat16`", "`fp32_allreduce`"})
    EXPECT_TRUE(has_notice(c, k)) << k;
  EXPECT_TRUE(has_notice(c, "deprecated"));
}

// DeepSpeed first spelled bf16 "bfp16" in communication_data_type (get_communication_data_type
// until its rename); Megatron-DeepSpeed's ds_zero2_config_bf16.json still writes it.
TEST(ConfigAliases, CommunicationDataTypeFormerBf16Spelling) {
  Config c = parse("communication_data_type: \"bfp16\"\n");
  EXPECT_EQ(c.comm.communication_data_type, DTypeName::kBf16);
  ASSERT_EQ(c.notices.size(), 1u);
  EXPECT_TRUE(has_notice(c, "t.yaml:1:26: `communication_data_type: bfp16` is DeepSpeed's former"));
  c.notices.clear();
  EXPECT_EQ(c, parse("communication_data_type: bf16\n"));
  EXPECT_EQ(parse("communication_data_type: FP16\n").comm.communication_data_type,
            DTypeName::kFp16);
  EXPECT_HAS(error_of("communication_data_type: bfp32\n"), "`communication_data_type`",
             "is not one of");
  EXPECT_HAS(error_of("data_types: {grad_accum_dtype: bfp16}\n"), "is not one of");
}

TEST(ConfigAliases, UnprefixedStage3NamesAndSynonyms) {
  Config c = parse(
      "zero_optimization: {stage: 3, prefetch_bucket_size: 1e7, param_persistence_threshold: 1e4,"
      " model_persistence_threshold: 1e9, max_live_parameters: 3e8, max_reuse_distance: 2e8,"
      " gather_16bit_weights_on_model_save: true, module_granularity_threshold: 5,"
      " use_all_reduce_for_fetch_params: true}\n"
      "aio: {intra_op_parallelism: 4}\n"
      "nebula_config: {enabled: true, persistent_storage_path: /p, nebula_load_path: /l}\n"
      "dataloader_drop_last: true\n");
  EXPECT_EQ(c.zero.stage3_prefetch_bucket_size, 10000000);
  EXPECT_EQ(c.zero.stage3_param_persistence_threshold, 10000);
  EXPECT_EQ(c.zero.stage3_model_persistence_threshold, 1000000000);
  EXPECT_EQ(c.zero.stage3_max_live_parameters, 300000000);
  EXPECT_EQ(c.zero.stage3_max_reuse_distance, 200000000);
  EXPECT_TRUE(c.zero.stage3_gather_16bit_weights_on_model_save);
  EXPECT_EQ(c.zero.stage3_module_granularity_threshold, 5);
  EXPECT_TRUE(c.zero.stage3_use_all_reduce_for_fetch_params);
  EXPECT_EQ(c.aio.thread_count, 4);
  EXPECT_TRUE(c.nebula.enabled);
  EXPECT_EQ(c.nebula.load_path, "/l");
  EXPECT_TRUE(c.data.drop_last);
  EXPECT_TRUE(c.notices.empty());  // synonyms, not deprecations
}

TEST(ConfigAliases, LegacyBooleanZero) {
  Config c = parse("zero_optimization: true\nallgather_size: 2e8\n");
  EXPECT_EQ(c.zero.stage, 1);
  EXPECT_EQ(c.zero.allgather_bucket_size, 200000000);
  EXPECT_TRUE(has_notice(c, "deprecated format"));
  EXPECT_EQ(parse("zero_optimization: false\n").zero.stage, 0);
  EXPECT_HAS(error_of("zero_optimization: {stage: 1}\nallgather_size: 2e8\n"), "`allgather_size`",
             "zero_optimization.allgather_bucket_size");
}

TEST(ConfigAliases, OptimizerNamesAndAdamWMode) {
  EXPECT_EQ(parse("optimizer: {type: adamw}\n").optimizer.type, OptimizerType::kAdamW);
  EXPECT_EQ(parse("optimizer: {type: ONEBITADAM}\n").optimizer.type, OptimizerType::kOneBitAdam);
  Config adam = parse("optimizer: {type: Adam}\n");
  EXPECT_TRUE(adam.optimizer.adam_w_mode);  // DeepSpeed's Adam decouples weight decay by default
  EXPECT_FALSE(
      parse("optimizer: {type: Adam, params: {adam_w_mode: false}}\n").optimizer.adam_w_mode);
  Config w = parse("optimizer: {type: AdamW, params: {adam_w_mode: false}}\n");
  EXPECT_TRUE(w.optimizer.adam_w_mode);
  EXPECT_TRUE(has_notice(w, "adam_w_mode"));
}

// ---- auto ---------------------------------------------------------------------------------------
TEST(ConfigAuto, HfRulesFromTheModelAndTheRun) {
  Config c = parse(
      R"({"model": {"n_embd": 256, "n_head": 8}, "training": {"steps": 777},
          "optimizer": {"type": "AdamW", "params": {"lr": 2e-4, "betas": "auto", "eps": "auto", "weight_decay": "auto"}},
          "scheduler": {"type": "WarmupDecayLR", "params": {"warmup_min_lr": "auto", "warmup_max_lr": "auto",
                        "warmup_num_steps": "auto", "total_num_steps": "auto"}},
          "zero_optimization": {"stage": 3, "reduce_bucket_size": "auto", "stage3_prefetch_bucket_size": "auto",
                                "stage3_param_persistence_threshold": "auto", "stage3_max_live_parameters": "auto",
                                "stage3_gather_16bit_weights_on_model_save": "auto"},
          "gradient_clipping": "auto", "fp16": {"enabled": "auto"}, "bf16": {"enabled": "auto"}})");
  EXPECT_EQ(c.zero.reduce_bucket_size, 256 * 256);
  EXPECT_EQ(c.zero.stage3_prefetch_bucket_size, static_cast<int64_t>(0.9 * 256 * 256));
  EXPECT_EQ(c.zero.stage3_param_persistence_threshold, 2560);
  EXPECT_EQ(c.zero.stage3_max_live_parameters, 1000000000);  // DeepSpeed's default
  EXPECT_FALSE(c.zero.stage3_gather_16bit_weights_on_model_save);
  EXPECT_DOUBLE_EQ(c.optimizer.lr, 2e-4);
  EXPECT_DOUBLE_EQ(c.optimizer.beta1, 0.9);
  EXPECT_DOUBLE_EQ(c.optimizer.beta2, 0.999);
  EXPECT_DOUBLE_EQ(c.optimizer.eps, 1e-8);
  EXPECT_DOUBLE_EQ(c.optimizer.weight_decay, 0.0);
  EXPECT_DOUBLE_EQ(c.scheduler.warmup_min_lr, 0.0);
  EXPECT_DOUBLE_EQ(c.scheduler.warmup_max_lr, 2e-4);
  EXPECT_EQ(c.scheduler.warmup_num_steps, 0);
  EXPECT_EQ(c.scheduler.total_num_steps, 777);
  EXPECT_DOUBLE_EQ(c.gradient_clipping, 1.0);
  EXPECT_FALSE(c.fp16.enabled);
  EXPECT_FALSE(c.bf16.enabled);
}

TEST(ConfigAuto, Stage3OnlyRulesFallBackBelowStage3) {
  Config c = parse(
      "zero_optimization: {stage: 2, reduce_bucket_size: auto, stage3_prefetch_bucket_size: auto,"
      " stage3_param_persistence_threshold: auto}\n");
  EXPECT_EQ(c.zero.reduce_bucket_size, 128 * 128);
  EXPECT_EQ(c.zero.stage3_prefetch_bucket_size, 50000000);
  EXPECT_EQ(c.zero.stage3_param_persistence_threshold, 100000);
}

TEST(ConfigAuto, OverlapCommDefaultsByStage) {
  EXPECT_FALSE(parse("zero_optimization: {stage: 2}\n").zero.overlap_comm);
  EXPECT_TRUE(parse("zero_optimization: {stage: 3}\n").zero.overlap_comm);
  EXPECT_FALSE(parse("zero_optimization: {stage: 3, overlap_comm: false}\n").zero.overlap_comm);
}

TEST(ConfigAuto, WarmupMaxLrIsTheOptimizerLrWhenAbsent) {
  Config c = parse("optimizer: {params: {lr: 0.05}}\nscheduler: {type: WarmupLR}\n");
  EXPECT_DOUBLE_EQ(c.scheduler.warmup_max_lr, 0.05);
  EXPECT_EQ(c.scheduler.warmup_num_steps, 1000);  // DeepSpeed's default when absent
}

// ---- counts -------------------------------------------------------------------------------------
TEST(ConfigCounts, FloatSyntaxForWholeCounts) {
  Config c =
      parse(R"({"zero_optimization": {"reduce_bucket_size": 5e8, "allgather_bucket_size": 2.5e8,
                       "sub_group_size": 1e14, "stage3_max_live_parameters": 1E9,
                       "stage3_max_reuse_distance": 1000000000}, "aio": {"block_size": 1048576}})");
  EXPECT_EQ(c.zero.reduce_bucket_size, 500000000);
  EXPECT_EQ(c.zero.allgather_bucket_size, 250000000);
  EXPECT_EQ(c.zero.sub_group_size, 100000000000000);
  EXPECT_EQ(c.zero.stage3_max_live_parameters, 1000000000);
  EXPECT_EQ(c.aio.block_size, 1048576);
  EXPECT_HAS(error_of("zero_optimization: {sub_group_size: 1e30}\n"), "out of range");
}

// ---- published configs --------------------------------------------------------------------------
std::vector<fs::path> json_files(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".json") out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

TEST(ConfigPublished, EveryDeepSpeedConfigLoads) {
  const auto files = json_files(fs::path(ZT_SOURCE_DIR) / "configs" / "deepspeed");
  ASSERT_GE(files.size(), 10u);
  for (const fs::path& f : files) {
    SCOPED_TRACE(f.string());
    Config c;
    ASSERT_NO_THROW(c = load_config(f.string()));
    EXPECT_EQ(c.source_path, f.string());
    for (int world : {1, 2, 4, 8}) {
      Config r = c;
      try {
        resolve_batch_sizes(r, world);
        EXPECT_EQ(*r.train_batch_size,
                  *r.train_micro_batch_size_per_gpu * *r.gradient_accumulation_steps * world);
      } catch (const ConfigError& e) {
        // A fixed train_batch_size can be impossible for some world sizes; the error must say so.
        EXPECT_HAS(e.what(), "train_batch_size", "world size");
      }
    }
  }
}

TEST(ConfigPublished, SeedConfigsReadAsWritten) {
  const fs::path dir = fs::path(ZT_SOURCE_DIR) / "configs" / "deepspeed";
  Config z2 = load_config((dir / "seed003_zero2_auto.json").string());
  EXPECT_EQ(z2.zero.stage, 2);
  EXPECT_EQ(z2.zero.offload_optimizer.device, OffloadDevice::kCpu);
  EXPECT_TRUE(z2.zero.offload_optimizer.pin_memory);
  EXPECT_EQ(z2.zero.reduce_bucket_size, 200000000);
  EXPECT_TRUE(z2.monitors.csv_monitor.enabled);
  EXPECT_EQ(z2.monitors.csv_monitor.job_name, "stage2_test");
  EXPECT_EQ(z2.steps_per_print, 100);
  EXPECT_EQ(z2.scheduler.type, SchedulerType::kWarmupLR);

  Config z3 = load_config((dir / "seed003_zero3_auto.json").string());
  EXPECT_EQ(z3.zero.stage, 3);
  EXPECT_EQ(z3.zero.offload_param.device, OffloadDevice::kCpu);
  EXPECT_EQ(z3.zero.reduce_bucket_size, 128 * 128);
  EXPECT_TRUE(z3.zero.stage3_gather_16bit_weights_on_model_save);

  Config bf = load_config((dir / "seed002_bf16_zero2.json").string());
  EXPECT_TRUE(bf.bf16.enabled);
  EXPECT_FALSE(bf.zero.contiguous_gradients);
  EXPECT_EQ(bf.zero.reduce_bucket_size, 500000);
  EXPECT_EQ(bf.zero.sub_group_size, 500000);
  EXPECT_DOUBLE_EQ(bf.gradient_clipping, 1.0);
  resolve_batch_sizes(bf, 4);
  EXPECT_EQ(*bf.train_batch_size, 16);  // 1 x 4 x 4 GPUs (the seed's 4x RTX 3090)

  Config nb = load_config((dir / "seed000_nebula.json").string());
  EXPECT_TRUE(nb.nebula.enabled);
  EXPECT_EQ(nb.nebula.persistent_storage_path, "/path/to/storage");
  EXPECT_EQ(nb.nebula.persistent_time_interval, 100);
  EXPECT_EQ(nb.nebula.num_of_version_in_retention, 5);
  EXPECT_TRUE(nb.nebula.enable_nebula_load);
  EXPECT_EQ(nb.nebula.load_path, "/path/to/checkpoint");
}

TEST(ConfigPublished, RealConfigsRefusedClearly) {
  const fs::path dir = fs::path(ZT_SOURCE_DIR) / "tests" / "io" / "data";
  struct Refusal {
    const char* file;
    std::vector<const char*> parts;
  };
  const Refusal refusals[] = {
      {"dsexamples_bing_bert_lamb_sparse_attention.json",
       {":22:", "`sparse_attention`", "outside zerotrain's scope"}},
      {"dsexamples_cifar_ds_config.json",
       {":28:", "`fp16.fp16_master_weights_and_grads` is not supported yet"}},
      {"dsexamples_megatron_zero3_release.json",
       {":9:5", "`zero_optimization.stage3_param_persitance_threshold`",
        "did you mean `stage3_param_persistence_threshold`?"}},
      {"dsexamples_imagenet_fp16_z1.json", {":25:", "`fp16.auto_cast` is not supported yet"}},
      {"dsexamples_random_ltd.json", {":23:", "`data_efficiency`", "outside zerotrain's scope"}},
      {"bigscience_megatron_ds_config_cl.json",
       {":16:", "`curriculum_learning`", "outside zerotrain's scope"}},
      {"llamafactory_ds_z2_autotp_config.json",
       {":29:", "`tensor_parallel`", "outside zerotrain's scope"}},
      {"llamafactory_ds_z3_fp8_config.json", {":18:", "`fp8` is not supported yet"}},
      {"llamafactory_ds_z3_alst_config.json",
       {":24:", "`sequence_parallel`", "outside zerotrain's scope"}},
      {"dsexamples_megatron_zero_offload_10B.json",
       {":8:5", "`zero_optimization.comm_overlap`", "did you mean `overlap_comm`?"}},
      {"dsexamples_imagenet_ds_config.json", {":26:5", "syntax error", "is a comma missing"}},
      {"dsexamples_moq_test.json", {":8:26", "`quantize_training`", "outside zerotrain's scope"}},
      {"deepspeed_tests_eigenvalue_quantize.json",
       {":22:17", "`eigenvalue`", "outside zerotrain's scope"}},
      {"deepspeed_tests_ds_batch_config.json",
       {":8:26", "`optimizer.params.max_grad_norm`", "use the top-level `gradient_clipping`"}},
      {"dsexamples_zero3_nvme_offload_annotated.json",
       {":2:3", "JSON does not allow comments (`//`)"}},
      {"dsexamples_zenflow_zf_config.json",
       {":10:18", "`zero_optimization.zenflow` is not supported yet"}},
  };
  for (const Refusal& r : refusals) {
    SCOPED_TRACE(r.file);
    try {
      load_config((dir / r.file).string());
      ADD_FAILURE() << "loaded";
    } catch (const ConfigError& e) {
      for (const char* p : r.parts) EXPECT_HAS(e.what(), p);
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << "one line";
    }
  }
}

// Published configs from other projects, read as written.
TEST(ConfigPublished, OtherProjectsConfigsReadAsWritten) {
  const fs::path dir = fs::path(ZT_SOURCE_DIR) / "configs" / "deepspeed";
  // axolotl: unprefixed stage-3 names at 0, sub_group_size 0 (DeepSpeed: one sub-group per
  // parameter, which zerotrain's optimizer offload also does).
  Config ax = load_config((dir / "axolotl_zero3_bf16_cpuoffload_all.json").string());
  EXPECT_EQ(ax.zero.stage, 3);
  EXPECT_EQ(ax.zero.sub_group_size, 0);
  EXPECT_EQ(ax.zero.stage3_max_live_parameters, 0);
  EXPECT_EQ(ax.zero.stage3_max_reuse_distance, 0);
  EXPECT_TRUE(ax.zero.stage3_gather_16bit_weights_on_model_save);
  EXPECT_FALSE(ax.zero_force_ds_cpu_optimizer);
  EXPECT_EQ(ax.zero.reduce_bucket_size, 128 * 128);  // "auto": hidden x hidden
  // LLaMA-Factory: DeepSpeed's attribute names written as keys, ignored by DeepSpeed.
  Config lf = load_config((dir / "llamafactory_ds_z3_offload_config.json").string());
  EXPECT_TRUE(has_notice(lf, "`comms_config` is not a key DeepSpeed or zerotrain reads"));
  EXPECT_TRUE(has_notice(lf, "`monitor_config` is not a key DeepSpeed or zerotrain reads"));
  EXPECT_FALSE(lf.monitors.csv_monitor.enabled);
  EXPECT_EQ(lf.zero.offload_param.device, OffloadDevice::kCpu);
  // BLOOM's Megatron-DeepSpeed: an enabled FLOPs profiler.
  Config bl = load_config((dir / "bigscience_megatron_ds_config_flops_profiler.json").string());
  EXPECT_TRUE(has_notice(bl, "`flops_profiler` has no effect in zerotrain"));
  resolve_batch_sizes(bl, 4);
  EXPECT_EQ(*bl.gradient_accumulation_steps, 8);  // 64 = 2 x 8 x 4
  // LLaVA: steps_per_print written as 1e5.
  EXPECT_EQ(load_config((dir / "llava_zero3_offload.json").string()).steps_per_print, 100000);
}

// The second batch: Megatron-DeepSpeed, DeepSpeed's own tests and examples, and the Chinese
// fine-tuning repositories, each checked for what it is in the set for (SOURCES.md).
TEST(ConfigPublished, MoreProjectsConfigsReadAsWritten) {
  const fs::path dir = fs::path(ZT_SOURCE_DIR) / "configs" / "deepspeed";
  auto load = [&](const char* name) { return load_config((dir / name).string()); };
  // Megatron-DeepSpeed's ds_config.json: an `aio` block next to a cpu optimizer offload.
  Config aio = load("megatron_deepspeed_ds_config_aio.json");
  EXPECT_EQ(aio.aio.queue_depth, 16);
  EXPECT_EQ(aio.aio.thread_count, 2);
  EXPECT_EQ(aio.aio.block_size, 1048576);
  EXPECT_EQ(aio.zero.stage, 3);
  EXPECT_EQ(aio.zero.offload_optimizer.device, OffloadDevice::kCpu);
  EXPECT_EQ(aio.zero.offload_optimizer.buffer_count, 4);
  EXPECT_EQ(aio.zero.stage3_max_live_parameters, 3000000000);
  EXPECT_TRUE(aio.zero_allow_untested_optimizer);
  EXPECT_TRUE(aio.wall_clock_breakdown);
  EXPECT_EQ(aio.fp16.initial_scale_power, 15);
  // Megatron-DeepSpeed's ds_zero2_config_bf16.json: "bfp16", `bfloat16`, profile_step -1.
  Config bf = load("megatron_deepspeed_ds_zero2_config_bf16.json");
  EXPECT_EQ(bf.comm.communication_data_type, DTypeName::kBf16);
  EXPECT_TRUE(bf.bf16.enabled);
  EXPECT_TRUE(bf.activation_checkpointing.partition_activations);
  EXPECT_TRUE(has_notice(bf, "`communication_data_type: bfp16`"));
  EXPECT_TRUE(has_notice(bf, "`bf16` loss_scale: no effect"));
  // BELLE: AdamW with torch_adam; its run_config writes Apex's opt_level into fp16.
  Config be = load("belle_deepspeed_config.json");
  EXPECT_EQ(be.optimizer.type, OptimizerType::kAdamW);
  EXPECT_TRUE(be.optimizer.torch_adam);
  EXPECT_EQ(be.scheduler.type, SchedulerType::kWarmupDecayLR);
  Config br = load("belle_run_config_deepspeed_config.json");
  EXPECT_TRUE(br.fp16.enabled);
  EXPECT_TRUE(has_notice(br, "`fp16.opt_level` has no effect"));
  EXPECT_TRUE(has_notice(br, "`overwrite` is not a key DeepSpeed or zerotrain reads"));
  // Chinese-LLaMA-Alpaca: min_loss_scale 1e-10 (a float, as DeepSpeed's loss scaler takes it).
  EXPECT_DOUBLE_EQ(load("chinese_llama_alpaca_ds_zero2_no_offload.json").fp16.min_loss_scale,
                   1e-10);
  // Open-Assistant: a linear warmup in WarmupDecayLR, sub_group_size 2e9.
  Config oa = load("openassistant_zero_config_sft_65b.json");
  EXPECT_EQ(oa.scheduler.warmup_type, WarmupType::kLinear);
  EXPECT_EQ(oa.zero.sub_group_size, 2000000000);
  EXPECT_EQ(oa.zero.offload_param.device, OffloadDevice::kCpu);
  // Qwen: `offload_optimizer.device: none` with pin_memory: nothing offloaded, no notice.
  Config qw = load("qwen_ds_config_zero2.json");
  EXPECT_EQ(qw.zero.offload_optimizer.device, OffloadDevice::kNone);
  EXPECT_TRUE(qw.notices.empty());
  // ChatGLM-6B: CRLF line endings; only the micro-batch ("auto") given.
  Config cg = load("chatglm6b_ptuning_deepspeed.json");
  EXPECT_TRUE(cg.zero_allow_untested_optimizer);
  EXPECT_FALSE(cg.zero.overlap_comm);
  EXPECT_FALSE(cg.train_micro_batch_size_per_gpu.has_value());
  // accelerate: stage3_gather_16bit_weights_on_model_save "auto" is DeepSpeed's default, false.
  Config ac = load("accelerate_ds_config_zero3_model_only.json");
  EXPECT_FALSE(ac.zero.stage3_gather_16bit_weights_on_model_save);
  EXPECT_EQ(*ac.train_batch_size, 1);
  // DeepSpeed's SDMA all-gather example, its torch.compile test (fp16 keys in bf16), and
  // DeepSpeedExamples' GAN (a leading space, betas [0.5, 0.999]) and CIFAR Lamb configs.
  EXPECT_TRUE(has_notice(load("deepspeed_sdma_allgather_zero3.json"),
                         "`zero_optimization.sdma_allgather` has no effect"));
  EXPECT_TRUE(has_notice(load("deepspeed_tests_torch_compile_z2.json"), "no effect"));
  EXPECT_DOUBLE_EQ(load("dsexamples_gan_deepspeed_config.json").optimizer.beta1, 0.5);
  Config lamb = load("dsexamples_cifar_lamb.json");
  EXPECT_EQ(lamb.optimizer.type, OptimizerType::kLamb);
  EXPECT_FALSE(lamb.optimizer.bias_correction);
  EXPECT_DOUBLE_EQ(lamb.optimizer.max_coeff, 0.3);
}

// ---- dump ---------------------------------------------------------------------------------------
void expect_round_trip(Config c) {
  const std::string text = dump_config(c);
  Config back = parse_config_text(text, "dump.yaml");
  if (c.world_size > 0) resolve_batch_sizes(back, c.world_size);
  c.notices.clear();
  back.notices.clear();
  back.source_path = c.source_path;
  EXPECT_EQ(back, c) << text;
}

TEST(ConfigDump, RoundTripsEveryPublishedConfig) {
  for (const fs::path& f : json_files(fs::path(ZT_SOURCE_DIR) / "configs" / "deepspeed")) {
    SCOPED_TRACE(f.string());
    Config c = load_config(f.string());
    expect_round_trip(c);
    try {
      resolve_batch_sizes(c, 2);
    } catch (const ConfigError&) {
      continue;
    }
    expect_round_trip(c);
  }
}

TEST(ConfigDump, RoundTripsEveryOptimizerAndScheduler) {
  for (const char* opt : {"Adam", "AdamW", "Lamb", "OneBitAdam", "ZeroOneAdam", "OneBitLamb"})
    expect_round_trip(parse(std::string("optimizer: {type: ") + opt + ", params: {lr: 0.1}}\n"));
  expect_round_trip(parse(
      "scheduler: {type: WarmupCosineLR, params: {warmup_num_steps: 10, cos_min_ratio: 0.1}}\n"));
  expect_round_trip(
      parse("scheduler: {type: OneCycle, params: {cycle_min_lr: 0.001, cycle_max_lr: 0.01}}\n"));
  expect_round_trip(
      parse("scheduler: {type: LRRangeTest, params: {lr_range_test_staircase: true}}\n"));
  expect_round_trip(parse("scheduler: {type: WarmupDecayLR, params: {warmup_type: linear}}\n"));
  expect_round_trip(parse(
      "comms_logger: {enabled: true, prof_ops: [all_reduce, \"all_gather\"]}\nvocabulary_size: "
      "50257\n"
      "data: {path: \"a \\\"quoted\\\" path\"}\nactivation_checkpointing: {number_checkpoints: 4}\n"
      "communication_data_type: bf16\ndata_types: {grad_accum_dtype: fp32}\n"));
}

TEST(ConfigDump, ShowsResolvedValuesAndNotices) {
  Config c = parse(
      "zero_optimization: {cpu_offload: true, stage: 2}\ntrain_micro_batch_size_per_gpu: 4\n");
  resolve_batch_sizes(c, 2);
  const std::string text = dump_config(c);
  EXPECT_HAS(text, "stage: 2", "device: cpu", "train_batch_size: 8", "world size 2",
             "# notice:", "cpu_offload", "reduce_bucket_size: 500000000");
  EXPECT_HAS(dump_config(parse("")), "train_batch_size: auto");
}

}  // namespace
}  // namespace zt::io
