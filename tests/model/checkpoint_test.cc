// Tests of model/checkpoint_writer: save_checkpoint round trips bit for bit (in place, across
// dtypes, sharded, over the directory the model is loaded from), and write_random_checkpoint is
// deterministic, independent of the thread count and draws N(0, std^2).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/half.h"
#include "io/safetensors.h"
#include "model/checkpoint_writer.h"
#include "model/kv_cache.h"
#include "model/loader.h"
#include "temp_dir.h"
#include "tiny_config.h"

namespace mistral {
namespace {

ModelConfig tiny_config() { return testing::tiny_config(/*sliding_window=*/5); }

using testing::TempDir;

namespace fs = std::filesystem;

// Big enough that its embedding (1000 x 160 = 160000 values) spans three RNG chunks of 65536.
ModelConfig wide_config() {
  ModelConfig c = tiny_config();
  c.vocab_size = 1000;
  c.hidden_size = 160;
  c.intermediate_size = 96;
  c.num_hidden_layers = 1;
  c.head_dim = 40;
  return c;
}

std::unique_ptr<Model> load_ok(const std::string& dir, LoadOptions options = {}) {
  Result<std::unique_ptr<Model>> m = load_model(dir, make_cpu_backend(), options);
  EXPECT_TRUE(m.ok()) << m.status().message();
  return m.ok() ? std::move(m).value() : nullptr;
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::vector<Tensor> tensors_of(Model& m) {
  std::vector<Tensor> out;
  m.mutable_weights().for_each_tensor(m.config(),
                                      [&](TensorRole, int64_t, Tensor& t) { out.push_back(t); });
  return out;
}

// Same dtypes, shapes and bytes, tensor by tensor.
void expect_bit_identical(Model& a, Model& b) {
  std::vector<Tensor> ta = tensors_of(a), tb = tensors_of(b);
  ASSERT_EQ(ta.size(), tb.size());
  for (size_t i = 0; i < ta.size(); ++i) {
    ASSERT_EQ(ta[i].dtype, tb[i].dtype) << "tensor " << i;
    ASSERT_EQ(ta[i].shape, tb[i].shape) << "tensor " << i;
    EXPECT_EQ(std::memcmp(ta[i].data, tb[i].data, ta[i].num_bytes()), 0) << "tensor " << i;
  }
}

// bf16 tensors of `narrow` widened exactly equal the F32 tensors of `wide`.
void expect_widened(Model& narrow, Model& wide) {
  std::vector<Tensor> tn = tensors_of(narrow), tw = tensors_of(wide);
  ASSERT_EQ(tn.size(), tw.size());
  for (size_t i = 0; i < tn.size(); ++i) {
    ASSERT_EQ(tw[i].dtype, DType::kF32);
    Tensor widened = convert_tensor(tn[i], DType::kF32);
    EXPECT_EQ(std::memcmp(widened.data, tw[i].data, widened.num_bytes()), 0) << "tensor " << i;
  }
}

// Logits of a two-row, left-padded batch longer than the sliding window.
std::vector<float> logits_of(Model& m) {
  const std::vector<int32_t> ids = {0, 0, 5, 9, 13, 2, 60, 7, 1, 33, 8, 4, 4, 4, 63, 17, 22, 3};
  const std::vector<uint8_t> mask = {0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
  Result<KvCache> cache = KvCache::create(m.config(), 2, 16);
  EXPECT_TRUE(cache.ok());
  Result<ForwardOutput> out = m.forward(ids, mask, 2, *cache);
  EXPECT_TRUE(out.ok()) << out.status().message();
  return out.ok() ? out->logits : std::vector<float>{};
}

TEST(CheckpointTest, SaveRoundTripIsBitExact) {
  TempDir tmp;
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    const std::string name(dtype_name(dtype));
    ASSERT_TRUE(write_random_checkpoint(tiny_config(), tmp.file("a" + name), dtype, 3).ok());
    std::unique_ptr<Model> a = load_ok(tmp.file("a" + name));
    ASSERT_TRUE(a);
    Status s = save_checkpoint(a->config(), a->mutable_weights(), tmp.file("b" + name));
    ASSERT_TRUE(s.ok()) << s.message();
    std::unique_ptr<Model> b = load_ok(tmp.file("b" + name));
    ASSERT_TRUE(b);
    expect_bit_identical(*a, *b);
    EXPECT_EQ(b->config().dtype, dtype);
    EXPECT_EQ(b->config().sliding_window, 5);
    EXPECT_EQ(logits_of(*a), logits_of(*b));
  }
}

TEST(CheckpointTest, TiedModelRoundTripsWithoutLmHead) {
  TempDir tmp;
  ModelConfig tied = tiny_config();
  tied.tie_word_embeddings = true;
  ASSERT_TRUE(write_random_checkpoint(tied, tmp.file("a"), DType::kBF16, 3).ok());
  std::unique_ptr<Model> a = load_ok(tmp.file("a"));
  ASSERT_TRUE(a);
  ASSERT_TRUE(save_checkpoint(a->config(), a->mutable_weights(), tmp.file("b")).ok());
  Result<std::shared_ptr<SafetensorsFile>> f =
      SafetensorsFile::open(tmp.file("b/model.safetensors"));
  ASSERT_TRUE(f.ok());
  EXPECT_EQ((*f)->find("lm_head.weight"), nullptr);
  std::unique_ptr<Model> b = load_ok(tmp.file("b"));
  ASSERT_TRUE(b);
  EXPECT_TRUE(b->config().tie_word_embeddings);
  expect_bit_identical(*a, *b);
}

TEST(CheckpointTest, Bf16ToF32ToBf16IsBitExact) {
  TempDir tmp;
  ASSERT_TRUE(write_random_checkpoint(tiny_config(), tmp.file("a"), DType::kBF16, 4).ok());
  std::unique_ptr<Model> a = load_ok(tmp.file("a"));
  ASSERT_TRUE(a);
  ASSERT_TRUE(
      save_checkpoint(a->config(), a->mutable_weights(), tmp.file("b"), SaveOptions{DType::kF32})
          .ok());
  std::unique_ptr<Model> b = load_ok(tmp.file("b"));
  ASSERT_TRUE(b);
  EXPECT_EQ(b->config().dtype, DType::kF32);
  expect_widened(*a, *b);
  ASSERT_TRUE(
      save_checkpoint(b->config(), b->mutable_weights(), tmp.file("c"), SaveOptions{DType::kBF16})
          .ok());
  std::unique_ptr<Model> c = load_ok(tmp.file("c"));
  ASSERT_TRUE(c);
  EXPECT_EQ(c->config().dtype, DType::kBF16);
  expect_bit_identical(*a, *c);
}

TEST(CheckpointTest, ShardedSaveWritesAnIndexAndReloads) {
  TempDir tmp;
  ASSERT_TRUE(write_random_checkpoint(tiny_config(), tmp.file("a"), DType::kBF16, 5).ok());
  std::unique_ptr<Model> a = load_ok(tmp.file("a"));
  ASSERT_TRUE(a);
  const std::string dir = tmp.file("sharded");
  SaveOptions options;
  options.max_shard_bytes = 8 << 10;
  ASSERT_TRUE(save_checkpoint(a->config(), a->mutable_weights(), dir, options).ok());
  ASSERT_TRUE(fs::exists(dir + "/model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(dir + "/model.safetensors"));
  int shards = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().filename().string().starts_with("model-")) {
      ++shards;
      EXPECT_LE(fs::file_size(e.path()), (8u << 10) + 4096) << e.path();  // limit + header
    }
  }
  EXPECT_GE(shards, 3);
  auto index = nlohmann::json::parse(read_bytes(dir + "/model.safetensors.index.json"));
  EXPECT_EQ(index["weight_map"].size(), 21u);
  std::unique_ptr<Model> b = load_ok(dir);
  ASSERT_TRUE(b);
  expect_bit_identical(*a, *b);

  // Saving unsharded over it (while `b` maps the shards) replaces the index and the shards.
  ASSERT_TRUE(save_checkpoint(b->config(), b->mutable_weights(), dir).ok());
  EXPECT_FALSE(fs::exists(dir + "/model.safetensors.index.json"));
  EXPECT_TRUE(fs::exists(dir + "/model.safetensors"));
  std::unique_ptr<Model> c = load_ok(dir);
  ASSERT_TRUE(c);
  expect_bit_identical(*a, *c);
  expect_bit_identical(*b, *c);
}

TEST(CheckpointTest, SavingOverTheLoadedDirectoryKeepsTheModelUsable) {
  TempDir tmp;
  const std::string dir = tmp.file("d");
  ASSERT_TRUE(write_random_checkpoint(tiny_config(), dir, DType::kBF16, 6).ok());
  std::unique_ptr<Model> m = load_ok(dir);  // bf16 weights are views into the mapped file
  ASSERT_TRUE(m);
  std::unique_ptr<Model> reference = load_ok(dir, LoadOptions{DType::kF32});  // owned copies
  ASSERT_TRUE(reference);
  const std::vector<float> before = logits_of(*m);
  ASSERT_FALSE(before.empty());

  Status same = save_checkpoint(m->config(), m->mutable_weights(), dir);
  ASSERT_TRUE(same.ok()) << same.message();
  EXPECT_EQ(logits_of(*m), before);
  expect_widened(*m, *reference);  // the mapped views still hold the original values
  std::unique_ptr<Model> reloaded = load_ok(dir);
  ASSERT_TRUE(reloaded);
  expect_bit_identical(*m, *reloaded);

  // Again in another dtype, so that every byte of the file changes under the mapping.
  Status wider = save_checkpoint(m->config(), m->mutable_weights(), dir, SaveOptions{DType::kF32});
  ASSERT_TRUE(wider.ok()) << wider.message();
  EXPECT_EQ(logits_of(*m), before);
  std::unique_ptr<Model> f32 = load_ok(dir);
  ASSERT_TRUE(f32);
  EXPECT_EQ(f32->config().dtype, DType::kF32);
  expect_widened(*m, *f32);
  EXPECT_FALSE(logits_of(*f32).empty());

  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"config.json", "model.safetensors"}));  // no temps
}

