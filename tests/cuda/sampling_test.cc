// On-device argmax and sampling. Greedy must equal the CPU argmax exactly; the device stream must
// equal sampling/rng.h's; sampled ids must equal the CPU Sampler's for the same seed (the filters
// and the draw are the same algorithm), must only ever be tokens the HF filters allow, and must
// follow the filtered distribution (chi-square over many seeds).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "sampling/logits_processing.h"
#include "sampling/rng.h"
#include "sampling/sampler.h"

namespace mistral::cuda::testing {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

int32_t cpu_argmax(const float* row, int64_t n) {
  int32_t best = -1;
  for (int64_t i = 0; i < n; ++i) {
    if (std::isnan(row[i])) continue;
    if (best < 0 || row[i] > row[best]) best = static_cast<int32_t>(i);
  }
  return best < 0 ? 0 : best;
}

TEST_F(CudaTest, ArgmaxIsExactWithTiesNanAndInf) {
  const int64_t vocab = 32000;
  std::vector<float> logits = randn(8 * vocab, 3, 4.0f);
  logits[0 * vocab + 777] = 50.0f;  // ties: the lowest index wins
  logits[0 * vocab + 31999] = 50.0f;
  logits[0 * vocab + 12] = 50.0f;
  logits[1 * vocab + 5] = kNaN;  // NaN never wins
  logits[1 * vocab + 6] = kInf;
  for (int64_t i = 0; i < vocab; ++i) logits[2 * vocab + i] = kNaN;   // all NaN: 0
  for (int64_t i = 0; i < vocab; ++i) logits[3 * vocab + i] = -kInf;  // all -inf: 0
  logits[4 * vocab + 31999] = 100.0f;                                 // the last index
  for (int64_t i = 0; i < vocab; ++i) logits[5 * vocab + i] = i % 2 ? kNaN : -kInf;
  logits[5 * vocab + 30001] = -kInf;
  logits[6 * vocab + 1] = kNaN;
  DeviceBuffer d = upload(logits);
  DeviceBuffer ids = poisoned(8 * sizeof(int32_t));
  argmax(ctx(), d.as<float>(), 8, vocab, ids.as<int32_t>());
  std::vector<int32_t> got = download<int32_t>(ids, 8);
  for (int64_t r = 0; r < 8; ++r) {
    EXPECT_EQ(got[r], cpu_argmax(&logits[r * vocab], vocab)) << "row " << r;
  }
  EXPECT_EQ(got[0], 12);
  // The same through sample() with greedy rows, which must not touch the random state.
  std::vector<SampleParams> params(8);
  for (auto& p : params) p.greedy = 1;
  DeviceBuffer dp = upload(params);
  std::vector<uint64_t> seeds(8, 42);
  DeviceBuffer states = alloc(8 * sizeof(RngState));
  init_rng(ctx(), seeds.data(), 8, states.as<RngState>());
  const std::vector<RngState> before = download<RngState>(states, 8);
  ids = poisoned(8 * sizeof(int32_t));
  sample(ctx(), d.as<float>(), 8, vocab, dp.as<SampleParams>(), states.as<RngState>(),
         ids.as<int32_t>());
  EXPECT_EQ(download<int32_t>(ids, 8), got);
  const std::vector<RngState> after = download<RngState>(states, 8);
  for (int r = 0; r < 8; ++r) {
    for (int w = 0; w < 4; ++w) EXPECT_EQ(before[r].s[w], after[r].s[w]);
  }
}

// Device rows sampled twice against CPU Samplers with the same seeds, row by row.
void compare_with_cpu(KernelContext& ctx, const std::vector<float>& logits, int64_t rows,
                      int64_t vocab, const std::vector<SamplingParams>& cpu_params,
                      double min_agreement) {
  std::vector<SampleParams> params(rows);
  std::vector<uint64_t> seeds(rows);
  std::vector<Sampler> samplers;
  for (int64_t r = 0; r < rows; ++r) {
    const SamplingParams& c = cpu_params[r];
    params[r] = {c.greedy ? 1 : 0, c.temperature, c.top_k, c.top_p};
    seeds[r] = c.seed;
    samplers.emplace_back(c);
  }
  DeviceBuffer dl = upload(logits), dp = upload(params);
  DeviceBuffer states = alloc(rows * sizeof(RngState));
  init_rng(ctx, seeds.data(), rows, states.as<RngState>());
  int64_t agree = 0;
  for (int step = 0; step < 2; ++step) {
    DeviceBuffer ids = poisoned(rows * sizeof(int32_t));
    sample(ctx, dl.as<float>(), rows, vocab, dp.as<SampleParams>(), states.as<RngState>(),
           ids.as<int32_t>());
    const std::vector<int32_t> got = download<int32_t>(ids, rows);
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<float> row(logits.begin() + r * vocab, logits.begin() + (r + 1) * vocab);
      const int32_t want = samplers[r].sample(row, {});
      // Only tokens the HF filters keep: recheck with the CPU's apply_all.
      std::vector<float> filtered(logits.begin() + r * vocab, logits.begin() + (r + 1) * vocab);
      apply_all(cpu_params[r], filtered, {});
      ASSERT_GE(got[r], 0);
      ASSERT_LT(got[r], vocab);
      if (max_logit(filtered) > -kInf) {
        ASSERT_GT(filtered[got[r]], -kInf) << "row " << r << " picked a filtered token";
      }
      agree += got[r] == want;
    }
  }
  // The CPU and device weights differ by expf's last bit and the top-p cut by float rounding, so
  // a draw within ~1e-7 of a boundary may go either way; otherwise every id agrees.
  EXPECT_GE(static_cast<double>(agree) / (2 * rows), min_agreement) << agree << " of " << 2 * rows;
}

