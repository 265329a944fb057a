// The whole model on the CUDA backend (--device cuda) against Hugging Face transformers' numbers
// (tests/fixtures) and against the CPU backend: every fixture's prompt logits through cached
// decoding, every greedy step's logits with HF's tokens fed back, and greedy generation. The GPU
// computes in bf16 (weights, activations and KV cache), so ARCHITECTURE.md's bf16 rule applies:
// logits within a bf16 tolerance of the scale, and wherever the top-1 token differs from HF's,
// each side's token is in the other's top 5. Skips without a GPU.
#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "core/quant.h"
#include "engine/generator.h"
#include "model/checkpoint_writer.h"
#include "model/fixture_util.h"
#include "model/kv_paging_util.h"
#include "model/tiny_config.h"
#include "temp_dir.h"

namespace mistral::testing {
namespace {

bool have_gpu() {
  int count = 0;
  const bool ok = cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
  (void)cudaGetLastError();
  return ok;
}

#define SKIP_WITHOUT_GPU() \
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device"

// bf16 everywhere: the fixtures' logit scales are 14-19 and rounding weights and activations to
// 8 bits of mantissa moves them by a few hundredths.
constexpr double kBf16Tolerance = 5e-2;

class CudaModelTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaModelTest, CachedDecodeLogitsCloseToTransformers) {
  SKIP_WITHOUT_GPU();
  const std::string name = GetParam();
  const std::string ref = fixture_dir(reference_case(name));
  auto model = load_fixture_model(name, {}, "cuda");
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->backend().name(), "cuda:0");
  Inputs in = read_inputs(ref + "/inputs.json");
  Array expected = read_array(ref + "/expected.safetensors", "logits");
  const int64_t vocab = expected.shape[2];
  // One forward over the whole padded batch.
  auto cache = model->new_cache(in.batch, in.seq);
  ASSERT_TRUE(cache.ok()) << cache.status().message();
  EXPECT_EQ(cache->dtype(), DType::kBF16);
  auto out = model->forward(in.ids, in.mask, in.batch, *cache);
  ASSERT_TRUE(out.ok()) << out.status().message();
  expect_close(masked_diff(out->logits.data(), expected.data.data(), in.mask, vocab),
               name + " prefill on cuda", kBf16Tolerance);
  // Half the prompt, then one token at a time through the cache.
  const std::vector<float> logits = cached_decode_logits(*model, in, vocab);
  ASSERT_EQ(logits.size(), expected.data.size());
  expect_close(masked_diff(logits.data(), expected.data.data(), in.mask, vocab),
               name + " cached decode on cuda", kBf16Tolerance);
  int64_t positions = 0, agree = 0;
  for (int64_t i = 0; i < in.batch * in.seq; ++i) {
    if (!in.mask[i]) continue;
    ++positions;
    const int64_t ours = argmax(&logits[i * vocab], vocab);
    const int64_t hf = argmax(&expected.data[i * vocab], vocab);
    agree += ours == hf;
    EXPECT_TRUE(in_top5(&logits[i * vocab], vocab, hf)) << name << " position " << i;
    EXPECT_TRUE(in_top5(&expected.data[i * vocab], vocab, ours)) << name << " position " << i;
  }
  std::printf("[ cuda ] %s: prompt top-1 agreement %lld of %lld\n", name.c_str(),
              static_cast<long long>(agree), static_cast<long long>(positions));
}

TEST_P(CudaModelTest, StepLogitsCloseToTransformers) {
  SKIP_WITHOUT_GPU();
  const std::string name = GetParam();
  auto model = load_fixture_model(name, {}, "cuda");
  ASSERT_NE(model, nullptr);
  const Steps s = decode_hf_tokens(*model, name);
  ASSERT_GT(s.steps, 0);
  int64_t compared = 0, agree = 0;
  for (int64_t b = s.first_row; b < s.batch; ++b) {
    for (int64_t step = 0; step < s.steps; ++step) {
      const float* ours = &s.ours[(b * s.steps + step) * s.vocab];
      const float* hf = &s.hf[(b * s.steps + step) * s.vocab];
      expect_close(masked_diff(ours, hf, std::vector<uint8_t>(1, 1), s.vocab),
                   name + " step " + std::to_string(step) + " row " + std::to_string(b),
                   kBf16Tolerance);
      ++compared;
      agree += argmax(ours, s.vocab) == argmax(hf, s.vocab);
      EXPECT_TRUE(in_top5(ours, s.vocab, argmax(hf, s.vocab))) << "row " << b << " step " << step;
      EXPECT_TRUE(in_top5(hf, s.vocab, argmax(ours, s.vocab))) << "row " << b << " step " << step;
    }
  }
  std::printf("[ cuda ] %s: step top-1 agreement %lld of %lld\n", name.c_str(),
              static_cast<long long>(agree), static_cast<long long>(compared));
}

