// Decode steps queued ahead of the host (Model::start_step / finish_step / cancel_steps, and
// GenerationConfig::decode_ahead), on the CPU with RecordingCpuBackend sampling on the "device"
// and, with `defer`, running its ops only when a download needs them, as a device stream does.
// Generation ahead must give the tokens of the plain CPU backend with host sampling, whatever
// stops it (length, a stop token in one row or all, the callback); a step taken back must leave
// the cache as if it never ran, in a full rolling cache too; misuse is refused with a clear
// message and changes nothing.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "engine/generator.h"
#include "fixture_util.h"
#include "recording_cpu_backend.h"

namespace mistral::testing {
namespace {

struct Loaded {
  std::unique_ptr<Model> model;
  RecordingCpuBackend* backend = nullptr;
};

Loaded load_sampling(const std::string& name, bool defer) {
  auto backend = std::make_unique<RecordingCpuBackend>(/*join=*/false);
  Loaded loaded;
  loaded.backend = backend.get();
  backend->sample = true;
  backend->defer = defer;
  auto model = load_model(fixture_dir(name), std::move(backend));
  EXPECT_TRUE(model.ok()) << model.status().message();
  if (model.ok()) loaded.model = std::move(model).value();
  return loaded;
}

const std::vector<uint8_t> kOne = {1};  // the mask of one real token

ForwardOptions sampled_last(const SamplerState& sampler) {
  ForwardOptions options;
  options.all_logits = false;
  options.sampler = &sampler;
  return options;
}

// Every way a generation ends, ahead and not, against the plain CPU backend sampling on the host.
TEST(DecodeAhead, GenerationPicksTheHostTokensWhateverStopsIt) {
  for (const std::string name : {"gqa", "sliding_window"}) {
    auto plain = load_fixture_model(name);
    ASSERT_NE(plain, nullptr);
    for (bool defer : {false, true}) {
      Loaded device = load_sampling(name, defer);
      ASSERT_NE(device.model, nullptr);
      for (int sampled = 0; sampled < 2; ++sampled) {
        GenerationConfig gen;
        gen.max_new_tokens = 14;
        gen.sampling.greedy = sampled == 0;
        gen.sampling.temperature = 0.8f;
        gen.sampling.seed = 5;
        const std::vector<std::vector<int32_t>> prompts = {{1, 5, 9, 13, 2, 7, 7, 3}, {1, 7, 3}};
        auto full = generate(*plain, prompts, gen);
        ASSERT_TRUE(full.ok()) << full.status().message();
        // Stop tokens: the 4th token of row 0 (row 0 stops first, or both), then the callback at
        // the 6th token, then the length alone.
        const int32_t stop = full->new_tokens[0][3];
        for (int ending = 0; ending < 3; ++ending) {
          for (int64_t rows : {int64_t{1}, int64_t{2}}) {
            GenerationConfig g = gen;
            if (ending == 0) g.stop_token_ids = {stop};
            int seen = 0;
            if (ending == 1) g.on_token = [&](int64_t, int32_t) { return ++seen < 6; };
            const std::vector<std::vector<int32_t>> batch(prompts.begin(), prompts.begin() + rows);
            seen = 0;
            auto want = generate(*plain, batch, g);
            ASSERT_TRUE(want.ok()) << want.status().message();
            for (bool ahead : {true, false}) {
              g.decode_ahead = ahead;
              seen = 0;
              auto got = generate(*device.model, batch, g);
              const std::string where = name + " defer " + std::to_string(defer) + " sampled " +
                                        std::to_string(sampled) + " ending " +
                                        std::to_string(ending) + " rows " + std::to_string(rows) +
                                        " ahead " + std::to_string(ahead);
              ASSERT_TRUE(got.ok()) << where << ": " << got.status().message();
              EXPECT_EQ(got->new_tokens, want->new_tokens) << where;
              EXPECT_EQ(got->finish_reasons, want->finish_reasons) << where;
              EXPECT_EQ(got->decode_steps, want->decode_steps) << where;
              EXPECT_EQ(device.model->started_steps(), 0) << where;
            }
          }
        }
      }
    }
  }
}

// Prefill, then steps fed back by the host (forward) or started ahead and taken back: the cache
// must end as if the taken-back steps never ran, so the logits of the next tokens are the same
// bit for bit. The sliding-window fixture's window is 5 positions, so the prompt of 9 fills its
// rolling cache and each step taken back overwrote a slot of the ring.
TEST(DecodeAhead, AStepTakenBackLeavesTheCacheAsBefore) {
  for (const std::string name : {"gqa", "sliding_window"}) {
    for (bool defer : {false, true}) {
      Loaded device = load_sampling(name, defer);
      ASSERT_NE(device.model, nullptr);
      Model& model = *device.model;
      auto sampler = model.new_sampler({SamplingRow{/*greedy=*/true}});
      ASSERT_TRUE(sampler.ok());
      const std::vector<int32_t> prompt = {1, 5, 9, 13, 2, 7, 7, 3, 4};
      const std::vector<uint8_t> prompt_mask(prompt.size(), 1);
      std::vector<std::vector<float>> logits(2);
      for (int pass = 0; pass < 2; ++pass) {
        auto cache = model.new_cache(1, 32);
        ASSERT_TRUE(cache.ok());
        auto first = model.forward(prompt, prompt_mask, 1, *cache, sampled_last(*sampler));
        ASSERT_TRUE(first.ok()) << first.status().message();
        std::vector<int32_t> token = first->token_ids;
        for (int step = 0; step < 3; ++step) {
          if (pass == 1) {  // a step started and taken back before each kept one
            ASSERT_TRUE(model.start_step(*cache, sampled_last(*sampler)).ok());
            EXPECT_EQ(cache->length(), static_cast<int64_t>(prompt.size()) + step + 1);
            Status cancelled = model.cancel_steps(*cache);
            ASSERT_TRUE(cancelled.ok()) << cancelled.message();
          }
          auto next = model.forward(token, kOne, 1, *cache, sampled_last(*sampler));
          ASSERT_TRUE(next.ok()) << next.status().message();
          token = next->token_ids;
        }
        EXPECT_EQ(cache->length(), static_cast<int64_t>(prompt.size()) + 3);
        EXPECT_EQ(cache->row_tokens(0), static_cast<int64_t>(prompt.size()) + 3);
        auto out = model.forward(token, kOne, 1, *cache);  // logits, no sampler
        ASSERT_TRUE(out.ok()) << out.status().message();
        logits[pass] = out->logits;
      }
      ASSERT_EQ(logits[0].size(), logits[1].size());
      for (size_t i = 0; i < logits[0].size(); ++i) {
        ASSERT_EQ(logits[0][i], logits[1][i]) << name << " defer " << defer << " logit " << i;
      }
    }
  }
}

// Steps started ahead give the tokens that forward calls fed by the host give, in order.
TEST(DecodeAhead, StartedStepsReturnTheTokensOfHostFedSteps) {
  Loaded device = load_sampling("gqa", /*defer=*/true);
  ASSERT_NE(device.model, nullptr);
  Model& model = *device.model;
  auto sampler = model.new_sampler({SamplingRow{true}, SamplingRow{true}});
  ASSERT_TRUE(sampler.ok());
  const std::vector<int32_t> prompts = {1, 5, 9, 13, 0, 1, 7, 3};
  const std::vector<uint8_t> mask = {1, 1, 1, 1, 0, 1, 1, 1};  // row 1 left-padded
  std::vector<std::vector<int32_t>> tokens(2);
  for (int ahead = 0; ahead < 2; ++ahead) {
    auto cache = model.new_cache(2, 16);
    ASSERT_TRUE(cache.ok());
    auto out = model.forward(prompts, mask, 2, *cache, sampled_last(*sampler));
    ASSERT_TRUE(out.ok());
    std::vector<int32_t> last = out->token_ids;
    for (int step = 0; step < 4; ++step) {
      if (ahead == 1) {
        if (step == 0) {
          ASSERT_TRUE(model.start_step(*cache, sampled_last(*sampler)).ok());
        }
        ASSERT_TRUE(model.start_step(*cache, sampled_last(*sampler)).ok());
        EXPECT_EQ(model.started_steps(), 2);
        EXPECT_GT(device.backend->queued(), 0u);  // nothing ran: the host waited for nothing
        auto got = model.finish_step();
        ASSERT_TRUE(got.ok());
        last = *got;
      } else {
        auto got =
            model.forward(last, std::vector<uint8_t>{1, 1}, 2, *cache, sampled_last(*sampler));
        ASSERT_TRUE(got.ok());
        last = got->token_ids;
      }
      tokens[ahead].insert(tokens[ahead].end(), last.begin(), last.end());
    }
    if (ahead == 1) {
      auto extra = model.finish_step();  // the fifth step, started behind the fourth
      ASSERT_TRUE(extra.ok());
      EXPECT_EQ(cache->length(), 4 + 5);
    }
  }
  EXPECT_EQ(tokens[0], tokens[1]);
}

TEST(DecodeAhead, MisuseIsRefusedAndChangesNothing) {
  Loaded device = load_sampling("sliding_window", /*defer=*/false);
  ASSERT_NE(device.model, nullptr);
  Model& model = *device.model;
  auto sampler = model.new_sampler({SamplingRow{true}});
  ASSERT_TRUE(sampler.ok());
  auto cache = model.new_cache(1, 32);
  ASSERT_TRUE(cache.ok());
  auto expect_error = [](const Status& s, const std::string& needle) {
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.message().find(needle), std::string::npos) << s.message();
  };
  // Nothing sampled for this cache yet; no sampler; nothing started.
  expect_error(model.start_step(*cache, sampled_last(*sampler)), "no tokens were sampled");
  expect_error(model.start_step(*cache, ForwardOptions{}), "needs a sampler");
  expect_error(model.finish_step().status(), "no decode step was started");
  EXPECT_TRUE(model.cancel_steps(*cache).ok());  // nothing to take back
  EXPECT_EQ(cache->length(), 0);