TEST_F(CudaTest, SampleEqualsCpuSamplerForTheSameSeed) {
  const int64_t rows = 512, vocab = 32000;
  const std::vector<float> logits = randn(rows * vocab, 5, 3.0f);
  std::vector<SamplingParams> params(rows);
  for (int64_t r = 0; r < rows; ++r) {
    SamplingParams& p = params[r];
    p.seed = 1000 + r;
    const int kind = r % 6;  // 0: plain softmax sampling
    if (kind == 1) p.temperature = 0.7f;
    if (kind == 2) p.top_k = 50;
    if (kind == 3) p.top_p = 0.9f;
    if (kind == 4) {
      p.temperature = 1.3f;
      p.top_k = 200;
      p.top_p = 0.8f;
    }
    if (kind == 5) p.greedy = true;
  }
  compare_with_cpu(ctx(), logits, rows, vocab, params, 0.995);
}

// Pearson's statistic of `counts` against probabilities `probs` (ids with prob 0 must not occur).
double chi_square(const std::vector<int64_t>& counts, const std::vector<double>& probs,
                  int64_t draws, int* df) {
  double stat = 0;
  *df = -1;
  for (size_t i = 0; i < probs.size(); ++i) {
    if (probs[i] == 0) {
      EXPECT_EQ(counts[i], 0) << "id " << i << " has probability 0";
      continue;
    }
    const double e = probs[i] * draws;
    stat += (counts[i] - e) * (counts[i] - e) / e;
    ++*df;
  }
  return stat;
}