// Greedy generation on the GPU against the CPU backend on the same weights rounded to bf16:
// identical tokens up to the first divergence, where each side's token is in the other's top 5
// (checked on the CPU's logits of that step).
TEST_P(CudaModelTest, GreedyGenerationFollowsTheBf16Rule) {
  SKIP_WITHOUT_GPU();
  const std::string name = GetParam();
  const std::string ref = fixture_dir(reference_case(name));
  auto gpu = load_fixture_model(name, {}, "cuda");
  ASSERT_NE(gpu, nullptr);
  Inputs in = read_inputs(ref + "/inputs.json");
  nlohmann::json greedy = read_json(ref + "/greedy.json");
  const std::vector<std::vector<int32_t>> prompts = in.rows();
  GenerationConfig gen;
  gen.max_new_tokens = greedy["max_new_tokens"].get<int64_t>();
  gen.sampling.greedy = true;
  auto result = generate(*gpu, prompts, gen);
  ASSERT_TRUE(result.ok()) << result.status().message();
  const Steps s = decode_hf_tokens(*gpu, name);
  int64_t identical_rows = 0;
  for (int64_t b = s.first_row; b < in.batch; ++b) {
    const std::vector<int32_t>& got = result->new_tokens[b];
    const std::vector<int32_t>& hf = s.tokens[b];
    ASSERT_EQ(got.size(), hf.size());
    const auto mismatch = std::mismatch(got.begin(), got.end(), hf.begin());
    if (mismatch.first == got.end()) {
      ++identical_rows;
      continue;
    }
    // Up to the divergence our prefix equals HF's, so s.ours / s.hf are both sides' logits.
    const int64_t step = mismatch.first - got.begin();
    const float* ours = &s.ours[(b * s.steps + step) * s.vocab];
    const float* theirs = &s.hf[(b * s.steps + step) * s.vocab];
    std::printf("[ diverged ] %s row %lld step %lld: ours %d, HF %d\n", name.c_str(),
                static_cast<long long>(b), static_cast<long long>(step), *mismatch.first,
                *mismatch.second);
    EXPECT_TRUE(in_top5(theirs, s.vocab, *mismatch.first)) << name << " row " << b;
    EXPECT_TRUE(in_top5(ours, s.vocab, *mismatch.second)) << name << " row " << b;
  }
  std::printf("[ cuda ] %s: %lld of %lld rows generate HF's greedy tokens exactly\n", name.c_str(),
              static_cast<long long>(identical_rows),
              static_cast<long long>(in.batch - s.first_row));
}

INSTANTIATE_TEST_SUITE_P(AllCases, CudaModelTest, ::testing::ValuesIn(all_fixtures()));

// The bf16 fixture against HF computing natively in bf16 (the closest reference for a bf16 GPU
// path): logits within a few bf16 ulps of the scale.
TEST(CudaModelExtras, Bf16FixtureMatchesTransformersBf16) {
  SKIP_WITHOUT_GPU();
  auto model = load_fixture_model("bf16", {}, "cuda");
  ASSERT_NE(model, nullptr);
  Inputs in = read_inputs(fixture_dir("bf16") + "/inputs.json");
  auto cache = model->new_cache(in.batch, in.seq);
  ASSERT_TRUE(cache.ok());
  auto out = model->forward(in.ids, in.mask, in.batch, *cache);
  ASSERT_TRUE(out.ok()) << out.status().message();
  Array hf_bf16 = read_array(fixture_dir("bf16") + "/expected_bf16.safetensors", "logits");
  expect_close(masked_diff(out->logits.data(), hf_bf16.data.data(), in.mask, hf_bf16.shape[2]),
               "cuda bf16 vs HF bf16", 0.05);
}

