// Tests of core/: bf16/f16 conversions against PyTorch's bit patterns and an independent
// nearest-even reference, the ThreadPool's coverage and nesting contracts, and Status/Result.
#include <gtest/gtest.h>

#include <atomic>
#include <bit>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "core/dtype.h"
#include "core/half.h"
#include "core/status.h"
#include "core/tensor.h"
#include "core/thread_pool.h"

namespace mistral {
namespace {

// float32 bits -> torch.tensor(...).to(torch.bfloat16) bits, np.float16 bits (numpy and torch
// agree on f16). Covers signed zeros, infinities, halfway cases both ways, carries into the
// exponent, overflow to inf, float32 subnormals, f16 subnormals and the f16 underflow threshold.
// NaN inputs are checked separately (payloads are not standardized).
struct HalfCase {
  uint32_t f32;
  uint16_t bf16;
  uint16_t f16;
};
constexpr HalfCase kTorchCases[] = {
    {0x00000000u, 0x0000u, 0x0000u}, {0x80000000u, 0x8000u, 0x8000u},
    {0x3f800000u, 0x3f80u, 0x3c00u}, {0xbf800000u, 0xbf80u, 0xbc00u},
    {0x7f800000u, 0x7f80u, 0x7c00u}, {0xff800000u, 0xff80u, 0xfc00u},
    {0x3f808000u, 0x3f80u, 0x3c04u}, {0x3f818000u, 0x3f82u, 0x3c0cu},
    {0x3f808001u, 0x3f81u, 0x3c04u}, {0x3f807fffu, 0x3f80u, 0x3c04u},
    {0x3f80ffffu, 0x3f81u, 0x3c08u}, {0x3fff8000u, 0x4000u, 0x3ffcu},
    {0x7f7fffffu, 0x7f80u, 0x7c00u}, {0xff7fffffu, 0xff80u, 0xfc00u},
    {0x7f7f8000u, 0x7f80u, 0x7c00u}, {0x7f7f7fffu, 0x7f7fu, 0x7c00u},
    {0x00000001u, 0x0000u, 0x0000u}, {0x80000001u, 0x8000u, 0x8000u},
    {0x007fffffu, 0x0080u, 0x0000u}, {0x00008000u, 0x0000u, 0x0000u},
    {0x00018000u, 0x0002u, 0x0000u}, {0x00400000u, 0x0040u, 0x0000u},
    {0x00800000u, 0x0080u, 0x0000u}, {0x00ff8000u, 0x0100u, 0x0000u},
    {0x3eaaaaabu, 0x3eabu, 0x3555u}, {0x40490fdbu, 0x4049u, 0x4248u},
    {0xc2f6e979u, 0xc2f7u, 0xd7b7u}, {0x33000000u, 0x3300u, 0x0000u},
    {0x33000001u, 0x3300u, 0x0001u}, {0x33800000u, 0x3380u, 0x0001u},
    {0x337fffffu, 0x3380u, 0x0001u}, {0x38800000u, 0x3880u, 0x0400u},
    {0x387fe000u, 0x3880u, 0x0400u}, {0x387fc000u, 0x3880u, 0x03ffu},
    {0x38000000u, 0x3800u, 0x0200u}, {0x38002000u, 0x3800u, 0x0200u},
    {0x38006000u, 0x3800u, 0x0202u}, {0x477fe000u, 0x4780u, 0x7bffu},
    {0x477fefffu, 0x4780u, 0x7bffu}, {0x477ff000u, 0x4780u, 0x7c00u},
    {0x47800000u, 0x4780u, 0x7c00u}, {0x3f801000u, 0x3f80u, 0x3c00u},
    {0x3f803000u, 0x3f80u, 0x3c02u}, {0x3f800fffu, 0x3f80u, 0x3c00u},
    {0x3f801001u, 0x3f80u, 0x3c01u}, {0x34000000u, 0x3400u, 0x0002u},
    {0x33c00000u, 0x33c0u, 0x0002u}, {0x33a00000u, 0x33a0u, 0x0001u},
    {0x33e00000u, 0x33e0u, 0x0002u}, {0xb3c00000u, 0xb3c0u, 0x8002u},
    {0x3c000000u, 0x3c00u, 0x2000u}, {0x3a000000u, 0x3a00u, 0x1000u},
    {0x37800000u, 0x3780u, 0x0100u}, {0x387fffffu, 0x3880u, 0x0400u},
};

float from_bits(uint32_t b) { return std::bit_cast<float>(b); }

TEST(HalfTest, MatchesTorchBitPatterns) {
  for (const HalfCase& c : kTorchCases) {
    const float f = from_bits(c.f32);
    EXPECT_EQ(float_to_bf16(f).bits, c.bf16) << std::hex << "f32 0x" << c.f32;
    EXPECT_EQ(float_to_f16(f).bits, c.f16) << std::hex << "f32 0x" << c.f32;
  }
}

bool is_bf16_nan(uint16_t b) { return (b & 0x7f80u) == 0x7f80u && (b & 0x7fu) != 0; }
bool is_f16_nan(uint16_t b) { return (b & 0x7c00u) == 0x7c00u && (b & 0x3ffu) != 0; }

TEST(HalfTest, NanStaysNanWithItsSign) {
  // 0x7f800001 and 0x7f80ffff would become infinity if the payload were simply truncated.
  for (uint32_t bits : {0x7fc00000u, 0x7f800001u, 0x7f80ffffu, 0x7fa00000u, 0x7fffffffu}) {
    for (uint32_t sign : {0u, 0x80000000u}) {
      const float f = from_bits(bits | sign);
      const uint16_t bf = float_to_bf16(f).bits, h = float_to_f16(f).bits;
      EXPECT_TRUE(is_bf16_nan(bf)) << std::hex << (bits | sign) << " -> " << bf;
      EXPECT_TRUE(is_f16_nan(h)) << std::hex << (bits | sign) << " -> " << h;
      EXPECT_EQ(bf & 0x8000u, sign >> 16);
      EXPECT_EQ(h & 0x8000u, sign >> 16);
      EXPECT_TRUE(std::isnan(bf16_to_float(BF16{bf})));
      EXPECT_TRUE(std::isnan(f16_to_float(F16{h})));
    }
  }
}

// Value of a half-precision bit pattern from first principles (ldexp), independent of half.h.
double f16_value(uint16_t b) {
  const int exp = (b >> 10) & 0x1f, mant = b & 0x3ff;
  const double sign = (b & 0x8000) ? -1.0 : 1.0;
  if (exp == 31) return mant ? NAN : sign * INFINITY;
  if (exp == 0) return sign * std::ldexp(mant, -24);
  return sign * std::ldexp(1024 + mant, exp - 25);
}
double bf16_value(uint16_t b) {
  const int exp = (b >> 7) & 0xff, mant = b & 0x7f;
  const double sign = (b & 0x8000) ? -1.0 : 1.0;
  if (exp == 255) return mant ? NAN : sign * INFINITY;
  if (exp == 0) return sign * std::ldexp(mant, -133);
  return sign * std::ldexp(128 + mant, exp - 134);
}

TEST(HalfTest, WideningIsExactForEveryPattern) {
  for (uint32_t b = 0; b < 0x10000u; ++b) {
    const uint16_t bits = static_cast<uint16_t>(b);
    const double fv = f16_value(bits), bv = bf16_value(bits);
    ASSERT_EQ(std::bit_cast<uint32_t>(f16_bits_to_float(bits)),
              std::bit_cast<uint32_t>(f16_to_float(F16{bits})))
        << std::hex << b;
    if (std::isnan(fv)) {
      EXPECT_TRUE(std::isnan(f16_to_float(F16{bits}))) << std::hex << b;
    } else {
      ASSERT_EQ(static_cast<double>(f16_to_float(F16{bits})), fv) << std::hex << b;
      ASSERT_EQ(float_to_f16(f16_to_float(F16{bits})).bits, bits) << std::hex << b;
    }
    if (std::isnan(bv)) {
      EXPECT_TRUE(std::isnan(bf16_to_float(BF16{bits}))) << std::hex << b;
    } else {
      ASSERT_EQ(static_cast<double>(bf16_to_float(BF16{bits})), bv) << std::hex << b;
      ASSERT_EQ(float_to_bf16(bf16_to_float(BF16{bits})).bits, bits) << std::hex << b;
    }
  }
}

// Nearest-even by search over the monotonic positive patterns; the pattern past the largest
// finite one (infinity) counts as the next power of two, which is how IEEE defines overflow.
uint16_t reference_round(double x, double (*value)(uint16_t), uint16_t inf_bits, double past_max) {
  const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  const double a = std::fabs(x);
  uint16_t lo = 0, hi = inf_bits;  // value(lo) <= a < value(hi)
  auto val = [&](uint16_t b) { return b == inf_bits ? past_max : value(b); };
  if (a >= past_max) return sign | inf_bits;
  while (hi - lo > 1) {
    const uint16_t mid = static_cast<uint16_t>((lo + hi) / 2);
    (val(mid) <= a ? lo : hi) = mid;
  }
  const double dlo = a - val(lo), dhi = val(hi) - a;
  const uint16_t pick = dlo < dhi ? lo : dhi < dlo ? hi : ((lo & 1) ? hi : lo);
  return sign | pick;
}

TEST(HalfTest, RandomFloatsRoundToNearestEven) {
  std::mt19937 rng(1234);
  for (int i = 0; i < 400000; ++i) {
    uint32_t bits = rng();
    if (i % 2) bits = (bits & 0x80ffffffu) | ((0x30u + i % 0x18u) << 24);  // f16 range
    const float f = from_bits(bits);
    if (std::isnan(f)) continue;
    ASSERT_EQ(float_to_bf16(f).bits, reference_round(f, bf16_value, 0x7f80, std::ldexp(1.0, 128)))
        << std::hex << bits;
    ASSERT_EQ(float_to_f16(f).bits, reference_round(f, f16_value, 0x7c00, 65536.0))
        << std::hex << bits;
  }
}

// Every value exactly halfway between two neighbouring finite bf16 or f16 values (all exactly
// representable in float32) must round to the one with an even pattern; this includes f16
// subnormals, the subnormal/normal boundary and the overflow threshold 65520.
TEST(HalfTest, EveryMidpointRoundsToEven) {
  for (uint32_t b = 0; b < 0x7c00u; ++b) {
    const double mid =
        (f16_value(uint16_t(b)) + (b + 1 == 0x7c00u ? 65536.0 : f16_value(uint16_t(b + 1)))) / 2;
    const float f = static_cast<float>(mid);
    ASSERT_EQ(double(f), mid) << std::hex << b;
    const uint16_t even = (b & 1u) ? uint16_t(b + 1) : uint16_t(b);
    ASSERT_EQ(float_to_f16(f).bits, even) << std::hex << "f16 midpoint above 0x" << b;
    ASSERT_EQ(float_to_f16(-f).bits, even | 0x8000u) << std::hex << b;
  }
  for (uint32_t b = 0; b < 0x7f80u; ++b) {
    const double next = b + 1 == 0x7f80u ? std::ldexp(1.0, 128) : bf16_value(uint16_t(b + 1));
    const double mid = (bf16_value(uint16_t(b)) + next) / 2;
    const float f = static_cast<float>(mid);
    ASSERT_EQ(double(f), mid) << std::hex << b;
    const uint16_t even = (b & 1u) ? uint16_t(b + 1) : uint16_t(b);
    ASSERT_EQ(float_to_bf16(f).bits, even) << std::hex << "bf16 midpoint above 0x" << b;
    ASSERT_EQ(float_to_bf16(-f).bits, even | 0x8000u) << std::hex << b;
  }
}

TEST(DTypeTest, NamesSizesAndParsing) {
  EXPECT_EQ(dtype_size(DType::kBF16), 2u);
  EXPECT_EQ(dtype_size(DType::kF32), 4u);
  EXPECT_EQ(dtype_size(DType::kI64), 8u);
  EXPECT_EQ(dtype_size(DType::kBool), 1u);
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16, DType::kF64, DType::kI64, DType::kI32,
                  DType::kI16, DType::kI8, DType::kU8, DType::kBool}) {
    EXPECT_EQ(parse_dtype(dtype_name(t)), t) << dtype_name(t);
  }
  EXPECT_FALSE(parse_dtype("bf16").has_value());  // safetensors spelling only
  EXPECT_FALSE(parse_dtype("F8_E4M3").has_value());
  EXPECT_EQ(parse_float_dtype("bfloat16"), DType::kBF16);
  EXPECT_EQ(parse_float_dtype("float16"), DType::kF16);
  EXPECT_EQ(parse_float_dtype("f32"), DType::kF32);
  EXPECT_FALSE(parse_float_dtype("int8").has_value());
}

