// Quantized models end to end: int8/int4 at load time stay close to the dense model (KL and
// top-1 agreement), a checkpoint written by save_checkpoint loads back bit-identical with its
// quantization_config, incremental decode matches the full forward, and every malformed quantized
// checkpoint or conflicting option fails with a message naming the file, tensor or option.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/quant.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "model/checkpoint_writer.h"
#include "model/kv_cache.h"
#include "model/loader.h"
#include "rewrite_tensors.h"
#include "temp_dir.h"
#include "tiny_config.h"

namespace mistral {
namespace {

using testing::TempDir;

// Every matrix dimension a multiple of the group size 32.
ModelConfig quant_config() {
  ModelConfig c = testing::tiny_config();
  c.vocab_size = 128;
  c.hidden_size = 64;
  c.intermediate_size = 96;
  c.head_dim = 16;
  return c;
}

std::string write_dense(const TempDir& tmp, ModelConfig config = quant_config()) {
  const std::string dir = tmp.file("dense");
  // std 0.1 makes the logits peaked enough for KL and top-1 to say something.
  Status s = write_random_checkpoint(config, dir, DType::kBF16, /*seed=*/7, /*stddev=*/0.1f);
  EXPECT_TRUE(s.ok()) << s.message();
  return dir;
}

Result<std::unique_ptr<Model>> load(const std::string& dir, LoadOptions options = {}) {
  return load_model(dir, make_cpu_backend(), options);
}

LoadOptions quantizing(QuantType type) {
  LoadOptions options;
  options.quantize = type;
  return options;
}

std::unique_ptr<Model> load_ok(const std::string& dir, QuantType quantize = QuantType::kNone) {
  Result<std::unique_ptr<Model>> m = load(dir, quantizing(quantize));
  EXPECT_TRUE(m.ok()) << m.status().message();
  return m.ok() ? std::move(m).value() : nullptr;
}

// 64 positions of pseudo-random ids.
const std::vector<int32_t> kIds = [] {
  std::vector<int32_t> ids = {1};
  for (int32_t i = 1; i < 64; ++i) ids.push_back((i * 37 + 11) % 125 + 3);
  return ids;
}();

std::vector<float> logits(Model& m, const std::vector<int32_t>& ids = kIds) {
  auto cache = KvCache::create(m.config(), 1, static_cast<int64_t>(ids.size()));
  EXPECT_TRUE(cache.ok());
  std::vector<uint8_t> mask(ids.size(), 1);
  auto out = m.forward(ids, mask, 1, *cache);
  EXPECT_TRUE(out.ok()) << out.status().message();
  return out.ok() ? out->logits : std::vector<float>{};
}

struct Agreement {
  double kl = 0;    // mean over positions of KL(dense || quantized)
  double top1 = 0;  // fraction of positions with the same argmax
};

Agreement compare(const std::vector<float>& dense, const std::vector<float>& q, int64_t vocab) {
  Agreement a;
  const int64_t positions = static_cast<int64_t>(dense.size()) / vocab;
  for (int64_t p = 0; p < positions; ++p) {
    const float* x = dense.data() + p * vocab;
    const float* y = q.data() + p * vocab;
    auto log_softmax = [vocab](const float* v, std::vector<double>& out) {
      double max = v[0], sum = 0;
      for (int64_t i = 0; i < vocab; ++i) max = std::max(max, double(v[i]));
      for (int64_t i = 0; i < vocab; ++i) sum += std::exp(v[i] - max);
      out.resize(vocab);
      for (int64_t i = 0; i < vocab; ++i) out[i] = v[i] - max - std::log(sum);
    };
    std::vector<double> lx, ly;
    log_softmax(x, lx);
    log_softmax(y, ly);
    for (int64_t i = 0; i < vocab; ++i) a.kl += std::exp(lx[i]) * (lx[i] - ly[i]);
    a.top1 += std::max_element(x, x + vocab) - x == std::max_element(y, y + vocab) - y;
  }
  a.kl /= positions;
  a.top1 /= positions;
  return a;
}

TEST(QuantizedModelTest, StaysCloseToTheDenseModel) {
  TempDir tmp;
  const std::string dir = write_dense(tmp);
  auto dense = load_ok(dir);
  const std::vector<float> ref = logits(*dense);
  // Measured on this model: int8 KL 1.5e-4, top-1 1.0; int4 KL 0.021, top-1 0.62. The bounds
  // leave ~3x room on KL.
  for (auto [type, max_kl, min_top1] :
       {std::tuple{QuantType::kInt8, 5e-4, 0.95}, {QuantType::kInt4, 6e-2, 0.5}}) {
    auto q = load_ok(dir, type);
    ASSERT_TRUE(q);
    EXPECT_EQ(q->config().quantization, type);
    EXPECT_TRUE(q->weights().layers[0].wq.quantized());
    EXPECT_TRUE(q->weights().embedding.quantized());
    EXPECT_FALSE(q->weights().layers[0].attn_norm.quantized());
    const Agreement a = compare(ref, logits(*q), dense->config().vocab_size);
    EXPECT_LT(a.kl, max_kl) << quant_type_name(type);
    EXPECT_GE(a.top1, min_top1) << quant_type_name(type);
    EXPECT_GT(a.kl, 0.0) << "quantization must change something";
    std::printf("%s: KL %.3g top-1 %.3f\n", std::string(quant_type_name(type)).c_str(), a.kl,
                a.top1);
  }
}

TEST(QuantizedModelTest, SavedCheckpointLoadsBackBitIdentical) {
  TempDir tmp;
  const std::string dir = write_dense(tmp);
  for (QuantType type : {QuantType::kInt8, QuantType::kInt4}) {
    auto q = load_ok(dir, type);
    const std::string out = tmp.file(std::string(quant_type_name(type)));
    Status s = save_checkpoint(q->config(), q->mutable_weights(), out);
    ASSERT_TRUE(s.ok()) << s.message();
    std::ifstream config_file(out + "/config.json");
    const auto config = nlohmann::json::parse(config_file);
    EXPECT_EQ(config["quantization_config"]["quant_method"], "mistral_cpp");
    EXPECT_EQ(config["quantization_config"]["weights"], quant_type_name(type));
    auto file = SafetensorsFile::open(out + "/model.safetensors");
    ASSERT_TRUE(file.ok());
    const TensorInfo* values = (*file)->find("model.layers.0.mlp.down_proj.weight");
    const TensorInfo* scales = (*file)->find("model.layers.0.mlp.down_proj.weight_scale");
    ASSERT_TRUE(values && scales);
    EXPECT_EQ(values->dtype, type == QuantType::kInt8 ? DType::kI8 : DType::kU8);
    EXPECT_EQ(values->shape, (std::vector<int64_t>{64, type == QuantType::kInt8 ? 96 : 48}));
    EXPECT_EQ(scales->dtype, DType::kF16);
    EXPECT_EQ(scales->shape, (std::vector<int64_t>{64, 3}));
    EXPECT_EQ((*file)->find("model.norm.weight")->dtype, DType::kBF16);

    auto reloaded = load_ok(out);
    ASSERT_TRUE(reloaded);
    EXPECT_EQ(reloaded->config().quantization, type);
    EXPECT_EQ(logits(*q), logits(*reloaded));
    // Asking for the quantization it already has is fine.
    EXPECT_TRUE(load(out, quantizing(type)).ok());
  }
}

// Whether any file under `dir` is memory-mapped by this process.
bool mapped(const std::string& dir) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    if (line.find(dir) != std::string::npos) return true;
  }
  return false;
}