// Decode steps replayed from a CUDA graph give the same bits as the same ops launched one by
// one (MISTRAL_CUDA_GRAPHS=0), step after step, including steps past the sliding window.
TEST(CudaModelExtras, GraphReplayEqualsEagerLaunches) {
  SKIP_WITHOUT_GPU();
  auto run = [](bool graphs) {
    setenv("MISTRAL_CUDA_GRAPHS", graphs ? "1" : "0", 1);
    auto model = load_fixture_model("sliding_window", {}, "cuda");
    unsetenv("MISTRAL_CUDA_GRAPHS");
    std::vector<float> logits;
    if (model == nullptr) return logits;
    EXPECT_EQ(model->backend().supports_capture(), graphs);
    Inputs in = read_inputs(fixture_dir("sliding_window") + "/inputs.json");
    auto cache = model->new_cache(in.batch, in.seq + 12);
    EXPECT_TRUE(cache.ok());
    ForwardOptions last_only;
    last_only.all_logits = false;
    auto out = model->forward(in.ids, in.mask, in.batch, *cache, last_only);
    for (int step = 0; step < 12 && out.ok(); ++step) {
      logits.insert(logits.end(), out->logits.begin(), out->logits.end());
      std::vector<int32_t> next(in.batch);
      for (int64_t b = 0; b < in.batch; ++b) {
        next[b] = static_cast<int32_t>(argmax(out->logits.data() + b * model->config().vocab_size,
                                              model->config().vocab_size));
      }
      out = model->forward(next, std::vector<uint8_t>(in.batch, 1), in.batch, *cache, last_only);
    }
    EXPECT_TRUE(out.ok()) << out.status().message();
    return logits;
  };
  const std::vector<float> graphed = run(true);
  const std::vector<float> eager = run(false);
  ASSERT_FALSE(graphed.empty());
  ASSERT_EQ(graphed.size(), eager.size());
  for (size_t i = 0; i < graphed.size(); ++i) ASSERT_EQ(graphed[i], eager[i]) << "logit " << i;
}

// Logits of one row decoded alone, HF's greedy tokens fed back: the prompt, then one token per
// step, [steps, vocab] (the steps run with M = 1, where the joined q|k|v and gate|up matrices
// are multiplied in one matmul each).
std::vector<float> single_row_steps(Model& model, const Inputs& in, int64_t b,
                                    const std::vector<int32_t>& tokens) {
  const std::vector<int32_t> prompt = in.row(b);
  auto cache = model.new_cache(1, static_cast<int64_t>(prompt.size() + tokens.size()));
  EXPECT_TRUE(cache.ok());
  ForwardOptions last_only;
  last_only.all_logits = false;
  std::vector<float> logits;
  auto out = model.forward(prompt, std::vector<uint8_t>(prompt.size(), 1), 1, *cache, last_only);
  for (int32_t token : tokens) {
    EXPECT_TRUE(out.ok()) << out.status().message();
    if (!out.ok()) return {};
    logits.insert(logits.end(), out->logits.begin(), out->logits.end());
    out = model.forward(std::vector<int32_t>{token}, std::vector<uint8_t>{1}, 1, *cache, last_only);
  }
  return logits;
}

TEST(CudaModelExtras, SingleRowDecodeWithJoinedMatricesMatchesTransformers) {
  SKIP_WITHOUT_GPU();
  for (const std::string name : {"gqa", "sliding_window", "head_dim"}) {
    auto model = load_fixture_model(name, {}, "cuda");
    ASSERT_NE(model, nullptr);
    EXPECT_FALSE(model->weights().layers[0].wqkv.empty()) << "q, k, v were not joined";
    EXPECT_FALSE(model->weights().layers[0].w_gate_up.empty()) << "gate, up were not joined";
    const std::string ref = fixture_dir(name);
    Inputs in = read_inputs(ref + "/inputs.json");
    nlohmann::json greedy = read_json(ref + "/greedy.json");
    Array hf = read_array(ref + "/greedy_logits.safetensors", "step_logits");
    const int64_t steps = hf.shape[1], vocab = hf.shape[2];
    for (int64_t b = 0; b < in.batch; ++b) {
      const std::vector<float> ours =
          single_row_steps(*model, in, b, greedy["new_tokens"][b].get<std::vector<int32_t>>());
      ASSERT_EQ(static_cast<int64_t>(ours.size()), steps * vocab);
      for (int64_t step = 0; step < steps; ++step) {
        const float* o = &ours[step * vocab];
        const float* h = &hf.data[(b * steps + step) * vocab];
        expect_close(masked_diff(o, h, std::vector<uint8_t>(1, 1), vocab),
                     name + " alone, row " + std::to_string(b) + " step " + std::to_string(step),
                     kBf16Tolerance);
        EXPECT_TRUE(in_top5(o, vocab, argmax(h, vocab)))
            << name << " row " << b << " step " << step;
      }
    }
  }
}