// Draws one token per row from identical rows with distinct seeds; checks the allowed set and the
// distribution. The bound df + 6 sqrt(2 df) + 10 fails by chance with probability < 1e-6.
void check_distribution(KernelContext& ctx, const std::vector<float>& row, SampleParams prm,
                        const std::vector<double>& probs, const std::string& what) {
  SCOPED_TRACE(what);
  const int64_t rows = 20000, vocab = static_cast<int64_t>(row.size());
  std::vector<float> logits(rows * vocab);
  for (int64_t r = 0; r < rows; ++r) std::copy(row.begin(), row.end(), logits.begin() + r * vocab);
  std::vector<SampleParams> params(rows, prm);
  std::vector<uint64_t> seeds(rows);
  for (int64_t r = 0; r < rows; ++r) seeds[r] = 0x5eed0000 + r;
  DeviceBuffer dl = upload(logits), dp = upload(params);
  DeviceBuffer states = alloc(rows * sizeof(RngState));
  init_rng(ctx, seeds.data(), rows, states.as<RngState>());
  DeviceBuffer ids = poisoned(rows * sizeof(int32_t));
  sample(ctx, dl.as<float>(), rows, vocab, dp.as<SampleParams>(), states.as<RngState>(),
         ids.as<int32_t>());
  const std::vector<int32_t> got = download<int32_t>(ids, rows);
  std::vector<int64_t> counts(vocab, 0);
  for (int32_t id : got) {
    ASSERT_GE(id, 0);
    ASSERT_LT(id, vocab);
    ++counts[id];
  }
  int df = 0;
  const double stat = chi_square(counts, probs, rows, &df);
  EXPECT_LT(stat, df + 6 * std::sqrt(2.0 * df) + 10) << "chi-square " << stat << ", df " << df;
  // Same seeds, same ids.
  init_rng(ctx, seeds.data(), rows, states.as<RngState>());
  sample(ctx, dl.as<float>(), rows, vocab, dp.as<SampleParams>(), states.as<RngState>(),
         ids.as<int32_t>());
  EXPECT_EQ(download<int32_t>(ids, rows), got);
}

std::vector<double> softmax_of(const std::vector<float>& x, float temperature) {
  double mx = -1e300, sum = 0;
  for (float v : x) {
    if (v > -kInf) mx = std::max(mx, double(v / temperature));
  }
  std::vector<double> p(x.size(), 0.0);
  for (size_t i = 0; i < x.size(); ++i) {
    if (x[i] > -kInf) sum += (p[i] = std::exp(double(x[i] / temperature) - mx));
  }
  for (double& v : p) v /= sum;
  return p;
}

TEST_F(CudaTest, SampleTopKFollowsRenormalizedDistribution) {
  // 40 logits; top-3 with temperature 0.5 keeps ids 7, 20, 33 only (the others are <= 0.5).
  std::vector<float> row = randn(40, 9, 0.3f);
  for (float& v : row) v = std::min(v, 0.5f);
  row[7] = 2.0f;
  row[20] = 1.5f;
  row[33] = 1.2f;
  std::vector<float> kept(40, -kInf);
  for (int i : {7, 20, 33}) kept[i] = row[i];
  check_distribution(ctx(), row, {0, 0.5f, 3, 1.0f}, softmax_of(kept, 0.5f), "top-k 3");
  // Ties with the k-th value stay (HF): top-2 of {3, 1, 1, 1, 0...} keeps four ids.
  std::vector<float> ties(16, 0.0f);
  ties[2] = 3.0f;
  ties[5] = ties[9] = ties[14] = 1.0f;
  std::vector<float> ties_kept(16, -kInf);
  for (int i : {2, 5, 9, 14}) ties_kept[i] = ties[i];
  check_distribution(ctx(), ties, {0, 1.0f, 2, 1.0f}, softmax_of(ties_kept, 1.0f), "top-k ties");
}

