#include "sampling/logits_processing.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "fixture.h"
#include "sampling/rng.h"

namespace mistral {
namespace {

using testing::fixture;
using testing::FixtureCase;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

TEST(HuggingFaceFixtureTest, FileIsFromTheExpectedTransformers) {
  EXPECT_EQ(fixture().transformers_version, "5.24.0");
  EXPECT_GE(fixture().cases.size(), 200u);
}

// (a) Every HF case: same -inf pattern, same survivors, finite values within 1e-6 relative.
TEST(HuggingFaceFixtureTest, ApplyAllMatchesHuggingFaceProcessors) {
  for (const FixtureCase& c : fixture().cases) {
    SCOPED_TRACE(c.name);
    std::vector<float> row = c.logits;
    apply_all(c.params, row, c.seen_ids);
    ASSERT_EQ(row.size(), c.expected.size());
    std::vector<int32_t> survivors;
    for (size_t i = 0; i < row.size(); ++i) {
      if (row[i] != -kInf) survivors.push_back(static_cast<int32_t>(i));
      if (c.expected[i] == -kInf) {
        EXPECT_EQ(row[i], -kInf) << "token " << i << " should be removed";
      } else {
        EXPECT_NEAR(row[i], c.expected[i], 1e-6 * std::max(1.0f, std::fabs(c.expected[i])))
            << "token " << i;
      }
    }
    EXPECT_EQ(survivors, c.survivors);
  }
}

TEST(RepetitionPenaltyTest, EachDistinctIdOnceAndOutOfRangeIgnored) {
  std::vector<float> row = {2.0f, -2.0f, 3.0f, 0.0f};
  const std::vector<int32_t> seen = {0, 0, 1, 1, 1, -5, 4, 99};
  apply_repetition_penalty(row, seen, 2.0f);
  EXPECT_EQ(row, (std::vector<float>{1.0f, -4.0f, 3.0f, 0.0f}));
  apply_repetition_penalty(row, {}, 2.0f);
  EXPECT_EQ(row, (std::vector<float>{1.0f, -4.0f, 3.0f, 0.0f}));
}

TEST(TopKTest, KeepsEveryEntryTiedWithTheKthLargest) {
  std::vector<float> row = {1, 3, 3, 2, 3, 0};
  apply_top_k(row, 2);
  EXPECT_EQ(row, (std::vector<float>{-kInf, 3, 3, -kInf, 3, -kInf}));
  std::vector<float> all = {1, 2};
  apply_top_k(all, 5);
  EXPECT_EQ(all, (std::vector<float>{1, 2}));
}

TEST(TopPTest, TiesAreCutInAscendingIdOrder) {
  // Four equal entries: cumulative 0.25, 0.5, 0.75, 1 against the cut 1 - 0.5; torch's stable
  // ascending sort puts lower ids first, so ids 0 and 1 go.
  std::vector<float> row = {0, 0, 0, 0};
  apply_top_p(row, 0.5f);
  EXPECT_EQ(row, (std::vector<float>{-kInf, -kInf, 0, 0}));
  std::vector<float> one = {0, 0};
  apply_top_p(one, 1e-8f);  // 1 - top_p rounds to 1 in float32: all would go but the largest
  EXPECT_EQ(one, (std::vector<float>{-kInf, 0}));
}

// The scalar reference: HF's rule over the whole row sorted, without the pruning shortcut.
std::vector<float> top_p_reference(std::vector<float> row, float top_p) {
  std::vector<int32_t> order(row.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return row[a] < row[b]; });
  std::vector<float> sorted;
  for (int32_t i : order) sorted.push_back(row[i]);
  std::vector<float> probs(row.size());
  softmax(sorted, probs);
  const float cut = static_cast<float>(1.0 - top_p);
  double cumulative = 0.0;
  for (size_t j = 0; j + 1 < order.size(); ++j) {
    cumulative += probs[j];
    if (static_cast<float>(cumulative) <= cut) row[order[j]] = -kInf;
  }
  return row;
}

TEST(TopPTest, PrunedPathMatchesFullSortReference) {
  Xoshiro256 rng(7);
  for (int trial = 0; trial < 40; ++trial) {
    std::vector<float> row(4000 + trial);
    const double scale = 0.5 + trial % 5 * 2.0;
    for (float& x : row) x = static_cast<float>((rng.next_double() - 0.5) * scale);
    for (size_t i = 0; i < row.size(); i += 9) row[i] = row[0];  // a tie group
    const float top_p = static_cast<float>(0.05 + 0.9 * rng.next_double());
    std::vector<float> ours = row;
    apply_top_p(ours, top_p);
    EXPECT_EQ(ours, top_p_reference(row, top_p)) << "trial " << trial;
  }
}

TEST(MinPTest, KeepsTheTopTokenAndEverythingTiedWithIt) {
  std::vector<float> row = {1, 3, 3, -kInf};
  apply_min_p(row, 1.0f);
  EXPECT_EQ(row, (std::vector<float>{-kInf, 3, 3, -kInf}));
}

TEST(SoftmaxTest, NormalizesAndHandlesInfinitiesAndNaN) {
  std::vector<float> probs(4);
  softmax(std::vector<float>{0, std::log(3.0f), -kInf, kNaN}, probs);
  EXPECT_NEAR(probs[0], 0.25f, 1e-7);
  EXPECT_NEAR(probs[1], 0.75f, 1e-7);
  EXPECT_EQ(probs[2], 0.0f);
  EXPECT_EQ(probs[3], 0.0f);
  softmax(std::vector<float>{-kInf, kNaN, -kInf, -kInf}, probs);
  EXPECT_EQ(probs, (std::vector<float>{0, 0, 0, 0}));
  softmax(std::vector<float>{kInf, 1e30f, kInf, kNaN}, probs);
  EXPECT_EQ(probs, (std::vector<float>{0.5f, 0, 0.5f, 0}));
}

TEST(ApplyAllTest, NaNBecomesNegativeInfinityAndGreedyOnlyPenalizes) {
  SamplingParams p;
  p.top_k = 1;
  std::vector<float> row = {kNaN, 1.0f, 2.0f};
  apply_all(p, row, {});
  EXPECT_EQ(row, (std::vector<float>{-kInf, -kInf, 2.0f}));
  p.greedy = true;
  p.repetition_penalty = 2.0f;
  row = {kNaN, 1.0f, 2.0f};
  apply_all(p, row, std::vector<int32_t>{2});
  EXPECT_EQ(row, (std::vector<float>{-kInf, 1.0f, 1.0f}));  // top_k ignored when greedy
}

}  // namespace
}  // namespace mistral