// Single-row decode with the norms, residual adds and SwiGLU inside the GEMV kernels
// (fused_matmul) gives the bits of the separate ops (MISTRAL_CUDA_FUSE=0), for every weight format.
TEST(CudaModelExtras, FusedSingleRowDecodeEqualsTheSeparateOps) {
  SKIP_WITHOUT_GPU();
  Inputs in = read_inputs(fixture_dir("sliding_window") + "/inputs.json");
  const std::vector<int32_t> tokens = {5, 17, 200, 31, 7, 99, 3, 64, 12, 150, 42, 8};
  for (QuantType q : {QuantType::kNone, QuantType::kInt8, QuantType::kInt4}) {
    LoadOptions options;
    options.quantize = q;
    auto run = [&](bool fuse) {
      setenv("MISTRAL_CUDA_FUSE", fuse ? "1" : "0", 1);
      auto model = load_fixture_model("sliding_window", options, "cuda");
      unsetenv("MISTRAL_CUDA_FUSE");
      return model == nullptr ? std::vector<float>() : single_row_steps(*model, in, 0, tokens);
    };
    const std::vector<float> fused = run(true), separate = run(false);
    const std::string what(q == QuantType::kNone ? "bf16" : quant_type_name(q));
    ASSERT_FALSE(fused.empty()) << what;
    ASSERT_EQ(fused.size(), separate.size()) << what;
    for (size_t i = 0; i < fused.size(); ++i) ASSERT_EQ(fused[i], separate[i]) << what << " " << i;
  }
}

// Errors a user can cause on the GPU path are Status messages naming the cause.
TEST(CudaModelExtras, RefusesWhatTheGpuDoesNotStore) {
  SKIP_WITHOUT_GPU();
  auto model = load_fixture_model("gqa", {}, "cuda");
  ASSERT_NE(model, nullptr);
  auto f32_cache = model->new_cache(1, 8, DType::kF32);
  ASSERT_FALSE(f32_cache.ok());
  EXPECT_NE(f32_cache.status().message().find("bf16"), std::string::npos)
      << f32_cache.status().message();
  auto host_cache = KvCache::create(model->config(), 1, 8);  // host memory
  ASSERT_TRUE(host_cache.ok());
  auto out = model->forward(std::vector<int32_t>{1, 2}, std::vector<uint8_t>{1, 1}, 1, *host_cache);
  ASSERT_FALSE(out.ok());
  EXPECT_NE(out.status().message().find("Model::new_cache"), std::string::npos)
      << out.status().message();
  EXPECT_FALSE(make_backend("cuda:999").ok());
  auto saved = save_checkpoint(model->config(), model->mutable_weights(), "/nonexistent/x");
  ASSERT_FALSE(saved.ok());
  EXPECT_NE(saved.message().find("GPU"), std::string::npos) << saved.message();
}

