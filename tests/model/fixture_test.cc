// The engine against Hugging Face transformers' own numbers (tests/fixtures, made by
// tools/make_hf_fixtures.py): logits and hidden states of every fixture model, padding on either
// side, each row alone, cached decoding and greedy generation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "engine/generator.h"
#include "fixture_util.h"

namespace mistral::testing {
namespace {

class FixtureTest : public ::testing::TestWithParam<std::string> {};

TEST_P(FixtureTest, LogitsAndHiddenStatesMatchTransformers) {
  const std::string name = GetParam();
  const std::string ref = fixture_dir(reference_case(name));
  auto model = load_fixture_model_for_f32_reference(name);
  ASSERT_NE(model, nullptr);
  Inputs in = read_inputs(ref + "/inputs.json");
  auto cache = KvCache::create(model->config(), in.batch, in.seq);
  ASSERT_TRUE(cache.ok()) << cache.status().message();
  ForwardOptions options;
  options.output_hidden_states = true;
  auto out = model->forward(in.ids, in.mask, in.batch, *cache, options);
  ASSERT_TRUE(out.ok()) << out.status().message();

  Array logits = read_array(ref + "/expected.safetensors", "logits");
  ASSERT_EQ(out->logits.size(), logits.data.size());
  expect_close(masked_diff(out->logits.data(), logits.data.data(), in.mask, logits.shape[2]),
               name + " logits");
  const int64_t layers = model->config().num_hidden_layers;
  ASSERT_EQ(static_cast<int64_t>(out->hidden_states.size()), layers + 1);
  for (int64_t l = 0; l <= layers; ++l) {
    Array h = read_array(ref + "/expected.safetensors", "hidden_states." + std::to_string(l));
    ASSERT_EQ(out->hidden_states[l].size(), h.data.size());
    expect_close(masked_diff(out->hidden_states[l].data(), h.data.data(), in.mask, h.shape[2]),
                 name + " hidden_states." + std::to_string(l));
  }
}

TEST_P(FixtureTest, EachRowAloneMatchesTransformers) {
  const std::string name = GetParam();
  const std::string ref = fixture_dir(reference_case(name));
  auto model = load_fixture_model_for_f32_reference(name);
  ASSERT_NE(model, nullptr);
  Inputs in = read_inputs(ref + "/inputs.json");
  for (int64_t b = 0; b < in.batch; ++b) {
    std::vector<int32_t> ids = in.row(b);
    std::vector<uint8_t> mask(ids.size(), 1);
    auto cache = KvCache::create(model->config(), 1, static_cast<int64_t>(ids.size()));
    ASSERT_TRUE(cache.ok());
    auto out = model->forward(ids, mask, 1, *cache);
    ASSERT_TRUE(out.ok()) << out.status().message();
    Array expected =
        read_array(ref + "/expected_single.safetensors", "logits." + std::to_string(b));
    ASSERT_EQ(out->logits.size(), expected.data.size());
    expect_close(masked_diff(out->logits.data(), expected.data.data(), mask, expected.shape[1]),
                 name + " row " + std::to_string(b) + " alone");
  }
}

// Prefill of the first half, then one token at a time through the cache: same logits as the
// one-shot forward over the whole padded batch.
TEST_P(FixtureTest, CachedDecodeEqualsFullForward) {
  const std::string name = GetParam();
  const std::string ref = fixture_dir(reference_case(name));
  auto model = load_fixture_model_for_f32_reference(name);
  ASSERT_NE(model, nullptr);
  Inputs in = read_inputs(ref + "/inputs.json");
  Array expected = read_array(ref + "/expected.safetensors", "logits");
  const int64_t vocab = expected.shape[2];
  const std::vector<float> logits = cached_decode_logits(*model, in, vocab);
  ASSERT_EQ(logits.size(), expected.data.size());
  expect_close(masked_diff(logits.data(), expected.data.data(), in.mask, vocab),
               name + " cached decode");
}

TEST_P(FixtureTest, GreedyTokensAndStepLogitsMatchTransformers) {
  const std::string name = GetParam();
  const std::string ref = fixture_dir(reference_case(name));
  auto model = load_fixture_model_for_f32_reference(name);
  ASSERT_NE(model, nullptr);
  Inputs in = read_inputs(ref + "/inputs.json");
  nlohmann::json greedy = read_json(ref + "/greedy.json");
  const int64_t n = greedy["max_new_tokens"].get<int64_t>();
  const std::vector<std::vector<int32_t>> prompts = in.rows();

  GenerationConfig gen;
  gen.max_new_tokens = n;
  gen.sampling.greedy = true;
  gen.stop_at_eos = greedy.contains("stop_step");
  auto result = generate(*model, prompts, gen);
  ASSERT_TRUE(result.ok()) << result.status().message();
  for (int64_t b = 0; b < in.batch; ++b) {
    std::vector<int32_t> expected = greedy["new_tokens"][b].get<std::vector<int32_t>>();
    if (gen.stop_at_eos && result->finish_reasons[b] == FinishReason::kStopToken) {
      expected.resize(result->new_tokens[b].size());  // HF pads a finished row; we stop it
      EXPECT_EQ(static_cast<int64_t>(expected.size()), greedy["stop_step"].get<int64_t>() + 1);
    }
    EXPECT_EQ(result->new_tokens[b], expected) << name << " row " << b;
  }

  // Feed HF's tokens back step by step and compare every step's logits (for the sliding-window
  // case this runs 40 steps, far past the window, through the rolling cache).
  Array step_logits = read_array(ref + "/greedy_logits.safetensors", "step_logits");
  const int64_t vocab = step_logits.shape[2];
  auto cache = KvCache::create(model->config(), in.batch, in.seq + n);
  ASSERT_TRUE(cache.ok());
  ForwardOptions last_only;
  last_only.all_logits = false;
  auto out = model->forward(in.ids, in.mask, in.batch, *cache, last_only);
  ASSERT_TRUE(out.ok());
  const int64_t compared_rows = greedy.contains("stop_step") ? in.batch - 1 : in.batch;
  for (int64_t step = 0; step < n; ++step) {
    for (int64_t b = in.batch - compared_rows; b < in.batch; ++b) {
      std::vector<uint8_t> one_row(1, 1);
      expect_close(masked_diff(out->logits.data() + b * vocab,
                               step_logits.data.data() + (b * n + step) * vocab, one_row, vocab),
                   name + " step " + std::to_string(step) + " row " + std::to_string(b));
    }
    std::vector<int32_t> next(in.batch);
    for (int64_t b = 0; b < in.batch; ++b) next[b] = greedy["new_tokens"][b][step].get<int32_t>();
    out = model->forward(next, std::vector<uint8_t>(in.batch, 1), in.batch, *cache, last_only);
    ASSERT_TRUE(out.ok()) << out.status().message();
  }
}

INSTANTIATE_TEST_SUITE_P(AllCases, FixtureTest, ::testing::ValuesIn(all_fixtures()));

TEST(FixtureExtras, RightPaddedBatchMatchesTransformers) {
  auto model = load_fixture_model("gqa");
  ASSERT_NE(model, nullptr);
  Inputs in = read_inputs(fixture_dir("gqa") + "/inputs_right.json");
  auto cache = KvCache::create(model->config(), in.batch, in.seq);
  ASSERT_TRUE(cache.ok());
  auto out = model->forward(in.ids, in.mask, in.batch, *cache);
  ASSERT_TRUE(out.ok());
  Array expected = read_array(fixture_dir("gqa") + "/expected_right.safetensors", "logits");
  expect_close(masked_diff(out->logits.data(), expected.data.data(), in.mask, expected.shape[2]),
               "right padding");
}

// Largest KL(p || q) in nats over the rows of [B, T, vocab] logits whose mask is 1, p = softmax(a).
double max_kl(const float* a, const float* b, const std::vector<uint8_t>& mask, int64_t vocab) {
  double worst = 0;
  for (size_t r = 0; r < mask.size(); ++r) {
    if (!mask[r]) continue;
    const float* x = a + r * vocab;
    const float* y = b + r * vocab;
    const double mx = *std::max_element(x, x + vocab), my = *std::max_element(y, y + vocab);
    double zx = 0, zy = 0;
    for (int64_t i = 0; i < vocab; ++i) {
      zx += std::exp(x[i] - mx);
      zy += std::exp(y[i] - my);
    }
    double kl = 0;
    for (int64_t i = 0; i < vocab; ++i) {
      const double lp = x[i] - mx - std::log(zx), lq = y[i] - my - std::log(zy);
      kl += std::exp(lp) * (lp - lq);
    }
    worst = std::max(worst, kl);
  }
  return worst;
}

// ARCHITECTURE.md's bf16 rule against HF computing natively in bf16 (greedy_bf16.json,
// expected_bf16.safetensors): the engine on the BF16 weights in place, each matmul's activations
// rounded to bf16 like HF's (backend.h). HF bf16 also rounds the residual stream, norms and
// attention to bf16, so the logits differ by a few bf16 steps: measured max |diff| 0.227 at a
// logit scale of 15.1 (1.5e-2 of the scale; HF bf16 itself is 0.236 from HF fp32, manifest.json)
// and KL(HF bf16 || ours) at most 5.7e-3 nats over the prompt positions (HF fp32 is 6.5e-3 from
// HF bf16). The greedy tokens are identical (stricter than the rule, which would allow a
// divergence where each side's token is in the other's top 5).
constexpr double kBf16LogitTolerance = 3e-2;
constexpr double kBf16MaxKl = 1e-2;

TEST(FixtureExtras, Bf16MatchesTransformersBf16) {
  auto model = load_fixture_model("bf16");
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->weights().layers[0].wq.dtype, DType::kBF16);  // used in place, not widened
  Inputs in = read_inputs(fixture_dir("bf16") + "/inputs.json");
  nlohmann::json greedy = read_json(fixture_dir("bf16") + "/greedy_bf16.json");
  const std::vector<std::vector<int32_t>> prompts = in.rows();
  GenerationConfig gen;
  gen.max_new_tokens = greedy["max_new_tokens"].get<int64_t>();
  gen.sampling.greedy = true;
  auto result = generate(*model, prompts, gen);
  ASSERT_TRUE(result.ok());
  for (int64_t b = 0; b < in.batch; ++b) {
    EXPECT_EQ(result->new_tokens[b], greedy["new_tokens"][b].get<std::vector<int32_t>>());
  }
  auto cache = KvCache::create(model->config(), in.batch, in.seq);
  auto out = model->forward(in.ids, in.mask, in.batch, *cache);
  ASSERT_TRUE(out.ok());
  Array hf_bf16 = read_array(fixture_dir("bf16") + "/expected_bf16.safetensors", "logits");
  const int64_t vocab = hf_bf16.shape[2];
  expect_close(masked_diff(out->logits.data(), hf_bf16.data.data(), in.mask, vocab),
               "bf16 vs HF bf16", kBf16LogitTolerance);
  EXPECT_LE(max_kl(hf_bf16.data.data(), out->logits.data(), in.mask, vocab), kBf16MaxKl);
}

// Prefill of half the prompt, then one token at a time (the decode kernels, m = 1): the same
// bound against HF bf16.
TEST(FixtureExtras, Bf16CachedDecodeMatchesTransformersBf16) {
  auto model = load_fixture_model("bf16");
  ASSERT_NE(model, nullptr);
  Inputs in = read_inputs(fixture_dir("bf16") + "/inputs.json");
  Array hf_bf16 = read_array(fixture_dir("bf16") + "/expected_bf16.safetensors", "logits");
  const int64_t vocab = hf_bf16.shape[2];
  const std::vector<float> logits = cached_decode_logits(*model, in, vocab);
  ASSERT_EQ(logits.size(), hf_bf16.data.size());
  expect_close(masked_diff(logits.data(), hf_bf16.data.data(), in.mask, vocab),
               "bf16 cached decode vs HF bf16", kBf16LogitTolerance);
  EXPECT_LE(max_kl(hf_bf16.data.data(), logits.data(), in.mask, vocab), kBf16MaxKl);
}

}  // namespace
}  // namespace mistral::testing
