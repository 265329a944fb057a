// Tests of model/loader: tiny checkpoints written here (random ones, and broken variants crafted
// with the safetensors writer) must load with every tensor in its role, or fail with a message
// naming the file, the tensor and what is wrong.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/half.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "io/tensor_names.h"
#include "model/checkpoint_writer.h"
#include "model/loader.h"
#include "rewrite_tensors.h"
#include "temp_dir.h"
#include "tiny_config.h"

namespace mistral {
namespace {

using testing::tiny_config;

using testing::rewrite_tensors;
using testing::TempDir;

namespace fs = std::filesystem;

std::string random_checkpoint(const TempDir& tmp, const std::string& name, DType dtype,
                              ModelConfig config = tiny_config(), uint64_t seed = 1) {
  const std::string dir = tmp.file(name);
  Status s = write_random_checkpoint(config, dir, dtype, seed);
  EXPECT_TRUE(s.ok()) << s.message();
  return dir;
}

Result<std::unique_ptr<Model>> load(const std::string& dir, LoadOptions options = {}) {
  return load_model(dir, make_cpu_backend(), options);
}

::testing::AssertionResult FailsWith(const Status& s, std::initializer_list<std::string> words) {
  if (s.ok()) return ::testing::AssertionFailure() << "expected an error, got ok";
  for (const std::string& w : words) {
    if (s.message().find(w) == std::string::npos) {
      return ::testing::AssertionFailure() << "message lacks \"" << w << "\": " << s.message();
    }
  }
  return ::testing::AssertionSuccess();
}
template <typename T>
::testing::AssertionResult FailsWith(const Result<T>& r, std::initializer_list<std::string> words) {
  if (r.ok()) return ::testing::AssertionFailure() << "expected an error, got ok";
  return FailsWith(r.status(), words);
}

// A tensor to write from raw bytes.
TensorToWrite raw(std::string name, DType dtype, std::vector<int64_t> shape, const void* data) {
  TensorToWrite t;
  t.name = std::move(name);
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.data = data;
  return t;
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

// Every tensor of a loaded model in for_each_tensor order, with its role.
std::vector<std::pair<TensorRole, Tensor>> tensors_of(Model& m) {
  std::vector<std::pair<TensorRole, Tensor>> out;
  m.mutable_weights().for_each_tensor(
      m.config(), [&](TensorRole role, int64_t, Tensor& t) { out.emplace_back(role, t); });
  return out;
}

float element(const void* data, DType dtype, size_t i) {
  switch (dtype) {
    case DType::kF32:
      return static_cast<const float*>(data)[i];
    case DType::kBF16:
      return bf16_to_float(static_cast<const BF16*>(data)[i]);
    case DType::kF16:
      return f16_to_float(static_cast<const F16*>(data)[i]);
    default:
      ADD_FAILURE() << "unexpected dtype";
      return 0;
  }
}

// Checks that each loaded tensor holds the values stored in the checkpoint file under its
// Hugging Face name (so roles are not swapped), and returns how many were compared.
int expect_matches_file(Model& m, const std::string& dir, DType expect_matrix_dtype) {
  Result<std::shared_ptr<SafetensorsFile>> file = SafetensorsFile::open(dir + "/model.safetensors");
  EXPECT_TRUE(file.ok());
  if (!file.ok()) return 0;
  int compared = 0;
  for (int64_t layer = -1; layer < m.config().num_hidden_layers; ++layer) {
    m.mutable_weights().for_each_tensor(m.config(), [&](TensorRole role, int64_t l, Tensor& t) {
      if (l != layer) return;
      const std::string name = tensor_name(role, l, CheckpointLayout::kHuggingFace);
      const TensorInfo* info = (*file)->find(name);
      ASSERT_NE(info, nullptr) << name;
      ASSERT_EQ(t.shape, info->shape) << name;
      EXPECT_EQ(t.dtype, is_norm_role(role) ? DType::kF32 : expect_matrix_dtype) << name;
      const uint8_t* raw = (*file)->tensor_data(*info);
      for (uint64_t i = 0; i < t.num_elements(); ++i) {
        const float want = element(raw, info->dtype, i), got = element(t.data, t.dtype, i);
        ASSERT_EQ(std::bit_cast<uint32_t>(got), std::bit_cast<uint32_t>(want))
            << name << "[" << i << "]";
      }
      ++compared;
    });
  }
  return compared;
}

TEST(LoaderTest, LoadsEveryTensorIntoItsRole) {
  TempDir tmp;
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    const std::string dir = random_checkpoint(tmp, std::string(dtype_name(dtype)), dtype);
    Result<std::unique_ptr<Model>> m = load(dir);
    ASSERT_TRUE(m.ok()) << m.status().message();
    EXPECT_EQ((*m)->config().vocab_size, 64);
    EXPECT_EQ((*m)->config().dtype, dtype);
    EXPECT_EQ(expect_matches_file(**m, dir, dtype), 1 + 2 * 9 + 2);
  }
}

TEST(LoaderTest, MissingTensorIsNamed) {
  TempDir tmp;
  const std::string dir = random_checkpoint(tmp, "m", DType::kBF16);
  rewrite_tensors(dir, [](std::vector<TensorToWrite>& t) {
    std::erase_if(
        t, [](const TensorToWrite& w) { return w.name == "model.layers.1.mlp.up_proj.weight"; });
  });
  EXPECT_TRUE(
      FailsWith(load(dir), {"model.safetensors", "missing", "model.layers.1.mlp.up_proj.weight"}));
}

TEST(LoaderTest, UntiedModelWithoutLmHeadFails) {
  TempDir tmp;
  const std::string dir = random_checkpoint(tmp, "m", DType::kBF16);
  rewrite_tensors(dir, [](std::vector<TensorToWrite>& t) {
    std::erase_if(t, [](const TensorToWrite& w) { return w.name == "lm_head.weight"; });
  });
  EXPECT_TRUE(FailsWith(load(dir), {"missing", "lm_head.weight"}));
}

TEST(LoaderTest, UnexpectedTensorIsNamed) {
  TempDir tmp;
  const std::string dir = random_checkpoint(tmp, "m", DType::kBF16);
  std::vector<uint16_t> extra(32 * 32);
  rewrite_tensors(dir, [&](std::vector<TensorToWrite>& t) {
    // A third layer that the config (2 layers) does not know about.
    t.push_back(
        raw("model.layers.2.self_attn.q_proj.weight", DType::kBF16, {32, 32}, extra.data()));
  });
  EXPECT_TRUE(FailsWith(load(dir), {"unexpected", "model.layers.2.self_attn.q_proj.weight"}));
}

TEST(LoaderTest, RotaryInvFreqBufferIsIgnored) {
  TempDir tmp;
  const std::string dir = random_checkpoint(tmp, "m", DType::kBF16);
  std::vector<float> inv_freq(4, 0.5f);
  rewrite_tensors(dir, [&](std::vector<TensorToWrite>& t) {
    for (int l = 0; l < 2; ++l) {
      t.push_back(raw("model.layers." + std::to_string(l) + ".self_attn.rotary_emb.inv_freq",
                      DType::kF32, {4}, inv_freq.data()));
    }
  });
  Result<std::unique_ptr<Model>> m = load(dir);
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_EQ(expect_matches_file(**m, dir, DType::kBF16), 21);
}

TEST(LoaderTest, ShapeMismatchNamesTensorAndBothShapes) {
  TempDir tmp;
  const std::string dir = random_checkpoint(tmp, "m", DType::kBF16);
  ModelConfig wrong = tiny_config();
  wrong.vocab_size = 65;  // the embedding on disk is [64, 32]
  write_text(dir + "/config.json", to_hf_config_json(wrong).dump());
  EXPECT_TRUE(FailsWith(load(dir), {"model.embed_tokens.weight", "[64, 32]", "[65, 32]"}));

  const std::string dir2 = random_checkpoint(tmp, "m2", DType::kBF16);
  std::vector<uint16_t> k(8 * 32);
  rewrite_tensors(dir2, [&](std::vector<TensorToWrite>& t) {
    for (TensorToWrite& w : t) {
      if (w.name == "model.layers.1.self_attn.k_proj.weight")
        w = raw(w.name, w.dtype, {8, 32}, k.data());
    }
  });
  EXPECT_TRUE(
      FailsWith(load(dir2), {"model.layers.1.self_attn.k_proj.weight", "[8, 32]", "[16, 32]"}));
}

TEST(LoaderTest, IntegerDtypeIsRejected) {
  TempDir tmp;
  const std::string dir = random_checkpoint(tmp, "m", DType::kBF16);
  std::vector<int32_t> ints(16 * 32, 7);
  rewrite_tensors(dir, [&](std::vector<TensorToWrite>& t) {
    for (TensorToWrite& w : t) {
      if (w.name == "model.layers.0.self_attn.v_proj.weight")
        w = raw(w.name, DType::kI32, w.shape, ints.data());
    }
  });
  EXPECT_TRUE(FailsWith(load(dir), {"model.layers.0.self_attn.v_proj.weight", "I32"}));
}

TEST(LoaderTest, TiedModelAliasesTheEmbedding) {
  TempDir tmp;
  ModelConfig tied = tiny_config();
  tied.tie_word_embeddings = true;
  const std::string dir = random_checkpoint(tmp, "tied", DType::kBF16, tied);
  ASSERT_EQ(SafetensorsFile::open(dir + "/model.safetensors").value()->find("lm_head.weight"),
            nullptr);
  Result<std::unique_ptr<Model>> m = load(dir);
  ASSERT_TRUE(m.ok()) << m.status().message();
  const ModelWeights& w = (*m)->weights();
  EXPECT_EQ(w.lm_head.data, w.embedding.data);
  EXPECT_EQ(w.lm_head.shape, w.embedding.shape);
  EXPECT_EQ(expect_matches_file(**m, dir, DType::kBF16), 20);

  // A tied checkpoint that still stores lm_head.weight loads too (Hugging Face ignores it).
  std::vector<uint16_t> head(64 * 32);
  rewrite_tensors(dir, [&](std::vector<TensorToWrite>& t) {
    t.push_back(raw("lm_head.weight", DType::kBF16, {64, 32}, head.data()));
  });
  Result<std::unique_ptr<Model>> again = load(dir);
  ASSERT_TRUE(again.ok()) << again.status().message();
  EXPECT_EQ((*again)->weights().lm_head.data, (*again)->weights().embedding.data);
}

TEST(LoaderTest, DirectoryAndConfigErrors) {
  TempDir tmp;
  fs::create_directories(tmp.file("empty"));
  EXPECT_TRUE(
      FailsWith(load(tmp.file("empty")), {tmp.file("empty"), "config.json", "params.json"}));
  EXPECT_TRUE(FailsWith(load(tmp.file("absent")), {tmp.file("absent"), "not a directory"}));

  const std::string dir = random_checkpoint(tmp, "m", DType::kBF16);
  write_text(dir + "/config.json", "{\"vocab_size\": 64, ");
  EXPECT_TRUE(FailsWith(load(dir), {dir + "/config.json", "JSON"}));
  write_text(dir + "/config.json", "");
  EXPECT_TRUE(FailsWith(load(dir), {dir + "/config.json", "JSON"}));

  const std::string no_weights = random_checkpoint(tmp, "w", DType::kBF16);
  fs::remove(no_weights + "/model.safetensors");
  EXPECT_TRUE(FailsWith(load(no_weights), {no_weights, "model.safetensors"}));
}

TEST(LoaderTest, ConvertsToRequestedDtypeExactly) {
  TempDir tmp;
  const std::string dir = random_checkpoint(tmp, "bf16", DType::kBF16);
  Result<std::unique_ptr<Model>> as_is = load(dir);
  ASSERT_TRUE(as_is.ok());
  Result<std::unique_ptr<Model>> wide = load(dir, LoadOptions{DType::kF32});
  ASSERT_TRUE(wide.ok()) << wide.status().message();
  EXPECT_EQ(expect_matches_file(**as_is, dir, DType::kBF16), 21);
  EXPECT_EQ(expect_matches_file(**wide, dir, DType::kF32), 21);

  // F16 weights are widened to F32 on a backend without F16 kernels, exactly.
  const std::string f16 = random_checkpoint(tmp, "f16", DType::kF16);
  Result<std::unique_ptr<Model>> h = load(f16);
  ASSERT_TRUE(h.ok()) << h.status().message();
  EXPECT_EQ(expect_matches_file(**h, f16, DType::kF32), 21);
}

// Writes `hf_dir`'s weights in Mistral's native layout: params.json + consolidated.safetensors
// with native names and q/k rows permuted back to the interleaved rotary order.
void write_native(const std::string& hf_dir, const std::string& out, const ModelConfig& c) {
  fs::create_directories(out);
  Result<std::shared_ptr<SafetensorsFile>> file =
      SafetensorsFile::open(hf_dir + "/model.safetensors");
  ASSERT_TRUE(file.ok());
  std::vector<TensorToWrite> tensors;
  std::vector<std::vector<uint8_t>> buffers;
  buffers.reserve(64);
  ModelWeights roles;
  roles.layers.resize(c.num_hidden_layers);
  roles.for_each_tensor(c, [&](TensorRole role, int64_t layer, Tensor&) {
    const TensorInfo* info =
        (*file)->find(tensor_name(role, layer, CheckpointLayout::kHuggingFace));
    ASSERT_NE(info, nullptr);
    const uint8_t* data = (*file)->tensor_data(*info);
    if (role == TensorRole::kWq || role == TensorRole::kWk) {
      const int64_t heads = role == TensorRole::kWq ? c.num_attention_heads : c.num_key_value_heads;
      buffers.emplace_back(info->num_bytes());
      permute_rotary_rows_hf_to_native(data, buffers.back().data(), heads, c.head_dim,
                                       info->shape[1], dtype_size(info->dtype));
      data = buffers.back().data();
    }
    tensors.push_back(raw(tensor_name(role, layer, CheckpointLayout::kMistralNative), info->dtype,
                          info->shape, data));
  });
  ASSERT_TRUE(write_safetensors(out + "/consolidated.safetensors", tensors).ok());
  nlohmann::json params = {{"dim", c.hidden_size},
                           {"n_layers", c.num_hidden_layers},
                           {"head_dim", c.head_dim},
                           {"hidden_dim", c.intermediate_size},
                           {"n_heads", c.num_attention_heads},
                           {"n_kv_heads", c.num_key_value_heads},
                           {"norm_eps", c.rms_norm_eps},
                           {"vocab_size", c.vocab_size},
                           {"rope_theta", c.rope_theta}};
  write_text(out + "/params.json", params.dump(2));
}

void expect_same_weights(Model& a, Model& b) {
  auto ta = tensors_of(a), tb = tensors_of(b);
  ASSERT_EQ(ta.size(), tb.size());
  for (size_t i = 0; i < ta.size(); ++i) {
    const Tensor &x = ta[i].second, &y = tb[i].second;
    ASSERT_EQ(x.dtype, y.dtype) << i;
    ASSERT_EQ(x.shape, y.shape) << i;
    EXPECT_EQ(std::memcmp(x.data, y.data, x.num_bytes()), 0) << "tensor " << i;
  }
}

TEST(LoaderTest, NativeLayoutEqualsHfLayoutBitForBit) {
  TempDir tmp;
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    const std::string name(dtype_name(dtype));
    const std::string hf = random_checkpoint(tmp, "hf" + name, dtype);
    write_native(hf, tmp.file("native" + name), tiny_config());
    Result<std::unique_ptr<Model>> a = load(hf);
    Result<std::unique_ptr<Model>> b = load(tmp.file("native" + name));
    ASSERT_TRUE(a.ok()) << a.status().message();
    ASSERT_TRUE(b.ok()) << b.status().message();
    expect_same_weights(**a, **b);
    // The native file really is in another order: loading it without the permutation would differ.
    Result<std::shared_ptr<SafetensorsFile>> f =
        SafetensorsFile::open(tmp.file("native" + name) + "/consolidated.safetensors");
    const TensorInfo* wq = (*f)->find("layers.0.attention.wq.weight");
    ASSERT_NE(wq, nullptr);
    EXPECT_NE(
        std::memcmp((*f)->tensor_data(*wq), (*a)->weights().layers[0].wq.data, wq->num_bytes()), 0);
  }
}

TEST(LoaderTest, CommittedNativeFixtureEqualsItsHfTwin) {
  const std::string dir = MISTRAL_FIXTURES_DIR;
  Result<std::unique_ptr<Model>> hf = load(dir + "/gqa");
  Result<std::unique_ptr<Model>> native = load(dir + "/native");
  ASSERT_TRUE(hf.ok()) << hf.status().message();
  ASSERT_TRUE(native.ok()) << native.status().message();
  expect_same_weights(**hf, **native);
}

TEST(TensorNamesTest, RotaryPermutationFollowsTheConversionScript) {
  // convert_mistral_weights_to_hf.py: w.view(heads, hd/2, 2, cols).transpose(1, 2), i.e. Hugging
  // Face row p*hd/2 + i of a head is native row 2*i + p.
  const int64_t heads = 3, hd = 6, cols = 5;
  std::vector<int32_t> native(heads * hd * cols), hf(native.size()), back(native.size());
  for (size_t i = 0; i < native.size(); ++i) native[i] = static_cast<int32_t>(i);
  permute_rotary_rows_native_to_hf(native.data(), hf.data(), heads, hd, cols, sizeof(int32_t));
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t i = 0; i < hd / 2; ++i) {
      for (int64_t p = 0; p < 2; ++p) {
        for (int64_t col = 0; col < cols; ++col) {
          EXPECT_EQ(hf[(h * hd + p * hd / 2 + i) * cols + col],
                    native[(h * hd + 2 * i + p) * cols + col]);
        }
      }
    }
  }
  permute_rotary_rows_hf_to_native(hf.data(), back.data(), heads, hd, cols, sizeof(int32_t));
  EXPECT_EQ(back, native);
  std::vector<int32_t> hf2(native.size());
  permute_rotary_rows_native_to_hf(back.data(), hf2.data(), heads, hd, cols, sizeof(int32_t));
  EXPECT_EQ(hf2, hf);
}

}  // namespace
}  // namespace mistral
