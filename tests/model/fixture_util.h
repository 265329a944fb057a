// Helpers for tests that compare the engine with the Hugging Face golden fixtures in
// tests/fixtures (see tests/fixtures/README.md for the layout and conventions).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "model/kv_cache.h"
#include "model/loader.h"

namespace mistral {

// Names a dtype in GoogleTest's messages about parameterized tests (found by argument-dependent
// lookup).
inline void PrintTo(DType dtype, std::ostream* os) { *os << dtype_name(dtype); }

}  // namespace mistral

namespace mistral::testing {

// The fixtures directory compiled in, or $MISTRAL_FIXTURES_DIR (a build run from another checkout,
// e.g. on a GPU machine).
inline std::string fixture_dir(const std::string& name) {
  const char* env = std::getenv("MISTRAL_FIXTURES_DIR");
  return std::string(env != nullptr && *env != 0 ? env : MISTRAL_FIXTURES_DIR) + "/" + name;
}

// Every model fixture.
inline std::vector<std::string> all_fixtures() {
  return {"gqa",  "mha",     "sliding_window", "head_dim", "tied", "rope_1e6_toplevel",
          "bf16", "sharded", "native",         "eos_stop"};
}

// `native` holds the gqa weights in Mistral's layout and shares gqa's expected outputs.
inline std::string reference_case(const std::string& name) {
  return name == "native" ? "gqa" : name;
}

inline nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  return nlohmann::json::parse(in);
}

struct Inputs {
  int64_t batch = 0, seq = 0;
  std::vector<int32_t> ids;
  std::vector<uint8_t> mask;
  std::vector<int32_t> row(int64_t b) const {  // real tokens of row b
    std::vector<int32_t> out;
    for (int64_t t = 0; t < seq; ++t) {
      if (mask[b * seq + t]) out.push_back(ids[b * seq + t]);
    }
    return out;
  }
  std::vector<std::vector<int32_t>> rows() const {  // real tokens of every row: the prompts
    std::vector<std::vector<int32_t>> out;
    for (int64_t b = 0; b < batch; ++b) out.push_back(row(b));
    return out;
  }
};

inline Inputs read_inputs(const std::string& path) {
  nlohmann::json j = read_json(path);
  Inputs in;
  in.batch = static_cast<int64_t>(j["input_ids"].size());
  in.seq = static_cast<int64_t>(j["input_ids"][0].size());
  for (const auto& row : j["input_ids"]) {
    for (const auto& v : row) in.ids.push_back(v.get<int32_t>());
  }
  for (const auto& row : j["attention_mask"]) {
    for (const auto& v : row) in.mask.push_back(v.get<uint8_t>());
  }
  return in;
}