TEST(RandomCheckpointTest, DeterministicFromTheSeed) {
  TempDir tmp;
  const ModelConfig c = wide_config();
  ASSERT_TRUE(write_random_checkpoint(c, tmp.file("a"), DType::kBF16, 42).ok());
  ASSERT_TRUE(write_random_checkpoint(c, tmp.file("b"), DType::kBF16, 42).ok());
  ASSERT_TRUE(write_random_checkpoint(c, tmp.file("c"), DType::kBF16, 43).ok());
  const std::string a = read_bytes(tmp.file("a/model.safetensors"));
  EXPECT_GT(a.size(), 1000u * 160u * 2u);
  EXPECT_TRUE(a == read_bytes(tmp.file("b/model.safetensors")));
  EXPECT_EQ(read_bytes(tmp.file("a/config.json")), read_bytes(tmp.file("b/config.json")));
  const std::string other = read_bytes(tmp.file("c/model.safetensors"));
  ASSERT_EQ(a.size(), other.size());
  size_t same = 0;  // every random value should differ, not just a few
  for (size_t i = a.size() / 2; i + 1 < a.size(); i += 2) same += a.compare(i, 2, other, i, 2) == 0;
  EXPECT_LT(same, a.size() / 2 / 2 / 20);
  Result<ModelConfig> cfg = load_model_config(tmp.file("a"));
  ASSERT_TRUE(cfg.ok());
  EXPECT_EQ(cfg->vocab_size, 1000);
  EXPECT_EQ(cfg->dtype, DType::kBF16);
}