TEST(QuantizedModelTest, QuantizingAtLoadUnmapsTheDenseCheckpoint) {
  for (DType dtype : {DType::kF32, DType::kBF16}) {  // F32 norms could be used in place
    TempDir tmp;
    const std::string dir = tmp.file("dense");
    ASSERT_TRUE(write_random_checkpoint(quant_config(), dir, dtype, 7).ok());
    auto dense = load_ok(dir);
    EXPECT_TRUE(mapped(dir));  // the check can see a mapping
    dense.reset();
    auto q = load_ok(dir, QuantType::kInt8);
    ASSERT_TRUE(q);
    EXPECT_FALSE(mapped(dir)) << dtype_name(dtype);
  }
}

TEST(QuantizedModelTest, IncrementalDecodeMatchesTheFullForward) {
  TempDir tmp;
  auto q = load_ok(write_dense(tmp), QuantType::kInt4);
  const std::vector<float> full = logits(*q);
  const int64_t vocab = q->config().vocab_size;
  auto cache = KvCache::create(q->config(), 1, static_cast<int64_t>(kIds.size()));
  ASSERT_TRUE(cache.ok());
  const std::vector<uint8_t> one = {1};
  for (size_t t = 0; t < kIds.size(); ++t) {
    auto out = q->forward(std::vector<int32_t>{kIds[t]}, one, 1, *cache);
    ASSERT_TRUE(out.ok());
    for (int64_t v = 0; v < vocab; ++v) {
      // Activations are quantized row by row, so a row's result does not depend on its batch.
      ASSERT_NEAR(out->logits[v], full[t * vocab + v], 1e-5f) << "position " << t;
    }
  }
}