// A float32 tensor read from a fixture file.
struct Array {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

inline Array read_array(const std::string& path, const std::string& name) {
  auto file = SafetensorsFile::open(path);
  EXPECT_TRUE(file.ok()) << file.status().message();
  const TensorInfo* info = (*file)->find(name);
  EXPECT_NE(info, nullptr) << path << " has no " << name;
  EXPECT_EQ(info->dtype, DType::kF32);
  Array a;
  a.shape = info->shape;
  const auto* p = reinterpret_cast<const float*>((*file)->tensor_data(*info));
  a.data.assign(p, p + info->num_elements());
  return a;
}

inline std::unique_ptr<Model> load_fixture_model(const std::string& name, LoadOptions options = {},
                                                 const std::string& device = "cpu") {
  auto backend = make_backend(device);
  EXPECT_TRUE(backend.ok()) << backend.status().message();
  if (!backend.ok()) return nullptr;
  auto model = load_model(fixture_dir(name), std::move(backend).value(), options);
  EXPECT_TRUE(model.ok()) << model.status().message();
  return model.ok() ? std::move(model).value() : nullptr;
}

// A fixture model for the tests held to the fp32 references (expected*.safetensors, greedy.json;
// for `bf16` those are HF in fp32 on the bf16 weights upcast). The `bf16` fixture is loaded
// widened to F32 for them: on BF16 weights the engine rounds each matmul's activations to bf16
// (backend.h), as HF's bf16 model does, and is held to HF bf16 instead (fixture_test.cc's
// Bf16* tests).
inline std::unique_ptr<Model> load_fixture_model_for_f32_reference(const std::string& name) {
  LoadOptions options;
  if (name == "bf16") options.dtype = DType::kF32;
  return load_fixture_model(name, options);
}

// Max |a - b| over the rows of [B, T, width] arrays whose mask is 1, and max |b| there.
struct Diff {
  double max_abs = 0;
  double scale = 0;
};
inline Diff masked_diff(const float* a, const float* b, const std::vector<uint8_t>& mask,
                        int64_t width) {
  Diff d;
  for (size_t r = 0; r < mask.size(); ++r) {
    if (!mask[r]) continue;
    for (int64_t i = 0; i < width; ++i) {
      d.max_abs = std::max(d.max_abs, std::fabs(double(a[r * width + i]) - b[r * width + i]));
      d.scale = std::max(d.scale, std::fabs(double(b[r * width + i])));
    }
  }
  return d;
}

// ARCHITECTURE.md: within 1e-4 of HF, relative to the logit scale.
inline void expect_close(const Diff& d, const std::string& what, double tolerance = 1e-4) {
  EXPECT_LE(d.max_abs, tolerance * std::max(1.0, d.scale))
      << what << ": max |diff| " << d.max_abs << " at scale " << d.scale;
}

// Prefill of the first half of the padded prompts, then one token at a time through a cache of
// `dtype`; the logits of every position, [B, T, vocab].
inline std::vector<float> cached_decode_logits(Model& model, const Inputs& in, int64_t vocab,
                                               std::optional<DType> dtype = std::nullopt) {
  auto cache = model.new_cache(in.batch, in.seq, dtype);
  EXPECT_TRUE(cache.ok());
  if (!cache.ok()) return {};
  std::vector<float> logits(in.batch * in.seq * vocab);
  for (int64_t t = 0; t < in.seq;) {
    const int64_t chunk = t == 0 ? in.seq / 2 : 1;
    std::vector<int32_t> ids;
    std::vector<uint8_t> mask;
    for (int64_t b = 0; b < in.batch; ++b) {
      for (int64_t j = t; j < t + chunk; ++j) {
        ids.push_back(in.ids[b * in.seq + j]);
        mask.push_back(in.mask[b * in.seq + j]);
      }
    }
    auto out = model.forward(ids, mask, in.batch, *cache);
    EXPECT_TRUE(out.ok()) << out.status().message();
    if (!out.ok()) return {};
    for (int64_t b = 0; b < in.batch; ++b) {
      std::copy_n(out->logits.data() + b * chunk * vocab, chunk * vocab,
                  logits.data() + (b * in.seq + t) * vocab);
    }
    t += chunk;
  }
  return logits;
}

inline int64_t argmax(const float* x, int64_t n) { return std::max_element(x, x + n) - x; }

inline bool in_top5(const float* logits, int64_t vocab, int64_t token) {
  int64_t above = 0;
  for (int64_t i = 0; i < vocab; ++i) above += logits[i] > logits[token];
  return above < 5;
}

// Every decode step's logits with HF's greedy tokens fed back, from a cache of `dtype` (the
// logits our greedy decoding sees as long as its tokens equal HF's). Rows that HF stopped
// (eos_stop) are not compared, as in fixture_test.cc.
struct Steps {
  int64_t batch = 0, steps = 0, vocab = 0, first_row = 0;
  std::vector<float> ours, hf;               // [B, steps, vocab]
  std::vector<std::vector<int32_t>> tokens;  // HF's greedy tokens per row
};

inline Steps decode_hf_tokens(Model& model, const std::string& name,
                              std::optional<DType> dtype = std::nullopt) {
  Steps r;
  const std::string ref = fixture_dir(reference_case(name));
  Inputs in = read_inputs(ref + "/inputs.json");
  nlohmann::json greedy = read_json(ref + "/greedy.json");
  const int64_t n = greedy["max_new_tokens"].get<int64_t>();
  Array step_logits = read_array(ref + "/greedy_logits.safetensors", "step_logits");
  r.batch = in.batch;
  r.steps = n;
  r.vocab = step_logits.shape[2];
  r.first_row = greedy.contains("stop_step") ? 1 : 0;
  r.hf = step_logits.data;
  r.ours.resize(r.hf.size());
  for (int64_t b = 0; b < in.batch; ++b) {
    r.tokens.push_back(greedy["new_tokens"][b].get<std::vector<int32_t>>());
  }
  auto cache = model.new_cache(in.batch, in.seq + n, dtype);
  EXPECT_TRUE(cache.ok()) << cache.status().message();
  if (!cache.ok()) return r;
  ForwardOptions last_only;
  last_only.all_logits = false;
  auto out = model.forward(in.ids, in.mask, in.batch, *cache, last_only);
  for (int64_t step = 0; step < n; ++step) {
    EXPECT_TRUE(out.ok()) << out.status().message();
    if (!out.ok()) return r;
    for (int64_t b = 0; b < in.batch; ++b) {
      std::copy_n(out->logits.data() + b * r.vocab, r.vocab,
                  r.ours.data() + (b * n + step) * r.vocab);
    }
    std::vector<int32_t> next(in.batch);
    for (int64_t b = 0; b < in.batch; ++b) next[b] = r.tokens[b][step];
    out = model.forward(next, std::vector<uint8_t>(in.batch, 1), in.batch, *cache, last_only);
  }
  return r;
}

}  // namespace mistral::testing
