// The model's side of Backend recording (CUDA graphs) and joined matrices, checked on the CPU
// with a backend that records and joins the way a device backend does: ops issued between
// begin_capture and end_capture are kept as closures and run again by replay, reading the step's
// sequence index from backend memory (first_seq_index_device) as the CUDA kernels do, and
// place_concatenated joins q/k/v and gate/up into one host matrix with row views. Generation on
// it must equal the plain CPU backend bit for bit (recording) and closely (joined matrices, whose
// rows go through the matmul in other tiles; single-row steps then take the model's fused_matmul
// path with its default), and a recording must be replayed only for the cache and shape it was
// made for. With `sample` it also samples on the "device" (host Samplers behind
// Backend::sample_tokens): generation must pick the tokens host sampling picks, and only token
// ids may come back.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#include "engine/generator.h"
#include "fixture_util.h"
#include "recording_cpu_backend.h"
#include "sampling/sampler.h"

namespace mistral::testing {
namespace {

std::unique_ptr<Model> load_on(const std::string& name, std::unique_ptr<Backend> backend) {
  auto model = load_model(fixture_dir(name), std::move(backend));
  EXPECT_TRUE(model.ok()) << model.status().message();
  return model.ok() ? std::move(model).value() : nullptr;
}

// Decode steps of one row alone and of the whole batch, HF's greedy tokens fed back, 40 steps on
// the sliding-window fixture (past its window of 5): logits of every step.
std::vector<float> decode_steps(Model& model, const std::string& name, int64_t batch_rows) {
  const std::string ref = fixture_dir(reference_case(name));
  Inputs in = read_inputs(ref + "/inputs.json");
  nlohmann::json greedy = read_json(ref + "/greedy.json");
  std::vector<float> logits;
  for (int64_t pass = 0; pass < 2; ++pass) {  // two caches: a recording must not outlive its own
    const int64_t batch = batch_rows;
    std::vector<int32_t> ids;
    std::vector<uint8_t> mask;
    for (int64_t b = 0; b < batch; ++b) {
      ids.insert(ids.end(), in.ids.begin() + b * in.seq, in.ids.begin() + (b + 1) * in.seq);
      mask.insert(mask.end(), in.mask.begin() + b * in.seq, in.mask.begin() + (b + 1) * in.seq);
    }
    const int64_t steps = greedy["max_new_tokens"].get<int64_t>();
    auto cache = model.new_cache(batch, in.seq + steps);
    EXPECT_TRUE(cache.ok());
    ForwardOptions last_only;
    last_only.all_logits = false;
    auto out = model.forward(ids, mask, batch, *cache, last_only);
    for (int64_t step = 0; step < steps && out.ok(); ++step) {
      logits.insert(logits.end(), out->logits.begin(), out->logits.end());
      std::vector<int32_t> next(batch);
      for (int64_t b = 0; b < batch; ++b) next[b] = greedy["new_tokens"][b][step].get<int32_t>();
      out = model.forward(next, std::vector<uint8_t>(batch, 1), batch, *cache, last_only);
    }
    EXPECT_TRUE(out.ok()) << out.status().message();
  }
  return logits;
}

TEST(RecordingBackend, ReplayedDecodeEqualsTheCpuBackendBitForBit) {
  for (const std::string name : {"gqa", "sliding_window"}) {
    for (int64_t batch : {1, 3}) {
      auto plain = load_on(name, make_cpu_backend());
      auto recorder = std::make_unique<RecordingCpuBackend>(/*join=*/false);
      RecordingCpuBackend* rec = recorder.get();
      auto recorded = load_on(name, std::move(recorder));
      ASSERT_NE(plain, nullptr);
      ASSERT_NE(recorded, nullptr);
      const std::vector<float> a = decode_steps(*plain, name, batch);
      const std::vector<float> b = decode_steps(*recorded, name, batch);
      ASSERT_EQ(a.size(), b.size());
      for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i], b[i]) << name << " logit " << i;
      // One recording per cache (the second decode step), replayed on every later step.
      EXPECT_EQ(rec->recordings, 2) << name;
      EXPECT_GT(rec->replays, 2 * 4) << name;
    }
  }
}