// Quantized weights on the GPU: the CPU's int8 / int4 layout uploaded as it is, close to the
// CPU backend running the same quantized weights.
TEST(CudaModelExtras, QuantizedWeightsMatchTheCpu) {
  SKIP_WITHOUT_GPU();
  for (QuantType q : {QuantType::kInt8, QuantType::kInt4}) {
    LoadOptions options;
    options.quantize = q;
    auto gpu = load_fixture_model("gqa", options, "cuda");
    auto cpu = load_fixture_model("gqa", options, "cpu");
    ASSERT_NE(gpu, nullptr);
    ASSERT_NE(cpu, nullptr);
    Inputs in = read_inputs(fixture_dir("gqa") + "/inputs.json");
    const int64_t vocab = gpu->config().vocab_size;
    const std::vector<float> g = cached_decode_logits(*gpu, in, vocab);
    const std::vector<float> c = cached_decode_logits(*cpu, in, vocab);
    ASSERT_EQ(g.size(), c.size());
    expect_close(masked_diff(g.data(), c.data(), in.mask, vocab),
                 "quantized " + std::string(quant_type_name(q)) + " cuda vs cpu", kBf16Tolerance);
    // One row alone: decode steps through the joined quantized matrices.
    const std::vector<int32_t> tokens = {5, 17, 200, 31};
    const std::vector<float> g1 = single_row_steps(*gpu, in, 1, tokens);
    const std::vector<float> c1 = single_row_steps(*cpu, in, 1, tokens);
    ASSERT_EQ(g1.size(), c1.size());
    expect_close(masked_diff(g1.data(), c1.data(), std::vector<uint8_t>(tokens.size(), 1), vocab),
                 "quantized " + std::string(quant_type_name(q)) + " single row, cuda vs cpu",
                 kBf16Tolerance);
  }
}

// The paged KV cache on the GPU (tests/model/kv_paging_util.h): block tables of block sizes 1,
// 3 and 16, shuffled or moved row by row in pools larger than needed, give the default layout's
// logits bit for bit and put every key where the tables say, through every attention kernel and
// the store kernel: attention_generic (head_dim 8), and for head_dim 64 and 128 the decode kernel
// (decode steps, and a 7-token prompt: 14 query rows) and the flash prefill kernel (24-token
// prompts and 12-token chunks read through the cache: 24 or more query rows), with and without a
// sliding window (past it: the ring wraps).
TEST(CudaModelExtras, PagedKvCacheEqualsTheDefaultLayout) {
  SKIP_WITHOUT_GPU();
  struct Case {
    int64_t head_dim;
    std::optional<int64_t> window;
    int64_t prompt, chunk;
  };
  const Case cases[] = {{8, 5, 7, 4},
                        {8, std::nullopt, 7, 4},
                        {64, 5, 7, 0},
                        {64, std::nullopt, 24, 12},
                        {64, 5, 24, 12},
                        {128, 5, 7, 12},
                        {128, std::nullopt, 24, 0}};
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::Message()
                 << "head_dim " << c.head_dim << " window " << c.window.value_or(0) << " prompt "
                 << c.prompt << " chunk " << c.chunk);
    ModelConfig config = tiny_config(c.window);
    config.head_dim = c.head_dim;
    TempDir tmp;
    const std::string dir = tmp.file("model");
    const Status written = write_random_checkpoint(config, dir, DType::kBF16, 13, 0.1f);
    ASSERT_TRUE(written.ok()) << written.message();
    auto backend = make_backend("cuda");
    ASSERT_TRUE(backend.ok()) << backend.status().message();
    auto model = load_model(dir, std::move(backend).value());
    ASSERT_TRUE(model.ok()) << model.status().message();
    expect_paging_invisible(**model, DType::kBF16, c.prompt, c.chunk, /*steps=*/12);
  }
}

}  // namespace
}  // namespace mistral::testing

