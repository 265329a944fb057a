// BF16, F16 and I8 KV caches against Hugging Face transformers' numbers (tests/fixtures, which HF
// computed with its cache in fp32): greedy tokens, every decode step's logits with HF's tokens
// fed back, and cached decoding of the prompt; plus the rolling sliding-window cache in these
// types. The `bf16` fixture runs widened to F32 against its fp32 references (fixture_util.h), so
// these tests see only what the cache type changes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <tuple>
#include <vector>

#include "engine/generator.h"
#include "fixture_util.h"

namespace mistral::testing {
namespace {

// The error a cache of each type may add to logits, relative to the logit scale (as expect_close
// measures it), over every fixture: prompt logits through cached decoding and every greedy step's
// logits. Measured maxima (all fixtures, both comparisons): BF16 1.14e-2 (rope_1e6_toplevel step
// logits; 8.7e-3 elsewhere), F16 9.5e-4 (head_dim), I8 3.6e-2 (head_dim; 2.1e-2 elsewhere), at
// logit scales of 14-19.
double logit_tolerance(DType dtype) {
  switch (dtype) {
    case DType::kBF16:
      return 1.5e-2;
    case DType::kF16:
      return 1.5e-3;
    default:
      return 5e-2;
  }
}

class NarrowKvCacheTest : public ::testing::TestWithParam<std::tuple<std::string, DType>> {};

TEST_P(NarrowKvCacheTest, CachedDecodeLogitsCloseToTransformers) {
  const auto [name, dtype] = GetParam();
  const std::string ref = fixture_dir(reference_case(name));
  auto model = load_fixture_model_for_f32_reference(name);
  ASSERT_NE(model, nullptr);
  Inputs in = read_inputs(ref + "/inputs.json");
  Array expected = read_array(ref + "/expected.safetensors", "logits");
  const int64_t vocab = expected.shape[2];
  const std::vector<float> logits = cached_decode_logits(*model, in, vocab, dtype);
  ASSERT_EQ(logits.size(), expected.data.size());
  expect_close(masked_diff(logits.data(), expected.data.data(), in.mask, vocab),
               name + " cached decode, " + std::string(dtype_name(dtype)) + " cache",
               logit_tolerance(dtype));
  // Top-1 agreement over the real prompt positions.
  int64_t positions = 0, agree = 0;
  for (int64_t i = 0; i < in.batch * in.seq; ++i) {
    if (!in.mask[i]) continue;
    ++positions;
    agree += argmax(&logits[i * vocab], vocab) == argmax(&expected.data[i * vocab], vocab);
  }
  if (dtype == DType::kI8) {
    EXPECT_GE(agree * 10, positions * 9) << agree << " of " << positions;
  } else {
    EXPECT_EQ(agree, positions);
  }
}

// HF's greedy tokens fed back step by step: every step's logits within the type's tolerance and,
// for I8, the same top-1 token on at least 90% of the steps (measured: all but 1 of 120 on
// sliding_window and 1 of 24 on rope_1e6_toplevel), HF's token always in our top 5.
TEST_P(NarrowKvCacheTest, StepLogitsCloseToTransformers) {
  const auto [name, dtype] = GetParam();
  const Steps s = decode_hf_tokens(*load_fixture_model_for_f32_reference(name), name, dtype);
  ASSERT_GT(s.steps, 0);
  int64_t compared = 0, agree = 0;
  for (int64_t b = s.first_row; b < s.batch; ++b) {
    for (int64_t step = 0; step < s.steps; ++step) {
      const float* ours = &s.ours[(b * s.steps + step) * s.vocab];
      const float* hf = &s.hf[(b * s.steps + step) * s.vocab];
      expect_close(masked_diff(ours, hf, std::vector<uint8_t>(1, 1), s.vocab),
                   name + " step " + std::to_string(step) + " row " + std::to_string(b) + ", " +
                       std::string(dtype_name(dtype)) + " cache",
                   logit_tolerance(dtype));
      ++compared;
      agree += argmax(ours, s.vocab) == argmax(hf, s.vocab);
      EXPECT_TRUE(in_top5(ours, s.vocab, argmax(hf, s.vocab))) << "row " << b << " step " << step;
    }
  }
  if (dtype == DType::kI8) {
    EXPECT_GE(agree * 10, compared * 9) << agree << " of " << compared;
  }
}

// BF16 and F16 caches: greedy decoding gives HF's tokens (I8 is held to top-1 agreement on most
// steps instead, above). The one exception is the BF16 cache on
// rope_1e6_toplevel: row 1's step 5 has the fixture's smallest top1-top2 gap (0.053 at a logit
// scale of 14), less than the ~0.2 that rounding keys/values to bf16 moves its logits, so the
// tokens may part there; ARCHITECTURE.md's bf16 rule then holds at the first divergence (each
// side's token is in the other's top 5).
class HalfKvCacheTest : public NarrowKvCacheTest {};

TEST_P(HalfKvCacheTest, GreedyTokensMatchTransformers) {
  const auto [name, dtype] = GetParam();
  const bool may_diverge = dtype == DType::kBF16 && name == "rope_1e6_toplevel";
  const std::string ref = fixture_dir(reference_case(name));
  auto model = load_fixture_model_for_f32_reference(name);
  ASSERT_NE(model, nullptr);
  Inputs in = read_inputs(ref + "/inputs.json");
  nlohmann::json greedy = read_json(ref + "/greedy.json");
  const std::vector<std::vector<int32_t>> prompts = in.rows();
  GenerationConfig gen;
  gen.max_new_tokens = greedy["max_new_tokens"].get<int64_t>();
  gen.sampling.greedy = true;
  gen.stop_at_eos = greedy.contains("stop_step");
  gen.kv_cache_dtype = dtype;
  auto result = generate(*model, prompts, gen);
  ASSERT_TRUE(result.ok()) << result.status().message();
  // The ring's positions rounded up to whole blocks of 16 (fewer when the ring is shorter).
  const int64_t ring = std::min<int64_t>(in.seq + gen.max_new_tokens,
                                         model->config().sliding_window.value_or(1 << 30));
  const int64_t block = std::min(kDefaultKvBlockSize, ring);
  EXPECT_EQ(result->kv_cache_bytes, KvCache::bytes_per_position(model->config(), dtype) * in.batch *
                                        ((ring + block - 1) / block * block));
  const Steps s = decode_hf_tokens(*load_fixture_model_for_f32_reference(name), name, dtype);
  ASSERT_GT(s.steps, 0);
  for (int64_t b = 0; b < in.batch; ++b) {
    std::vector<int32_t> expected = s.tokens[b];
    if (gen.stop_at_eos && result->finish_reasons[b] == FinishReason::kStopToken) {
      expected.resize(result->new_tokens[b].size());  // HF pads a finished row; we stop it
    }
    const std::vector<int32_t>& got = result->new_tokens[b];
    if (!may_diverge) {
      EXPECT_EQ(got, expected) << name << " row " << b;
      continue;
    }
    ASSERT_EQ(got.size(), expected.size());
    const auto [ours_it, hf_it] = std::mismatch(got.begin(), got.end(), expected.begin());
    if (ours_it == got.end()) continue;
    const int64_t step = ours_it - got.begin();
    const float* ours = &s.ours[(b * s.steps + step) * s.vocab];
    const float* hf = &s.hf[(b * s.steps + step) * s.vocab];
    std::printf("[ diverged ] %s, %s cache: row %lld step %lld, ours %d, HF %d\n", name.c_str(),
                std::string(dtype_name(dtype)).c_str(), static_cast<long long>(b),
                static_cast<long long>(step), *ours_it, *hf_it);
    EXPECT_EQ(argmax(ours, s.vocab), *ours_it);  // the step logits are what greedy decoding saw
    EXPECT_TRUE(in_top5(hf, s.vocab, *ours_it)) << "our token not in HF's top 5";
    EXPECT_TRUE(in_top5(ours, s.vocab, *hf_it)) << "HF's token not in our top 5";
  }
}

std::string case_name(const ::testing::TestParamInfo<NarrowKvCacheTest::ParamType>& info) {
  return std::get<0>(info.param) + "_" + std::string(dtype_name(std::get<1>(info.param)));
}

INSTANTIATE_TEST_SUITE_P(Fixtures, NarrowKvCacheTest,
                         ::testing::Combine(::testing::ValuesIn(all_fixtures()),
                                            ::testing::Values(DType::kBF16, DType::kF16,
                                                              DType::kI8)),
                         case_name);
INSTANTIATE_TEST_SUITE_P(Fixtures, HalfKvCacheTest,
                         ::testing::Combine(::testing::ValuesIn(all_fixtures()),
                                            ::testing::Values(DType::kBF16, DType::kF16)),
                         case_name);

// The bf16 checkpoint with a BF16 cache against HF running natively in bf16 (whose cache is bf16
// too): the tokens and tolerance of fixture_test.cc's Bf16MatchesTransformersBf16.
TEST(NarrowKvCacheExtras, Bf16ModelWithBf16CacheMatchesTransformersBf16) {
  auto model = load_fixture_model("bf16");
  ASSERT_NE(model, nullptr);
  Inputs in = read_inputs(fixture_dir("bf16") + "/inputs.json");
  nlohmann::json greedy = read_json(fixture_dir("bf16") + "/greedy_bf16.json");
  const std::vector<std::vector<int32_t>> prompts = in.rows();
  GenerationConfig gen;
  gen.max_new_tokens = greedy["max_new_tokens"].get<int64_t>();
  gen.sampling.greedy = true;
  gen.kv_cache_dtype = DType::kBF16;
  auto result = generate(*model, prompts, gen);
  ASSERT_TRUE(result.ok());
  for (int64_t b = 0; b < in.batch; ++b) {
    EXPECT_EQ(result->new_tokens[b], greedy["new_tokens"][b].get<std::vector<int32_t>>());
  }
  Array hf_bf16 = read_array(fixture_dir("bf16") + "/expected_bf16.safetensors", "logits");
  const std::vector<float> logits =
      cached_decode_logits(*model, in, hf_bf16.shape[2], DType::kBF16);
  ASSERT_EQ(logits.size(), hf_bf16.data.size());
  expect_close(masked_diff(logits.data(), hf_bf16.data.data(), in.mask, hf_bf16.shape[2]),
               "bf16 model, bf16 cache vs HF bf16", 3e-2);
}

// The sliding_window fixture (W = 5) decoded 40 steps past its window through a rolling cache of
// W slots in each narrow type gives the logits of a cache that keeps every position in the same
// type: the same values are rounded the same way; only the order of the softmax sums differs.
// That ~1e-7 difference can carry a key or value across a rounding midpoint, so one element may
// differ by a step of the type: measured 3.2e-5 (F16), 4.9e-7 (BF16), 6.5e-7 (I8) relative to
// the logit scale; a slot or scale mix-up would be of order 1.
TEST(NarrowKvCacheExtras, RollingWindowCacheEqualsFullCacheOfTheSameType) {
  auto model = load_fixture_model("sliding_window");
  ASSERT_NE(model, nullptr);
  const int64_t window = *model->config().sliding_window;
  Inputs in = read_inputs(fixture_dir("sliding_window") + "/inputs.json");
  nlohmann::json greedy = read_json(fixture_dir("sliding_window") + "/greedy.json");
  const int64_t n = greedy["max_new_tokens"].get<int64_t>();
  ModelConfig keep_all = model->config();
  keep_all.sliding_window.reset();  // for the cache's sizing only; attention still uses W
  for (DType dtype : {DType::kBF16, DType::kF16, DType::kI8}) {
    SCOPED_TRACE(dtype_name(dtype));
    auto rolling = KvCache::create(model->config(), in.batch, in.seq + n, dtype);
    auto full = KvCache::create(keep_all, in.batch, in.seq + n, dtype);
    ASSERT_TRUE(rolling.ok() && full.ok());
    ASSERT_EQ(rolling->capacity(), window);
    ASSERT_EQ(full->capacity(), in.seq + n);
    EXPECT_LT(rolling->bytes() * 5, full->bytes());
    ForwardOptions last_only;
    last_only.all_logits = false;
    auto a = model->forward(in.ids, in.mask, in.batch, *rolling, last_only);
    auto b = model->forward(in.ids, in.mask, in.batch, *full, last_only);
    for (int64_t step = 0; step < n; ++step) {
      ASSERT_TRUE(a.ok() && b.ok());
      const Diff d = masked_diff(a->logits.data(), b->logits.data(),
                                 std::vector<uint8_t>(in.batch, 1), a->logits.size() / in.batch);
      EXPECT_LE(d.max_abs, logit_tolerance(dtype) / 10 * std::max(1.0, d.scale)) << "step " << step;
      std::vector<int32_t> next(in.batch);
      for (int64_t r = 0; r < in.batch; ++r) next[r] = greedy["new_tokens"][r][step].get<int32_t>();
      const std::vector<uint8_t> ones(in.batch, 1);
      a = model->forward(next, ones, in.batch, *rolling, last_only);
      b = model->forward(next, ones, in.batch, *full, last_only);
    }
    EXPECT_EQ(rolling->length(), in.seq + n);
    EXPECT_GT(rolling->length(), 8 * window);
  }
}

// Chunks of several tokens into a rolling cache that already holds a window: each chunk's first
// queries still see keys in the slots its own tokens take, so the chunk's keys may enter the
// ring only after its attention (with one token per step they may enter before: KvCache::
// write_args). Chunked prefill must give what a cache holding everything gives.
TEST(NarrowKvCacheExtras, ChunksIntoAFullRollingWindowEqualFullCache) {
  auto model = load_fixture_model("sliding_window");
  ASSERT_NE(model, nullptr);
  const int64_t window = *model->config().sliding_window;
  Inputs in = read_inputs(fixture_dir("sliding_window") + "/inputs.json");
  const std::vector<int32_t> row = in.row(0);
  std::vector<int32_t> ids;  // row 0's tokens repeated past four windows
  while (static_cast<int64_t>(ids.size()) < 4 * window + 5) {
    ids.insert(ids.end(), row.begin(), row.end());
  }
  ModelConfig keep_all = model->config();
  keep_all.sliding_window.reset();  // for the cache's sizing only; attention still uses W
  const int64_t total = static_cast<int64_t>(ids.size());
  auto rolling = KvCache::create(model->config(), 1, total, DType::kBF16);
  auto full = KvCache::create(keep_all, 1, total, DType::kBF16);
  ASSERT_TRUE(rolling.ok() && full.ok());
  ASSERT_EQ(rolling->capacity(), window);
  ForwardOptions last_only;
  last_only.all_logits = false;
  const int64_t chunk = 3;
  for (int64_t at = 0; at < total; at += chunk) {
    const int64_t n = std::min(chunk, total - at);
    const std::vector<int32_t> part(ids.begin() + at, ids.begin() + at + n);
    const std::vector<uint8_t> ones(n, 1);
    auto a = model->forward(part, ones, 1, *rolling, last_only);
    auto b = model->forward(part, ones, 1, *full, last_only);
    ASSERT_TRUE(a.ok() && b.ok());
    const Diff d = masked_diff(a->logits.data(), b->logits.data(), std::vector<uint8_t>(1, 1),
                               a->logits.size());
    ASSERT_LE(d.max_abs, logit_tolerance(DType::kBF16) / 10 * std::max(1.0, d.scale))
        << "chunk at " << at;
  }
}

}  // namespace
}  // namespace mistral::testing