TEST(RecordingBackend, JoinedMatricesGiveTheSameLogits) {
  for (const std::string name : {"gqa", "head_dim", "sliding_window"}) {
    auto plain = load_on(name, make_cpu_backend());
    auto joiner = std::make_unique<RecordingCpuBackend>(/*join=*/true);
    RecordingCpuBackend* rec = joiner.get();
    auto joined = load_on(name, std::move(joiner));
    ASSERT_NE(plain, nullptr);
    ASSERT_NE(joined, nullptr);
    EXPECT_EQ(rec->joined, 2 * joined->config().num_hidden_layers);
    EXPECT_FALSE(joined->weights().layers[0].wqkv.empty());
    EXPECT_EQ(joined->weights().layers[0].wk.data,
              static_cast<const uint8_t*>(joined->weights().layers[0].wqkv.data) +
                  joined->weights().layers[0].wq.num_bytes());
    const std::vector<float> a = decode_steps(*plain, name, 1);  // batch 1: the joined path
    const std::vector<float> b = decode_steps(*joined, name, 1);
    // Four fused matmuls per layer and decode step: q|k|v, o, gate|up, down.
    EXPECT_GE(rec->fused, 4 * joined->config().num_hidden_layers);
    ASSERT_EQ(a.size(), b.size());
    Diff d = masked_diff(b.data(), a.data(), std::vector<uint8_t>(a.size() / 256, 1), 256);
    expect_close(d, name + " joined vs separate matrices", 1e-5);
  }
}

}  // namespace
}  // namespace mistral::testing

namespace mistral::testing {
namespace {

// Generation with the backend sampling picks the host's tokens (greedy, and sampled with
// temperature, top-k and top-p from per-row seeds), downloads only token ids, and falls back
// to host sampling for what a backend does not do (repetition penalty) or when told to.
TEST(RecordingBackend, SamplingOnTheBackendPicksTheHostTokens) {
  const std::string name = "gqa";
  auto plain = load_on(name, make_cpu_backend());
  auto sampler_backend = std::make_unique<RecordingCpuBackend>(/*join=*/false);
  RecordingCpuBackend* rec = sampler_backend.get();
  rec->sample = true;
  auto device = load_on(name, std::move(sampler_backend));
  ASSERT_NE(plain, nullptr);
  ASSERT_NE(device, nullptr);
  const std::vector<std::vector<int32_t>> prompts = {{1, 5, 9, 13, 2}, {1, 7, 3}};
  const int64_t vocab = device->config().vocab_size;
  for (int mode = 0; mode < 4; ++mode) {
    GenerationConfig gen;
    gen.max_new_tokens = 12;
    gen.sampling.greedy = mode == 0;
    gen.sampling.temperature = mode == 0 ? 1.0f : 0.9f;
    gen.sampling.top_k = mode == 2 ? 5 : 0;
    gen.sampling.top_p = mode == 2 ? 0.9f : 1.0f;
    gen.sampling.repetition_penalty = mode == 3 ? 1.3f : 1.0f;  // not on the backend
    gen.sampling.seed = 11;
    auto want = generate(*plain, prompts, gen);
    ASSERT_TRUE(want.ok()) << want.status().message();
    for (bool on_device : {true, false}) {
      gen.sample_on_device = on_device;
      rec->sampled = 0;
      rec->largest_download = 0;
      auto got = generate(*device, prompts, gen);
      ASSERT_TRUE(got.ok()) << got.status().message();
      EXPECT_EQ(got->new_tokens, want->new_tokens) << "mode " << mode << " on_device " << on_device;
      const bool used = on_device && mode != 3;
      EXPECT_EQ(rec->sampled, used ? gen.max_new_tokens : 0) << "mode " << mode;
      if (used) {
        EXPECT_EQ(rec->largest_download, prompts.size() * sizeof(int32_t)) << "mode " << mode;
      } else {
        EXPECT_GE(rec->largest_download, prompts.size() * vocab * sizeof(float)) << "mode " << mode;
      }
    }
  }
}

TEST(RecordingBackend, ASamplerMustMatchTheBatch) {
  auto backend = std::make_unique<RecordingCpuBackend>(/*join=*/false);
  backend->sample = true;
  auto model = load_on("gqa", std::move(backend));
  ASSERT_NE(model, nullptr);
  auto sampler = model->new_sampler(std::vector<SamplingRow>(2));
  ASSERT_TRUE(sampler.ok());
  auto cache = model->new_cache(1, 8);
  ASSERT_TRUE(cache.ok());
  ForwardOptions options;
  options.all_logits = false;
  options.sampler = &*sampler;
  auto out =
      model->forward(std::vector<int32_t>{1, 2}, std::vector<uint8_t>{1, 1}, 1, *cache, options);
  ASSERT_FALSE(out.ok());
  EXPECT_NE(out.status().message().find("sampler of 2 rows"), std::string::npos)
      << out.status().message();
  EXPECT_EQ(cache->length(), 0);
  EXPECT_FALSE(make_cpu_backend()->new_sampler({}).ok());
}

}  // namespace
}  // namespace mistral::testing