namespace mistral::testing {
namespace {

// Sampling on the GPU (only ids cross to the host) picks the tokens host sampling picks from
// the same GPU logits: greedy, and temperature / top-k / top-p with per-row seeds.
TEST(CudaModelExtras, DeviceSamplingPicksTheHostTokens) {
  SKIP_WITHOUT_GPU();
  for (const std::string name : {"gqa", "sliding_window", "head_dim"}) {
    auto gpu = load_fixture_model(name, {}, "cuda");
    ASSERT_NE(gpu, nullptr);
    ASSERT_TRUE(gpu->backend().supports_sampling());
    const Inputs in = read_inputs(fixture_dir(reference_case(name)) + "/inputs.json");
    const std::vector<std::vector<int32_t>> prompts = in.rows();
    for (int mode = 0; mode < 3; ++mode) {
      GenerationConfig gen;
      gen.max_new_tokens = 24;
      gen.sampling.greedy = mode == 0;
      gen.sampling.temperature = mode == 0 ? 1.0f : 0.8f;
      gen.sampling.top_k = mode == 2 ? 20 : 0;
      gen.sampling.top_p = mode == 2 ? 0.9f : 1.0f;
      gen.sampling.seed = 5;
      gen.sample_on_device = true;
      auto device = generate(*gpu, prompts, gen);
      gen.sample_on_device = false;
      auto host = generate(*gpu, prompts, gen);
      ASSERT_TRUE(device.ok() && host.ok());
      EXPECT_EQ(device->new_tokens, host->new_tokens) << name << " mode " << mode;
    }
  }
}

// Decode steps queued ahead of the host (GenerationConfig::decode_ahead, Model::start_step) give
// the tokens of steps queued after the host read them, however the generation stops; a step
// taken back leaves the cache as if it never ran (the next step's logits are the same bits),
// in the sliding-window fixture's full rolling cache too.
TEST(CudaModelExtras, DecodeAheadGivesTheTokensOfHostFedSteps) {
  SKIP_WITHOUT_GPU();
  for (const std::string name : {"gqa", "sliding_window"}) {
    auto gpu = load_fixture_model(name, {}, "cuda");
    ASSERT_NE(gpu, nullptr);
    const Inputs in = read_inputs(fixture_dir(reference_case(name)) + "/inputs.json");
    const std::vector<std::vector<int32_t>> prompts = in.rows();
    for (int sampled = 0; sampled < 2; ++sampled) {
      GenerationConfig gen;
      gen.max_new_tokens = 16;
      gen.sampling.greedy = sampled == 0;
      gen.sampling.temperature = 0.8f;
      gen.sampling.seed = 9;
      gen.decode_ahead = false;
      auto full = generate(*gpu, prompts, gen);
      ASSERT_TRUE(full.ok()) << full.status().message();
      for (int ending = 0; ending < 3; ++ending) {  // a stop token, the callback, the length
        GenerationConfig g = gen;
        if (ending == 0) g.stop_token_ids = {full->new_tokens[0][4]};
        int seen = 0;
        if (ending == 1) g.on_token = [&](int64_t, int32_t) { return ++seen < 7; };
        std::vector<GenerationResult> results;
        for (bool ahead : {false, true}) {
          g.decode_ahead = ahead;
          seen = 0;
          auto r = generate(*gpu, prompts, g);
          ASSERT_TRUE(r.ok()) << r.status().message();
          results.push_back(*r);
        }
        const std::string where =
            name + " sampled " + std::to_string(sampled) + " ending " + std::to_string(ending);
        EXPECT_EQ(results[0].new_tokens, results[1].new_tokens) << where;
        EXPECT_EQ(results[0].finish_reasons, results[1].finish_reasons) << where;
        EXPECT_EQ(gpu->started_steps(), 0) << where;
      }
    }
    // A step started and taken back before each kept one, against none.
    auto sampler = gpu->new_sampler({SamplingRow{/*greedy=*/true}});
    ASSERT_TRUE(sampler.ok());
    ForwardOptions sample;
    sample.all_logits = false;
    sample.sampler = &*sampler;
    const std::vector<int32_t> prompt = {1, 5, 9, 13, 2, 7, 7, 3, 4};
    const std::vector<uint8_t> one = {1};
    std::vector<std::vector<float>> logits(2);
    for (int pass = 0; pass < 2; ++pass) {
      auto cache = gpu->new_cache(1, 32);
      ASSERT_TRUE(cache.ok());
      auto out = gpu->forward(prompt, std::vector<uint8_t>(prompt.size(), 1), 1, *cache, sample);
      ASSERT_TRUE(out.ok()) << out.status().message();
      std::vector<int32_t> token = out->token_ids;
      for (int step = 0; step < 3; ++step) {
        if (pass == 1) {
          ASSERT_TRUE(gpu->start_step(*cache, sample).ok());
          ASSERT_TRUE(gpu->cancel_steps(*cache).ok());
        }
        auto next = gpu->forward(token, one, 1, *cache, sample);
        ASSERT_TRUE(next.ok()) << next.status().message();
        token = next->token_ids;
      }
      auto last = gpu->forward(token, one, 1, *cache);
      ASSERT_TRUE(last.ok()) << last.status().message();
      logits[pass] = last->logits;
    }
    EXPECT_EQ(logits[0], logits[1]) << name;
  }
}

}  // namespace
}  // namespace mistral::testing
