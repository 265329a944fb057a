#include "sampling/sampling_params.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>

namespace mistral {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

TEST(ValidateTest, AcceptsDefaultsAndBoundaries) {
  EXPECT_TRUE(validate(SamplingParams{}).ok());
  SamplingParams p;
  p.temperature = kMaxTemperature;
  p.top_p = 1.0f;
  p.min_p = 1.0f;
  p.top_k = 1;
  p.repetition_penalty = 1e-3f;
  EXPECT_TRUE(validate(p).ok());
  p.min_p = 0.0f;
  p.top_p = 1e-6f;
  EXPECT_TRUE(validate(p).ok());
  SamplingParams greedy;
  greedy.greedy = true;
  greedy.temperature = 0.0f;  // the usual way clients ask for greedy decoding
  EXPECT_TRUE(validate(greedy).ok());
}

struct BadCase {
  const char* parameter;
  std::function<void(SamplingParams&)> mutate;
  const char* value_text;  // how the value appears in the message
};

TEST(ValidateTest, EachBadParameterIsNamedWithItsValue) {
  const BadCase cases[] = {
      {"temperature", [](SamplingParams& p) { p.temperature = kNaN; }, "nan"},
      {"temperature", [](SamplingParams& p) { p.temperature = -0.5f; }, "-0.5"},
      {"temperature", [](SamplingParams& p) { p.temperature = kInf; }, "inf"},
      {"temperature", [](SamplingParams& p) { p.temperature = 1000.0f; }, "1000"},
      {"temperature", [](SamplingParams& p) { p.temperature = 0.0f; }, "0"},
      {"temperature", [](SamplingParams& p) { p.greedy = true, p.temperature = kNaN; }, "nan"},
      {"top_k", [](SamplingParams& p) { p.top_k = -1; }, "-1"},
      {"top_p", [](SamplingParams& p) { p.top_p = kNaN; }, "nan"},
      {"top_p", [](SamplingParams& p) { p.top_p = 0.0f; }, "0"},
      {"top_p", [](SamplingParams& p) { p.top_p = -0.1f; }, "-0.1"},
      {"top_p", [](SamplingParams& p) { p.top_p = 1.5f; }, "1.5"},
      {"min_p", [](SamplingParams& p) { p.min_p = kNaN; }, "nan"},
      {"min_p", [](SamplingParams& p) { p.min_p = -0.25f; }, "-0.25"},
      {"min_p", [](SamplingParams& p) { p.min_p = 2.0f; }, "2"},
      {"repetition_penalty", [](SamplingParams& p) { p.repetition_penalty = kNaN; }, "nan"},
      {"repetition_penalty", [](SamplingParams& p) { p.repetition_penalty = 0.0f; }, "0"},
      {"repetition_penalty", [](SamplingParams& p) { p.repetition_penalty = -1.0f; }, "-1"},
      {"repetition_penalty", [](SamplingParams& p) { p.repetition_penalty = kInf; }, "inf"},
  };
  for (const BadCase& c : cases) {
    SamplingParams p;
    c.mutate(p);
    const Status status = validate(p);
    ASSERT_FALSE(status.ok()) << c.parameter << " = " << c.value_text;
    const std::string& message = status.message();
    EXPECT_NE(message.find(std::string(c.parameter) + " = " + c.value_text), std::string::npos)
        << message;
  }
}

TEST(ValidateTest, ZeroTemperatureSuggestsGreedy) {
  SamplingParams p;
  p.temperature = 0.0f;
  const Status status = validate(p);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("greedy"), std::string::npos) << status.message();
}

}  // namespace
}  // namespace mistral