TEST(TensorTest, ConvertRoundsLikeTheScalarFunctions) {
  Tensor src = Tensor::allocate(DType::kF32, {3, 70001});  // several parallel chunks
  auto* v = static_cast<float*>(src.mutable_data());
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (uint64_t i = 0; i < src.num_elements(); ++i) v[i] = normal(rng);
  Tensor bf = convert_tensor(src, DType::kBF16);
  Tensor h = convert_tensor(src, DType::kF16);
  Tensor back = convert_tensor(bf, DType::kF32);
  ASSERT_EQ(bf.shape, src.shape);
  for (uint64_t i = 0; i < src.num_elements(); ++i) {
    ASSERT_EQ(bf.as<BF16>()[i].bits, float_to_bf16(v[i]).bits) << i;
    ASSERT_EQ(h.as<F16>()[i].bits, float_to_f16(v[i]).bits) << i;
    ASSERT_EQ(back.as<float>()[i], bf16_to_float(bf.as<BF16>()[i])) << i;
  }
  EXPECT_EQ(convert_tensor(src, DType::kF32).data, src.data);  // same dtype: same view
}

// Runs parallel_for and checks that every index in [0, n) was visited exactly once, by chunks
// that do not overlap.
void expect_exact_cover(ThreadPool& pool, size_t n, size_t grain) {
  std::vector<std::atomic<int>> hits(n);
  std::atomic<int> calls{0};
  pool.parallel_for(n, grain, [&](size_t begin, size_t end) {
    ASSERT_LE(begin, end);
    ASSERT_LE(end, n);
    if (begin < end) ++calls;
    for (size_t i = begin; i < end; ++i) hits[i].fetch_add(1);
  });
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "n=" << n << " i=" << i;
  EXPECT_LE(calls.load(), pool.num_threads());
  if (n > 0) {
    EXPECT_GE(calls.load(), 1);
  }
}

