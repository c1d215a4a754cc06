// tests/zero/test_settings.cpp: how zero/settings.cpp turns DeepSpeed's precision keys into the
// engine's gradient dtype: communication_data_type (the dtype gradients are reduced in) against
// data_types.grad_accum_dtype and the weights' dtype; what cannot be done is one ConfigError
// naming the key.
#include <gtest/gtest.h>

#include <string>

#include "core/error.h"
#include "io/config.h"
#include "zero/settings.h"

namespace zt {
namespace {

io::Config config(const std::string& text) {
  io::Config c = io::parse_config_text(text, "test.yaml");
  io::resolve_batch_sizes(c, 1);
  return c;
}

std::string refusal(const std::string& text) {
  try {
    zero::check_supported(config(text));
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

DType grad_dtype(const std::string& text) {
  const io::Config c = config(text);
  zero::check_supported(c);
  return zero::engine_settings(c).grad_dtype;
}

TEST(CommunicationDataType, SameAsTheGradientDtypeChangesNothing) {
  EXPECT_EQ(grad_dtype(""), DType::f32);
  EXPECT_EQ(grad_dtype("communication_data_type: fp32\n"), DType::f32);
  EXPECT_EQ(grad_dtype("bf16: {enabled: true}\ncommunication_data_type: fp32\n"), DType::f32);
  EXPECT_EQ(grad_dtype("bf16: {enabled: true}\ndata_types: {grad_accum_dtype: bf16}\n"
                       "communication_data_type: bf16\n"),
            DType::bf16);
  EXPECT_EQ(grad_dtype("fp32_allreduce: true\n"), DType::f32);
}

// Megatron-DeepSpeed's ds_zero2_config_bf16.json: bf16 weights, fp32 accumulation (zerotrain's
// default), "bfp16" communication: the gradients are reduced in bf16.
TEST(CommunicationDataType, TheWeights16BitTypeMakesTheReduction16Bit) {
  EXPECT_EQ(grad_dtype("bf16: {enabled: true}\ncommunication_data_type: bf16\n"), DType::bf16);
  EXPECT_EQ(grad_dtype("bf16: {enabled: true}\ncommunication_data_type: bfp16\n"), DType::bf16);
  EXPECT_EQ(grad_dtype("fp16: {enabled: true}\ncommunication_data_type: fp16\n"), DType::f16);
  EXPECT_EQ(grad_dtype("bf16: {enabled: true}\nzero_optimization: {stage: 2}\n"
                       "communication_data_type: bf16\n"),
            DType::bf16);
}

TEST(CommunicationDataType, OtherCombinationsAreOneClearError) {
  for (const char* text : {"communication_data_type: bf16\n",  // fp32 weights
                           "bf16: {enabled: true}\ncommunication_data_type: fp16\n",
                           "bf16: {enabled: true}\ndata_types: {grad_accum_dtype: bf16}\n"
                           "communication_data_type: fp32\n"}) {
    const std::string why = refusal(text);
    EXPECT_NE(why.find("`communication_data_type`"), std::string::npos) << text << why;
    EXPECT_NE(why.find("not supported yet"), std::string::npos) << text << why;
  }
  const std::string why = refusal("bf16: {enabled: true}\ncommunication_data_type: bf16\n"
                                  "zero_optimization: {stage: 2, reduce_scatter: false}\n");
  EXPECT_NE(why.find("`zero_optimization.reduce_scatter`"), std::string::npos) << why;
}

}  // namespace
}  // namespace zt