  const std::vector<int32_t> prompt = {1, 5, 9, 13, 2, 7, 7, 3, 4};  // past the window of 5
  ASSERT_TRUE(
      model.forward(prompt, std::vector<uint8_t>(9, 1), 1, *cache, sampled_last(*sampler)).ok());
  ASSERT_TRUE(model.start_step(*cache, sampled_last(*sampler)).ok());
  ASSERT_TRUE(model.start_step(*cache, sampled_last(*sampler)).ok());
  // forward waits for no one: refused while steps are started.
  expect_error(model.forward(std::vector<int32_t>{1}, kOne, 1, *cache).status(),
               "2 started decode step(s)");
  // Another cache cannot take them back.
  auto other = model.new_cache(1, 32);
  ASSERT_TRUE(other.ok());
  expect_error(model.cancel_steps(*other), "another cache");
  // A full rolling cache takes back only the last step.
  EXPECT_EQ(cache->retractable_steps(), 1);
  expect_error(model.cancel_steps(*cache), "finish_step the others first");
  EXPECT_EQ(cache->length(), 11);
  EXPECT_EQ(model.started_steps(), 2);
  ASSERT_TRUE(model.finish_step().ok());
  EXPECT_TRUE(model.cancel_steps(*cache).ok());
  EXPECT_EQ(cache->length(), 10);
  EXPECT_EQ(cache->retractable_steps(), 0);
  expect_error(cache->retract(std::vector<uint8_t>{1}), "takes back only the last step");
  // The tokens of a step taken back are not fed to the next one.
  expect_error(model.start_step(*cache, sampled_last(*sampler)), "no tokens were sampled");
  // The cache goes on from where it is.
  EXPECT_TRUE(model.forward(std::vector<int32_t>{1}, kOne, 1, *cache).ok());
  EXPECT_EQ(cache->length(), 11);
  EXPECT_EQ(cache->retractable_steps(), 1);
  expect_error(cache->retract(std::vector<uint8_t>{1, 1}), "2 entries for a batch of 1");
}

TEST(DecodeAhead, AnEmptyOrNonRollingCacheRetractsAsFarAsItHolds) {
  auto model = load_fixture_model("gqa");
  ASSERT_NE(model, nullptr);
  auto cache = model->new_cache(1, 8);
  ASSERT_TRUE(cache.ok());
  EXPECT_EQ(cache->retractable_steps(), 0);
  EXPECT_FALSE(cache->retract(std::vector<uint8_t>{1}).ok());
  ASSERT_TRUE(
      model->forward(std::vector<int32_t>{1, 2, 3}, std::vector<uint8_t>{1, 1, 1}, 1, *cache).ok());
  EXPECT_EQ(cache->retractable_steps(), 3);
  EXPECT_FALSE(cache->retract(std::vector<uint8_t>{2}).ok());  // not a mask value
  EXPECT_TRUE(cache->retract(std::vector<uint8_t>{1}).ok());
  EXPECT_TRUE(cache->retract(std::vector<uint8_t>{1}).ok());
  EXPECT_EQ(cache->length(), 1);
  EXPECT_EQ(cache->row_tokens(0), 1);
}

}  // namespace
}  // namespace mistral::testing