TEST(ThreadPoolTest, EveryIndexExactlyOnce) {
  for (int threads : {1, 2, 3, 4, 7}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.num_threads(), threads);
    for (size_t n : {0, 1, 2, 3, 5, 7, 8, 64, 100, 1000, 4097}) {
      for (size_t grain : {0, 1, 2, 3, 16, 333, 5000}) {
        SCOPED_TRACE("threads=" + std::to_string(threads) + " n=" + std::to_string(n) +
                     " grain=" + std::to_string(grain));
        expect_exact_cover(pool, n, grain);
      }
    }
  }
}

TEST(ThreadPoolTest, ChunksHoldAtLeastGrainItems) {
  // The header promises chunks of at least `grain` items (kernels size grains so that a chunk
  // amortizes its setup). n=7, grain=3 on 4 threads must not be cut into chunks of 2.
  ThreadPool pool(4);
  for (size_t n : {7, 10, 11, 100}) {
    for (size_t grain : {3, 4, 30}) {
      std::mutex mu;
      std::vector<size_t> sizes;
      pool.parallel_for(n, grain, [&](size_t begin, size_t end) {
        std::lock_guard<std::mutex> lock(mu);
        sizes.push_back(end - begin);
      });
      for (size_t s : sizes) {
        EXPECT_TRUE(s >= grain || sizes.size() == 1)
            << "n=" << n << " grain=" << grain << ": chunk of " << s;
      }
    }
  }
}