::testing::AssertionResult FailsWith(const Result<std::unique_ptr<Model>>& r,
                                     std::initializer_list<std::string> words) {
  if (r.ok()) return ::testing::AssertionFailure() << "expected an error, got ok";
  for (const std::string& w : words) {
    if (r.status().message().find(w) == std::string::npos) {
      return ::testing::AssertionFailure()
             << "message lacks \"" << w << "\": " << r.status().message();
    }
  }
  return ::testing::AssertionSuccess();
}

// A saved int4 checkpoint, then `edit` applied to its tensor list (and config).
std::string broken_int4(const TempDir& tmp,
                        const std::function<void(std::vector<TensorToWrite>&)>& edit,
                        const std::function<void(nlohmann::json&)>& edit_config = nullptr) {
  auto q = load_ok(write_dense(tmp), QuantType::kInt4);
  const std::string out = tmp.file("broken");
  EXPECT_TRUE(save_checkpoint(q->config(), q->mutable_weights(), out).ok());
  testing::rewrite_tensors(out, edit);
  if (edit_config) {
    std::ifstream in(out + "/config.json");
    nlohmann::json config = nlohmann::json::parse(in);
    edit_config(config);
    std::ofstream(out + "/config.json", std::ios::trunc) << config.dump();
  }
  return out;
}

TEST(QuantizedModelTest, MalformedCheckpointsFailWithClearMessages) {
  const std::string scale = "model.layers.1.self_attn.o_proj.weight_scale";
  {
    TempDir tmp;
    auto dir = broken_int4(tmp, [&](auto& ts) {
      std::erase_if(ts, [&](const TensorToWrite& t) { return t.name == scale; });
    });
    EXPECT_TRUE(FailsWith(load(dir), {"missing tensor", scale}));
  }
  {
    TempDir tmp;
    auto dir = broken_int4(tmp, [&](auto& ts) {
      for (auto& t : ts) {
        if (t.name == scale) t.shape = {32, 4};  // same bytes, wrong shape
      }
    });
    EXPECT_TRUE(FailsWith(load(dir), {scale, "[32, 4]", "needs F16 [64, 2]"}));
  }
  {
    TempDir tmp;
    auto dir = broken_int4(tmp, [&](auto& ts) {
      for (auto& t : ts) {
        if (t.name == "model.embed_tokens.weight") t.dtype = DType::kI8;
      }
    });
    EXPECT_TRUE(FailsWith(load(dir), {"model.embed_tokens.weight", "I8", "needs U8"}));
  }
  for (auto [field, value, message] :
       {std::tuple{"quant_method", nlohmann::json("gptq"), "\"gptq\" is not supported"},
        {"weights", nlohmann::json("int3"), "\"weights\" must be"},
        {"group_size", nlohmann::json(128), "\"group_size\" must be 32"}}) {
    TempDir tmp;
    auto dir = broken_int4(
        tmp, [](auto&) {}, [&](nlohmann::json& c) { c["quantization_config"][field] = value; });
    EXPECT_TRUE(FailsWith(load(dir), {"config.json", "quantization_config", message}));
  }
}

TEST(QuantizedModelTest, ConflictingOptionsAndShapesAreRefused) {
  TempDir tmp;
  auto q = load_ok(write_dense(tmp), QuantType::kInt8);
  const std::string int8_dir = tmp.file("int8");
  ASSERT_TRUE(save_checkpoint(q->config(), q->mutable_weights(), int8_dir).ok());
  EXPECT_TRUE(FailsWith(load(int8_dir, quantizing(QuantType::kInt4)),
                        {"already quantized to int8", "int4", "dense"}));
  EXPECT_TRUE(
      FailsWith(load(int8_dir, LoadOptions{.dtype = DType::kF32, .quantize = QuantType::kNone}),
                {"quantized to int8"}));

  ModelConfig odd = quant_config();
  odd.intermediate_size = 40;  // not a multiple of 32
  TempDir tmp2;
  const std::string dir = write_dense(tmp2, odd);
  EXPECT_TRUE(FailsWith(load(dir, quantizing(QuantType::kInt4)),
                        {"model.layers.0.mlp.down_proj.weight", "multiple of 32"}));
}

}  // namespace
}  // namespace mistral