TEST(RandomCheckpointTest, IndependentOfTheThreadCount) {
  // The global pool is sized once per process, so each thread count gets a process of its own.
  TempDir tmp;
  ASSERT_TRUE(write_random_checkpoint(wide_config(), tmp.file("in_process"), DType::kF32, 9).ok());
  const std::string expected = read_bytes(tmp.file("in_process/model.safetensors"));
  for (int threads : {1, 2, 3}) {
    const std::string out = tmp.file("t" + std::to_string(threads));
    const std::string cmd = std::string(MISTRAL_CLI_PATH) + " random-checkpoint --config " +
                            tmp.file("in_process/config.json") + " --out " + out +
                            " --dtype f32 --seed 9 --threads " + std::to_string(threads);
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    EXPECT_TRUE(read_bytes(out + "/model.safetensors") == expected) << "--threads " << threads;
  }
}

TEST(RandomCheckpointTest, WeightsAreNormalWithTheRequestedStd) {
  TempDir tmp;
  const ModelConfig c = wide_config();
  const float stddev = 0.05f;
  ASSERT_TRUE(write_random_checkpoint(c, tmp.file("f32"), DType::kF32, 11, stddev).ok());
  ASSERT_TRUE(write_random_checkpoint(c, tmp.file("bf16"), DType::kBF16, 11, stddev).ok());
  auto f32 = SafetensorsFile::open(tmp.file("f32/model.safetensors"));
  auto bf16 = SafetensorsFile::open(tmp.file("bf16/model.safetensors"));
  ASSERT_TRUE(f32.ok() && bf16.ok());
  std::vector<std::vector<float>> matrices;
  for (const TensorInfo& info : (*f32)->tensors()) {
    const float* v = reinterpret_cast<const float*>((*f32)->tensor_data(info));
    const TensorInfo* narrow = (*bf16)->find(info.name);
    ASSERT_NE(narrow, nullptr);
    const BF16* w = reinterpret_cast<const BF16*>((*bf16)->tensor_data(*narrow));
    const uint64_t n = info.num_elements();
    for (uint64_t i = 0; i < n; ++i) {  // the same draws, rounded
      ASSERT_EQ(w[i].bits, float_to_bf16(v[i]).bits) << info.name << "[" << i << "]";
    }
    if (info.shape.size() == 1) {
      for (uint64_t i = 0; i < n; ++i) ASSERT_EQ(v[i], 1.0f) << info.name;  // norms are ones
      continue;
    }
    matrices.emplace_back(v, v + n);
    double sum = 0, sq = 0, lag = 0;
    uint64_t within_one_sigma = 0;
    for (uint64_t i = 0; i < n; ++i) {
      sum += v[i];
      sq += double(v[i]) * v[i];
      if (i + 1 < n) lag += double(v[i]) * v[i + 1];
      within_one_sigma += std::fabs(v[i]) < stddev;
    }
    const double mean = sum / n, sd = std::sqrt(sq / n - mean * mean);
    SCOPED_TRACE(info.name + " n=" + std::to_string(n));
    EXPECT_LT(std::fabs(mean), 5 * stddev / std::sqrt(double(n)));
    EXPECT_NEAR(sd, stddev, stddev * 6 / std::sqrt(2.0 * n));
    EXPECT_NEAR(double(within_one_sigma) / n, 0.6827, 5 * 0.47 / std::sqrt(double(n)));
    EXPECT_LT(std::fabs(lag / (n - 1)) / (sd * sd), 5 / std::sqrt(double(n)));  // neighbours
  }
  ASSERT_EQ(matrices.size(), 1u + 7u + 1u);
  // Every tensor has its own stream: no two start with the same values.
  for (size_t i = 0; i < matrices.size(); ++i) {
    for (size_t j = i + 1; j < matrices.size(); ++j) EXPECT_NE(matrices[i][0], matrices[j][0]);
  }
}

TEST(RandomCheckpointTest, RejectsAnInvalidConfig) {
  TempDir tmp;
  ModelConfig bad = tiny_config();
  bad.num_key_value_heads = 3;
  Status s = write_random_checkpoint(bad, tmp.file("x"), DType::kBF16, 1);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("num_key_value_heads"), std::string::npos) << s.message();
  EXPECT_FALSE(fs::exists(tmp.file("x/model.safetensors")));
}

}  // namespace
}  // namespace mistral