TEST(ThreadPoolTest, UsesSeveralThreadsAndNestedCallsRunInline) {
  ThreadPool pool(4);
  std::mutex mu;
  std::condition_variable seen;
  std::set<std::thread::id> outer_threads;
  std::atomic<int> inner_calls{0}, inner_bad{0};
  pool.parallel_for(4, 1, [&](size_t begin, size_t end) {
    const auto me = std::this_thread::get_id();
    {
      std::lock_guard<std::mutex> lock(mu);
      outer_threads.insert(me);
    }
    // Would deadlock (call_mutex_ held) if a nested call were dispatched to the pool.
    pool.parallel_for(1000, 1, [&](size_t b, size_t e) {
      ++inner_calls;
      if (std::this_thread::get_id() != me || b != 0 || e != 1000) ++inner_bad;
    });
    // Each chunk waits (up to 5 s) for a second thread to show up, so that one thread cannot
    // take every chunk before the others wake, however loaded the machine is.
    std::unique_lock<std::mutex> lock(mu);
    seen.notify_all();
    seen.wait_for(lock, std::chrono::seconds(5), [&] { return outer_threads.size() >= 2; });
  });
  EXPECT_EQ(inner_calls.load(), 4);
  EXPECT_EQ(inner_bad.load(), 0);
  EXPECT_GE(outer_threads.size(), 2u);
}

// Workers spin for kSpinMicros after a call and then sleep: calls that come while they spin,
// and calls after they have gone to sleep, both cover every index once.
TEST(ThreadPoolTest, CallsWhileWorkersSpinAndAfterTheySleep) {
  ThreadPool pool(3);
  for (int rep = 0; rep < 6; ++rep) {
    for (int quick = 0; quick < 50; ++quick) expect_exact_cover(pool, 90, 1);
    std::this_thread::sleep_for(
        std::chrono::microseconds(rep % 2 ? 3 * ThreadPool::kSpinMicros : 0));
  }
}