TEST_F(CudaTest, SampleTopPRemovesTheLowTailOnly) {
  // Probabilities 0.4, 0.25, 0.15, 0.1 and 0.1 spread over 996 ids. Ascending cumulative sums
  // pass 1 - 0.7 = 0.3 only at the 0.15 entry (0.1 + 0.1 = 0.2, then 0.35): ids 0..2 stay.
  const int64_t vocab = 1000;
  std::vector<float> row(vocab);
  const double head[4] = {0.4, 0.25, 0.15, 0.1};
  for (int i = 0; i < 4; ++i) row[i] = static_cast<float>(std::log(head[i]));
  for (int64_t i = 4; i < vocab; ++i) row[i] = static_cast<float>(std::log(0.1 / 996));
  std::vector<double> probs(vocab, 0.0);
  probs[0] = 0.4 / 0.8, probs[1] = 0.25 / 0.8, probs[2] = 0.15 / 0.8;
  check_distribution(ctx(), row, {0, 1.0f, 0, 0.7f}, probs, "top-p 0.7");
  // Ten equal entries, top-p 0.35: HF's stable ascending sort removes ids 0..5 (cumulative
  // 0.6 <= 0.65) and keeps 6..9.
  std::vector<float> flat(10, 0.25f);
  std::vector<double> flat_probs(10, 0.0);
  for (int i = 6; i < 10; ++i) flat_probs[i] = 0.25;
  check_distribution(ctx(), flat, {0, 1.0f, 0, 0.35f}, flat_probs, "top-p ties");
  // top-k, then top-p on the k survivors (HF's order): top-4 leaves 0.4, 0.25, 0.15, 0.1
  // (sum 0.9); top-p 0.6 cuts at 0.4 * 0.9 = 0.36: 0.1 + 0.15 = 0.25 goes, 0.5 does not.
  std::vector<double> kp(vocab, 0.0);
  kp[0] = 0.4 / 0.65, kp[1] = 0.25 / 0.65;
  check_distribution(ctx(), row, {0, 1.0f, 4, 0.6f}, kp, "top-k 4 then top-p 0.6");
}

TEST_F(CudaTest, SampleWithNothingLeftTakesTheRawArgmax) {
  const int64_t vocab = 100;
  std::vector<float> logits(2 * vocab, -kInf);
  logits[vocab + 3] = kNaN;
  std::vector<SampleParams> params(2);
  params[0] = {0, 0.8f, 5, 0.9f};
  params[1] = {0, 1.0f, 0, 0.5f};
  DeviceBuffer dl = upload(logits), dp = upload(params);
  std::vector<uint64_t> seeds = {1, 2};
  DeviceBuffer states = alloc(2 * sizeof(RngState));
  init_rng(ctx(), seeds.data(), 2, states.as<RngState>());
  DeviceBuffer ids = poisoned(2 * sizeof(int32_t));
  sample(ctx(), dl.as<float>(), 2, vocab, dp.as<SampleParams>(), states.as<RngState>(),
         ids.as<int32_t>());
  EXPECT_EQ(download<int32_t>(ids, 2), (std::vector<int32_t>{0, 0}));
}

TEST_F(CudaTest, DeviceStreamEqualsCpuXoshiro) {
  // One sampled row over two equal logits picks id 1 iff u >= 0.5: the ids after n calls spell
  // the top bits of the stream's outputs.
  const int64_t rows = 64;
  std::vector<float> logits(rows * 2, 0.0f);
  std::vector<SampleParams> params(rows);
  std::vector<uint64_t> seeds(rows);
  for (int64_t r = 0; r < rows; ++r) seeds[r] = 977 * r + 5;
  DeviceBuffer dl = upload(logits), dp = upload(params);
  DeviceBuffer states = alloc(rows * sizeof(RngState));
  init_rng(ctx(), seeds.data(), rows, states.as<RngState>());
  std::vector<Xoshiro256> cpu;
  for (uint64_t s : seeds) cpu.emplace_back(s);
  for (int step = 0; step < 20; ++step) {
    DeviceBuffer ids = poisoned(rows * sizeof(int32_t));
    sample(ctx(), dl.as<float>(), rows, 2, dp.as<SampleParams>(), states.as<RngState>(),
           ids.as<int32_t>());
    const std::vector<int32_t> got = download<int32_t>(ids, rows);
    for (int64_t r = 0; r < rows; ++r) {
      const int32_t want = cpu[r].next_double() >= 0.5 ? 1 : 0;
      ASSERT_EQ(got[r], want) << "row " << r << " step " << step;
    }
  }
}

}  // namespace
}  // namespace mistral::cuda::testing