TEST(ThreadPoolTest, ConcurrentCallersAreSerializedCorrectly) {
  ThreadPool pool(3);
  std::atomic<int> failures{0};
  auto caller = [&](size_t n) {
    for (int rep = 0; rep < 200; ++rep) {
      std::vector<std::atomic<int>> hits(n);
      pool.parallel_for(n, 1, [&](size_t b, size_t e) {
        for (size_t i = b; i < e; ++i) hits[i].fetch_add(1);
      });
      for (auto& h : hits) failures += h.load() != 1;
    }
  };
  std::thread a(caller, 37), b(caller, 101), c(caller, 5);
  a.join();
  b.join();
  c.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST(ThreadPoolTest, GlobalPoolIsUsable) {
  ThreadPool& g = ThreadPool::global();
  EXPECT_EQ(&g, &ThreadPool::global());
  EXPECT_GE(g.num_threads(), 1);
  expect_exact_cover(g, 12345, 7);
}

TEST(StatusTest, OkAndErrors) {
  Status ok;
  EXPECT_TRUE(ok.ok());
  EXPECT_TRUE(Status::ok_status().ok());
  EXPECT_TRUE(ok.with_context("file").ok());
  EXPECT_EQ(ok.with_context("file").message(), "");
  Status e = error("field \"x\" is bad");
  EXPECT_FALSE(e.ok());
  EXPECT_EQ(e.message(), "field \"x\" is bad");
  Status c = e.with_context("cfg.json").with_context("model");
  EXPECT_FALSE(c.ok());
  EXPECT_EQ(c.message(), "model: cfg.json: field \"x\" is bad");
  EXPECT_FALSE(Status::error("").ok());  // an error with an empty message is still an error
}

Result<int> parse_positive(int v) {
  if (v <= 0) return error("v must be positive, got " + std::to_string(v));
  return v;
}

Result<std::unique_ptr<int>> make_box(int v) {
  MISTRAL_ASSIGN_OR_RETURN(int checked, parse_positive(v));
  return std::make_unique<int>(checked);
}

int g_after_assign = 0;

Result<int> doubled_box(int v) {
  MISTRAL_ASSIGN_OR_RETURN(std::unique_ptr<int> box, make_box(v));  // move-only value
  ++g_after_assign;
  MISTRAL_ASSIGN_OR_RETURN(auto again, make_box(*box));  // two on different lines coexist
  return *box + *again;
}

Status check_both(int a, int b) {
  MISTRAL_RETURN_IF_ERROR(parse_positive(a).status());
  MISTRAL_RETURN_IF_ERROR(parse_positive(b).status());
  return Status();
}

TEST(ResultTest, ValueAndError) {
  Result<int> r = parse_positive(5);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, 5);
  EXPECT_EQ(r.value(), 5);
  EXPECT_TRUE(r.status().ok());
  Result<int> bad = parse_positive(-1);
  EXPECT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), "v must be positive, got -1");
  Result<std::string> s = std::string("abc");
  EXPECT_EQ(s->size(), 3u);
  std::string moved = std::move(s).value();
  EXPECT_EQ(moved, "abc");
}

TEST(ResultTest, AssignOrReturnPropagatesAndStopsEarly) {
  g_after_assign = 0;
  Result<int> good = doubled_box(21);
  ASSERT_TRUE(good.ok()) << good.status().message();
  EXPECT_EQ(*good, 42);
  EXPECT_EQ(g_after_assign, 1);
  Result<int> bad = doubled_box(-3);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), "v must be positive, got -3");
  EXPECT_EQ(g_after_assign, 1);  // nothing after the failing line ran
  EXPECT_TRUE(check_both(1, 2).ok());
  EXPECT_EQ(check_both(1, -2).message(), "v must be positive, got -2");
  EXPECT_EQ(check_both(-1, -2).message(), "v must be positive, got -1");
}

TEST(ResultDeathTest, MisuseAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH({ Result<int> r(Status::ok_status()); }, "Result built from an ok Status");
  EXPECT_DEATH(
      {
        Result<int> r = parse_positive(0);
        (void)r.value();
      },
      "value\\(\\) of failed Result: v must be positive");
  EXPECT_DEATH({ MISTRAL_CHECK(1 + 1 == 3) << "extra " << 7; },
               "check failed: 1 \\+ 1 == 3 extra 7");
}

}  // namespace
}  // namespace mistral
